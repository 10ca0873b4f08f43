"""``privguard serve``: checks everything that can be checked before listening, then runs
uvicorn — in this process with one worker, or with an app factory per worker process
(settings through the environment) with several."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from privguard.errors import ConfigError
from privguard.gateway.config import SETTINGS_ENV, ServeSettings
from privguard.gateway.redact import redact_url

log = logging.getLogger("privguard.gateway")


def prepare(settings: ServeSettings):
    """Load config and model, migrate the database, create the secret keys: whatever is
    wrong is reported here, once, before any worker starts. Returns (config, target, db)."""
    from privguard.gateway.keyfiles import fingerprint_key, inputs_key, session_key
    from privguard.gateway.seal import load_model
    from privguard.gateway.store import Store

    config = settings.load_config()
    target = load_model(settings.model, settings.seal_key_file)
    db = settings.resolve_db(config)
    store = Store(db)
    try:
        store.migrate()
    finally:
        store.close()
    fingerprint_key(config, db)
    session_key(config, db)  # made on first start (deployments from before it existed)
    if any(t.retain_inputs_days > 0 for t in config.tiers.values()):
        inputs_key(config, db)
    redis = settings.resolve_redis(config)
    if redis:
        import asyncio

        from privguard.gateway.limits import Limiter

        if not asyncio.run(Limiter(redis).check()):
            raise ConfigError(
                f"Redis does not answer at {redact_url(redis)}; start it or fix --redis"
            )
    return config, target, db


def serve(
    settings: ServeSettings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    log_level: str = "warning",
    on_ready: Callable[[str], None] | None = None,
    monitor_per_worker: bool = False,
) -> None:
    """Serve until interrupted; ``on_ready`` gets a one-line description once everything is
    checked, just before uvicorn starts listening.

    With the query monitor on, several workers need Redis (their holds are shared there), or
    ``monitor_per_worker=True`` to accept that each worker watches and holds on its own."""
    import uvicorn

    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    if bool(tls_cert) != bool(tls_key):
        raise ConfigError("HTTPS needs both --tls-cert and --tls-key")
    for f in (tls_cert, tls_key):
        if f and not Path(f).is_file():
            raise ConfigError(f"no TLS file at {f}")
    config, target, db = prepare(settings)
    exposed = exposure_warning(host, tls=bool(tls_cert))
    if exposed:
        log.warning("%s", exposed)
    redis = settings.resolve_redis(config)
    if workers > 1 and not redis and config.monitor is not None and not monitor_per_worker:
        raise ConfigError(
            f"{workers} workers with the query monitor need --redis, where every worker "
            "shares its throttles and blocks; without Redis each worker would hold a client on "
            "its own (an attacker would be watched by 1/N of the monitor). Pass --redis, or "
            "--monitor-per-worker to accept that (docs/monitoring.md)"
        )
    if workers > 1 and not redis:
        log.warning(
            "%d workers without --redis: each worker counts rate limits and budgets on its own",
            workers,
        )
    if on_ready is not None:
        scheme = "https" if tls_cert else "http"
        on_ready(
            f"serving {settings.model} on {scheme}://{host}:{port} ({workers} worker(s), "
            f"tiers: {', '.join(config.tiers)}, log: {redact_url(db)}, "
            f"rate limits: {'redis' if redis else 'in memory'})"
        )
    # One BLAS thread per process: the monitor's distance products and the model are small, and
    # on a busy machine two BLAS threads per request made them 5-7x slower (docs/monitoring.md).
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")  # inherited by worker processes
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    from privguard.gateway.protocol import protocol_class

    common = dict(
        host=host,
        port=port,
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
        access_log=False,
        log_level=log_level,
        timeout_graceful_shutdown=5,
        # slow clients: request heads must arrive within HEADER_SECONDS (protocol.py), idle
        # keep-alive connections close after 5 s, and an h11 request head is at most 16 kB
        http=protocol_class(),
        timeout_keep_alive=5,
        h11_max_incomplete_event_size=16 * 1024,
    )
    if workers == 1:
        from privguard.gateway.app import create_app

        app = create_app(target, config, db=db, redis=redis, migrate=False, workers=1)
        uvicorn.run(app, **common)
        return
    settings.migrated = True
    settings.workers = workers
    os.environ[SETTINGS_ENV] = settings.to_env()
    # a worker imports privguard (and PyTorch) before it answers the supervisor's health
    # check: on a busy machine that takes longer than uvicorn's default 5 s
    uvicorn.run(
        "privguard.gateway.app:app_from_env",
        factory=True,
        workers=workers,
        timeout_worker_healthcheck=90,
        **common,
    )


def exposure_warning(host: str, *, tls: bool) -> str | None:
    """What to warn about when ``host`` accepts connections from other machines without TLS:
    API keys and answers would cross the network in clear text."""
    if tls or host in ("127.0.0.1", "localhost", "::1") or host.startswith("127."):
        return None
    return (
        f"serving on {host} without TLS: API keys and answers cross the network in clear "
        "text; pass --tls-cert/--tls-key or put a TLS-terminating reverse proxy in front"
    )
