"""Rate limits and daily query budgets, on the `limits` library.

Rate limits count **requests** per key in the tier's windows (``"10/second;1000/hour"``),
moving-window by default. The daily budget counts **records** per key per UTC day.

Where the counts live:

- with a ``redis://`` URL, both in Redis: every worker and replica shares them;
- without Redis, rate-limit windows live in this process's memory (they are short), while the
  daily budget lives in the gateway's database (``daily_usage``, given a ``store``): it survives
  a restart and is shared by every worker and replica on that database. Each charge is one
  conditional UPDATE (:meth:`~privguard.gateway.store.db.Store.charge_budget`), so two workers
  cannot both spend the last records.
 A refused request carries ``Retry-After``: the
seconds until the window that refused it frees a slot, or until the next UTC midnight.
"""

from __future__ import annotations

import math
import time
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from privguard.errors import ConfigError
from privguard.gateway.config import Tier, parse_rate_limits
from privguard.gateway.errors import GatewayError
from privguard.gateway.redact import redact_url

if TYPE_CHECKING:
    from privguard.gateway.store import Store


class Limiter:
    """Per-key rate limits and daily budgets for the tiers of one gateway.

    Example:
        >>> limiter = Limiter("redis://127.0.0.1:6379/0")
        >>> await limiter.hit(key_id, tier)           # raises GatewayError(429) when over
        >>> await limiter.spend(key_id, tier, n=64)   # records against the daily budget
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        strategy: str = "moving-window",
        prefix: str = "privguard",
        store: Store | None = None,
    ) -> None:
        from limits.aio import storage, strategies
        from limits.storage import storage_from_string

        self.redis_url = redis_url
        self.prefix = prefix
        self.store = None if redis_url else store  # budgets in the database without Redis
        if redis_url:
            scheme = redis_url.split("://", 1)[0]
            if scheme not in ("redis", "rediss", "redis+unix"):
                raise ConfigError(
                    f"--redis takes a redis:// URL (e.g. redis://127.0.0.1:6379/0), "
                    f"not {redact_url(redis_url)!r}"
                )
            self.storage: Any = storage_from_string(
                "async+" + redis_url,
                implementation="redispy",
                key_prefix=prefix,
                wrap_exceptions=True,
            )
        else:
            self.storage = storage.MemoryStorage(wrap_exceptions=True)
        cls = (
            strategies.MovingWindowRateLimiter
            if strategy == "moving-window"
            else strategies.FixedWindowRateLimiter
        )
        self.strategy = cls(self.storage)
        # without Redis, moving windows are counted here (MovingWindows): the same rule as the
        # library's in-memory storage, without its per-hit expiry task and thread hop
        self.windows = MovingWindows() if not redis_url and strategy == "moving-window" else None
        self._items: dict[str, list[Any]] = {}
        self._day: tuple[str, float] | None = None

    @property
    def shared(self) -> bool:
        return self.redis_url is not None

    def _tier_items(self, tier: Tier) -> list[Any]:
        items = self._items.get(tier.rate_limits)
        if items is None:
            items = sorted(parse_rate_limits(tier.rate_limits), key=lambda i: i.get_expiry())
            self._items[tier.rate_limits] = items
        return items

    async def hit(self, key_id: str, tier: Tier) -> None:
        """Count one request of ``key_id``; raise 429 with Retry-After when a window is full."""
        from limits.errors import StorageError

        if self.windows is not None:
            for item in self._tier_items(tier):
                retry = self.windows.hit(item, key_id)
                if retry is not None:
                    raise _rate_limited(item, tier, retry)
            return
        try:
            for item in self._tier_items(tier):
                if not await self.strategy.hit(item, "rate", key_id):
                    stats = await self.strategy.get_window_stats(item, "rate", key_id)
                    raise _rate_limited(item, tier, stats.reset_time - time.time())
        except StorageError as e:
            raise _unavailable(e) from None

    async def spend(self, key_id: str, tier: Tier, n: int) -> None:
        """Charge ``n`` records to today's budget; raise 429 (Retry-After: until the next UTC
        midnight) when they do not fit. A refused request is not charged."""
        from limits.errors import StorageError

        budget = tier.daily_budget
        if budget is None:
            return
        day, midnight = self._today()
        to_midnight = max(1, math.ceil(midnight - time.time()))
        if self.store is not None:
            from sqlalchemy.exc import SQLAlchemyError
            from starlette.concurrency import run_in_threadpool

            try:
                ok, used = await run_in_threadpool(self.store.charge_budget, key_id, day, n, budget)
            except SQLAlchemyError as e:
                raise _unavailable(e, "the budget database") from None
            if not ok:
                raise _over_budget(tier, budget, n, budget - used, to_midnight)
            return
        counter = f"budget/{key_id}/{day}"
        try:
            used = await self.storage.incr(counter, to_midnight + 60, n)
            if used > budget:
                await self.storage.incr(counter, to_midnight + 60, -n)
                raise _over_budget(tier, budget, n, budget - (used - n), to_midnight)
        except StorageError as e:
            raise _unavailable(e) from None

    def charge_in_log(self, key_id: str, tier: Tier, n: int) -> Any:
        """With budgets in the database: the :class:`~privguard.gateway.store.Charge` of ``n``
        records for the log writer to make in the transaction that logs the answer (one commit
        per batch of requests instead of one per request); ``None`` when the budget is Redis's
        (call :meth:`spend`) or the tier has none."""
        if self.store is None or tier.daily_budget is None:
            return None
        from privguard.gateway.store import Charge

        day, _ = self._today()
        refused = {"status": 429, "outputs": '{"error": "daily_budget_exhausted"}'}
        return Charge(key_id, day, int(n), int(tier.daily_budget), refused)

    def over_budget(self, tier: Tier, n: int, used: int) -> GatewayError:
        """The refusal of ``n`` records that did not fit ``tier``'s budget (``used`` today)."""
        _, midnight = self._today()
        to_midnight = max(1, math.ceil(midnight - time.time()))
        budget = int(tier.daily_budget or 0)
        return _over_budget(tier, budget, n, budget - used, to_midnight)

    def _today(self) -> tuple[str, float]:
        """Today's UTC date (``YYYY-MM-DD``) and the epoch seconds of the next UTC midnight,
        recomputed only when that midnight has passed."""
        day = self._day
        if day is None or time.time() >= day[1]:
            now = datetime.now(UTC)
            midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
            day = self._day = (f"{now:%Y-%m-%d}", midnight.timestamp())
        return day

    async def used_today(self, key_id: str) -> int:
        day = f"{datetime.now(UTC):%Y-%m-%d}"
        if self.store is not None:
            from starlette.concurrency import run_in_threadpool

            return await run_in_threadpool(self.store.used_today, key_id, day)
        return int(await self.storage.get(f"budget/{key_id}/{day}"))

    async def check(self) -> bool:
        """Whether the storage answers (Redis reachable)."""
        try:
            return bool(await self.storage.check())
        except Exception:  # noqa: BLE001 - any failure means "not reachable"
            return False


class MovingWindows:
    """Moving-window rate limits counted in this process (no Redis): a key may make at most
    ``amount`` requests in any ``expiry`` seconds of a ``limits`` item.

    The rule is the ``limits`` library's moving window (``MovingWindowRateLimiter`` on its
    in-memory storage): a hit at time ``t`` is refused when the key's ``amount``-th most recent
    accepted hit is at or after ``t - expiry``; a refused hit is not counted. Each key keeps
    its last ``amount`` accepted hits (a deque); keys idle for longer than their window are
    dropped every :attr:`SWEEP` hits. The library does the same with a list it prepends to and
    an expiry task (with a thread hop) scheduled on every hit, which cost the gateway about 30
    us CPU per request (issue 19).
    """

    SWEEP = 4096

    def __init__(self, clock: Any = time.time) -> None:
        self.clock = clock
        self._hits: dict[tuple[str, str], deque[float]] = {}
        self._expiry: dict[tuple[str, str], float] = {}
        self._count = 0

    def hit(self, item: Any, key_id: str) -> float | None:
        """Count one hit of ``key_id`` against ``item``; ``None`` when accepted, else the
        seconds until the window frees a slot (the request is not counted)."""
        now = self.clock()
        limit, expiry = int(item.amount), float(item.get_expiry())
        k = (item.key_for(), key_id)
        hits = self._hits.get(k)
        if hits is None:
            hits = self._hits[k] = deque(maxlen=max(1, limit))
            self._expiry[k] = expiry
        if limit < 1:
            return expiry
        if len(hits) >= limit and hits[0] >= now - expiry:
            return hits[0] + expiry - now  # the oldest hit that fills the window leaves then
        hits.append(now)
        self._count += 1
        if self._count % self.SWEEP == 0:
            self._sweep(now)
        return None

    def _sweep(self, now: float) -> None:
        for k in [k for k, h in self._hits.items() if not h or h[-1] < now - self._expiry[k]]:
            del self._hits[k], self._expiry[k]

    def clear(self) -> None:
        self._hits.clear()
        self._expiry.clear()


def _rate_limited(item: Any, tier: Tier, seconds: float) -> GatewayError:
    retry = max(1, math.ceil(seconds))
    return GatewayError(
        429,
        "rate_limited",
        f"rate limit {item} of tier '{tier.name}' reached; retry after {retry} s (see Retry-After)",
        {"Retry-After": str(retry)},
    )


def _unavailable(e: Exception, what: str = "the rate-limit storage") -> GatewayError:
    return GatewayError(
        503,
        "rate_limit_storage_unavailable",
        f"{what} does not answer ({type(e).__name__}); retry shortly",
        {"Retry-After": "1"},
    )


def _over_budget(tier: Tier, budget: int, n: int, left: int, to_midnight: int) -> GatewayError:
    return GatewayError(
        429,
        "daily_budget_exhausted",
        f"the daily budget of {budget} records of tier '{tier.name}' does not fit "
        f"{n} more ({max(0, left)} left today); retry after the next UTC midnight "
        f"(in {to_midnight} s) or ask fewer records",
        {"Retry-After": str(to_midnight)},
    )
