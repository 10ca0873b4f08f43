"""Errors the gateway answers with: an HTTP status, a stable snake_case code and a message that
says what to do. Every 4xx body is ``{"error": {"code": ..., "message": ...}}``; the handlers
that make it so for every route are installed by :func:`install_error_handlers`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from privguard.gateway.text import InvalidText

log = logging.getLogger("privguard.gateway")


class GatewayError(Exception):
    """A request the gateway refuses (4xx), or a service it cannot reach (503)."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


def error_response(e: GatewayError) -> JSONResponse:
    """``e`` as the JSON answer every refusal has."""
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


def too_large(limit: int) -> GatewayError:
    return GatewayError(
        413, "payload_too_large", f"the body is over {limit} bytes; send fewer records per request"
    )


def install_error_handlers(app: FastAPI, metrics: Any) -> None:
    """Make every refusal of ``app`` ``{"error": {"code", "message"}}``: the gateway's own
    errors (counted on ``metrics``), FastAPI's validation errors (400 / 422), Starlette's HTTP
    errors (404, 405, 413), an unreachable database (503) and, for bugs, a bare 500."""

    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, e: GatewayError) -> JSONResponse:
        metrics.child(metrics.refused, e.code).inc()
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        errors = e.errors()
        if any(err.get("type") == "json_invalid" for err in errors):
            return error_response(GatewayError(400, "invalid_json", "the body is not valid JSON"))
        parts = []
        for err in errors[:5]:
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
        return error_response(GatewayError(422, "invalid_request", "; ".join(parts)[:1000]))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        code = codes.get(e.status_code, "http_error")
        path = request.url.path[:100]
        message = {
            404: f"no such endpoint {path!r}; see /openapi.json",
            405: f"{request.method} is not allowed on {path!r}; see /openapi.json",
        }.get(e.status_code, str(e.detail))
        return JSONResponse(
            {"error": {"code": code, "message": message}},
            status_code=e.status_code,
            headers=getattr(e, "headers", None),
        )

    @app.exception_handler(InvalidText)
    async def _invalid_text(request: Request, e: InvalidText) -> JSONResponse:
        metrics.child(metrics.refused, "invalid_text").inc()
        return error_response(GatewayError(422, "invalid_text", str(e)))

    @app.exception_handler(SQLAlchemyError)
    async def _db_error(request: Request, e: SQLAlchemyError) -> JSONResponse:
        # the type only: the text holds the statement (and would hold its parameters)
        log.error("database error on %s: %s", request.url.path[:100], type(e).__name__)
        return error_response(
            GatewayError(503, "database_unavailable", "the audit database does not answer; retry")
        )

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"error": {"code": "internal_error", "message": "internal error; it was logged"}},
            status_code=500,
        )
