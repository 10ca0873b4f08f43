"""The gateway's ASGI middleware: what every request passes before any route sees it, in
this order (outermost first; :func:`install_middleware`):

1. :class:`SecurityHeaders` — ``X-Content-Type-Options: nosniff`` and ``Cache-Control:
   no-store`` on every answer (a new key's secret must not sit in a cache), and HSTS over TLS;
2. :class:`Count` — counts every response by route family and status on ``/metrics``;
3. :class:`BodyLimit` — a ``Content-Length`` over ``max_body_bytes`` is refused (413) before
   anything reads the body; a body without one (chunked) is counted as it streams in and
   refused (413) as soon as it passes the limit, so no route ever holds more than the limit;
4. :class:`Authenticate` — ``/v1/*`` and ``/metrics`` need a key, checked from the headers
   alone before any body is read (401); ``/v1/admin/*`` and ``/metrics`` need an admin key
   (403). The verified key is in ``scope["privguard.key"]`` for the routes.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from privguard.gateway.auth import presented_secret
from privguard.gateway.errors import GatewayError, error_response, too_large
from privguard.gateway.metrics import Metrics

#: where the verified key of a request is kept in its ASGI scope
KEY_SCOPE = "privguard.key"

HSTS = "max-age=31536000"


def install_middleware(app: Any, gw: Any) -> None:
    """Add the gateway's middleware to ``app`` (``gw``: its ``Gateway``) in the order above."""
    # Starlette runs the middleware added last first
    app.add_middleware(Authenticate, gw=gw)
    app.add_middleware(BodyLimit, limit=gw.config.server.max_body_bytes)
    app.add_middleware(Count, metrics=gw.metrics)
    app.add_middleware(SecurityHeaders)


def needs_key(path: str) -> bool:
    return path.startswith("/v1/") or path == "/metrics"


def needs_admin(path: str) -> bool:
    return path.startswith("/v1/admin/") or path == "/metrics"


class SecurityHeaders:
    """``nosniff`` and ``no-store`` on every answer (a route's own Cache-Control is kept), and
    ``Strict-Transport-Security`` when the request came over TLS."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tls = scope.get("scheme") == "https"

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                if b"x-content-type-options" not in names:
                    headers.append((b"x-content-type-options", b"nosniff"))
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                if tls and b"strict-transport-security" not in names:
                    headers.append((b"strict-transport-security", HSTS.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimit:
    """Refuse a body over ``limit`` bytes: by its Content-Length before anything reads it, or,
    without one, as it streams in (the route's read raises a 413 at the first byte past the
    limit; what was read is dropped with the request)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = False
                if too_big:
                    await error_response(too_large(self.limit))(scope, receive, send)
                    return
                break
        limit = self.limit
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # an HTTPException passes FastAPI's body parsing unchanged; the app's
                    # handler answers it as {"error": {"code": "payload_too_large", ...}}
                    raise HTTPException(413, too_large(limit).message)
            return message

        async def tracking_send(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except HTTPException as e:  # raised where no handler caught it
            if e.status_code != 413 or started:
                raise
            await error_response(too_large(limit))(scope, receive, send)


class Authenticate:
    """Check the key of every keyed path from its headers, before any body is read."""

    def __init__(self, app: Any, gw: Any) -> None:
        self.app = app
        self.gw = gw

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not needs_key(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        client = scope.get("client")
        try:
            key = await self.gw.authenticate(
                presented_secret(Headers(scope=scope)), client[0] if client else None
            )
            if needs_admin(path) and key.role != "admin":
                raise GatewayError(403, "forbidden", "this endpoint needs an admin key")
        except GatewayError as e:
            self.gw.metrics.child(self.gw.metrics.refused, e.code).inc()
            await error_response(e)(scope, receive, send)
            return
        scope[KEY_SCOPE] = key
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
