"""Swappable infrastructure ports, each with an embedded and a production adapter chosen by URL.

- ``services.ports.bus``: the event bus, ``memory://`` or ``amqp://`` / ``amqps://`` (RabbitMQ).
- ``services.ports.cache``: the result cache, ``memory://`` or ``redis://`` / ``rediss://``.

Adapters are imported lazily by the factories, so a process on the embedded profile never imports the client
library of a server it does not use.
"""

from services.ports.bus import (
    BusError,
    BusUnavailable,
    Delivery,
    EventBus,
    Handler,
    OutgoingMessage,
    PoisonMessage,
    Subscription,
    open_bus,
)
from services.ports.cache import Cache, open_cache

__all__ = [
    "BusError",
    "BusUnavailable",
    "Cache",
    "Delivery",
    "EventBus",
    "Handler",
    "OutgoingMessage",
    "PoisonMessage",
    "Subscription",
    "open_bus",
    "open_cache",
]
