"""The gateway's store: SQLAlchemy models, Alembic migrations, the group-commit log writer."""

from privguard.gateway.store.db import Store, make_engine, utcnow
from privguard.gateway.store.models import Alert, ApiKey, Base, QueryInput, QueryLog
from privguard.gateway.store.writer import LogWriter

__all__ = [
    "Alert",
    "ApiKey",
    "Base",
    "LogWriter",
    "QueryInput",
    "QueryLog",
    "Store",
    "make_engine",
    "utcnow",
]
