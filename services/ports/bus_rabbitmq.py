"""RabbitMQ event bus (``amqp://user:pass@host:port/vhost``, ``amqps://...``) on aio-pika.

Topology, declared idempotently by this adapter (a deployment may pre-declare it, with equal arguments):

- ``<exchange>`` (default ``novacorrente.events``): durable topic exchange every event is published to;
- ``<exchange>.dlx``: durable direct exchange for dead letters, routed by consumer queue name;
- per consumer queue ``q``: a durable quorum queue with ``x-delivery-limit`` (the bus's delivery limit),
  ``x-dead-letter-exchange: <exchange>.dlx``, ``x-dead-letter-routing-key: q``, at-least-once dead-lettering
  (``x-dead-letter-strategy: at-least-once``, which requires ``x-overflow: reject-publish``) and, when asked,
  ``x-expires``; plus ``q.dlq``, a durable quorum queue bound to the DLX with key ``q``.

Counting attempts: a quorum queue stamps each delivery with ``x-delivery-count`` (returns so far), so the
attempt number is that plus one and survives consumer restarts. The broker's own delivery limit is the
backstop for a consumer that dies mid-message every time; in the normal path the consumer dead-letters the
message itself on the attempt that exceeds the limit, so that the dead letter carries the handler's reason
(see ``RabbitMQBus.dead_letter``).

One connection; publishing on one channel in confirm mode; one channel per subscription, so that each has its
own prefetch and closing it returns exactly that subscription's unacknowledged messages.

Recovery. aio-pika's robust connection re-establishes the connection after a loss (every
``reconnect_interval`` seconds, a URL query parameter). The channels, though, are plain ones that the adapter
replaces itself, not aio-pika's robust channels: their restore runs inside the reconnect (after first trying
to reopen on the dying connection), and a channel left closed after a broker restart made every later publish
fail with ``ChannelInvalidStateError``, with nothing in the adapter able to repair it. Here the publishing
channel is reopened, and the exchanges re-declared, by the next ``publish`` after it died, under a lock so
that concurrent publishers open one; each subscription has a supervisor task that waits for its channel to die
(connection lost, channel error, or the broker cancelling the consumer), then re-declares its queues and
consumes again once the connection is back, retrying with a backoff until the subscription is stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
    HeadersType,
)
from aio_pika.exceptions import ChannelInvalidStateError, ChannelNotFoundEntity, ChannelPreconditionFailed
from pamqp.commands import Basic

from services.ports.bus import (
    DEAD_LETTER_ATTEMPTS_HEADER,
    DEAD_LETTER_QUEUE_HEADER,
    DEAD_LETTER_REASON_HEADER,
    DEFAULT_DELIVERY_LIMIT,
    DEFAULT_EXCHANGE,
    ORIGINAL_ROUTING_KEY_HEADER,
    BusError,
    BusUnavailable,
    Delivery,
    Handler,
    OutgoingMessage,
    PoisonMessage,
    check_subscribe_args,
    dead_letter_headers,
    describe_failure,
    header_text,
)

__all__ = ["RabbitMQBus"]

log = logging.getLogger(__name__)

_DELIVERY_COUNT = "x-delivery-count"  # set by quorum queues: how many times the message was returned
# What a broker operation can fail with when the connection or channel goes away. Wider than aio-pika's
# CONNECTION_EXCEPTIONS on purpose: aiormq fails the pending operations of a connection that died without a
# close reason (a reset socket) with a bare ``Exception``, and that must still read as "broker unavailable".
_BROKER_FAILURES: tuple[type[Exception], ...] = (Exception,)
# Backoff of a subscription re-attaching after its channel died: quick at first (a dropped connection is
# usually back at once), capped so that a long outage costs one attempt every few seconds.
_REATTACH_FIRST_DELAY = 0.2
_REATTACH_MAX_DELAY = 5.0


def _redact(url: str) -> str:
    """The URL without its password, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True, slots=True)
class _Publisher:
    """The confirm-mode channel publishing goes through, with the two exchanges declared on it."""

    channel: AbstractChannel
    exchange: AbstractExchange
    dead_letter_exchange: AbstractExchange


class RabbitMQBus:
    """An ``EventBus`` on RabbitMQ. Create it with ``await RabbitMQBus.connect(url)`` (or ``open_bus``)."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        *,
        exchange: str,
        delivery_limit: int,
        publish_timeout: float,
        operation_timeout: float,
        max_in_flight: int,
    ) -> None:
        self._connection = connection
        self._exchange_name = exchange
        self._dlx_name = f"{exchange}.dlx"
        self._delivery_limit = delivery_limit
        self._publish_timeout = publish_timeout
        self._operation_timeout = operation_timeout
        self._max_in_flight = max_in_flight
        self._publisher: _Publisher | None = None
        # One publishing channel at a time: concurrent publishes after a loss wait for the one reopening it.
        self._publisher_lock = asyncio.Lock()
        self._subscriptions: set[_RabbitSubscription] = set()
        self._closed = False

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        exchange: str = DEFAULT_EXCHANGE,
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
        publish_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        max_in_flight: int = 1000,
        connection_name: str = "novacorrente",
    ) -> RabbitMQBus:
        """Connect, open the confirm-mode publishing channel and declare the two exchanges.

        ``publish_timeout`` bounds the wait for a confirm; ``connect_timeout`` bounds connecting and, later,
        each (re)opening of a channel with its declarations; ``max_in_flight`` bounds the messages of one
        batch awaiting their confirms at the same time. The connection retries every ``reconnect_interval``
        seconds (a URL query parameter, default 5) after it is lost.
        """
        try:
            connection = await aio_pika.connect_robust(
                url, timeout=connect_timeout, client_properties={"connection_name": connection_name}
            )
        except _BROKER_FAILURES as exc:
            raise BusUnavailable(f"cannot connect to RabbitMQ at {_redact(url)}: {exc!r}") from exc
        bus = cls(
            connection,
            exchange=exchange,
            delivery_limit=delivery_limit,
            publish_timeout=publish_timeout,
            operation_timeout=connect_timeout,
            max_in_flight=max_in_flight,
        )
        try:
            await bus._publishing()
        except BaseException:
            await connection.close()
            raise
        return bus

    # -- channels -----------------------------------------------------------------------------------------

    async def open_channel(self, *, publisher_confirms: bool) -> AbstractChannel:
        """A new plain channel on the current connection, or ``BusUnavailable`` while it is down.

        Plain, not robust: the adapter replaces a channel that died itself (see the module docstring).
        """
        if self._closed:
            raise BusUnavailable("bus is closed")
        if not self._connection.connected.is_set():
            raise BusUnavailable("not connected to RabbitMQ (reconnecting)")
        channel = aio_pika.Channel(self._connection, publisher_confirms=publisher_confirms)
        try:
            async with asyncio.timeout(self._operation_timeout):
                await channel.initialize()
        except _BROKER_FAILURES as exc:
            if channel.is_initialized:
                await _close_quietly(channel)
            raise BusUnavailable(f"cannot open a channel: {exc!r}") from exc
        return channel

    @property
    def operation_timeout(self) -> float:
        """Bound of opening a channel and of each group of declarations on it."""
        return self._operation_timeout

    async def wait_connected(self) -> None:
        """Return once the connection is up (aio-pika reconnects it in the background)."""
        await self._connection.connected.wait()

    async def _publishing(self) -> _Publisher:
        """The live publishing channel; after a loss, a new one with the exchanges declared again."""
        current = self._publisher
        if current is not None and not current.channel.is_closed:
            return current
        async with self._publisher_lock:
            current = self._publisher
            if current is not None and not current.channel.is_closed:
                return current  # reopened by a concurrent publish while this one waited for the lock
            self._publisher = None
            channel = await self.open_channel(publisher_confirms=True)
            try:
                async with asyncio.timeout(self._operation_timeout):
                    topic = await channel.declare_exchange(
                        self._exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
                    )
                    dlx = await channel.declare_exchange(
                        self._dlx_name, aio_pika.ExchangeType.DIRECT, durable=True
                    )
            except ChannelPreconditionFailed as exc:
                await _close_quietly(channel)
                raise BusError(
                    f"exchange {self._exchange_name!r} or {self._dlx_name} exists with another type: {exc}"
                ) from exc
            except _BROKER_FAILURES as exc:
                await _close_quietly(channel)
                raise BusUnavailable(f"cannot declare the exchanges: {exc!r}") from exc
            except BaseException:
                await _close_quietly(channel)
                raise
            self._publisher = _Publisher(channel, topic, dlx)
            return self._publisher

    # -- publishing ---------------------------------------------------------------------------------------

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if self._closed:
            raise BusUnavailable("bus is closed")
        if not messages:
            return
        # All confirms of a window are awaited together: one round trip per message in sequence would cap a
        # batch at the broker's latency, while pipelined publishes are bounded by its throughput.
        for start in range(0, len(messages), self._max_in_flight):
            window = messages[start : start + self._max_in_flight]
            # Per window: a channel that died during the previous one is replaced before this one is sent.
            exchange = (await self._publishing()).exchange
            results = await asyncio.gather(
                *(self._confirmed(exchange, m.routing_key, _amqp_message(m)) for m in window),
                return_exceptions=True,
            )
            failures = [r for r in results if isinstance(r, BaseException)]
            if failures:
                raise BusUnavailable(
                    f"{len(failures)} of {len(window)} messages were not confirmed by the broker "
                    f"({failures[0]}); retry the batch"
                ) from failures[0]

    async def _confirmed(
        self, exchange: AbstractExchange, routing_key: str, message: aio_pika.Message
    ) -> None:
        """Publish one message and wait for the broker's confirm, or raise ``BusUnavailable``."""
        try:
            async with asyncio.timeout(self._publish_timeout):
                # mandatory=False: an event no queue is bound for is dropped by design (pub/sub), no error.
                confirmation = await exchange.publish(message, routing_key, mandatory=False)
        except TimeoutError as exc:
            raise BusUnavailable(f"no publisher confirm within {self._publish_timeout}s") from exc
        except _BROKER_FAILURES as exc:
            raise BusUnavailable(f"publish failed: {exc!r}") from exc
        if not isinstance(confirmation, Basic.Ack):
            raise BusUnavailable(f"broker did not confirm the message: {confirmation!r}")

    # -- consuming ----------------------------------------------------------------------------------------

    async def subscribe(
        self,
        queue: str,
        binding_keys: Sequence[str],
        handler: Handler,
        *,
        prefetch: int = 64,
        concurrency: int = 1,
        expires_after: float | None = None,
    ) -> _RabbitSubscription:
        if self._closed:
            raise BusUnavailable("bus is closed")
        check_subscribe_args(queue, prefetch, concurrency)
        subscription = _RabbitSubscription(
            self, queue, tuple(binding_keys), handler, prefetch, concurrency, expires_after
        )
        await subscription.start()
        self._subscriptions.add(subscription)
        return subscription

    async def declare_consumer_queue(
        self, channel: AbstractChannel, queue: str, binding_keys: Sequence[str], expires_after: float | None
    ) -> AbstractQueue:
        """Declare ``queue`` with its dead-letter queue and bindings on ``channel`` (idempotent)."""
        try:
            async with asyncio.timeout(self._operation_timeout):
                await self._declare_dead_letter_queue(channel, queue)
                declared = await channel.declare_queue(
                    queue, durable=True, arguments=self._queue_arguments(queue, expires_after)
                )
                for key in binding_keys:
                    await declared.bind(self._exchange_name, routing_key=key)
        except ChannelPreconditionFailed as exc:
            raise BusError(
                f"queue {queue!r} (or {queue}.dlq) already exists with other arguments than "
                f"{self._queue_arguments(queue, expires_after)}: {exc}"
            ) from exc
        except _BROKER_FAILURES as exc:
            raise BusUnavailable(f"cannot declare queue {queue!r}: {exc!r}") from exc
        return declared

    async def _declare_dead_letter_queue(self, channel: AbstractChannel, queue: str) -> None:
        """``queue``'s dead-letter queue, bound to the DLX under the queue's name (idempotent)."""
        dead = await channel.declare_queue(f"{queue}.dlq", durable=True, arguments={"x-queue-type": "quorum"})
        await dead.bind(self._dlx_name, routing_key=queue)

    def _queue_arguments(self, queue: str, expires_after: float | None) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "x-queue-type": "quorum",
            "x-delivery-limit": self._delivery_limit,
            "x-dead-letter-exchange": self._dlx_name,
            "x-dead-letter-routing-key": queue,
            # The broker's own dead-lettering (the crash-loop backstop) must not lose messages either.
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }
        if expires_after is not None:
            arguments["x-expires"] = max(1, round(expires_after * 1000))
        return arguments

    @property
    def delivery_limit(self) -> int:
        return self._delivery_limit

    async def dead_letter(
        self, message: AbstractIncomingMessage, delivery: Delivery, queue: str, reason: str
    ) -> None:
        """Move ``message`` to ``queue``'s dead-letter queue with ``reason``, losing nothing.

        Publish a copy carrying the reason to the DLX and wait for its confirm, *then* ack the original. If
        the copy is not confirmed, the original is requeued (not lost; if it is over the limit the broker then
        dead-letters it itself, with ``x-death``). A duplicate dead letter (same ``message_id``) can only
        arise if the connection dies between the confirm and the ack. The alternative, ``nack(requeue=False)``
        so that the broker dead-letters, cannot carry the reason; an AMQP transaction spanning the publish and
        the ack would close that gap but is not atomic across queues either and costs a round trip per
        message.
        """
        headers: HeadersType = dict(
            dead_letter_headers(
                delivery.headers,
                reason=reason,
                queue=queue,
                routing_key=delivery.routing_key,
                attempts=delivery.delivery_count,
            )
        )
        copy = aio_pika.Message(
            message.body,
            headers=headers,
            message_id=message.message_id,
            type=message.type,
            content_type=message.content_type,
            timestamp=message.timestamp,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        try:
            await self._ensure_dead_letter_queue(queue)
            await self._confirmed((await self._publishing()).dead_letter_exchange, queue, copy)
        except BusError:
            log.exception(
                "could not dead-letter message %s from %s; requeueing it", message.message_id, queue
            )
            await _settle(message.nack(requeue=True), message)
            return
        await _settle(message.ack(), message)

    async def _ensure_dead_letter_queue(self, queue: str) -> None:
        """Declare ``queue``'s dead-letter queue again before a dead letter goes to it: the broker confirms a
        message no queue is bound for and drops it, so one deleted since the subscription declared it would
        lose the message. On a channel of its own, as a refusal closes the channel it came on; a queue that
        exists with other arguments (an operator's) is a queue all the same."""
        channel = await self.open_channel(publisher_confirms=False)
        try:
            async with asyncio.timeout(self._operation_timeout):
                await self._declare_dead_letter_queue(channel, queue)
        except ChannelPreconditionFailed:
            log.warning("%s.dlq exists with other arguments than this adapter declares; using it", queue)
        except _BROKER_FAILURES as exc:  # a timeout included
            raise BusUnavailable(f"cannot declare {queue}.dlq: {exc!r}") from exc
        finally:
            await _close_quietly(channel)

    async def dead_letters(self, queue: str, *, limit: int = 1000) -> list[Delivery]:
        """Up to ``limit`` dead letters of ``queue``, oldest first, left in place (a peek, not a drain)."""
        channel = await self.open_channel(publisher_confirms=False)
        try:
            try:
                dlq = await channel.declare_queue(f"{queue}.dlq", passive=True)
            except ChannelNotFoundEntity:
                return []
            letters: list[Delivery] = []
            while len(letters) < limit:
                message = await dlq.get(no_ack=False, fail=False)
                if message is None:
                    break
                letters.append(self._dead_letter_delivery(message))
            return letters
        except _BROKER_FAILURES as exc:
            raise BusUnavailable(f"cannot read the dead letters of {queue!r}: {exc!r}") from exc
        finally:
            # Nothing was acknowledged, so closing the channel puts every message back where it was.
            await _close_quietly(channel)

    def _dead_letter_delivery(self, message: AbstractIncomingMessage) -> Delivery:
        raw = dict(message.headers or {})
        raw.pop(_DELIVERY_COUNT, None)  # the dead-letter queue's own count, meaningless to a reader
        headers = {key: header_text(value) for key, value in raw.items()}
        if DEAD_LETTER_REASON_HEADER not in headers:
            # Dead-lettered by the broker itself (a consumer kept dying mid-message): derive from x-death.
            broker_reason = headers.get("x-first-death-reason", "unknown")
            # "broker: delivery_limit" (RETURNED_OVER_LIMIT_REASON) for the crash-loop backstop.
            headers[DEAD_LETTER_REASON_HEADER] = f"broker: {broker_reason}"
            deaths = raw.get("x-death")
            first: Mapping[str, Any] = {}
            if isinstance(deaths, list) and deaths and isinstance(deaths[0], Mapping):
                first = deaths[0]
            keys = first.get("routing-keys") or [message.routing_key or ""]
            headers.setdefault(ORIGINAL_ROUTING_KEY_HEADER, header_text(keys[0]))
            headers.setdefault(DEAD_LETTER_QUEUE_HEADER, header_text(first.get("queue", "")))
            if broker_reason == "delivery_limit":
                headers.setdefault(DEAD_LETTER_ATTEMPTS_HEADER, str(self._delivery_limit + 1))
        attempts = int(headers.get(DEAD_LETTER_ATTEMPTS_HEADER, "1"))
        return Delivery(
            routing_key=headers[ORIGINAL_ROUTING_KEY_HEADER],
            body=message.body,
            type=message.type or "",
            message_id=message.message_id or "",
            headers=headers,
            redelivered=attempts > 1,
            delivery_count=attempts,
        )

    # -- lifecycle ----------------------------------------------------------------------------------------

    async def check(self) -> bool:
        """True when the broker takes messages now and every subscription of this handle is consuming.

        Reopens the publishing channel if it died (a no-op while it is alive), so that a bus which recovered
        reports so without waiting for the next publish.
        """
        if self._closed or not self._connection.connected.is_set():
            return False
        try:
            await self._publishing()
        except BusError:
            return False
        return all(s.attached for s in self._subscriptions)

    async def close(self, grace: float | None = 10.0) -> None:
        """Stop every subscription (handlers get ``grace`` seconds), then close the connection."""
        if self._closed:
            return
        self._closed = True
        subscriptions, self._subscriptions = self._subscriptions, set()
        await asyncio.gather(*(s.stop(grace) for s in subscriptions))
        self._publisher = None
        await self._connection.close()

    def forget(self, subscription: _RabbitSubscription) -> None:
        self._subscriptions.discard(subscription)


class _RabbitSubscription:
    """A consumer on one queue that re-attaches itself (new channel, queues re-declared) after losing it."""

    def __init__(
        self,
        bus: RabbitMQBus,
        queue: str,
        binding_keys: tuple[str, ...],
        handler: Handler,
        prefetch: int,
        concurrency: int,
        expires_after: float | None,
    ) -> None:
        self._bus = bus
        self._name = queue
        self._binding_keys = binding_keys
        self._handler = handler
        self._prefetch = prefetch
        self._concurrency = concurrency
        self._expires_after = expires_after
        # Deliveries wait here for a worker; at most `prefetch` of them: the broker sends no more unacked.
        self._buffer: asyncio.Queue[AbstractIncomingMessage | None] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._supervisor: asyncio.Task[None] | None = None
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._stopping = False

    @property
    def queue(self) -> str:
        return self._name

    @property
    def attached(self) -> bool:
        """Consuming now: the channel the consumer lives on is open."""
        return not self._stopping and self._channel is not None and not self._channel.is_closed

    async def start(self) -> None:
        """Attach for the first time (errors go to the caller), then keep attached in the background."""
        await self._attach()
        self._workers = [
            asyncio.create_task(self._work(), name=f"bus-rabbitmq:{self._name}:{n}")
            for n in range(self._concurrency)
        ]
        self._supervisor = asyncio.create_task(
            self._supervise(), name=f"bus-rabbitmq:{self._name}:supervisor"
        )

    async def _attach(self) -> None:
        channel = await self._bus.open_channel(publisher_confirms=False)
        try:
            try:
                async with asyncio.timeout(self._bus.operation_timeout):
                    await channel.set_qos(prefetch_count=self._prefetch)
            except _BROKER_FAILURES as exc:
                raise BusUnavailable(f"cannot set the prefetch of {self._name!r}: {exc!r}") from exc
            queue = await self._bus.declare_consumer_queue(
                channel, self._name, self._binding_keys, self._expires_after
            )
            try:
                async with asyncio.timeout(self._bus.operation_timeout):
                    tag = await queue.consume(self._on_message)
                    underlay = await channel.get_underlay_channel()
            except _BROKER_FAILURES as exc:
                raise BusUnavailable(f"cannot consume from {self._name!r}: {exc!r}") from exc
        except BaseException:
            await _close_quietly(channel)
            raise
        # The broker cancels a consumer by itself (e.g. its queue was deleted) with the channel left open:
        # close the channel then, so that the supervisor re-attaches as after any other loss.
        underlay.on_consumer_cancel_callbacks.add(self._on_consumer_cancelled)
        self._channel, self._queue, self._consumer_tag = channel, queue, tag

    def _on_consumer_cancelled(self, frame: Basic.Cancel) -> None:
        channel = self._channel
        if frame.consumer_tag != self._consumer_tag or channel is None or self._stopping:
            return
        log.warning("broker cancelled the consumer of %s; re-subscribing", self._name)
        # Not awaited here: this runs in the connection's frame reader, which the close handshake needs.
        _background(_close_quietly(channel))

    async def _supervise(self) -> None:
        """Wait for the channel to die, then attach again once the connection is back; until stopped."""
        while not self._stopping:
            channel = self._channel
            if channel is not None:
                await channel.closed()
                if self._stopping:
                    return
                log.warning("consumer channel of %s closed; re-subscribing once connected", self._name)
            self._channel = self._queue = self._consumer_tag = None
            delay = _REATTACH_FIRST_DELAY
            while not self._stopping:
                await self._bus.wait_connected()
                try:
                    await self._attach()
                except BusError as exc:  # BusUnavailable included: the connection dropped again meanwhile
                    log.info("re-subscribing %s failed (%s); retrying in %.1fs", self._name, exc, delay)
                except Exception:
                    # Not expected; but a supervisor that died would leave the subscription deaf for good.
                    log.exception("re-subscribing %s failed; retrying in %.1fs", self._name, delay)
                else:
                    log.info("re-subscribed %s", self._name)
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, _REATTACH_MAX_DELAY)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # When stopping, leave it unacknowledged: closing the channel hands it back to the queue.
        if not self._stopping:
            self._buffer.put_nowait(message)

    async def _work(self) -> None:
        while not self._stopping:
            message = await self._buffer.get()
            if message is None:
                return
            try:
                await self._process(message)
            except Exception:
                # A fault of this adapter, not of the handler (those are handled in _process): keep the worker
                # alive and hand the message back rather than hold it unacknowledged forever.
                log.exception("bus worker failed on message %s from %s", message.message_id, self.queue)
                await _settle(message.nack(requeue=True), message)

    async def _process(self, message: AbstractIncomingMessage) -> None:
        try:
            message.channel  # noqa: B018 - raises when the delivery's channel died
        except ChannelInvalidStateError:
            # Delivered on a channel lost since (reconnect): the broker has requeued it already.
            return
        raw = dict(message.headers or {})
        count = raw.pop(_DELIVERY_COUNT, 0)
        attempt = (count if isinstance(count, int) else 0) + 1
        delivery = Delivery(
            routing_key=message.routing_key or "",
            body=message.body,
            type=message.type or "",
            message_id=message.message_id or "",
            headers={key: header_text(value) for key, value in raw.items()},
            redelivered=bool(message.redelivered) or attempt > 1,
            delivery_count=attempt,
        )
        try:
            await self._handler(delivery)
        except PoisonMessage as exc:
            log.warning("dead-lettering poison message %s from %s: %s", delivery.message_id, self.queue, exc)
            await self._bus.dead_letter(message, delivery, self.queue, describe_failure(exc))
        except Exception as exc:
            if attempt > self._bus.delivery_limit:
                log.warning(
                    "dead-lettering message %s from %s after %d attempts",
                    delivery.message_id,
                    self.queue,
                    attempt,
                    exc_info=True,
                )
                await self._bus.dead_letter(message, delivery, self.queue, describe_failure(exc))
            else:
                log.info(
                    "handler failed on message %s from %s (attempt %d), redelivering: %s",
                    delivery.message_id,
                    self.queue,
                    attempt,
                    describe_failure(exc),
                )
                await _settle(message.nack(requeue=True), message)
        else:
            await _settle(message.ack(), message)
        # A cancelled handler (stop timeout) leaves the message unacknowledged: the channel close returns it.

    async def stop(self, grace: float | None = None) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._bus.forget(self)
        if self._supervisor is not None:
            # Cancelled mid-attach, _attach closes the channel it was opening; attached, it is closed below.
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        channel, queue, tag = self._channel, self._queue, self._consumer_tag
        if queue is not None and tag is not None and channel is not None and not channel.is_closed:
            try:
                await queue.cancel(tag)
            except _BROKER_FAILURES:
                log.debug("consumer cancel on %s failed; the channel is going away anyway", self.queue)
        # Fetched but not started: dropped here, still unacknowledged; the channel close below requeues them.
        while not self._buffer.empty():
            self._buffer.get_nowait()
        for _ in self._workers:
            self._buffer.put_nowait(None)
        if self._workers:
            _, pending = await asyncio.wait(self._workers, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if channel is not None:
            await _close_quietly(channel)


def _amqp_message(message: OutgoingMessage) -> aio_pika.Message:
    headers: HeadersType = dict(message.headers)
    return aio_pika.Message(
        message.body,
        headers=headers,
        message_id=message.message_id,
        type=message.type,
        timestamp=datetime.now(UTC),
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


async def _settle(outcome: Awaitable[None], message: AbstractIncomingMessage) -> None:
    """Await an ack/nack; if the channel is gone the broker requeues the message, so only log."""
    try:
        await outcome
    except _BROKER_FAILURES as exc:
        log.warning("could not settle message %s (%r); the broker will redeliver it", message.message_id, exc)


async def _close_quietly(channel: AbstractChannel) -> None:
    if channel.is_closed:
        return  # closed by the broker or with the connection: nothing to hand back
    try:
        await channel.close()
    except _BROKER_FAILURES as exc:
        log.debug("channel close failed: %r", exc)


_background_tasks: set[asyncio.Task[None]] = set()


def _background(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` without awaiting it, keeping a reference so that the task is not collected mid-way."""
    task = asyncio.get_running_loop().create_task(work)
    _background_tasks.add(task)
    task.add_done_callback(_background_tasks.discard)
