"""Database access: engines for SQLite (WAL, the default) and PostgreSQL, Alembic migrations run
programmatically, and the queries the gateway and the CLI need.

Engines are made with ``hide_parameters=True``: an error never carries a statement's parameters
(a key's secret hash, a client's name) into a log. SQLite files are created mode 0600.

SQLite runs in WAL mode with ``synchronous=FULL``: a committed transaction survives a crash of
the process and of the machine. PostgreSQL is used through psycopg 3
(``postgresql+psycopg://user@host:5432/db``); a ``?options=-csearch_path%3DSCHEMA`` query keeps
the tables in their own schema.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, create_engine, delete, event, func, insert, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

from privguard.errors import ConfigError
from privguard.gateway.redact import redact_url
from privguard.gateway.store.crypto import InputCipher
from privguard.gateway.store.models import (
    AdminEvent,
    Alert,
    DailyUsage,
    MonitorHold,
    QueryInput,
    QueryLog,
)

log = logging.getLogger("privguard.gateway")

MIGRATIONS = Path(__file__).parent / "migrations"


def utcnow() -> datetime:
    """Naive UTC now (the convention of every time column)."""
    return datetime.now(UTC).replace(tzinfo=None)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get WAL, full sync and a busy timeout."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"cannot parse database URL {redact_url(url)!r}; use sqlite:///path/to/file.db or "
            "postgresql+psycopg://user@host:5432/dbname"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ConfigError("the audit log needs a file: use sqlite:///path/to/file.db")
        _private_file(Path(parsed.database).expanduser())
        engine = create_engine(
            parsed,
            connect_args={"timeout": 30, "check_same_thread": False},
            hide_parameters=True,
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    if backend == "postgresql":
        try:
            return create_engine(
                parsed, pool_pre_ping=True, pool_size=8, max_overflow=8, hide_parameters=True
            )
        except (ImportError, ArgumentError) as e:
            raise ConfigError(
                f"cannot use {redact_url(url)!r}: {type(e).__name__}; install psycopg[binary]"
            ) from None
    raise ConfigError(
        f"unsupported database {backend!r}; use sqlite:///file.db or postgresql+psycopg://..."
    )


def _private_file(path: Path) -> None:
    """Create the SQLite file ``path`` readable by its owner only (0600) before SQLite opens
    it: it may hold retained inputs. SQLite gives its ``-wal`` and ``-shm`` files the same mode.
    An existing file keeps its mode, with a warning when other users can read it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            log.warning("%s can be read by other users; chmod 600 it", path)
        return
    except OSError as e:
        raise ConfigError(f"cannot create the audit database {path}: {e.strerror}") from None
    os.close(fd)


class Store:
    """The gateway's database: keys, query log, retained inputs, alerts."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._charge_stmt: Any = None  # charge_budget_in's statement, built at first use

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    def describe(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    # -- schema --------------------------------------------------------------------------
    def _alembic(self, connection) -> Any:
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = connection
        return cfg

    def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent)."""
        from alembic import command

        try:
            with self.engine.begin() as conn:
                command.upgrade(self._alembic(conn), "head")
        except OperationalError as e:
            raise ConfigError(
                f"cannot open the audit database {self.describe()}: {_first_line(e.orig)}; "
                "check --db"
            ) from None

    def revision(self) -> str | None:
        """The schema revision in the database (``None`` before the first migration)."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def head(self) -> str:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self._alembic(None)).get_current_head()

    def check_schema(self) -> None:
        try:
            current = self.revision()
        except OperationalError as e:
            raise ConfigError(
                f"cannot open the audit database {self.describe()}: {_first_line(e.orig)}; "
                "check --db"
            ) from None
        if current != self.head():
            raise ConfigError(
                f"the audit database {self.describe()} is at schema revision {current}, not "
                f"{self.head()}; start `privguard serve` once (it migrates) or check --db"
            )

    def integrity_ok(self) -> bool:
        """SQLite's ``PRAGMA integrity_check`` (always true on other backends)."""
        if self.backend != "sqlite":
            return True
        with self.engine.connect() as conn:
            return conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"

    def close(self) -> None:
        self.engine.dispose()

    # -- query log -----------------------------------------------------------------------
    def write_queries(self, rows: list[dict[str, Any]], inputs: list[dict[str, Any]]) -> None:
        """Insert log rows (and retained inputs) in one transaction: one commit per batch."""
        with self.engine.begin() as conn:
            if rows:
                conn.execute(insert(QueryLog), rows)
            if inputs:
                conn.execute(insert(QueryInput), inputs)

    def queries(self, client: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        q = select(QueryLog).order_by(QueryLog.time.desc(), QueryLog.id).limit(limit)
        if client:
            q = q.where(QueryLog.client == client)
        with self.engine.connect() as conn:
            rows = conn.execute(q).mappings().all()
        return [_query_row(r) for r in rows]

    def count_queries(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(QueryLog)).scalar_one())

    def all_fingerprints(self, status: int | None = 200) -> set[str]:
        """Every input fingerprint in the log (of requests answered ``status``)."""
        q = select(QueryLog.fingerprints)
        if status is not None:
            q = q.where(QueryLog.status == status)
        out: set[str] = set()
        with self.engine.connect() as conn:
            for (fps,) in conn.execute(q):
                out.update(json.loads(fps))
        return out

    def retained_inputs(self, cipher: InputCipher | None = None) -> list[dict[str, Any]]:
        """The retained input rows; ``data`` decrypted when ``cipher`` is given (else as stored,
        ciphertext)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(QueryInput)).mappings().all()
        out = [dict(r) for r in rows]
        if cipher is not None:
            for r in out:
                r["data"] = cipher.decrypt(r["data"], r["query_id"])
        return out

    # -- daily budgets (without Redis) ---------------------------------------------------
    def charge_budget(self, key_id: str, day: str, n: int, budget: int) -> tuple[bool, int]:
        """Charge ``n`` records to ``key_id``'s count of ``day`` if the total stays within
        ``budget``, atomically: one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE used + n <=
        budget`` (concurrent workers cannot both take the last records; one round trip and one
        commit). Returns (charged, records used today after the attempt)."""
        with self.engine.begin() as conn:
            return self.charge_budget_in(conn, key_id, day, n, budget)

    def charge_budget_in(
        self, conn: Any, key_id: str, day: str, n: int, budget: int
    ) -> tuple[bool, int]:
        """:meth:`charge_budget` inside the caller's transaction on ``conn`` (the log writer
        charges a batch's budgets in the transaction that logs its rows, store/writer.py)."""
        if n > budget:
            return False, self._used(conn, key_id, day)
        if self._charge_stmt is None:  # built once: the writer runs it for every batch
            dialect = sqlite_insert if self.backend == "sqlite" else pg_insert
            stmt = dialect(DailyUsage).values(
                key_id=bindparam("key_id"), day=bindparam("day"), used=bindparam("n")
            )
            self._charge_stmt = stmt.on_conflict_do_update(
                index_elements=[DailyUsage.key_id, DailyUsage.day],
                set_={"used": DailyUsage.used + bindparam("n")},
                where=DailyUsage.used + bindparam("n") <= bindparam("budget"),
            ).returning(DailyUsage.used)
        params = {"key_id": key_id, "day": day, "n": int(n), "budget": int(budget)}
        used = conn.execute(self._charge_stmt, params).scalar()
        if used is not None:
            return True, int(used)
        return False, self._used(conn, key_id, day)

    @staticmethod
    def _used(conn: Any, key_id: str, day: str) -> int:
        q = select(DailyUsage.used).where(DailyUsage.key_id == key_id, DailyUsage.day == day)
        return int(conn.execute(q).scalar() or 0)

    def used_today(self, key_id: str, day: str) -> int:
        with self.engine.connect() as conn:
            return self._used(conn, key_id, day)

    def admin_events(self, limit: int = 100) -> list[dict[str, Any]]:
        """The admin trail, newest first."""
        q = select(AdminEvent).order_by(AdminEvent.time.desc(), AdminEvent.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(q).mappings().all()
        return [
            {
                "time": _iso(r["time"]),
                "actor": r["actor"],
                "source": r["source"],
                "action": r["action"],
                "key_id": r["key_id"],
                "old": json.loads(r["old"]) if r["old"] else None,
                "new": json.loads(r["new"]) if r["new"] else None,
            }
            for r in rows
        ]

    # -- alerts --------------------------------------------------------------------------
    def add_alerts(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            with self.engine.begin() as conn:
                conn.execute(insert(Alert), rows)

    def alerts(self, client: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        q = select(Alert).order_by(Alert.time.desc(), Alert.id.desc()).limit(limit)
        if client:
            q = q.where(Alert.client == client)
        with self.engine.connect() as conn:
            rows = conn.execute(q).mappings().all()
        return [
            {
                "client": r["client"],
                "detector": r["detector"],
                "action": r["action"],
                "statistic": r["statistic"],
                "threshold": r["threshold"],
                "evidence": json.loads(r["evidence"]),
                "time": _iso(r["time"]),
            }
            for r in rows
        ]

    # -- monitor holds (issue 19) ---------------------------------------------------------
    def put_hold(self, key_id: str, action: str, until: datetime | None, detector: str) -> None:
        """Record a ``throttle`` (until ``until``, UTC) or ``block`` (``until=None``) on
        ``key_id``; a block is never shortened by a later throttle."""
        dialect = sqlite_insert if self.backend == "sqlite" else pg_insert
        values = {
            "key_id": key_id,
            "action": action,
            "until": until,
            "detector": detector,
            "time": utcnow(),
        }
        stmt = dialect(MonitorHold).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[MonitorHold.key_id],
            set_={k: v for k, v in values.items() if k != "key_id"},
            where=MonitorHold.action != "block",
        )
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def holds(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """Holds in force at ``now``: every block, and throttles not yet over."""
        now = now or utcnow()
        q = select(MonitorHold).where((MonitorHold.until.is_(None)) | (MonitorHold.until > now))
        with self.engine.connect() as conn:
            rows = conn.execute(q).mappings().all()
        return [
            {
                "key_id": r["key_id"],
                "action": r["action"],
                "until": _iso(r["until"]),
                "seconds_left": None if r["until"] is None else (r["until"] - now).total_seconds(),
                "detector": r["detector"],
                "time": _iso(r["time"]),
            }
            for r in rows
        ]

    def release_hold(self, key_id: str) -> bool:
        """Lift the hold on ``key_id``; whether there was one."""
        with self.engine.begin() as conn:
            done = conn.execute(delete(MonitorHold).where(MonitorHold.key_id == key_id))
            return done.rowcount > 0

    # -- retention -----------------------------------------------------------------------
    def purge(
        self, *, now: datetime | None = None, log_retention_days: float | None = None
    ) -> dict[str, int]:
        """Delete retained inputs past their expiry and, when ``log_retention_days`` is set,
        log rows and alerts (whose evidence holds input fingerprints) older than that; daily
        budget counts of days before yesterday go too. Returns the rows deleted per table."""
        now = now or utcnow()
        with self.engine.begin() as conn:
            n_inputs = conn.execute(delete(QueryInput).where(QueryInput.expires_at <= now))
            removed = {"query_inputs": n_inputs.rowcount or 0, "query_log": 0, "alerts": 0}
            if log_retention_days is not None:
                cutoff = now - timedelta(days=log_retention_days)
                old = select(QueryLog.id).where(QueryLog.time < cutoff)
                conn.execute(delete(QueryInput).where(QueryInput.query_id.in_(old)))
                res = conn.execute(delete(QueryLog).where(QueryLog.time < cutoff))
                removed["query_log"] = res.rowcount or 0
                res = conn.execute(delete(Alert).where(Alert.time < cutoff))
                removed["alerts"] = res.rowcount or 0
            stale = f"{now - timedelta(days=2):%Y-%m-%d}"
            conn.execute(delete(DailyUsage).where(DailyUsage.day < stale))
        return removed


def _first_line(e: BaseException | None) -> str:
    """A driver error's first line (later lines may quote the statement)."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def _query_row(r: Any) -> dict[str, Any]:
    return {
        "id": r["id"],
        "time": _iso(r["time"]),
        "client": r["client"],
        "key_id": r["key_id"],
        "tier": r["tier"],
        "status": r["status"],
        "n_inputs": r["n_inputs"],
        "fingerprints": json.loads(r["fingerprints"]),
        "outputs": json.loads(r["outputs"]),
        "access": r["access"],
        "policy": r["policy"],
        "latency_ms": r["latency_ms"],
    }


__all__ = ["Store", "SQLAlchemyError", "make_engine", "utcnow"]
