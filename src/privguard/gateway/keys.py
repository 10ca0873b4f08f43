"""API keys: creation, lookup, revocation.

A secret is ``pg_`` followed by 43 URL-safe characters (256 random bits from :mod:`secrets`).
It is shown once, at creation, and stored only as its SHA-256: with that much entropy a hash
cannot be reversed by guessing, and a stolen table grants nothing. Verification hashes the
presented secret, finds the row by hash and compares the hashes with
:func:`hmac.compare_digest` (constant time).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update

from privguard.errors import ConfigError
from privguard.gateway.store.db import Store, utcnow
from privguard.gateway.store.models import ApiKey

ROLES = ("client", "admin")
PREFIX = "pg_"


@dataclass(frozen=True)
class KeyInfo:
    """One API key, without its secret."""

    id: str
    name: str
    role: str
    tier: str | None
    created: datetime
    expires: datetime | None
    revoked: bool
    secret_hash: str = ""

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires is not None and (now or utcnow()) >= self.expires

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "tier": self.tier,
            "created": _iso(self.created),
            "expires": _iso(self.expires),
            "revoked": self.revoked,
        }


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def create_key(
    store: Store,
    name: str,
    role: str = "client",
    tier: str | None = None,
    *,
    expires_days: float | None = None,
) -> tuple[KeyInfo, str]:
    """Create a key; returns its record and the secret (shown once, never stored)."""
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise ConfigError("a key needs a --name of 1 to 200 characters (the client's name)")
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}; use client or admin")
    if role == "client" and not tier:
        raise ConfigError("a client key needs a --tier (one of the config's [tiers.NAME])")
    if expires_days is not None and not expires_days > 0:
        raise ConfigError("--expires takes a positive number of days")
    secret = new_secret()
    now = utcnow()
    info = KeyInfo(
        id="key_" + secrets.token_hex(6),
        name=name,
        role=role,
        tier=tier or None,
        created=now,
        expires=now + timedelta(days=expires_days) if expires_days else None,
        revoked=False,
        secret_hash=hash_secret(secret),
    )
    row = {
        "id": info.id,
        "name": info.name,
        "role": info.role,
        "tier": info.tier,
        "secret_hash": info.secret_hash,
        "created": info.created,
        "expires": info.expires,
        "revoked": False,
    }
    with store.engine.begin() as conn:
        conn.execute(insert(ApiKey), [row])
    return info, secret


def _info(r: Any) -> KeyInfo:
    return KeyInfo(
        id=r.id,
        name=r.name,
        role=r.role,
        tier=r.tier,
        created=r.created,
        expires=r.expires,
        revoked=bool(r.revoked),
        secret_hash=r.secret_hash,
    )


def lookup(store: Store, secret: str) -> KeyInfo | None:
    """The key whose secret is ``secret`` (revoked or expired ones included), or ``None``."""
    if not secret.startswith(PREFIX) or len(secret) > 200:
        return None
    h = hash_secret(secret)
    with store.engine.connect() as conn:
        r = conn.execute(select(ApiKey).where(ApiKey.secret_hash == h)).first()
    if r is None or not hmac.compare_digest(r.secret_hash, h):
        return None
    return _info(r)


def get_key(store: Store, key_id: str) -> KeyInfo | None:
    with store.engine.connect() as conn:
        r = conn.execute(select(ApiKey).where(ApiKey.id == key_id)).first()
    return None if r is None else _info(r)


def list_keys(store: Store) -> list[KeyInfo]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(ApiKey).order_by(ApiKey.created, ApiKey.id)).all()
    return [_info(r) for r in rows]


def revoke_key(store: Store, key_id: str) -> KeyInfo | None:
    """Revoke ``key_id``; returns the updated key, or ``None`` when there is no such key."""
    with store.engine.begin() as conn:
        res = conn.execute(
            update(ApiKey).where(ApiKey.id == key_id).values(revoked=True, revoked_at=utcnow())
        )
    return get_key(store, key_id) if res.rowcount else None


def set_tier(store: Store, key_id: str, tier: str) -> KeyInfo | None:
    with store.engine.begin() as conn:
        res = conn.execute(update(ApiKey).where(ApiKey.id == key_id).values(tier=tier))
    return get_key(store, key_id) if res.rowcount else None
