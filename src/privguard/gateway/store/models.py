"""The gateway's tables (SQLAlchemy 2 declarative models).

- ``api_keys``: one row per key; the secret is stored only as its SHA-256 (secrets are 256-bit
  random strings, so a hash is enough to make a stolen table useless).
- ``query_log``: one row per prediction request: time, client, number of inputs, keyed
  HMAC-SHA256 fingerprints of the inputs (never the inputs), a summary of the outputs, the
  policy applied, status and latency.
- ``query_inputs``: raw inputs, written only for tiers with ``retain_inputs_days > 0``, each
  with the time after which ``privguard purge`` deletes it.
- ``alerts``: findings of the query monitor (issue 8).

Times are naive UTC datetimes on every backend.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text
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
