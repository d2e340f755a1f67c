"""In-process event bus (``memory://[name]``): the embedded profile's broker, with RabbitMQ's semantics.

Every ``MemoryBus`` opened with the same URL name (and exchange) on the same event loop talks to the same
in-process broker, so services composed into one process exchange events exactly as they would through
RabbitMQ; a unique name (``memory://test-1234``) gives an isolated broker. The broker lives as long as its
event loop. Semantics are those documented in ``services.ports.bus``; differences that cannot matter in one
process: ``publish`` returns once the messages are enqueued, ``prefetch`` is accepted but nothing is fetched
ahead (so ``stop()`` never has fetched-but-unstarted messages to return), and ``expires_after`` is accepted
but a queue lives as long as the broker.

All state is touched from the one event loop only, so no locks are needed: mutations happen between awaits.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from services.ports.bus import (
    DEFAULT_DELIVERY_LIMIT,
    DEFAULT_EXCHANGE,
    RETURNED_OVER_LIMIT_REASON,
    BusError,
    BusUnavailable,
    Delivery,
    Handler,
    OutgoingMessage,
    PoisonMessage,
    check_subscribe_args,
    dead_letter_headers,
    describe_failure,
)

__all__ = ["MemoryBus", "topic_matches"]

log = logging.getLogger(__name__)


@lru_cache(maxsize=1024)
def _words(key: str) -> tuple[str, ...]:
    return tuple(key.split("."))


def topic_matches(binding_key: str, routing_key: str) -> bool:
    """AMQP topic matching: ``*`` is exactly one word, ``#`` zero or more words (``a.#`` matches ``a``)."""
    return _match(_words(binding_key), 0, _words(routing_key), 0)


def _match(pattern: tuple[str, ...], i: int, words: tuple[str, ...], j: int) -> bool:
    while i < len(pattern):
        if pattern[i] == "#":
            return any(_match(pattern, i + 1, words, k) for k in range(j, len(words) + 1))
        if j >= len(words) or (pattern[i] != "*" and pattern[i] != words[j]):
            return False
        i += 1
        j += 1
    return j == len(words)


@dataclass(slots=True)
class _Envelope:
    message: OutgoingMessage
    attempts: int = 0


class _Queue:
    """A durable queue of the in-process broker: ready messages, bindings and the dead-letter list."""

    def __init__(self, name: str, delivery_limit: int, expires_after: float | None) -> None:
        self.name = name
        self.delivery_limit = delivery_limit
        self.expires_after = expires_after
        self.bindings: set[str] = set()
        self.ready: deque[_Envelope] = deque()
        self.in_flight = 0  # taken by a handler that has not finished with it
        self.dead: list[Delivery] = []
        self._waiters: set[asyncio.Future[None]] = set()

    def matches(self, routing_key: str) -> bool:
        return any(topic_matches(binding, routing_key) for binding in self.bindings)

    def wake(self) -> None:
        # Plain futures rather than asyncio.Condition: waking must be possible from synchronous code paths
        # (including an exception handler that must not await).
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def changed(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            await waiter
        finally:
            self._waiters.discard(waiter)

    def requeue(self, envelope: _Envelope) -> None:
        # Back at the head, as RabbitMQ 3.x quorum queues return a nacked message near the head.
        self.ready.appendleft(envelope)
        self.wake()

    def dead_letter(self, envelope: _Envelope, reason: str) -> None:
        message = envelope.message
        self.dead.append(
            Delivery(
                routing_key=message.routing_key,
                body=message.body,
                type=message.type,
                message_id=message.message_id,
                headers=dead_letter_headers(
                    message.headers,
                    reason=reason,
                    queue=self.name,
                    routing_key=message.routing_key,
                    attempts=envelope.attempts,
                ),
                redelivered=envelope.attempts > 1,
                delivery_count=envelope.attempts,
            )
        )


class _Broker:
    def __init__(self) -> None:
        self.queues: dict[str, _Queue] = {}

    def declare(
        self, name: str, binding_keys: Sequence[str], delivery_limit: int, expires_after: float | None
    ) -> _Queue:
        queue = self.queues.get(name)
        if queue is None:
            queue = self.queues[name] = _Queue(name, delivery_limit, expires_after)
        elif (queue.delivery_limit, queue.expires_after) != (delivery_limit, expires_after):
            # RabbitMQ refuses to redeclare a queue with other arguments (PRECONDITION_FAILED); so do we.
            raise BusError(
                f"queue {name!r} exists with delivery_limit={queue.delivery_limit}, "
                f"expires_after={queue.expires_after}; cannot redeclare it with "
                f"delivery_limit={delivery_limit}, expires_after={expires_after}"
            )
        queue.bindings.update(binding_keys)
        return queue

    def route(self, messages: Sequence[OutgoingMessage]) -> None:
        touched: set[_Queue] = set()
        for message in messages:
            for queue in self.queues.values():
                if queue.matches(message.routing_key):
                    # Each queue gets its own copy of the headers: a handler mutating them affects no other.
                    copy = OutgoingMessage(
                        message.routing_key,
                        message.body,
                        message.type,
                        message.message_id,
                        dict(message.headers),
                    )
                    queue.ready.append(_Envelope(copy))
                    touched.add(queue)
        for queue in touched:
            queue.wake()


# One broker per (event loop, name, exchange); weak on the loop so a finished loop takes its brokers with it.
_brokers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], _Broker]] = (
    weakref.WeakKeyDictionary()
)


def _broker_for(name: str, exchange: str) -> _Broker:
    per_loop = _brokers.setdefault(asyncio.get_running_loop(), {})
    return per_loop.setdefault((name, exchange), _Broker())


class _MemorySubscription:
    def __init__(
        self, queue: _Queue, handler: Handler, concurrency: int, owner: set[_MemorySubscription]
    ) -> None:
        self._queue = queue
        self._owner = owner
        self._handler = handler
        self._stopping = False
        self._workers = [
            asyncio.create_task(self._work(), name=f"bus-memory:{queue.name}:{n}") for n in range(concurrency)
        ]

    @property
    def queue(self) -> str:
        return self._queue.name

    async def _next(self) -> _Envelope | None:
        while not self._stopping:
            if self._queue.ready:
                return self._queue.ready.popleft()
            await self._queue.changed()
        return None

    async def _work(self) -> None:
        while (envelope := await self._next()) is not None:
            await self._process(envelope)
            # Yield between messages so competing subscriptions on the queue take turns, as with a broker.
            await asyncio.sleep(0)

    async def _process(self, envelope: _Envelope) -> None:
        self._queue.in_flight += 1
        try:
            await self._deliver(envelope)
        finally:
            self._queue.in_flight -= 1

    async def _deliver(self, envelope: _Envelope) -> None:
        envelope.attempts += 1
        message = envelope.message
        delivery = Delivery(
            routing_key=message.routing_key,
            body=message.body,
            type=message.type,
            message_id=message.message_id,
            headers=dict(message.headers),
            redelivered=envelope.attempts > 1,
            delivery_count=envelope.attempts,
        )
        try:
            await self._handler(delivery)
        except PoisonMessage as exc:
            log.warning("dead-lettering poison message %s from %s: %s", message.message_id, self.queue, exc)
            self._queue.dead_letter(envelope, describe_failure(exc))
        except Exception as exc:
            if envelope.attempts > self._queue.delivery_limit:
                log.warning(
                    "dead-lettering message %s from %s after %d attempts",
                    message.message_id,
                    self.queue,
                    envelope.attempts,
                    exc_info=True,
                )
                self._queue.dead_letter(envelope, describe_failure(exc))
            else:
                log.info(
                    "handler failed on message %s from %s (attempt %d), redelivering: %s",
                    message.message_id,
                    self.queue,
                    envelope.attempts,
                    describe_failure(exc),
                )
                self._queue.requeue(envelope)
        except BaseException:
            # Cancelled mid-handler (stop timeout, shutdown): the message was not processed, so it goes back,
            # as an unacknowledged message does when an AMQP channel closes, and the broker's limit applies.
            if envelope.attempts > self._queue.delivery_limit:
                self._queue.dead_letter(envelope, RETURNED_OVER_LIMIT_REASON)
            else:
                self._queue.requeue(envelope)
            raise

    async def stop(self, grace: float | None = None) -> None:
        self._stopping = True
        self._owner.discard(self)
        self._queue.wake()
        workers, self._workers = self._workers, []
        if not workers:
            return
        _, pending = await asyncio.wait(workers, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


class MemoryBus:
    """An ``EventBus`` on the in-process broker named by the URL (``memory://`` is the process default)."""

    def __init__(
        self,
        url: str = "memory://",
        *,
        exchange: str = DEFAULT_EXCHANGE,
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "memory":
            raise ValueError(f"not a memory:// URL: {url!r}")
        self._broker = _broker_for(parts.netloc + parts.path, exchange)
        self._delivery_limit = delivery_limit
        self._subscriptions: set[_MemorySubscription] = set()
        self._closed = False

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if self._closed:
            raise BusUnavailable("bus is closed")
        self._broker.route(messages)

    async def subscribe(
        self,
        queue: str,
        binding_keys: Sequence[str],
        handler: Handler,
        *,
        prefetch: int = 64,
        concurrency: int = 1,
        expires_after: float | None = None,
    ) -> _MemorySubscription:
        if self._closed:
            raise BusUnavailable("bus is closed")
        check_subscribe_args(queue, prefetch, concurrency)
        declared = self._broker.declare(queue, binding_keys, self._delivery_limit, expires_after)
        subscription = _MemorySubscription(declared, handler, concurrency, self._subscriptions)
        self._subscriptions.add(subscription)
        return subscription

    def idle(self) -> bool:
        """No message waits in any queue of this broker and no handler is working on one. A handler
        publishes before it finishes, so work that leads to more work never looks idle in between."""
        return all(not q.ready and not q.in_flight for q in self._broker.queues.values())

    async def dead_letters(self, queue: str, *, limit: int = 1000) -> list[Delivery]:
        declared = self._broker.queues.get(queue)
        return list(declared.dead[:limit]) if declared is not None else []

    async def check(self) -> bool:
        return not self._closed

    async def close(self, grace: float | None = 10.0) -> None:
        """Stop every subscription of this handle (handlers get ``grace`` seconds), then refuse new work."""
        self._closed = True
        subscriptions, self._subscriptions = self._subscriptions, set()
        await asyncio.gather(*(s.stop(grace) for s in subscriptions))
