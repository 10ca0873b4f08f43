"""The serving gateway: a FastAPI app in front of one model.

A prediction request takes this path, in this order (:func:`create_app`, route ``predict``):

1. **authenticate** — ``Authorization: Bearer <secret>`` or ``X-API-Key``; unknown, revoked or
   expired keys get 401; keys are cached for ``key_cache_seconds``;
2. **rate limit** — the tier's windows, per key (429 + Retry-After);
3. **validate** — body size (413), JSON (400), shape, dtype, finite values, feature bounds
   (422), batch size (413);
4. **budget** — the tier's daily budget in records (429 + Retry-After until UTC midnight);
5. **answer** — the model's probabilities through the tier's output policy, exposed no further
   than ``min(tier access, policy.max_access)``; gradients never;
6. **monitor** — the optional query monitor (issue 8) sees the answered batch; each finding
   is stored as an alert, counted on ``/metrics`` and queued for the optional webhook
   (``webhook.py``);
7. **log** — one row (HMAC fingerprints, not inputs) committed by the group-commit writer
   before the answer is sent.

Every refusal is ``{"error": {"code", "message"}}`` with a 4xx status; no input produces a 5xx.
The admin dashboard (``/dashboard``, for browsers) is in ``dashboard.py``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import os
import time
import uuid
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from privguard.defenses.output import answer_labels
from privguard.errors import ConfigError, PrivguardError
from privguard.gateway import keys as keystore
from privguard.gateway.config import (
    FINGERPRINT_KEY_ENV,
    GatewayConfig,
    ServeSettings,
    Tier,
)
from privguard.gateway.dashboard import mount_dashboard
from privguard.gateway.errors import GatewayError
from privguard.gateway.inputs import Fingerprinter, parse_inputs
from privguard.gateway.limits import Limiter
from privguard.gateway.metrics import CONTENT_TYPE, Metrics
from privguard.gateway.store import LogWriter, Store, utcnow
from privguard.gateway.webhook import AlertWebhook, alert_payload
from privguard.oracle import Access, top_k

log = logging.getLogger("privguard.gateway")

# -- response schemas (the OpenAPI document; answers are built as plain dicts for speed) ------


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


class KeyCreated(KeyOut):
    secret: str = Field(description="shown once; only its hash is stored")


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    role: Literal["client", "admin"] = "client"
    tier: str | None = Field(None, max_length=100)
    expires_days: float | None = Field(None, gt=0, le=36500)


class KeyPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tier: str = Field(min_length=1, max_length=100)


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


ERRORS = {
    400: {"model": ErrorBody, "description": "malformed JSON"},
    401: {"model": ErrorBody, "description": "missing, unknown, revoked or expired key"},
    403: {"model": ErrorBody, "description": "the key's role or tier does not allow this"},
    413: {"model": ErrorBody, "description": "payload or batch too large"},
    422: {"model": ErrorBody, "description": "invalid inputs"},
    429: {"model": ErrorBody, "description": "rate limit or daily budget (see Retry-After)"},
}

# -- the gateway's state ----------------------------------------------------------------------


class Gateway:
    """Everything one gateway process holds: model, tiers, store, limiter, writer, monitor."""

    def __init__(
        self,
        target: Any,
        config: GatewayConfig,
        store: Store,
        limiter: Limiter,
        fingerprint_key: bytes,
        *,
        name: str,
        monitor: Any = None,
    ) -> None:
        self.target = target
        self.config = config
        self.store = store
        self.limiter = limiter
        self.fingerprint_key = fingerprint_key
        self.name = name
        self.monitor = monitor
        self.metrics = Metrics()
        # alerts also go to [monitor] webhook, from a background thread (webhook.py)
        self.webhook = AlertWebhook.from_config(config.monitor, registry=self.metrics.registry)
        self.writer = LogWriter(
            store, max_batch=config.server.log_batch_max, on_commit=self.metrics.on_commit
        )
        self.rng = np.random.default_rng()
        self.input_shape = tuple(int(d) for d in target.input_shape)
        b = (getattr(target, "dataset", None) or {}).get("bounds")
        self.bounds = (float(b[0]), float(b[1])) if b else None
        self._keys: dict[str, tuple[keystore.KeyInfo, float]] = {}
        self._held: dict[str, tuple[str, float]] = {}  # key id -> (action, until) from findings
        self.chains = {name: t.chain for name, t in config.tiers.items()}
        self.fingerprinter = Fingerprinter(fingerprint_key)  # keyed once, copied per record
        self.specs = {name: chain.spec for name, chain in self.chains.items()}  # built once

    # -- auth ----------------------------------------------------------------------------
    async def authenticate(self, secret: str | None) -> keystore.KeyInfo:
        if not secret:
            raise _auth_error(
                "missing_api_key",
                "send an API key: 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            )
        h = keystore.hash_secret(secret)
        now = time.monotonic()
        cached = self._keys.get(h)
        if cached is not None and cached[1] > now:
            key = cached[0]
        else:
            key = await run_in_threadpool(keystore.lookup, self.store, secret)
            if key is None:
                raise _auth_error(
                    "invalid_api_key", "this API key is not known; check it or ask for a new one"
                )
            if len(self._keys) > 10_000:
                self._keys.clear()
            self._keys[h] = (key, now + self.config.server.key_cache_seconds)
        if key.revoked:
            raise _auth_error(
                "revoked_api_key", "this API key was revoked; ask the gateway's admin for another"
            )
        if key.expired():
            raise _auth_error(
                "expired_api_key", "this API key has expired; ask the gateway's admin for another"
            )
        return key

    def forget_key(self, key_id: str) -> None:
        for h, (k, _) in list(self._keys.items()):
            if k.id == key_id:
                del self._keys[h]

    def tier_of(self, key: keystore.KeyInfo) -> Tier:
        tier = self.config.tier(key.tier)
        if tier is None:
            raise GatewayError(
                403,
                "no_tier",
                f"this key's tier {key.tier!r} is not served by this gateway; ask the admin to "
                f"set one of: {', '.join(sorted(self.config.tiers))}",
            )
        return tier

    def check_held(self, key: keystore.KeyInfo) -> None:
        held = self._held.get(key.id)
        if held is None:
            return
        action, until = held
        left = until - time.monotonic()
        if action == "block":
            raise GatewayError(
                403, "client_blocked", "the query monitor blocked this key; contact the admin"
            )
        if left > 0:
            raise GatewayError(
                429,
                "client_throttled",
                f"the query monitor throttled this key; retry after {math.ceil(left)} s",
                {"Retry-After": str(max(1, math.ceil(left)))},
            )
        del self._held[key.id]

    # -- answers -------------------------------------------------------------------------
    def answer(
        self, x: np.ndarray, tier: Tier
    ) -> tuple[dict[str, Any], np.ndarray, Any, np.ndarray]:
        """The JSON answer for ``x`` under ``tier``, the labels, the served probabilities and
        the top served score per record (NaN when labels only; the log's output summary)."""
        p = np.asarray(self.target.predict_proba(x), dtype=np.float64)
        chain = self.chains[tier.name]
        q = chain.apply(p, self.rng) if chain.steps else p
        labels = answer_labels(q)
        exposure = tier.exposure
        out: dict[str, Any] = {
            "model": self.name,
            "access": exposure.label,
            "policy": self.specs[tier.name],
            "labels": labels.tolist(),
        }
        top = None
        if exposure == Access.TOPK:
            k = min(tier.k, q.shape[1])
            idx, scores = top_k(q, k)
            out["classes"] = idx.tolist()
            out["scores"] = scores.tolist()
            top = scores[:, 0]
        if exposure >= Access.PROBS:
            out["probs"] = q.tolist()
            top = np.max(q, axis=1)
        if exposure >= Access.LOGITS and not chain.steps:
            out["logits"] = np.asarray(self.target.predictor.predict_logits(x)).tolist()
        if top is None:
            top = np.full(len(labels), np.nan)
        return out, labels, (q if exposure >= Access.PROBS else None), top

    def log_row(
        self,
        key: keystore.KeyInfo,
        tier: Tier | None,
        status: int,
        t0: float,
        *,
        x: np.ndarray | None = None,
        outputs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return {
            "id": uuid.uuid4().hex,
            "time": utcnow(),
            "key_id": key.id,
            "client": key.name,
            "tier": tier.name if tier else None,
            "status": status,
            "n_inputs": 0 if x is None else len(x),
            "fingerprints": self.fingerprinter.json(x),
            "outputs": json.dumps(outputs or {}),
            "access": tier.exposure.label if tier else None,
            "policy": self.specs.get(tier.name) if tier else None,
            "latency_ms": round((time.perf_counter() - t0) * 1000, 3),
        }

    async def observe(
        self, key: keystore.KeyInfo, x: np.ndarray, labels: np.ndarray, probs: Any
    ) -> None:
        """Hand the answered batch to the monitor; act on its findings: every finding becomes
        an alert row; ``block`` refuses this key (this request included) until restart,
        ``throttle`` refuses it for ``throttle_seconds`` (``[monitor]``, default 60)."""
        if self.monitor is None:
            return
        findings = await run_in_threadpool(
            self.monitor.observe, key.name, x, labels, probs, tier=key.tier
        )
        if not findings:
            return
        rows = []
        for f in findings:
            self.metrics.findings.labels(f.detector, f.action).inc()
            rows.append(
                {
                    "time": utcnow(),
                    "client": key.name,
                    "detector": f.detector,
                    "action": f.action,
                    "statistic": _finite(f.statistic),
                    "threshold": _finite(f.threshold),
                    "evidence": json.dumps(f.evidence, default=_json_default),
                }
            )
        await run_in_threadpool(self.store.add_alerts, rows)
        if self.webhook is not None:
            for row in rows:
                self.webhook.submit(alert_payload(row, self.name))
        actions = {f.action for f in findings}
        if "block" in actions:
            self._held[key.id] = ("block", math.inf)
        elif "throttle" in actions:
            seconds = float((self.config.monitor or {}).get("throttle_seconds", 60))
            self._held[key.id] = ("throttle", time.monotonic() + seconds)


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _auth_error(code: str, message: str) -> GatewayError:
    return GatewayError(401, code, message, {"WWW-Authenticate": "Bearer"})


# -- helpers shared with `privguard serve` ------------------------------------------------------


def fingerprint_key_path(config: GatewayConfig, db_url: str) -> Path:
    """Where the HMAC key of input fingerprints lives: ``[server] fingerprint_key_file``, or
    beside a SQLite database, or ``./privguard-fingerprint.key``."""
    if config.server.fingerprint_key_file:
        return Path(config.server.fingerprint_key_file).expanduser()
    if db_url.startswith("sqlite:///"):
        db = Path(db_url[len("sqlite:///") :].split("?", 1)[0])
        return db.with_name(db.name + ".fingerprint-key")
    return Path("privguard-fingerprint.key")


def fingerprint_key(config: GatewayConfig, db_url: str) -> bytes:
    """The fingerprint HMAC key: ``PRIVGUARD_FINGERPRINT_KEY`` (base64), else the key file,
    created (32 random bytes, mode 0600) on first start."""
    env = os.environ.get(FINGERPRINT_KEY_ENV)
    if env:
        try:
            key = base64.urlsafe_b64decode(env.strip() + "=" * (-len(env.strip()) % 4))
        except (ValueError, binascii.Error):
            key = b""
        if len(key) < 16:
            raise ConfigError(f"{FINGERPRINT_KEY_ENV} must hold at least 16 bytes, base64")
        return key
    path = fingerprint_key_path(config, db_url)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as e:
        raise ConfigError(f"cannot create the fingerprint key file {path}: {e.strerror}") from None
    else:
        with os.fdopen(fd, "w") as f:
            f.write(base64.urlsafe_b64encode(os.urandom(32)).decode() + "\n")
            f.flush()
            os.fsync(f.fileno())
    for _ in range(50):  # another worker may be writing it right now
        text = path.read_text().strip()
        if text:
            return base64.urlsafe_b64decode(text)
        time.sleep(0.01)
    raise ConfigError(f"the fingerprint key file {path} is empty; delete it to make a new one")


def _load_monitor(config: GatewayConfig, target: Any) -> Any:
    """The query monitor of ``[monitor] path = "DIR"`` (saved by ``Monitor.save``; relative to
    the config file), or ``None`` without a ``[monitor]`` section."""
    if config.monitor is None:
        return None
    path = config.monitor.get("path")
    if not isinstance(path, str) or not path:
        raise ConfigError(
            '[monitor] needs path = "DIR": a directory written by Monitor.save (docs/gateway.md)'
        )
    p = Path(path).expanduser()
    if not p.is_absolute() and config.path is not None:
        p = config.path.parent / p
    from privguard.gateway.monitor import Monitor

    return Monitor.load(p)


# -- the app ------------------------------------------------------------------------------------


class _BodyLimit:
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
                        response = _error_response(_too_large(self.limit))
                        await response(scope, receive, send)
                        return
                    break
        await self.app(scope, receive, send)


class _Count:
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


def _too_large(limit: int) -> GatewayError:
    return GatewayError(
        413, "payload_too_large", f"the body is over {limit} bytes; send fewer records per request"
    )


def _error_response(e: GatewayError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


#: what ``POST /v1/predict`` accepts, in OpenAPI terms (the schemes of ``caller``'s dependencies)
PREDICT_SECURITY = [{"HTTPBearer": []}, {"APIKeyHeader": []}]


def _presented_secret(request: Request) -> str | None:
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


async def _read_body(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


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


def create_app(
    target: Any,
    config: GatewayConfig,
    *,
    db: str,
    redis: str | None = None,
    monitor: Any = None,
    migrate: bool = True,
    name: str | None = None,
) -> FastAPI:
    """The gateway app for ``target`` (a :class:`~privguard.models.target.Target`).

    Example:
        >>> app = create_app(load_target("model"), GatewayConfig.from_toml("gateway.toml"),
        ...                  db="sqlite:///gateway.db")
    """
    import torch

    torch.set_num_threads(1)  # small models: one thread per worker is fastest (threads.py)
    store = Store(db)
    if migrate:
        store.migrate()
    else:
        store.check_schema()
    limiter = Limiter(redis or config.server.redis, strategy=config.server.rate_limit_strategy)
    if monitor is None:
        monitor = _load_monitor(config, target)
    model_name = name or config.server.model_name or _model_name(target)
    gw = Gateway(
        target,
        config,
        store,
        limiter,
        fingerprint_key(config, db),
        name=model_name,
        monitor=monitor,
    )
    server = config.server

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        gw.writer.start()
        if gw.webhook is not None:
            gw.webhook.start()
        purge = asyncio.create_task(_purge_periodically(gw))
        try:
            yield
        finally:
            purge.cancel()
            await run_in_threadpool(gw.writer.stop)
            if gw.webhook is not None:
                await run_in_threadpool(gw.webhook.stop)
            store.close()

    app = FastAPI(
        title="privguard gateway",
        version=_version(),
        description=(
            "Predictions from one model behind access control, rate limits, output policies, "
            "input validation and an audit log. See docs/gateway.md."
        ),
        lifespan=lifespan,
    )
    app.state.gateway = gw
    app.add_middleware(_BodyLimit, limit=server.max_body_bytes)
    app.add_middleware(_Count, metrics=gw.metrics)

    # -- errors: every refusal is {"error": {"code", "message"}} --------------------------
    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, e: GatewayError) -> JSONResponse:
        gw.metrics.child(gw.metrics.refused, e.code).inc()
        return _error_response(e)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        errors = e.errors()
        if any(err.get("type") == "json_invalid" for err in errors):
            return _error_response(GatewayError(400, "invalid_json", "the body is not valid JSON"))
        parts = []
        for err in errors[:5]:
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
        return _error_response(GatewayError(422, "invalid_request", "; ".join(parts)[:1000]))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        code = codes.get(e.status_code, "http_error")
        message = {
            404: f"no such endpoint {request.url.path[:100]!r}; see /docs",
            405: f"{request.method} is not allowed on {request.url.path[:100]!r}; see /docs",
        }.get(e.status_code, str(e.detail))
        return JSONResponse(
            {"error": {"code": code, "message": message}},
            status_code=e.status_code,
            headers=getattr(e, "headers", None),
        )

    @app.exception_handler(SQLAlchemyError)
    async def _db_error(request: Request, e: SQLAlchemyError) -> JSONResponse:
        log.error("database error: %s", e)
        return _error_response(
            GatewayError(503, "database_unavailable", "the audit database does not answer; retry")
        )

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"error": {"code": "internal_error", "message": "internal error; it was logged"}},
            status_code=500,
        )

    # -- auth ---------------------------------------------------------------------------
    bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer pg_...")
    header_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: pg_...")

    async def caller(
        cred: HTTPAuthorizationCredentials | None = Security(bearer),
        api_key: str | None = Security(header_key),
    ) -> keystore.KeyInfo:
        return await gw.authenticate(cred.credentials if cred else api_key)

    async def admin(key: keystore.KeyInfo = Depends(caller)) -> keystore.KeyInfo:
        if key.role != "admin":
            raise GatewayError(403, "forbidden", "this endpoint needs an admin key")
        return key

    # -- public -------------------------------------------------------------------------
    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict[str, str]:
        """Liveness (no key needed)."""
        return {"status": "ok"}

    @app.get("/metrics", tags=["service"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics of this process."""
        gw.metrics.log_pending.set(gw.writer.pending)
        return Response(gw.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/model", tags=["predict"], response_model=ModelInfo, responses=ERRORS)
    async def model_info(key: keystore.KeyInfo = Depends(caller)) -> dict[str, Any]:
        """Public metadata of the model, and what the caller's tier gets."""
        tier = gw.config.tier(key.tier)
        ds = getattr(target, "dataset", None) or {}
        public = (
            tier.public()
            if tier
            else {
                "access": "none",
                "policy": "none",
                "max_batch": 0,
                "rate_limits": "",
                "daily_budget": None,
            }
        )
        return {
            "name": gw.name,
            "kind": getattr(target, "kind", "model"),
            "data_kind": ds.get("kind"),
            "input_shape": list(gw.input_shape),
            "n_classes": int(target.n_classes),
            "classes": [str(c) for c in ds.get("classes", range(target.n_classes))],
            "bounds": list(gw.bounds) if gw.bounds else None,
            "tier": tier.name if tier else None,
            **public,
        }

    max_batch = max(t.max_batch for t in config.tiers.values())
    predict_body = {
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
                            "items": _record_schema(gw.input_shape, gw.bounds),
                        }
                    },
                }
            }
        },
    }

    @app.post(
        "/v1/predict",
        tags=["predict"],
        response_model=PredictAnswer,
        response_model_exclude_none=True,
        responses=ERRORS,
        # the key is read by _presented_secret, not by the security dependencies (their
        # per-request cost is most of a batch-1 request's); the schema says the same
        openapi_extra={"requestBody": predict_body, "security": PREDICT_SECURITY},
    )
    async def predict(request: Request) -> Response:
        """Predictions for a batch of records, as much as the caller's tier allows."""
        t0 = time.perf_counter()
        key = await gw.authenticate(_presented_secret(request))
        tier = None
        x = None
        try:
            gw.check_held(key)
            tier = gw.tier_of(key)
            await gw.limiter.hit(key.id, tier)
            body = await _read_body(request, server.max_body_bytes)
            x = parse_inputs(body, gw.input_shape, bounds=gw.bounds, max_batch=tier.max_batch)
            await gw.limiter.spend(key.id, tier, len(x))
            out, labels, probs, top = gw.answer(x, tier)
            await gw.observe(key, x, labels, probs)
            gw.check_held(key)  # a 'block' finding refuses this very answer
        except GatewayError as e:
            gw.writer.submit(gw.log_row(key, tier, e.status, t0, x=x, outputs={"error": e.code}))
            raise
        row = gw.log_row(
            key,
            tier,
            200,
            t0,
            x=x,
            outputs={"labels": out["labels"], "top": np.round(top, 4).tolist()},
        )
        inputs = None
        if tier.retain_inputs_days > 0:
            inputs = [
                {
                    "query_id": row["id"],
                    "data": json.dumps(x.tolist()),
                    "expires_at": row["time"] + timedelta(days=tier.retain_inputs_days),
                }
            ]
        try:
            await gw.writer.write(row, inputs)
        except SQLAlchemyError:
            raise GatewayError(
                503,
                "audit_log_unavailable",
                "the answer could not be logged, so it is withheld; retry shortly",
                {"Retry-After": "1"},
            ) from None
        gw.metrics.child(gw.metrics.records, tier.name).inc(len(x))
        gw.metrics.child(gw.metrics.latency, tier.name).observe(time.perf_counter() - t0)
        return Response(json.dumps(out), media_type="application/json")

    # -- admin --------------------------------------------------------------------------
    @app.get("/v1/admin/keys", tags=["admin"], response_model=list[KeyOut], responses=ERRORS)
    def list_keys(_: keystore.KeyInfo = Depends(admin)) -> list[dict[str, Any]]:
        """Every key (never the secrets)."""
        return [k.to_dict() for k in keystore.list_keys(store)]

    @app.post(
        "/v1/admin/keys",
        tags=["admin"],
        status_code=201,
        response_model=KeyCreated,
        responses=ERRORS,
    )
    def create_key(body: KeyCreate, _: keystore.KeyInfo = Depends(admin)) -> dict[str, Any]:
        """Create a key; the secret is in this answer only."""
        if body.tier is not None and body.tier not in gw.config.tiers:
            raise _unknown_tier(body.tier, gw.config)
        try:
            info, secret = keystore.create_key(
                store, body.name, body.role, body.tier, expires_days=body.expires_days
            )
        except PrivguardError as e:
            raise GatewayError(422, "invalid_key", str(e)) from None
        return {**info.to_dict(), "secret": secret}

    @app.delete("/v1/admin/keys/{key_id}", tags=["admin"], response_model=KeyOut, responses=ERRORS)
    def revoke_key(key_id: str, _: keystore.KeyInfo = Depends(admin)) -> dict[str, Any]:
        """Revoke a key (immediately on this process; within key_cache_seconds elsewhere)."""
        info = keystore.revoke_key(store, key_id)
        if info is None:
            raise _no_key(key_id)
        gw.forget_key(key_id)
        return info.to_dict()

    @app.patch("/v1/admin/keys/{key_id}", tags=["admin"], response_model=KeyOut, responses=ERRORS)
    def patch_key(
        key_id: str, body: KeyPatch, _: keystore.KeyInfo = Depends(admin)
    ) -> dict[str, Any]:
        """Move a key to another tier."""
        if body.tier not in gw.config.tiers:
            raise _unknown_tier(body.tier, gw.config)
        info = keystore.set_tier(store, key_id, body.tier)
        if info is None:
            raise _no_key(key_id)
        gw.forget_key(key_id)
        return info.to_dict()

    @app.get("/v1/admin/queries", tags=["admin"], response_model=list[QueryRow], responses=ERRORS)
    def queries(
        client: str | None = Query(None, max_length=200),
        limit: int = Query(100, ge=1, le=10_000),
        _: keystore.KeyInfo = Depends(admin),
    ) -> list[dict[str, Any]]:
        """The query log, newest first (fingerprints, never raw inputs)."""
        return store.queries(client, limit)

    @app.get("/v1/admin/alerts", tags=["admin"], response_model=list[AlertOut], responses=ERRORS)
    def alerts(
        client: str | None = Query(None, max_length=200),
        limit: int = Query(100, ge=1, le=10_000),
        _: keystore.KeyInfo = Depends(admin),
    ) -> list[dict[str, Any]]:
        """Findings of the query monitor, newest first."""
        return store.alerts(client, limit)

    mount_dashboard(app, gw)  # /dashboard: admin login, keys, queries, alerts (dashboard.py)
    return app


def probs_max(out: dict[str, Any]) -> np.ndarray:
    """The top served score per record (for the log's output summary; NaN when labels only)."""
    if "probs" in out:
        return np.max(np.asarray(out["probs"]), axis=1)
    if "scores" in out:
        return np.asarray(out["scores"])[:, 0]
    return np.full(len(out["labels"]), np.nan)


def _unknown_tier(tier: str, config: GatewayConfig) -> GatewayError:
    return GatewayError(
        422,
        "unknown_tier",
        f"no tier {tier[:100]!r}; use one of: {', '.join(sorted(config.tiers))}",
    )


def _no_key(key_id: str) -> GatewayError:
    return GatewayError(404, "no_such_key", f"no key {key_id[:100]!r}; list them at /v1/admin/keys")


async def _purge_periodically(gw: Gateway) -> None:
    server = gw.config.server
    while True:
        await asyncio.sleep(server.purge_interval_seconds)
        try:
            removed = await run_in_threadpool(
                gw.store.purge, log_retention_days=server.log_retention_days
            )
            if any(removed.values()):
                log.info("purged %s", removed)
        except SQLAlchemyError as e:  # the next round retries
            log.error("purge failed: %s", e)


def _model_name(target: Any) -> str:
    path = getattr(target, "path", None)
    return Path(path).stem if path else "model"


def _version() -> str:
    from privguard import __version__

    return __version__


def app_from_env() -> FastAPI:
    """The uvicorn factory of ``privguard serve`` (settings in ``PRIVGUARD_GATEWAY_SETTINGS``)."""
    from privguard.gateway.seal import load_model

    settings = ServeSettings.from_env()
    config = settings.load_config()
    target = load_model(settings.model, settings.seal_key_file)
    return create_app(
        target,
        config,
        db=settings.resolve_db(config),
        redis=settings.resolve_redis(config),
        migrate=not settings.migrated,
    )
