"""What privguard needs on a Dask worker: warm imports and one torch thread per task.

A fresh worker process pays for importing torch and privguard and for PyTorch's one-off set-up
(kernels, allocator, autograd engine) in its first job: 2-4.5 CPU seconds per worker measured on
32 reference MLPs (docs/benchmarks.md, issue 18), as long as the jobs themselves at that size.
:func:`privguard.compute.dask_client` registers :class:`WarmWorker` on the cluster when it first
connects, and a worker started with ``dask worker tcp://HOST:8786 --preload
privguard.dask_worker`` warms up as it starts (:func:`dask_setup`). Importing this module
imports ``distributed``; :mod:`privguard.compute` imports it only when a scheduler is used.
"""

from __future__ import annotations

import importlib
import os
import time
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["WARM_MODULES", "WarmWorker", "dask_setup", "warm_up"]

#: What a warm worker has imported: what reference-model, shadow-model and sweep jobs need.
WARM_MODULES = (
    "torch",
    "privguard.models.train",
    "privguard.models.stacked",
    "privguard.attacks.membership.reference_training",
    "privguard.sweep.run",
)


def warm_up() -> dict[str, Any]:
    """Import what privguard's jobs need and set one torch thread per task; what a worker
    runs once (:class:`WarmWorker`, ``--preload privguard.dask_worker``). Returns what it did."""
    t0 = time.perf_counter()
    for name in WARM_MODULES:
        importlib.import_module(name)
    import torch

    # privguard's jobs run on one torch thread each (models/threads.py): a worker with
    # --nthreads N runs N jobs at once on N cores
    torch.set_num_threads(1)
    # a process's first operations pay one-off set-up (kernels, allocator, the autograd
    # engine, the fused optimiser): pay it here, on a tiny model, not in the first job
    net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.Adam(net.parameters(), fused=True)
    x = torch.zeros(4, 8)
    torch.nn.functional.cross_entropy(net(x), torch.zeros(4, dtype=torch.long)).backward()
    opt.step()
    torch.baddbmm(torch.zeros(2, 4, 8), x.expand(2, 4, 8), torch.zeros(2, 8, 8))
    return {"pid": os.getpid(), "seconds": round(time.perf_counter() - t0, 3)}


class WarmWorker(WorkerPlugin):
    """A Dask worker plugin: :func:`warm_up` when the worker joins (or at registration on the
    workers already there), so no job pays for importing torch and privguard."""

    name = "privguard-warm"
    idempotent = True

    def setup(self, worker: Any) -> None:
        warm_up()


def dask_setup(worker: Any) -> None:
    """``dask worker ... --preload privguard.dask_worker`` calls this when a worker starts."""
    warm_up()
