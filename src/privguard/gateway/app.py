"""The serving gateway: a FastAPI app in front of one model.

A prediction request takes this path, in this order (steps 1-2 are ASGI middleware,
``middleware.py``, for every route; ``routers/predict.py`` hands the rest to
:meth:`Gateway.predict <privguard.gateway.service.Gateway.predict>`):

1. **body limit** — a ``Content-Length`` over ``max_body_bytes`` is refused (413) before
   anything reads the body; a chunked body is counted as it streams in and refused at the
   first byte past the limit;
2. **authenticate** — ``Authorization: Bearer <secret>`` or ``X-API-Key``, from the headers
   alone, before any body is read; unknown, revoked or expired keys get 401; keys are cached
   for ``key_cache_seconds``, unknown secrets for a minute, and an address sending too many
   unknown keys gets 429 (``auth.py``); ``/v1/admin/*`` and ``/metrics`` need an admin key;
3. **rate limit** — the tier's windows, per key (429 + Retry-After);
4. **validate** — JSON (400), shape, dtype, finite values, feature bounds (422), batch size
   (413);
5. **answer** — the model's probabilities through the tier's output policy, exposed no further
   than ``min(tier access, policy.max_access)``; gradients never; large batches in a worker
   thread, off the event loop;
6. **budget** — the tier's daily budget in records (429 + Retry-After until UTC midnight);
   counted in Redis, else in the database, charged there by the log writer in the transaction
   that logs the answer (step 8: logged, charged and sent, or refused and logged as such);
7. **monitor** — the optional query monitor (issue 8) gets the answered batch through a
   bounded queue, off the request path (``watch.py``, issue 19): the answer does not wait for
   the detectors; each finding is stored as an alert, counted on ``/metrics`` and queued for
   the optional webhook (``webhook.py``); a ``throttle`` or ``block`` finding holds the key
   from its next request on (in Redis when there is one, so on every worker; and in the
   database, so across restarts); a held key is refused before step 3; with Redis, each
   client's detector state is shared by every worker and replica (``watch.SharedStates``);
8. **log** — one row (HMAC fingerprints, not inputs; inputs a tier retains are encrypted)
   committed by the group-commit writer before the answer is sent.

Every refusal is ``{"error": {"code", "message"}}`` with a 4xx status; no input produces a 5xx.
Every answer carries ``nosniff`` and ``no-store`` (and HSTS over TLS).

Where things are: ``schemas.py`` (API types), ``service.py`` (the gateway's state and the
predict path), ``middleware.py`` and ``auth.py`` (what every request passes first),
``errors.py`` (refusals), ``routers/`` (predict, admin, health; the browser dashboard is
``dashboard.py``), ``keyfiles.py`` (secret keys), ``startup.py`` (monitor, purge), ``serve.py`` and
``protocol.py`` (``privguard serve``, uvicorn with a deadline on request heads).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from privguard.gateway.config import GatewayConfig, ServeSettings
from privguard.gateway.errors import install_error_handlers
from privguard.gateway.keyfiles import inputs_key, session_key
from privguard.gateway.limits import Limiter
from privguard.gateway.middleware import install_middleware
from privguard.gateway.monitor_process import MonitorProcessError
from privguard.gateway.routers import include_routers
from privguard.gateway.service import Gateway
from privguard.gateway.startup import (
    fingerprint_key,
    load_monitor,
    model_name,
    purge_periodically,
    version,
)
from privguard.gateway.store import Store

log = logging.getLogger("privguard.gateway")


def create_app(
    target: Any,
    config: GatewayConfig,
    *,
    db: str,
    redis: str | None = None,
    monitor: Any = None,
    migrate: bool = True,
    name: str | None = None,
    workers: int = 1,
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
    limiter = Limiter(
        redis or config.server.redis, strategy=config.server.rate_limit_strategy, store=store
    )
    retains = any(t.retain_inputs_days > 0 for t in config.tiers.values())
    gw = Gateway(
        target,
        config,
        store,
        limiter,
        fingerprint_key(config, db),
        name=name or config.server.model_name or model_name(target),
        monitor=monitor if monitor is not None else load_monitor(config, target),
        session_key=session_key(config, db),
        inputs_key=inputs_key(config, db) if retains else None,
        workers=workers,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        purge = None
        try:  # a failed start-up stops what it started (the finally below)
            if gw.monitor_process is not None:
                await start_monitor_process(gw)  # before the rest: it may take a second
            gw.writer.start()
            if gw.webhook is not None:
                gw.webhook.start()
            purge = asyncio.create_task(purge_periodically(gw))
            if gw.monitor is not None:
                await gw.holds.load()  # holds survive a restart (watch.py)
                gw.observations.start()
            yield
        finally:
            if purge is not None:
                purge.cancel()
            if gw.monitor is not None:
                await gw.observations.stop()
                if gw.monitor_process is not None:
                    await gw.monitor_process.aclose()
            await gw.holds.close()
            if gw.shared_states is not None:
                gw.shared_states.close()
            await run_in_threadpool(gw.writer.stop)
            if gw.webhook is not None:
                await run_in_threadpool(gw.webhook.stop)
            store.close()

    app = FastAPI(
        title="privguard gateway",
        version=version(),
        description=(
            "Predictions from one model behind access control, rate limits, output policies, "
            "input validation and an audit log. See docs/gateway.md."
        ),
        lifespan=lifespan,
        # /docs and /redoc would load scripts from a CDN; the schema is at /openapi.json
        docs_url=None,
        redoc_url=None,
        # no redirect whose Location is built from the Host header: /v1/predict/ is a 404
        redirect_slashes=False,
    )
    app.state.gateway = gw
    install_middleware(app, gw)
    install_error_handlers(app, gw.metrics)
    include_routers(app, gw)
    return app


async def start_monitor_process(gw: Gateway) -> None:
    """Start the detectors' child and wait until it watches. A child that does not start is
    fatal when ``[monitor] runner = "process"`` asked for it; under ``"auto"`` the detectors
    run in a thread instead, with a warning."""
    try:
        await gw.monitor_process.started()
    except MonitorProcessError as e:
        if not gw.monitor_runner_auto:
            raise
        log.warning("query monitor: %s; the detectors run in a thread instead", e)
        gw.monitor_process = None
        gw.observations.linger = 0.0


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
        workers=settings.workers,
    )
