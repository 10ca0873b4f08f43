"""Where independent work runs: in-process, local processes (joblib/loky) or a Dask cluster.

Reference and shadow models, sweep variants and other independent jobs fan out through
:func:`fan_out`: one job per task, results yielded in job order as they finish. With
``n_jobs=1`` and no scheduler the jobs run in this process (no pickling, easy to debug);
``n_jobs > 1`` uses joblib's loky processes, each limited to one BLAS/torch thread so that
``n_jobs`` processes do not oversubscribe the cores; a ``scheduler`` (a ``tcp://HOST:8786``
address or a ``distributed.Client``) sends them to a Dask cluster through joblib's ``dask``
backend. An unreachable scheduler fails within :data:`CONNECT_TIMEOUT_S` seconds with a
:class:`~privguard.errors.ConfigError` that says what to check.

Every job must be seeded from its own arguments, so the three ways give the same results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from privguard.errors import ConfigError

__all__ = ["CONNECT_TIMEOUT_S", "dask_client", "fan_out"]

#: Seconds to wait for a Dask scheduler before giving up with a clear error.
CONNECT_TIMEOUT_S = 5


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
    from joblib import Parallel, delayed, parallel_config

    calls = (delayed(fn)(*args) for args in jobs)
    if scheduler is None:
        n = int(n_jobs or 1)
        n = min(n, len(jobs)) if n > 0 else n
        with parallel_config(backend="loky", n_jobs=n, inner_max_num_threads=1):
            yield from Parallel(return_as="generator", batch_size=1)(calls)
        return
    client, owned = dask_client(scheduler)
    try:
        with parallel_config(backend="dask", client=client, wait_for_workers_timeout=60):
            # One job per task: each takes seconds, and batching would idle workers at the end.
            yield from Parallel(return_as="generator", batch_size=1)(calls)
    finally:
        if owned:
            client.close()


def dask_client(scheduler: Any) -> tuple[Any, bool]:
    """A ``distributed.Client`` for ``scheduler`` (an address or a Client) and whether this
    function created it (and so must close it). Fails within ~5 s on an unreachable address."""
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - dask[distributed] is a dependency
        raise ConfigError(
            "--scheduler needs Dask distributed: pip install 'dask[distributed]'"
        ) from None
    if isinstance(scheduler, Client):
        return scheduler, False
    if not isinstance(scheduler, str) or not scheduler.strip():
        raise ConfigError(
            f"--scheduler must be a Dask scheduler address such as tcp://HOST:8786, "
            f"not {scheduler!r}"
        )
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as e:
        raise ConfigError(
            f"cannot reach the Dask scheduler at {scheduler} (gave up after "
            f"{CONNECT_TIMEOUT_S} s: {type(e).__name__}); check the address "
            "(tcp://HOST:8786) and that the scheduler is running, or drop --scheduler to train "
            "locally"
        ) from None
    return client, True
