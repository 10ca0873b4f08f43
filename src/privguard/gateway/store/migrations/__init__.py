"""Alembic migrations of the gateway's database, run programmatically by ``privguard serve``."""
