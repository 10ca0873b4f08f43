"""The gateway's store: SQLAlchemy models, Alembic migrations, the group-commit log writer."""

from privguard.gateway.store.crypto import InputCipher
from privguard.gateway.store.db import Store, make_engine, utcnow
from privguard.gateway.store.models import (
    AdminEvent,
    Alert,
    ApiKey,
    Base,
    DailyUsage,
    QueryInput,
    QueryLog,
)
from privguard.gateway.store.writer import Charge, LogWriter

__all__ = [
    "AdminEvent",
    "Alert",
    "ApiKey",
    "Base",
    "DailyUsage",
    "InputCipher",
    "Charge",
    "LogWriter",
    "QueryInput",
    "QueryLog",
    "Store",
    "make_engine",
    "utcnow",
]
