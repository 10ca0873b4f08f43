"""Thread control for small models.

On a 2-core machine with other work running, letting PyTorch use two threads made a small-MLP
step ~60x slower than one thread (shared/PAPERS.md, "Threads"). privguard trains and queries its
small models on one thread and parallelises across processes instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def single_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
