"""Errors the gateway answers with: an HTTP status, a stable snake_case code and a message that
says what to do. Every 4xx body is ``{"error": {"code": ..., "message": ...}}``."""

from __future__ import annotations


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
