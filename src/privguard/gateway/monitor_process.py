"""The query monitor's detectors in a child process of the gateway (issue 19).

The gateway answers from one event loop, and its log writer and its detectors run in threads of
the same interpreter. The detectors' work is many small numpy operations (distance products,
Shapiro-Wilk, rate tests, the feature projection) and each holds the interpreter lock: run in a
thread, a millisecond of detector work is a millisecond in which the event loop answers nobody.
Measured on the digits MLP (benchmarks/gateway_throughput.py, docs/monitoring.md): with the
detectors in a thread the monitored gateway served 0.52 (batch 1) and 0.36 (batch 64) of the
bare model's throughput, against 0.57 and 0.56 for the same gateway without them.

:class:`MonitorProcess` runs them in **one child process** instead (``[monitor] runner =
"process"``, the default). The gateway's side does not change: :class:`~privguard.gateway.
watch.Observations` hands a round of queued batches, grouped by client, to :meth:`observe`, one
group at a time; the child runs ``Monitor.observe`` on them (against the shared state in Redis
when the gateway has one, :class:`~privguard.gateway.watch.SharedStates`) and sends the
findings back; the gateway acts on them (holds, alert rows, webhook) in its own process, as
before. One child per gateway worker, one group at a time: batches are observed in the order
they were answered, as in a thread.

- The child is started with ``spawn`` (never ``fork``: the parent runs threads and torch's
  OpenMP pool) and holds its own copy of the monitor, sent once at start-up as the monitor's
  picklable state (:meth:`Monitor.__getstate__ <privguard.gateway.monitor.monitor.Monitor>`),
  with every client's state starting empty, as in a restarted gateway.
- Each group travels as pickled numpy arrays (a 64-record batch of 64 features: about 20 kB);
  the findings come back the same way. Nothing is read from a file.
- If the child dies (killed, out of memory), the group it held fails (counted as failed
  batches, ``privguard_monitor_failed``), a new child is started for the next group, and the
  clients' in-process states start again empty (with Redis, they are in Redis and survive).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import pickle
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

log = logging.getLogger("privguard.gateway")

#: the runners ``[monitor] runner`` accepts
RUNNERS = ("process", "thread")
#: seconds a round of queued batches waits for more before going to the child: at batch 1
#: a round's trip (pickle, pipe, wake-ups) costs about as much as the detectors themselves
PROCESS_LINGER = 0.002

# the child's monitor and, with Redis, its shared states (set by _start_child)
_monitor: Any = None
_shared: Any = None


def _start_child(blob: bytes, redis_url: str | None, ttl: float) -> None:
    """The child's initializer: one BLAS/OpenMP thread (the gateway's own process keeps the
    other core), the monitor from ``blob``, and shared states when there is Redis."""
    global _monitor, _shared
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    _monitor = pickle.loads(blob)  # noqa: S301 - the parent's own object, over its own pipe
    if redis_url:
        from privguard.gateway.watch import SharedStates

        _shared = SharedStates(redis_url, _monitor, ttl=ttl)


def _observe_group(
    client: str, tier: str | None, account: str | None, batches: list[tuple[Any, Any, Any]]
) -> list[Any]:
    """Run in the child: the findings of one client's ``batches`` [(x, labels, probs)]."""
    if _shared is not None:
        return _shared.observe(client, batches, tier=tier, account=account)
    findings = []
    for b in batches:
        findings += _monitor.observe(client, *b, tier=tier, account=account)
    return findings


def _ping() -> int:
    return os.getpid()


class MonitorProcess:
    """The monitor's detectors in one child process.

    Example:
        >>> runner = MonitorProcess(monitor, redis_url=None)
        >>> runner.start()                                   # spawns the child
        >>> await runner.observe("alice", "free", None, [(x, labels, probs)])
        [Finding(detector='ood', ...)]
        >>> runner.close()
    """

    def __init__(self, monitor: Any, redis_url: str | None = None, ttl: float = 0.0) -> None:
        # pickled here, so that a monitor that cannot cross a process boundary (a test's
        # injected clock, say) fails at start-up, not at its first batch
        self._blob = pickle.dumps(monitor)
        self._args = (self._blob, redis_url, float(ttl))
        self._pool: ProcessPoolExecutor | None = None
        self.restarts = 0  # children started again after one died

    def start(self) -> Future:
        """Start the child (``spawn``); a future of its process id, set once it holds the
        monitor (about a second: it imports numpy, scipy and the detectors)."""
        self._pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_child,
            initargs=self._args,
        )
        return self._pool.submit(_ping)

    async def started(self) -> int:
        """Start the child and wait until it watches (the gateway's start-up: a gateway that
        says it is ready has its detectors running); the child's process id."""
        return await asyncio.wrap_future(self.start())

    async def observe(
        self,
        client: str,
        tier: str | None,
        account: str | None,
        batches: list[tuple[Any, Any, Any]],
    ) -> list[Any]:
        """The findings of ``client``'s ``batches``, from the child. A dead child fails this
        group (``BrokenProcessPool``) and is replaced for the next."""
        if self._pool is None:
            self.start()
        pool = self._pool
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(pool, _observe_group, client, tier, account, batches)
        except BrokenProcessPool:
            if pool is self._pool:  # not replaced yet by another group's failure
                log.error("query monitor: its child process died; starting a new one")
                self.restarts += 1
                pool.shutdown(wait=False, cancel_futures=True)
                self.start()
            raise

    def pid(self) -> int | None:
        """The child's process id (``None`` before it started)."""
        if self._pool is None:
            return None
        return self._pool.submit(_ping).result(timeout=60)

    def close(self) -> None:
        """Stop the child (after the batch it is observing)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def runner_of(monitor_config: dict[str, Any] | None) -> str:
    """``[monitor] runner``: ``process`` (default) or ``thread``."""
    from privguard.errors import ConfigError

    runner = (monitor_config or {}).get("runner", "process")
    if runner not in RUNNERS:
        raise ConfigError(
            f'[monitor] runner must be "process" (the detectors in a child process, the '
            f'default) or "thread" (in the gateway\'s own process), not {runner!r}'
        )
    return runner
