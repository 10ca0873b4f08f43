"""What the gateway needs before its first request, shared by :func:`create_app` and
``privguard serve``: a private SQLite file, the fingerprint HMAC key, the query monitor named by
``[monitor]``, the model's display name, and the periodic purge of the log."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import time
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from privguard.errors import ConfigError
from privguard.gateway.config import FINGERPRINT_KEY_ENV, GatewayConfig

log = logging.getLogger("privguard.gateway")


def private_sqlite(db_url: str) -> None:
    """Create a SQLite database file readable by its owner only (0600) before SQLAlchemy
    would create it world-readable; it may hold retained raw inputs. SQLite gives its WAL and
    shared-memory files the database file's mode. An existing file that others can read is
    left as it is, with a warning."""
    if not db_url.startswith("sqlite:///"):
        return
    name = db_url[len("sqlite:///") :].split("?", 1)[0]
    if not name or name == ":memory:":
        return
    path = Path(name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            log.warning("%s can be read by other users; chmod 600 it", path)
        return
    except OSError:  # a missing directory: the store reports it
        return
    os.close(fd)


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
            log.error("purge failed: %s", e)
