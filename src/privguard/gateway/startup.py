"""What the gateway needs before its first request, shared by :func:`create_app` and
``privguard serve``: the fingerprint HMAC key (from :mod:`~privguard.gateway.keyfiles`), the
query monitor named by ``[monitor]``, the model's display name, and the periodic purge of the
log. (SQLite files are created 0600 by the store itself, :func:`~privguard.gateway.store.db.
make_engine`, for the CLI's key and purge commands too.)"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from privguard.errors import ConfigError
from privguard.gateway.config import GatewayConfig
from privguard.gateway.keyfiles import fingerprint_key  # noqa: F401 - re-exported (app, tests)

log = logging.getLogger("privguard.gateway")


def load_monitor(config: GatewayConfig, target: Any) -> Any:
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


def model_name(target: Any) -> str:
    """The name answers carry when ``[server] model_name`` is unset: the model directory's."""
    path = getattr(target, "path", None)
    return Path(path).stem if path else "model"


def version() -> str:
    from privguard import __version__

    return __version__


async def purge_periodically(gw: Any) -> None:
    """Delete log rows and retained inputs past their retention, every
    ``purge_interval_seconds``, until cancelled (``gw``: the app's ``Gateway``)."""
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
            log.error("purge failed: %s", type(e).__name__)  # the text may quote SQL
