"""Where independent work runs: in-process, local processes (joblib/loky) or a Dask cluster.

Reference and shadow models, sweep variants and other independent jobs fan out through
:func:`fan_out`: results yielded in job order as they finish. With ``n_jobs=1`` and no scheduler
the jobs run in this process (no pickling, easy to debug); ``n_jobs > 1`` uses joblib's loky
processes, each limited to one BLAS/torch thread so that ``n_jobs`` processes do not
oversubscribe the cores; a ``scheduler`` (a ``tcp://HOST:8786`` address or a
``distributed.Client``) sends them to a Dask cluster. An unreachable scheduler fails within
:data:`CONNECT_TIMEOUT_S` seconds with a :class:`~privguard.errors.ConfigError` that says what
to check.

On a Dask cluster (docs/compute.md, "Running on a real Dask cluster"):

- every job is submitted at once with ``client.submit`` (earlier jobs first), so a worker never
  waits for the client to hand it the next job;
- a large array argument (the reference pool, say) is scattered to the workers once per call
  and the jobs refer to it, instead of travelling inside every job;
- the workers import torch and privguard, run PyTorch's one-off set-up and set one torch
  thread per task when a client first connects (:mod:`privguard.dask_worker`, a worker plugin;
  ``dask worker --preload privguard.dask_worker`` does it when a worker starts), so the first
  job does not pay for them;
- a client made from an address is kept for the rest of the process (one connection for all of
  an audit's attacks) and closed at exit.

Every job must be seeded from its own arguments, so the three ways give the same results.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from privguard.errors import ConfigError

__all__ = ["CONNECT_TIMEOUT_S", "SCATTER_BYTES", "dask_client", "fan_out"]

#: Seconds to wait for a Dask scheduler before giving up with a clear error.
CONNECT_TIMEOUT_S = 5
#: Array arguments of at least this many bytes are scattered to a Dask cluster once per call,
#: not shipped inside each job.
SCATTER_BYTES = 64_000


def fan_out(
    fn: Callable[..., Any],
    jobs: Iterable[tuple],
    *,
    n_jobs: int | None = 1,
    scheduler: Any = None,
) -> Iterator[Any]:
    """Yield ``fn(*args)`` for each ``args`` in ``jobs``, in order, as the results arrive.

    Args:
        fn: a module-level function (it is pickled for processes and clusters).
        jobs: argument tuples, one per job.
        n_jobs: local worker processes (loky); ``1`` or ``None`` runs in-process; ``-1`` uses
            every core. Ignored when ``scheduler`` is set.
        scheduler: a Dask scheduler address (``tcp://HOST:8786``) or a ``distributed.Client``.

    Raises:
        ConfigError: ``scheduler`` is malformed or cannot be reached, or Dask is not installed.

    Example:
        >>> list(fan_out(pow, [(2, 3), (3, 2)], n_jobs=2))
        [8, 9]
    """
    jobs = list(jobs)
    if not jobs:
        return
    if scheduler is None and (n_jobs or 1) == 1:
        for args in jobs:
            yield fn(*args)
        return
    if scheduler is None:
        from joblib import Parallel, delayed, parallel_config

        n = int(n_jobs or 1)
        n = min(n, len(jobs)) if n > 0 else n
        calls = (delayed(fn)(*args) for args in jobs)
        with parallel_config(backend="loky", n_jobs=n, inner_max_num_threads=1):
            yield from Parallel(return_as="generator", batch_size=1)(calls)
        return
    client, owned = dask_client(scheduler)
    try:
        yield from _dask_map(client, fn, jobs)
    finally:
        if owned:
            client.close()


def _dask_map(client: Any, fn: Callable[..., Any], jobs: list[tuple]) -> Iterator[Any]:
    """Submit every job to ``client`` at once (job i with priority -i: earlier jobs first),
    large arrays scattered once, and yield the results in job order."""
    import numpy as np

    scattered: dict[int, Any] = {}  # id(array) -> its future; ``jobs`` keeps the arrays alive

    def ship(a: Any) -> Any:
        if not isinstance(a, np.ndarray) or a.nbytes < SCATTER_BYTES:
            return a
        if id(a) not in scattered:
            # hash=False: a fresh key per call. A content-hash key (hash=True) makes the next
            # call's scatter of the same pool race with this call's release of it, and the
            # tasks are cancelled ("lost dependencies")
            scattered[id(a)] = client.scatter(a, broadcast=True, hash=False)
        return scattered[id(a)]

    futures = [
        client.submit(fn, *(ship(a) for a in args), pure=False, priority=-i)
        for i, args in enumerate(jobs)
    ]
    try:
        for f in futures:
            yield f.result()
    finally:  # stopped early or failed: leave nothing queued on the cluster
        client.cancel([f for f in futures if not f.done()])
        del futures
        scattered.clear()


_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def dask_client(scheduler: Any) -> tuple[Any, bool]:
    """A ``distributed.Client`` for ``scheduler`` (an address or a Client) and whether the
    caller must close it (never: a client made here from an address is kept for the rest of
    the process and closed at exit; a Client passed in stays the caller's). The cluster's
    workers are warmed (:mod:`privguard.dask_worker`) once per client. Fails within ~5 s on an
    unreachable address."""
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - dask[distributed] is a dependency
        raise ConfigError(
            "--scheduler needs Dask distributed: pip install 'dask[distributed]'"
        ) from None
    if isinstance(scheduler, Client):
        _warm(scheduler)
        return scheduler, False
    if not isinstance(scheduler, str) or not scheduler.strip():
        raise ConfigError(
            f"--scheduler must be a Dask scheduler address such as tcp://HOST:8786, "
            f"not {scheduler!r}"
        )
    with _clients_lock:
        client = _clients.get(scheduler)
        if client is not None and client.status == "running":
            return client, False
        if client is not None:  # its scheduler went away: drop it, connect afresh
            _clients.pop(scheduler)
            with contextlib.suppress(Exception):
                client.close(timeout=2)
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as e:
            raise ConfigError(
                f"cannot reach the Dask scheduler at {scheduler} (gave up after "
                f"{CONNECT_TIMEOUT_S} s: {type(e).__name__}); check the address "
                "(tcp://HOST:8786) and that the scheduler is running, or drop --scheduler to "
                "train locally"
            ) from None
        _clients[scheduler] = client
    _warm(client)
    return client, False


_warmed: set[str] = set()


def _warm(client: Any) -> None:
    """Register :class:`privguard.dask_worker.WarmWorker` on ``client``'s cluster once (it
    waits for the workers already there to warm up; later workers warm up as they join)."""
    if client.id in _warmed:
        return
    from privguard.dask_worker import WarmWorker

    client.register_plugin(WarmWorker())
    _warmed.add(client.id)


@atexit.register
def _close_clients() -> None:
    with _clients_lock:
        for client in _clients.values():
            with contextlib.suppress(Exception):  # best effort at exit
                client.close(timeout=2)
        _clients.clear()
