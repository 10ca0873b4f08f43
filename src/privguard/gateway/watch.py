"""The query monitor at deployment scale (issue 19): where its decisions live, and how it
watches without slowing answers.

**Holds.** A ``throttle`` or ``block`` finding puts a *hold* on the key. Holds are written to
the database (``monitor_holds``), so they survive a restart, and

- with Redis (``--redis``), to Redis too, and every request of every worker and replica checks
  Redis (one ``GET``): a client held on one worker is refused by all of them from its next
  request;
- without Redis, to this process's memory, which is what requests check: right for one
  worker; several workers each keep their own (``privguard serve`` refuses that unless told
  ``--monitor-per-worker``).

At start-up the holds in force are read back from the database (and, with Redis, written
there again, so that a flushed Redis forgets none).

**Off the request path.** :class:`Observations` is a bounded queue of answered batches, drained
by one background task that runs the detectors in a worker thread and acts on their findings.
The answer never waits for the detectors; a full queue drops the batch unobserved, counts it
(``privguard_monitor_dropped`` on ``/metrics``) and stores a ``monitor_queue`` alert (at most one
per ``DROP_ALERT_SECONDS``). The price: an action takes effect from the client's next request
after its batch was processed, so an attacker gets at most the batch that tripped the detector
(plus whatever it sent while that batch waited in the queue) -- docs/monitoring.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from datetime import timedelta
from typing import Any

from starlette.concurrency import run_in_threadpool

from privguard.gateway.errors import GatewayError
from privguard.gateway.store import Store, utcnow

log = logging.getLogger("privguard.gateway")

#: a full queue stores one ``monitor_queue`` alert per this many seconds (the count goes on)
DROP_ALERT_SECONDS = 60.0
DEFAULT_QUEUE_SIZE = 1024


class Holds:
    """Throttles and blocks the monitor put on keys: in Redis when given one (shared by every
    worker and replica), else in this process; always also in the database.

    Example:
        >>> holds = Holds(store, "redis://127.0.0.1:6379/0")
        >>> await holds.put("key_ab12", "throttle", 60, "similarity")
        >>> await holds.check("key_ab12")      # GatewayError(429, client_throttled)
    """

    def __init__(self, store: Store, redis_url: str | None = None, prefix: str = "privguard"):
        self.store = store
        self.prefix = prefix
        self._local: dict[str, tuple[str, float]] = {}  # key id -> (action, until, monotonic)
        self.redis: Any = None
        if redis_url:
            import redis.asyncio as aioredis

            self.redis = aioredis.Redis.from_url(redis_url, socket_timeout=5)

    @property
    def shared(self) -> bool:
        return self.redis is not None

    def _rkey(self, key_id: str) -> str:
        return f"{self.prefix}:hold:{key_id}"

    async def load(self) -> int:
        """Read the holds in force from the database (start-up); how many."""
        rows = await run_in_threadpool(self.store.holds)
        for r in rows:
            left = r["seconds_left"]
            await self._set(r["key_id"], r["action"], math.inf if left is None else left)
        return len(rows)

    async def put(self, key_id: str, action: str, seconds: float, detector: str) -> None:
        """Hold ``key_id``: ``block`` (``seconds`` ignored: until released) or ``throttle`` for
        ``seconds``. A block is not replaced by a throttle."""
        if action not in ("throttle", "block"):
            raise ValueError(f"no hold action {action!r}")
        seconds = math.inf if action == "block" else float(seconds)
        until = None if action == "block" else utcnow() + timedelta(seconds=seconds)
        await run_in_threadpool(self.store.put_hold, key_id, action, until, detector)
        await self._set(key_id, action, seconds)

    async def _set(self, key_id: str, action: str, seconds: float) -> None:
        if seconds <= 0:
            return
        if self.redis is not None:
            value = "block" if action == "block" else f"throttle:{time.time() + seconds:.3f}"
            if action == "block":
                await self.redis.set(self._rkey(key_id), value)
            else:  # never over a block: SET ... only if the key holds no block (a tiny script)
                await self.redis.eval(
                    "if redis.call('GET', KEYS[1]) == 'block' then return 0 end "
                    "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1",
                    1,
                    self._rkey(key_id),
                    value,
                    max(1, int(seconds * 1000)),
                )
            return
        current = self._local.get(key_id)
        if current is not None and current[0] == "block":
            return
        self._local[key_id] = (action, time.monotonic() + seconds)

    async def check(self, key_id: str) -> None:
        """Raise the refusal of a held key (403 ``client_blocked``, 429 ``client_throttled``
        with Retry-After); return when it is not held."""
        if self.redis is not None:
            try:
                raw = await self.redis.get(self._rkey(key_id))
            except Exception as e:  # noqa: BLE001 - redis' errors: one refusal, no traceback
                raise GatewayError(
                    503,
                    "monitor_unavailable",
                    "the query monitor's shared state (Redis) does not answer; retry shortly",
                    {"Retry-After": "1"},
                ) from e
            if raw is None:
                return
            value = raw.decode() if isinstance(raw, bytes) else str(raw)
            if value == "block":
                raise _blocked()
            left = float(value.split(":", 1)[1]) - time.time()
        else:
            held = self._local.get(key_id)
            if held is None:
                return
            if held[0] == "block":
                raise _blocked()
            left = held[1] - time.monotonic()
            if left <= 0:
                self._local.pop(key_id, None)
                return
        if left > 0:
            raise _throttled(left)

    async def release(self, key_id: str) -> bool:
        """Lift the hold on ``key_id`` (database, Redis and this process); whether there was one."""
        had = await run_in_threadpool(self.store.release_hold, key_id)
        if self.redis is not None:
            had = bool(await self.redis.delete(self._rkey(key_id))) or had
        return self._local.pop(key_id, None) is not None or had

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()


def _blocked() -> GatewayError:
    return GatewayError(
        403, "client_blocked", "the query monitor blocked this key; contact the admin"
    )


def _throttled(left: float) -> GatewayError:
    return GatewayError(
        429,
        "client_throttled",
        f"the query monitor throttled this key; retry after {math.ceil(left)} s",
        {"Retry-After": str(max(1, math.ceil(left)))},
    )


class Observations:
    """A bounded queue of answered batches and the background task that hands them to the
    monitor (``process``: an async callable of one item). :meth:`submit` never waits."""

    def __init__(self, process: Any, maxsize: int = DEFAULT_QUEUE_SIZE, on_drop: Any = None):
        if maxsize < 1:
            raise ValueError("the monitor queue needs room for at least one batch")
        self.process = process
        self.maxsize = int(maxsize)
        self.on_drop = on_drop  # called with the running count on each drop
        self.queue: asyncio.Queue | None = None
        self.dropped = 0
        self.processed = 0
        self.failed = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Create the queue and start draining it (in the running event loop)."""
        if self.queue is None:
            self.queue = asyncio.Queue(self.maxsize)
        self._task = asyncio.create_task(self._run())

    def submit(self, item: Any) -> bool:
        """Queue ``item``; ``False`` (counted, reported) when the queue is full."""
        if self.queue is None:  # not started (no lifespan): observe nothing, count it
            self.queue = asyncio.Queue(self.maxsize)
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop(self.dropped)
            return False
        return True

    async def _run(self) -> None:
        assert self.queue is not None
        while True:
            item = await self.queue.get()
            try:
                await self.process(item)
                self.processed += 1
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - one bad batch must not stop the watch
                self.failed += 1
                log.error("query monitor: a batch failed: %s", type(e).__name__)
            finally:
                self.queue.task_done()

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait (up to ``timeout`` s) until every queued batch is processed."""
        if self.queue is not None and self._task is not None:
            try:
                await asyncio.wait_for(self.queue.join(), timeout)
            except TimeoutError:
                log.warning("query monitor: %d batches unprocessed at shutdown", self.queue.qsize())

    async def stop(self) -> None:
        await self.drain()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def drop_alert_row(dropped: int, maxsize: int) -> dict[str, Any]:
    """The alert stored when the monitor's queue overflows."""
    return {
        "time": utcnow(),
        "client": "*",
        "detector": "monitor_queue",
        "action": "alert",
        "statistic": float(dropped),
        "threshold": float(maxsize),
        "evidence": json.dumps(
            {
                "dropped_batches": dropped,
                "queue_size": maxsize,
                "meaning": "answered batches the monitor could not observe (queue full)",
            }
        ),
    }


__all__ = ["DROP_ALERT_SECONDS", "Holds", "Observations", "drop_alert_row"]
