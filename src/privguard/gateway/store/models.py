"""The gateway's tables (SQLAlchemy 2 declarative models).

- ``api_keys``: one row per key; the secret is stored only as its SHA-256 (secrets are 256-bit
  random strings, so a hash is enough to make a stolen table useless).
- ``query_log``: one row per prediction request: time, client, number of inputs, keyed
  HMAC-SHA256 fingerprints of the inputs (never the inputs), a summary of the outputs, the
  policy applied, status and latency.
- ``query_inputs``: raw inputs, written only for tiers with ``retain_inputs_days > 0``, each
  with the time after which ``privguard purge`` deletes it.
- ``query_inputs``' ``data`` is AES-256-GCM ciphertext (:mod:`~privguard.gateway.store.crypto`),
  its key kept outside the database.
- ``alerts``: findings of the query monitor (issue 8); their fingerprints are keyed HMACs too.
- ``admin_events``: the admin trail: who created, revoked or re-tiered which key, from where
  (API, dashboard, CLI), with the values before and after; written in the same transaction as
  the change itself.
- ``daily_usage``: records charged per key per UTC day against the tier's daily budget when
  Redis is not used (so the budget survives restarts and is shared by workers).

Times are naive UTC datetimes on every backend.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    role: Mapped[str] = mapped_column(String(16))
    tier: Mapped[str | None] = mapped_column(String(100), nullable=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created: Mapped[datetime] = mapped_column(DateTime)
    expires: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    #: the account or organisation the key belongs to (the monitor watches its keys together)
    owner: Mapped[str | None] = mapped_column(String(200), nullable=True)


class QueryLog(Base):
    __tablename__ = "query_log"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    time: Mapped[datetime] = mapped_column(DateTime, index=True)
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    client: Mapped[str] = mapped_column(String(200))
    tier: Mapped[str | None] = mapped_column(String(100), nullable=True)
    status: Mapped[int] = mapped_column(Integer)
    n_inputs: Mapped[int] = mapped_column(Integer)
    fingerprints: Mapped[str] = mapped_column(Text)  # JSON list of hex HMAC-SHA256
    outputs: Mapped[str] = mapped_column(Text)  # JSON summary (labels, top probability)
    access: Mapped[str | None] = mapped_column(String(16), nullable=True)
    policy: Mapped[str | None] = mapped_column(String(200), nullable=True)
    latency_ms: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_query_log_client_time", "client", "time"),)


class QueryInput(Base):
    __tablename__ = "query_inputs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    query_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("query_log.id", ondelete="CASCADE"), index=True
    )
    data: Mapped[str] = mapped_column(Text)  # JSON list of records
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class Alert(Base):
    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(DateTime, index=True)
    client: Mapped[str] = mapped_column(String(200), index=True)
    detector: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(16))
    statistic: Mapped[float | None] = mapped_column(Float, nullable=True)
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    evidence: Mapped[str] = mapped_column(Text)  # JSON object


class AdminEvent(Base):
    __tablename__ = "admin_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(DateTime, index=True)
    actor: Mapped[str] = mapped_column(String(300))  # "key_ab12 (ops)" or "cli:alice"
    source: Mapped[str] = mapped_column(String(16))  # api, dashboard, cli
    action: Mapped[str] = mapped_column(String(32))  # key.create, key.revoke, key.tier
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    old: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON object
    new: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON object


class DailyUsage(Base):
    __tablename__ = "daily_usage"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD, UTC
    used: Mapped[int] = mapped_column(BigInteger)


class MonitorHold(Base):
    """A query-monitor action in force on one key (issue 19): ``block`` until an admin lifts
    it, ``throttle`` until ``until``; kept here so that it survives a restart."""

    __tablename__ = "monitor_holds"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    action: Mapped[str] = mapped_column(String(16))  # throttle or block
    until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)  # None: no end
    detector: Mapped[str] = mapped_column(String(100))
    time: Mapped[datetime] = mapped_column(DateTime)
