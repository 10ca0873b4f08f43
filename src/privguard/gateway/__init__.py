"""The serving gateway: access control, rate limits, output policies, input validation, an
audit log in a real database, and models sealed at rest. See docs/gateway.md.

    >>> from privguard.gateway import GatewayConfig, create_app
    >>> app = create_app(target, GatewayConfig.from_toml("gateway.toml"), db="sqlite:///g.db")
"""

from privguard.gateway.app import create_app
from privguard.gateway.config import GatewayConfig, ServeSettings, Tier
from privguard.gateway.errors import GatewayError

__all__ = ["GatewayConfig", "GatewayError", "ServeSettings", "Tier", "create_app"]
