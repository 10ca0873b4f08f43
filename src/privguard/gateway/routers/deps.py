"""Dependencies the routers share: the app's :class:`~privguard.gateway.service.Gateway`, the
caller's key and the admin check.

The key was verified by the ``Authenticate`` middleware before any body was read
(``middleware.py``); ``caller`` hands it to the route. It declares the HTTPBearer and
APIKeyHeader schemes so that ``/openapi.json`` documents how to send a key.
"""

from __future__ import annotations

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from privguard.gateway.auth import presented_secret
from privguard.gateway.errors import GatewayError
from privguard.gateway.keys import KeyInfo
from privguard.gateway.middleware import KEY_SCOPE
from privguard.gateway.service import Gateway

bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer pg_...")
header_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: pg_...")


def gateway(request: Request) -> Gateway:
    return request.app.state.gateway


async def verified_key(request: Request) -> KeyInfo:
    """The key the middleware verified (verified here when a route is reached without it)."""
    key = request.scope.get(KEY_SCOPE)
    if key is None:
        client = request.client
        key = await gateway(request).authenticate(
            presented_secret(request.headers), client.host if client else None
        )
    return key


async def caller(
    request: Request,
    _bearer: HTTPAuthorizationCredentials | None = Security(bearer),
    _api_key: str | None = Security(header_key),
) -> KeyInfo:
    return await verified_key(request)


async def admin(key: KeyInfo = Depends(caller)) -> KeyInfo:
    if key.role != "admin":
        raise GatewayError(403, "forbidden", "this endpoint needs an admin key")
    return key
