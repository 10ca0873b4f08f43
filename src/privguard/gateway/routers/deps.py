"""Dependencies the routers share: the app's :class:`~privguard.gateway.service.Gateway`, the
caller's key and the admin check.

``caller`` reads the key through FastAPI's security schemes (so ``/openapi.json`` documents
them); ``POST /v1/predict`` reads it with :func:`presented_secret` instead, which reads the same
headers without the dependency machinery (its per-request cost is most of a batch-1 request's).
"""

from __future__ import annotations

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from privguard.gateway import keys as keystore
from privguard.gateway.errors import GatewayError
from privguard.gateway.service import Gateway

bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer pg_...")
header_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: pg_...")


def gateway(request: Request) -> Gateway:
    return request.app.state.gateway


async def caller(
    request: Request,
    cred: HTTPAuthorizationCredentials | None = Security(bearer),
    api_key: str | None = Security(header_key),
) -> keystore.KeyInfo:
    return await gateway(request).authenticate(cred.credentials if cred else api_key)


async def admin(key: keystore.KeyInfo = Depends(caller)) -> keystore.KeyInfo:
    if key.role != "admin":
        raise GatewayError(403, "forbidden", "this endpoint needs an admin key")
    return key


def presented_secret(request: Request) -> str | None:
    """The key in ``Authorization: Bearer <key>``, else in ``X-API-Key`` — what the HTTPBearer
    and APIKeyHeader security schemes of ``caller`` read, without the dependency machinery."""
    headers = request.headers
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        credentials = credentials.strip()
        if scheme and credentials and scheme.lower() == "bearer":
            return credentials
    return headers.get("x-api-key") or None
