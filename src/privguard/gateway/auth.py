"""Who is asking: the API key a request presents, and the defences of the key lookup against
floods of bad keys (issue 16, item 11).

- :func:`presented_secret` reads ``Authorization: Bearer <key>``, else ``X-API-Key``;
- :class:`FailedAuth` remembers secrets that are not keys (a **negative cache**: a repeated bad
  key costs no database lookup) and counts each address's failed lookups: past
  :data:`FAILURES_PER_WINDOW` in :data:`WINDOW_SECONDS`, a key from that address that was
  never verified before is refused with 429 without a lookup, while keys it has verified still
  work, so a bad-key flood from one address costs neither the database nor valid clients.

Behind a reverse proxy every client has the proxy's address unless uvicorn is told to trust its
``X-Forwarded-For`` (``--forwarded-allow-ips``); see docs/gateway.md, "Security model".
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict

from privguard.gateway.errors import GatewayError

#: failed key lookups one address may cause per window before its unknown keys are refused
FAILURES_PER_WINDOW = 50
WINDOW_SECONDS = 60.0
#: how long a secret that is not a key is answered 401 without a lookup
NEGATIVE_SECONDS = 60.0
#: entries each table holds at most (oldest dropped first)
MAX_ENTRIES = 10_000


def presented_secret(headers) -> str | None:
    """The key in ``Authorization: Bearer <key>``, else in ``X-API-Key`` (``headers``: a
    Starlette ``Headers``) — what the HTTPBearer and APIKeyHeader schemes read."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        credentials = credentials.strip()
        if scheme and credentials and scheme.lower() == "bearer":
            return credentials
    return headers.get("x-api-key") or None


def auth_error(code: str, message: str) -> GatewayError:
    return GatewayError(401, code, message, {"WWW-Authenticate": "Bearer"})


def unknown_key() -> GatewayError:
    return auth_error("invalid_api_key", "this API key is not known; check it or ask for a new one")


class FailedAuth:
    """The negative-key cache, the per-address failure windows and the hashes verified before
    (bounded, in this process; each worker keeps its own)."""

    def __init__(
        self,
        limit: int = FAILURES_PER_WINDOW,
        window: float = WINDOW_SECONDS,
        negative_seconds: float = NEGATIVE_SECONDS,
    ) -> None:
        self.limit = limit
        self.window = window
        self.negative_seconds = negative_seconds
        self._bad: OrderedDict[str, float] = OrderedDict()  # secret hash -> until
        self._windows: OrderedDict[str, tuple[float, int]] = OrderedDict()  # addr -> start, n
        self._good: OrderedDict[str, None] = OrderedDict()  # hashes that were keys

    def check(self, h: str, address: str | None) -> None:
        """Refuse ``h`` without a lookup when it is a known bad secret (401), or when
        ``address`` is over its failure limit and ``h`` was never a key here (429)."""
        now = time.monotonic()
        until = self._bad.get(h)
        if until is not None:
            if until > now:
                raise unknown_key()
            del self._bad[h]
        if address is None or h in self._good:
            return
        start, n = self._windows.get(address, (now, 0))
        left = start + self.window - now
        if n >= self.limit and left > 0:
            retry = max(1, math.ceil(left))
            raise GatewayError(
                429,
                "too_many_failed_keys",
                f"too many unknown API keys from this address; retry after {retry} s with a "
                "valid key",
                {"Retry-After": str(retry)},
            )

    def failed(self, h: str, address: str | None) -> None:
        """Remember that ``h`` is not a key, and count one failure for ``address``."""
        now = time.monotonic()
        _put(self._bad, h, now + self.negative_seconds)
        if address is None:
            return
        start, n = self._windows.get(address, (now, 0))
        if now - start >= self.window:
            start, n = now, 0
        _put(self._windows, address, (start, n + 1))

    def verified(self, h: str) -> None:
        """``h`` is a key (revoked or not): its address's failures never refuse it."""
        _put(self._good, h, None)


def _put(table: OrderedDict, k: str, v) -> None:
    table[k] = v
    table.move_to_end(k)
    while len(table) > MAX_ENTRIES:
        table.popitem(last=False)
