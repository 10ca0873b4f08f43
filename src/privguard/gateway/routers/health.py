"""``/healthz`` (liveness) and ``/metrics`` (Prometheus, this process's counters)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from privguard.gateway.metrics import CONTENT_TYPE
from privguard.gateway.service import Gateway


def health_router(gw: Gateway) -> APIRouter:
    router = APIRouter(tags=["service"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness (no key needed)."""
        return {"status": "ok"}

    @router.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics of this process."""
        gw.metrics.log_pending.set(gw.writer.pending)
        return Response(gw.metrics.render(), media_type=CONTENT_TYPE)

    return router
