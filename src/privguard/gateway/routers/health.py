"""``/healthz`` (liveness, no key) and ``/metrics`` (Prometheus, this process's counters; an
admin key, since its per-detector counts would tell a client which of its queries fired)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from privguard.gateway.metrics import CONTENT_TYPE
from privguard.gateway.routers.deps import admin
from privguard.gateway.schemas import ERRORS
from privguard.gateway.service import Gateway


def health_router(gw: Gateway) -> APIRouter:
    router = APIRouter(tags=["service"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness (no key needed)."""
        return {"status": "ok"}

    @router.get(
        "/metrics", response_class=Response, responses=ERRORS, dependencies=[Depends(admin)]
    )
    async def metrics() -> Response:
        """Prometheus metrics of this process (an admin key: ``Authorization: Bearer``)."""
        gw.metrics.log_pending.set(gw.writer.pending)
        return Response(gw.metrics.render(), media_type=CONTENT_TYPE)

    return router
