"""The serving gateway: access control, rate limits, output policies, input validation, an
audit log in a real database, and models sealed at rest. See docs/gateway.md.

    >>> from privguard.gateway import GatewayConfig, create_app
    >>> app = create_app(target, GatewayConfig.from_toml("gateway.toml"), db="sqlite:///g.db")

The names below are imported on first use (PEP 562), so that a process that needs only part
of the gateway -- the query monitor's child process (monitor_process.py) -- does not load the
web stack.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "create_app": "privguard.gateway.app",
    "GatewayConfig": "privguard.gateway.config",
    "ServeSettings": "privguard.gateway.config",
    "Tier": "privguard.gateway.config",
    "GatewayError": "privguard.gateway.errors",
}

__all__ = ["GatewayConfig", "GatewayError", "ServeSettings", "Tier", "create_app"]


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'privguard.gateway' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
