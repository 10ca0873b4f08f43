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

**Accounts.** A ``throttle`` or ``block`` raised on an account's state (keys sharing an owner,
``evidence["account"]``) holds the *account* (:func:`account_hold_id`), and every key of that
owner is refused from its next request, the keys that sent nothing yet included.

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
import hashlib
import json
import logging
import math
import random
import secrets
import time
from collections import OrderedDict
from datetime import timedelta
from typing import Any

from starlette.concurrency import run_in_threadpool

from privguard.gateway.errors import GatewayError
from privguard.gateway.monitor.monitor import scopes
from privguard.gateway.monitor.state import StateError
from privguard.gateway.store import Store, utcnow

log = logging.getLogger("privguard.gateway")

#: a full queue stores one ``monitor_queue`` alert per this many seconds (the count goes on)
DROP_ALERT_SECONDS = 60.0
DEFAULT_QUEUE_SIZE = 1024
#: queued batches handed to the detectors in one round (grouped by client, watch.SharedStates)
GROUP_SIZE = 256
#: a client's shared detector state is forgotten after this long without a query (seconds)
DEFAULT_STATE_TTL = 7 * 24 * 3600
#: how a hold on an account (every key of one owner) is named among the key ids
ACCOUNT_HOLD_PREFIX = "acct_"


def account_hold_id(owner: str) -> str:
    """The hold id of the account ``owner``: ``acct_`` and 24 hex digits of its SHA-256 (an
    owner may be 200 characters; a hold id, like a key id, is at most 32)."""
    return ACCOUNT_HOLD_PREFIX + hashlib.sha256(owner.encode("utf-8")).hexdigest()[:24]


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


class StateConflict(RuntimeError):
    """A client's shared state kept changing under this worker (see :class:`SharedStates`)."""


# LOAD: (version, state) -- state empty when the key is absent or still at the version the
# caller holds (it has the bytes already)
_LOAD = """
local v = redis.call('HGET', KEYS[1], 'v')
if not v then return {'', ''} end
if v == ARGV[1] then return {v, ''} end
return {v, redis.call('HGET', KEYS[1], 's')}
"""
# STORE: compare-and-set on the version token; a fresh token and the idle TTL on success
_STORE = """
local v = redis.call('HGET', KEYS[1], 'v') or ''
if v ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 's', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""


class SharedStates:
    """Every client's detector state in Redis, so that the detectors of every worker and
    replica see a client's whole query stream, whichever worker answered each batch.

    One Redis hash per client and fitted monitor (``{prefix}:mon:{monitor id}:{client}``,
    fields ``v``: a random version token, ``s``: the state's bytes, monitor/state.py: no
    pickle), expiring after ``ttl`` seconds without a query. A worker observes a client's
    queued batches optimistically: load the state (skipped when this worker still holds the
    current version), run the detectors over the batches in order, and store the new state
    only if nobody stored since (a compare-and-set script); otherwise reload and run again, so
    concurrent workers never lose each other's queries. Every step is one round trip; a
    state whose bytes do not fit this monitor starts the client afresh (logged).

    Example:
        >>> shared = SharedStates("redis://127.0.0.1:6379/0", monitor)
        >>> findings = shared.observe("mallory", [(x, labels, None)], tier="label")
    """

    #: compare-and-set attempts before the round's batches are given up (logged, counted)
    TRIES = 50

    def __init__(
        self,
        redis_url: str,
        monitor: Any,
        *,
        prefix: str = "privguard",
        ttl: float = DEFAULT_STATE_TTL,
        cache: int = 64,
    ) -> None:
        import redis

        self.monitor = monitor
        self.ttl_ms = max(1000, int(ttl * 1000))
        self.prefix = f"{prefix}:mon:{monitor.identity}:"
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=5)
        self._load = self.redis.register_script(_LOAD)
        self._store = self.redis.register_script(_STORE)
        self._cache: OrderedDict[str, tuple[bytes, Any]] = OrderedDict()
        self._cache_size = int(cache)
        self.conflicts = 0  # stores that lost a race and were run again

    def observe(
        self,
        client: str,
        batches: list[tuple[Any, Any, Any]],
        *,
        tier: str | None = None,
        account: str | None = None,
    ) -> list[Any]:
        """Run the monitor on ``client``'s ``batches`` [(x, labels, probs)], in order, against
        its shared state and, when its key has an owner (``account``), the account's shared
        state (monitor.scopes); the findings (blocking: call from a worker thread)."""
        prepared = [p for b in batches if (p := self.monitor.prepare(*b)) is not None]
        if not prepared:
            return []
        findings = []
        for name, acct in scopes(client, account):
            findings += self._observe_one(name, client, prepared, tier, acct)
        return findings

    def _observe_one(
        self, name: str, client: str, prepared: list[Any], tier: str | None, account: str | None
    ) -> list[Any]:
        """Extend the shared state ``name`` with ``prepared`` batches: load, observe, store if
        no other worker stored first, else again from the newer state."""
        rkey = self.prefix + name
        cached = self._cache.pop(name, None)
        for attempt in range(self.TRIES):
            held = cached[0] if cached is not None else b""
            version, blob = self._load(keys=[rkey], args=[held])
            if not version:  # a new (or expired) client
                state = self.monitor.new_state()
            elif blob:
                try:
                    state = self.monitor.load_state(blob)
                except StateError as e:
                    log.error("query monitor: %s's shared state is unreadable (%s)", name, e)
                    state = self.monitor.new_state()
            else:
                state = cached[1]
            findings = []
            for p in prepared:
                findings += self.monitor.observe_state(state, client, p, tier=tier, account=account)
            token = secrets.token_hex(8).encode()
            args = [version, token, self.monitor.dump_state(state), self.ttl_ms]
            if self._store(keys=[rkey], args=args):
                self._cache[name] = (token, state)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
                return findings
            self.conflicts += 1
            cached = None  # another worker stored first: its state is the one to extend
            time.sleep(random.uniform(0, 0.002 * min(attempt + 1, 10)))
        raise StateConflict(f"{name}'s shared state kept changing ({self.TRIES} tries)")

    def forget(self, client: str | None = None) -> int:
        """Delete ``client``'s shared state (``None``: every client's of this monitor)."""
        self._cache.clear()
        if client is not None:
            return int(self.redis.delete(self.prefix + client))
        keys = list(self.redis.scan_iter(match=self.prefix + "*", count=500))
        return int(self.redis.delete(*keys)) if keys else 0

    def close(self) -> None:
        self.redis.close()


class Observations:
    """A bounded queue of answered batches and the background task that hands them to the
    monitor (``process``: an async callable of a list of items: the oldest queued one and
    whatever else is queued, up to ``group``, so that a busy gateway loads and stores each
    client's shared state once per round, not once per batch). :meth:`submit` never waits."""

    def __init__(
        self,
        process: Any,
        maxsize: int = DEFAULT_QUEUE_SIZE,
        on_drop: Any = None,
        group: int = GROUP_SIZE,
        on_fail: Any = None,
        linger: float = 0.0,
    ):
        if maxsize < 1:
            raise ValueError("the monitor queue needs room for at least one batch")
        self.process = process
        self.group = max(1, int(group))
        self.maxsize = int(maxsize)
        self.on_drop = on_drop  # called with the running count on each drop
        self.on_fail = on_fail  # called with the number of batches of each failed round
        # seconds a round waits after its first batch for more (fewer, larger rounds), when
        # more are already queued
        self.linger = float(linger)
        self.queue: asyncio.Queue | None = None
        self.dropped = 0
        self.processed = 0
        self.failed = 0
        self.rounds = 0  # calls of ``process`` (batches per round: processed / rounds)
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
            items = [await self.queue.get()]
            if self.linger > 0 and not self.queue.empty():
                # only when batches are already waiting (a busy gateway): a lone batch -- a
                # client sending one request at a time -- goes to the detectors at once, so
                # that its hold lands before its next request
                await asyncio.sleep(self.linger)
            while len(items) < self.group and not self.queue.empty():
                items.append(self.queue.get_nowait())  # what queued meanwhile: one round
            try:
                self.rounds += 1
                await self.process(items)
                self.processed += len(items)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - one bad batch must not stop the watch
                self.failed += len(items)
                if self.on_fail is not None:
                    self.on_fail(len(items))
                log.error("query monitor: %d batches failed: %s", len(items), type(e).__name__)
            finally:
                for _ in items:
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


__all__ = [
    "DROP_ALERT_SECONDS",
    "Holds",
    "Observations",
    "SharedStates",
    "StateConflict",
    "drop_alert_row",
]
