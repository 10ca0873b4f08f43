"""uvicorn's HTTP protocol with a deadline on request headers (issue 16, item 11).

uvicorn times out idle keep-alive connections, but not a client that opens a connection and
sends its headers a byte at a time: such connections were held for as long as the client
liked (300 held for 16 s in the review). Here a connection must complete each request's headers
within :data:`HEADER_SECONDS` of its opening (or of the previous answer), else it is closed.
``privguard serve`` passes :func:`protocol_class` to uvicorn as ``http=``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools is optional in uvicorn
    HttpToolsProtocol = None

#: seconds a connection has to send a complete request head
HEADER_SECONDS = 10.0


class _HeaderDeadline:
    """Mixed into a uvicorn HTTP protocol: arms a timer when a connection opens and after each
    answer; disarms it once a request's headers are in (a request cycle has started)."""

    header_seconds = HEADER_SECONDS
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        if self._in_request():
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self._in_request() and not self.transport.is_closing():  # type: ignore[attr-defined]
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _in_request(self) -> bool:
        cycle = getattr(self, "cycle", None)
        return cycle is not None and not cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self.header_seconds, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        transport = self.transport  # type: ignore[attr-defined]
        if not self._in_request() and not transport.is_closing():
            transport.close()


class H11HeaderDeadline(_HeaderDeadline, H11Protocol):
    """h11 with the header deadline."""


if HttpToolsProtocol is not None:

    class HttpToolsHeaderDeadline(_HeaderDeadline, HttpToolsProtocol):
        """httptools with the header deadline."""


def protocol_class() -> type:
    """uvicorn's faster HTTP protocol when installed (httptools, else h11), with the header
    deadline: the ``http=`` of ``uvicorn.run``."""
    return HttpToolsHeaderDeadline if HttpToolsProtocol is not None else H11HeaderDeadline
