"""The gateway's ASGI middleware: what every request passes before any route sees it.

- :class:`BodyLimit` — refuses a body whose ``Content-Length`` is over ``max_body_bytes``
  before anything reads it (413);
- :class:`Count` — counts every response by route family and status on ``/metrics``.
"""

from __future__ import annotations

from typing import Any

from privguard.gateway.errors import error_response, too_large
from privguard.gateway.metrics import Metrics


class BodyLimit:
    """Refuse bodies whose Content-Length is over the limit before anything reads them."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"content-length":
                    try:
                        too_big = int(value) > self.limit
                    except ValueError:
                        too_big = False
                    if too_big:
                        response = error_response(too_large(self.limit))
                        await response(scope, receive, send)
                        return
                    break
        await self.app(scope, receive, send)


class Count:
    """Count every response by route family and status (Prometheus)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = (
            "predict"
            if path == "/v1/predict"
            else "admin"
            if path.startswith("/v1/admin/")
            else path.rsplit("/", 1)[-1]
            if path in ("/v1/model", "/healthz", "/metrics")
            else "other"
        )
        status = [500]

        async def counting_send(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.metrics.child(self.metrics.requests, route, str(status[0])).inc()
