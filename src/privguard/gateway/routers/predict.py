"""``POST /v1/predict`` and ``GET /v1/model``: what a client's key may ask of the model."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.exceptions import HTTPException

from privguard.gateway import keys as keystore
from privguard.gateway.errors import too_large
from privguard.gateway.routers.deps import caller, verified_key
from privguard.gateway.schemas import ERRORS, KEY_SECURITY, ModelInfo, PredictAnswer, predict_body
from privguard.gateway.service import Gateway


def predict_router(gw: Gateway) -> APIRouter:
    """The client routes of ``gw`` (the predict body's schema is the served model's). The
    caller's key was verified by the middleware, before the body was read."""
    router = APIRouter(tags=["predict"])
    limit = gw.config.server.max_body_bytes
    max_batch = max(t.max_batch for t in gw.config.tiers.values())

    @router.get("/v1/model", response_model=ModelInfo, responses=ERRORS)
    async def model_info(key: keystore.KeyInfo = Depends(caller)) -> dict[str, Any]:
        """Public metadata of the model, and what the caller's tier gets."""
        return gw.model_info(key)

    @router.post(
        "/v1/predict",
        response_model=PredictAnswer,
        response_model_exclude_none=True,
        responses=ERRORS,
        openapi_extra={
            "requestBody": predict_body(gw.input_shape, gw.bounds, max_batch),
            "security": KEY_SECURITY,
        },
    )
    async def predict(request: Request) -> Response:
        """Predictions for a batch of records, as much as the caller's tier allows."""
        t0 = time.perf_counter()
        key = await verified_key(request)

        async def read_body() -> bytes:
            try:  # BodyLimit stops the stream past max_body_bytes
                return await request.body()
            except HTTPException as e:
                if e.status_code == 413:
                    raise too_large(limit) from None  # a GatewayError: logged as a row
                raise

        return Response(await gw.predict(key, read_body, t0), media_type="application/json")

    return router
