"""The event bus port: types, semantics and the ``open_bus(url)`` factory.

Adapters: ``memory://[name]`` (in-process, ``services.ports.bus_memory``) and ``amqp://user:pass@host:port/vhost``
or ``amqps://...`` (RabbitMQ, ``services.ports.bus_rabbitmq``). Both give the same guarantees:

- **Routing.** One topic exchange (default ``novacorrente.events``). A subscription names a consumer queue and
  binding keys: ``*`` matches exactly one dot-separated word, ``#`` zero or more. A message that matches no
  queue is dropped, as AMQP does, so a queue must exist (subscribed once, or declared by the deployment's
  definitions) before the events it must not miss are published.
- **Publishing.** ``publish(batch)`` returns only when every message is safely with the broker (RabbitMQ:
  persistent and confirmed by publisher confirms; memory: enqueued). Otherwise it raises ``BusUnavailable``
  and the caller (e.g. an outbox relay) retries the whole batch later, which may duplicate messages that were
  in fact accepted: consumers must be idempotent on ``message_id``.
- **At-least-once delivery.** A handler that returns acknowledges the message. A handler that raises has it
  redelivered (``Delivery.redelivered``, ``Delivery.delivery_count`` = attempt number, 1-based) until the
  delivery limit (default 5 redeliveries, so at most 6 attempts) is exceeded; then it is dead-lettered. A
  handler that raises ``PoisonMessage(reason)`` dead-letters it at once. A message handed out but never
  settled (the consumer died or was stopped mid-handler) returns to the queue and that counts as an attempt
  too: past the limit it is dead-lettered with reason ``broker: delivery_limit``, so a message that crashes
  its consumer cannot loop forever. Order is not guaranteed after a redelivery.
- **Dead letters.** Each consumer queue ``q`` has a dead-letter queue ``q.dlq``. A dead letter keeps its body,
  type, message_id and headers, and gains ``x-dead-letter-reason`` (exception type and text),
  ``x-dead-letter-queue``, ``x-original-routing-key`` and ``x-delivery-attempts``; on RabbitMQ one the broker
  dead-lettered by itself also carries the broker's ``x-death``, rendered as JSON. ``dead_letters(q)`` lists
  them without removing them.
- **Competing consumers and fan-out.** Subscriptions on the same queue share its messages (each message goes
  to one of them); subscriptions on distinct queues with the same binding each get every message. A
  per-replica consumer (one copy of every event per replica, e.g. a read model held by each replica) is
  simply a queue name unique to the replica, e.g. ``analytics.readmodel.<pod-name>``; pass
  ``expires_after`` so that the broker deletes the queue of a replica that is gone for good.
- **Handlers** of one subscription run one at a time unless ``concurrency`` > 1; ``prefetch`` bounds how many
  messages are held un-acknowledged. ``Subscription.stop()`` stops taking messages and waits for the handlers
  in flight; messages fetched but not started go back to the queue (on RabbitMQ that return counts as a
  delivery).

Headers are ``str -> str``; the body is opaque bytes (a serialized events/v1 proto in this platform).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

__all__ = [
    "DEAD_LETTER_ATTEMPTS_HEADER",
    "DEAD_LETTER_QUEUE_HEADER",
    "DEAD_LETTER_REASON_HEADER",
    "DEFAULT_DELIVERY_LIMIT",
    "DEFAULT_EXCHANGE",
    "ORIGINAL_ROUTING_KEY_HEADER",
    "RETURNED_OVER_LIMIT_REASON",
    "BusError",
    "BusUnavailable",
    "DeferredBus",
    "Delivery",
    "EventBus",
    "Handler",
    "OutgoingMessage",
    "PoisonMessage",
    "Subscription",
    "check_subscribe_args",
    "dead_letter_headers",
    "describe_failure",
    "header_text",
    "open_bus",
]

DEFAULT_EXCHANGE = "novacorrente.events"
DEFAULT_DELIVERY_LIMIT = 5
"""Redeliveries allowed after failed attempts (RabbitMQ's ``x-delivery-limit`` meaning): 5 means 6 tries."""

DEAD_LETTER_REASON_HEADER = "x-dead-letter-reason"
DEAD_LETTER_QUEUE_HEADER = "x-dead-letter-queue"
DEAD_LETTER_ATTEMPTS_HEADER = "x-delivery-attempts"
ORIGINAL_ROUTING_KEY_HEADER = "x-original-routing-key"
RETURNED_OVER_LIMIT_REASON = "broker: delivery_limit"
"""Dead-letter reason of a message returned unsettled more times than the delivery limit (RabbitMQ words)."""

# A reason is for a human reading the dead-letter queue; a multi-kilobyte exception text would only bloat it.
_MAX_REASON_CHARS = 1000


class BusError(Exception):
    """A bus operation failed for a reason the caller cannot fix by retrying (bad configuration, misuse)."""


class BusUnavailable(BusError):
    """The broker did not take the messages (connection down, no confirm in time, nack): retry later."""


class PoisonMessage(Exception):
    """Raised by a handler for a message that can never succeed: dead-lettered at once, with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A message to publish. ``type`` is the full proto message name; ``message_id`` the event id."""

    routing_key: str
    body: bytes
    type: str
    message_id: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message as handed to a handler (or listed from a dead-letter queue)."""

    routing_key: str
    body: bytes
    type: str
    message_id: str
    headers: Mapping[str, str]
    redelivered: bool
    delivery_count: int
    """Attempt number, 1 on the first delivery; for a dead letter, the attempts made before dead-lettering."""


Handler = Callable[[Delivery], Awaitable[None]]


@runtime_checkable
class Subscription(Protocol):
    """A running consumer on one queue."""

    @property
    def queue(self) -> str: ...

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking messages and wait for the handlers in flight (cancelled after ``grace`` seconds)."""
        ...


@runtime_checkable
class EventBus(Protocol):
    """Publish to the topic exchange; consume from named queues with at-least-once delivery."""

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None: ...

    async def subscribe(
        self,
        queue: str,
        binding_keys: Sequence[str],
        handler: Handler,
        *,
        prefetch: int = 64,
        concurrency: int = 1,
        expires_after: float | None = None,
    ) -> Subscription: ...

    async def dead_letters(self, queue: str, *, limit: int = 1000) -> list[Delivery]: ...

    async def check(self) -> bool: ...

    async def close(self, grace: float | None = 10.0) -> None:
        """Stop this handle's subscriptions (handlers get ``grace`` seconds) and release the connection."""
        ...


async def open_bus(
    url: str,
    *,
    exchange: str = DEFAULT_EXCHANGE,
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
    **opts: Any,
) -> EventBus:
    """Open the bus adapter named by ``url``'s scheme; ``opts`` go to the adapter (see its constructor).

    Raises ``BusUnavailable`` when the broker cannot be reached and ``ValueError`` for an unknown scheme.
    """
    if delivery_limit < 0:
        raise ValueError(f"delivery_limit must be >= 0, got {delivery_limit}")
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        from services.ports.bus_memory import MemoryBus

        return MemoryBus(url, exchange=exchange, delivery_limit=delivery_limit, **opts)
    if scheme in ("amqp", "amqps"):
        from services.ports.bus_rabbitmq import RabbitMQBus

        return await RabbitMQBus.connect(url, exchange=exchange, delivery_limit=delivery_limit, **opts)
    raise ValueError(f"unsupported bus URL scheme {scheme!r}: use memory:// or amqp(s)://")


class DeferredBus:
    """The bus of ``url`` (``open_bus``'s), opened at its first use and again at each later use until the
    broker answers; until then every use raises ``BusUnavailable``, as a use on a lost connection does.

    For a publisher that must start while the broker is away: ingestion keeps accepting into its outbox,
    and its relay, which retries on ``BusUnavailable``, publishes once the broker answers.
    """

    def __init__(self, url: str, **options: Any) -> None:
        self._url = url
        self._options = options
        self._bus: EventBus | None = None
        self._closed = False
        self._opening = asyncio.Lock()

    async def opened(self) -> EventBus:
        """The open bus; raises ``BusUnavailable`` while the broker cannot be reached."""
        if self._bus is None:
            async with self._opening:  # one connection attempt at a time, one bus for good
                if self._closed:
                    raise BusUnavailable("the bus is closed")
                if self._bus is None:
                    self._bus = await open_bus(self._url, **self._options)
        return self._bus

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        await (await self.opened()).publish(messages)

    async def subscribe(
        self, queue: str, binding_keys: Sequence[str], handler: Handler, **options: Any
    ) -> Subscription:
        return await (await self.opened()).subscribe(queue, binding_keys, handler, **options)

    async def dead_letters(self, queue: str, *, limit: int = 1000) -> list[Delivery]:
        return await (await self.opened()).dead_letters(queue, limit=limit)

    async def check(self) -> bool:
        try:
            bus = await self.opened()
        except BusUnavailable:
            return False
        return await bus.check()

    async def close(self, grace: float | None = 10.0) -> None:
        async with self._opening:  # not while an attempt is under way: its bus would outlive the close
            self._closed = True
            if self._bus is not None:
                await self._bus.close(grace)


def describe_failure(exc: BaseException) -> str:
    """The dead-letter reason for a handler failure: the poison reason, or ``ExceptionType: text``."""
    text = exc.reason if isinstance(exc, PoisonMessage) else f"{type(exc).__name__}: {exc}"
    return text[:_MAX_REASON_CHARS]


def dead_letter_headers(
    headers: Mapping[str, str], *, reason: str, queue: str, routing_key: str, attempts: int
) -> dict[str, str]:
    """Headers of a dead letter: the original ones plus why, where from and after how many attempts."""
    return {
        **headers,
        DEAD_LETTER_REASON_HEADER: reason,
        DEAD_LETTER_QUEUE_HEADER: queue,
        ORIGINAL_ROUTING_KEY_HEADER: routing_key,
        DEAD_LETTER_ATTEMPTS_HEADER: str(attempts),
    }


def header_text(value: object) -> str:
    """Render an AMQP header value as text (the port's headers are ``str -> str``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, bool | int | float):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return json.dumps(value, default=str, sort_keys=True)


def check_subscribe_args(queue: str, prefetch: int, concurrency: int) -> None:
    """Reject subscription arguments that no adapter can honour."""
    if not queue:
        raise ValueError("queue name must not be empty")
    if prefetch < 1 or concurrency < 1 or concurrency > prefetch:
        raise ValueError(
            f"need 1 <= concurrency <= prefetch, got concurrency={concurrency}, prefetch={prefetch}"
        )
