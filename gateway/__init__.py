"""HTTP gateway: JSON API (OpenAPI), server-sent events and the planner dashboard over the services' gRPC.

Entry points: ``python -m gateway``; in-process ``await build_gateway(settings)`` (``gateway.server``);
the ASGI app ``create_app(settings)`` (``gateway.app``); development users ``create_dev_users(path)``
(``gateway.users``). Importing this package does nothing else.
"""

from gateway.app import create_app
from gateway.server import GatewayServer, build_gateway
from gateway.settings import GatewaySettings
from gateway.users import create_dev_users

__all__ = ["GatewayServer", "GatewaySettings", "build_gateway", "create_app", "create_dev_users"]
