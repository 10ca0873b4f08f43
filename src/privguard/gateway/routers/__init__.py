"""The gateway's routes, one module per area: ``predict`` (client), ``admin`` (keys, log,
alerts), ``health`` (liveness, metrics); the browser dashboard is mounted from
``gateway/dashboard.py``. ``deps`` holds the dependencies they share (gateway, caller, admin).
"""

from __future__ import annotations

from fastapi import FastAPI

from privguard.gateway.dashboard import mount_dashboard
from privguard.gateway.routers.admin import admin_router
from privguard.gateway.routers.health import health_router
from privguard.gateway.routers.predict import predict_router
from privguard.gateway.service import Gateway


def include_routers(app: FastAPI, gw: Gateway) -> None:
    """Every route of the gateway ``gw`` on ``app``."""
    app.include_router(health_router(gw))
    app.include_router(predict_router(gw))
    app.include_router(admin_router(gw))
    mount_dashboard(app, gw)  # /dashboard: admin login, keys, queries, alerts (dashboard.py)


__all__ = ["include_routers"]
