"""API keys: creation, lookup, revocation.

A secret is ``pg_`` followed by 43 URL-safe characters (256 random bits from :mod:`secrets`).
It is shown once, at creation, and stored only as its SHA-256: with that much entropy a hash
cannot be reversed by guessing, and a stolen table grants nothing. Verification hashes the
presented secret, finds the row by hash and compares the hashes with
:func:`hmac.compare_digest` (constant time).

Names, tiers and ids are checked for control characters (:mod:`privguard.gateway.text`) before
any statement sees them. Every change — creation, revocation, a new tier — writes an
``admin_events`` row (who, from where, when, the values before and after) **in the same
transaction** as the change: there is no change without its trail, and no trail without its
change. The actor is an :class:`Actor`: the admin key behind an API call or a dashboard session,
or the local user of ``privguard keys``.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update

from privguard.errors import ConfigError
from privguard.gateway.store.db import Store, utcnow
from privguard.gateway.store.models import AdminEvent, ApiKey
from privguard.gateway.text import check_text, printable

SOURCES = ("api", "dashboard", "cli")

ROLES = ("client", "admin")
PREFIX = "pg_"


@dataclass(frozen=True)
class Actor:
    """Who makes an admin change, and through what (``api``, ``dashboard``, ``cli``)."""

    name: str
    source: str

    @classmethod
    def of_key(cls, key: KeyInfo, source: str) -> Actor:
        """The admin key ``key`` acting through the API or the dashboard."""
        return cls(f"{key.id} ({key.name})", source)

    @classmethod
    def local(cls) -> Actor:
        """The operating-system user running ``privguard keys``."""
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry (some containers)
            user = "unknown"
        return cls(f"cli:{printable(user)}", "cli")


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
    owner: str | None = None  # account / organisation; the monitor watches its keys together

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires is not None and (now or utcnow()) >= self.expires

    def display_row(self) -> list[str]:
        """id, name, role, tier, created, expires, status for a terminal table, with control
        characters escaped (a name stored before they were refused is not replayed raw)."""
        d = self.to_dict()
        status = "revoked" if self.revoked else "expired" if self.expired() else "active"
        cells = [self.id, self.name, self.role, str(self.tier), d["created"], str(d["expires"])]
        return [printable(c) for c in cells] + [status]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "tier": self.tier,
            "created": _iso(self.created),
            "expires": _iso(self.expires),
            "revoked": self.revoked,
            "owner": self.owner,
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
    actor: Actor | None = None,
    owner: str | None = None,
) -> tuple[KeyInfo, str]:
    """Create a key; returns its record and the secret (shown once, never stored). The
    ``key.create`` admin event is written in the same transaction. ``owner``: the account or
    organisation the key belongs to; the query monitor watches the keys of one owner together
    as well as one by one (docs/monitoring.md)."""
    name = check_text((name or "").strip(), "the key name")
    if not name or len(name) > 200:
        raise ConfigError("a key needs a --name of 1 to 200 characters (the client's name)")
    if role not in ROLES:
        raise ConfigError(f"unknown role {printable(str(role))!r}; use client or admin")
    if tier is not None:
        check_text(tier, "the tier", max_len=100)
    if role == "client" and not tier:
        raise ConfigError("a client key needs a --tier (one of the config's [tiers.NAME])")
    if owner is not None:
        owner = check_text(owner.strip(), "the owner", max_len=200) or None
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
        owner=owner,
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
        "owner": info.owner,
    }
    with store.engine.begin() as conn:
        conn.execute(insert(ApiKey), [row])
        _event(conn, actor, "key.create", info.id, None, _public(info))
    return info, secret


def _public(info: KeyInfo) -> dict[str, Any]:
    d = info.to_dict()
    out = {k: d[k] for k in ("name", "role", "tier", "expires", "revoked")}
    if info.owner is not None:
        out["owner"] = info.owner
    return out


def _event(
    conn: Any,
    actor: Actor | None,
    action: str,
    key_id: str | None,
    old: dict[str, Any] | None,
    new: dict[str, Any] | None,
) -> None:
    """One ``admin_events`` row, on ``conn`` (inside the change's transaction)."""
    actor = actor or Actor.local()
    if actor.source not in SOURCES:
        raise ValueError(f"unknown admin event source {actor.source!r}")
    conn.execute(
        insert(AdminEvent),
        [
            {
                "time": utcnow(),
                "actor": actor.name[:300],
                "source": actor.source,
                "action": action,
                "key_id": key_id,
                "old": None if old is None else json.dumps(old),
                "new": None if new is None else json.dumps(new),
            }
        ],
    )


def check_key_id(key_id: str) -> str:
    """``key_id`` when it could be an id (printable, at most 32 characters)."""
    return check_text(key_id, "the key id", max_len=32)


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
        owner=getattr(r, "owner", None),
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
    check_key_id(key_id)
    with store.engine.connect() as conn:
        r = conn.execute(select(ApiKey).where(ApiKey.id == key_id)).first()
    return None if r is None else _info(r)


def list_keys(store: Store) -> list[KeyInfo]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(ApiKey).order_by(ApiKey.created, ApiKey.id)).all()
    return [_info(r) for r in rows]


def revoke_key(store: Store, key_id: str, *, actor: Actor | None = None) -> KeyInfo | None:
    """Revoke ``key_id``; returns the updated key, or ``None`` when there is no such key. The
    ``key.revoke`` admin event is written in the same transaction."""
    return _change(store, key_id, "key.revoke", {"revoked": True, "revoked_at": utcnow()}, actor)


def set_tier(store: Store, key_id: str, tier: str, *, actor: Actor | None = None) -> KeyInfo | None:
    """Move ``key_id`` to ``tier``; ``None`` when there is no such key. The ``key.tier`` admin
    event is written in the same transaction."""
    check_text(tier, "the tier", max_len=100)
    return _change(store, key_id, "key.tier", {"tier": tier}, actor)


def _change(
    store: Store, key_id: str, action: str, values: dict[str, Any], actor: Actor | None
) -> KeyInfo | None:
    check_key_id(key_id)
    where = ApiKey.id == key_id
    with store.engine.begin() as conn:
        before = conn.execute(select(ApiKey).where(where).with_for_update()).first()
        if before is None:
            return None
        conn.execute(update(ApiKey).where(where).values(**values))
        after = conn.execute(select(ApiKey).where(where)).first()
        old, new = _public(_info(before)), _public(_info(after))
        changed = [k for k in new if old[k] != new[k]]
        _event(
            conn,
            actor,
            action,
            key_id,
            {k: old[k] for k in changed},
            {k: new[k] for k in changed},
        )
    return _info(after)
