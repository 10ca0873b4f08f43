"""The gateway's API types: the pydantic models of its request and response bodies, and the
OpenAPI pieces built from the served model (the predict body's shape and bounds).

Answers are built as plain dicts for speed; these models document them in ``/openapi.json``
and validate the admin endpoints' bodies.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ErrorDetail(BaseModel):
    code: str = Field(description="stable snake_case code")
    message: str = Field(description="what went wrong and what to do")


class ErrorBody(BaseModel):
    error: ErrorDetail


class PredictAnswer(BaseModel):
    model: str
    access: Literal["label", "topk", "probs", "logits"]
    policy: str = Field(description="the output policy applied ('none' when none)")
    labels: list[int] = Field(description="predicted class per record; -1: the policy abstained")
    classes: list[list[int]] | None = Field(None, description="top-k classes (topk tiers)")
    scores: list[list[float]] | None = Field(None, description="their scores (topk tiers)")
    probs: list[list[float]] | None = Field(None, description="probabilities (probs, logits)")
    logits: list[list[float]] | None = Field(None, description="logits (logits tiers only)")


class ModelInfo(BaseModel):
    name: str
    kind: str
    data_kind: str | None
    input_shape: list[int]
    n_classes: int
    classes: list[str]
    bounds: list[float] | None
    tier: str | None
    access: str
    policy: str
    max_batch: int
    rate_limits: str
    daily_budget: int | None


class KeyOut(BaseModel):
    id: str
    name: str
    role: str
    tier: str | None
    created: str
    expires: str | None
    revoked: bool
    owner: str | None = Field(None, description="the account the key belongs to, if any")


class KeyCreated(KeyOut):
    secret: str = Field(description="shown once; only its hash is stored")


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    role: Literal["client", "admin"] = "client"
    tier: str | None = Field(None, max_length=100)
    expires_days: float | None = Field(None, gt=0, le=36500)
    owner: str | None = Field(
        None,
        max_length=200,
        description="the account or organisation the key belongs to: the query monitor "
        "watches the keys of one owner together and holds them together",
    )


class KeyPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tier: str = Field(min_length=1, max_length=100)


class AdminEventOut(BaseModel):
    time: str
    actor: str = Field(description="the admin key ('key_ab12 (ops)') or 'cli:USER'")
    source: Literal["api", "dashboard", "cli"]
    action: str = Field(description="key.create, key.revoke or key.tier")
    key_id: str | None
    old: dict[str, Any] | None = Field(description="changed values before")
    new: dict[str, Any] | None = Field(description="changed values after (all, on create)")


class QueryRow(BaseModel):
    id: str
    time: str
    client: str
    key_id: str | None
    tier: str | None
    status: int
    n_inputs: int
    fingerprints: list[str]
    outputs: dict[str, Any]
    access: str | None
    policy: str | None
    latency_ms: float


class AlertOut(BaseModel):
    client: str
    detector: str
    action: str
    statistic: float | None
    threshold: float | None
    evidence: dict[str, Any]
    time: str


class HoldOut(BaseModel):
    key_id: str
    action: str
    until: str | None
    seconds_left: float | None
    detector: str
    time: str | None
    account: str | None = Field(None, description="the owner, when the hold is an account's")


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "malformed JSON"},
    401: {"model": ErrorBody, "description": "missing, unknown, revoked or expired key"},
    403: {"model": ErrorBody, "description": "the key's role or tier does not allow this"},
    413: {"model": ErrorBody, "description": "payload or batch too large"},
    422: {"model": ErrorBody, "description": "invalid inputs"},
    429: {"model": ErrorBody, "description": "rate limit or daily budget (see Retry-After)"},
}

#: the security schemes every keyed endpoint accepts, in OpenAPI terms (``routers/deps.py``)
KEY_SECURITY = [{"HTTPBearer": []}, {"APIKeyHeader": []}]


def predict_body(
    input_shape: tuple[int, ...], bounds: tuple[float, float] | None, max_batch: int
) -> dict[str, Any]:
    """The OpenAPI request body of ``POST /v1/predict`` for this model: ``{"inputs": [...]}``
    with 1 to ``max_batch`` records of ``input_shape`` (flat or nested) within ``bounds``."""
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "additionalProperties": False,
                    "properties": {
                        "inputs": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": max_batch,
                            "items": _record_schema(input_shape, bounds),
                        }
                    },
                }
            }
        },
    }


def _record_schema(shape: tuple[int, ...], bounds: tuple[float, float] | None) -> dict:
    number: dict[str, Any] = {"type": "number"}
    if bounds is not None:
        number.update(minimum=bounds[0], maximum=bounds[1])
    width = math.prod(shape)
    flat = {"type": "array", "items": number, "minItems": width, "maxItems": width}
    if len(shape) == 1:
        return flat
    nested: dict[str, Any] = number
    for d in reversed(shape):
        nested = {"type": "array", "items": nested, "minItems": d, "maxItems": d}
    return {"oneOf": [flat, nested]}
