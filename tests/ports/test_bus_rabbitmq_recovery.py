"""The RabbitMQ bus recovering by itself: across a real broker restart, and after its queue was deleted.

Unlike closing the connections (``test_rabbitmq_bus_recovers_after_the_connection_is_lost``), a restart
(``rabbitmqctl stop_app`` / ``start_app``) refuses reconnects for a while and tears every channel down
mid-flight. The broker is always restarted, and kept down for as short a time as the assertions allow, since
other test runs share it.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable

import aio_pika
import pytest

from services.ports.bus import (
    DEAD_LETTER_REASON_HEADER,
    BusUnavailable,
    Delivery,
    EventBus,
    OutgoingMessage,
    PoisonMessage,
    open_bus,
)
from tests.faults.servers import rabbitmq_restored, start_rabbitmq_app, stop_rabbitmq_app

pytestmark = pytest.mark.integration

RECOVERY = 30.0  # seconds the bus gets to come back once the broker is up (it takes about one)


def message(n: int, routing_key: str = "work.item") -> OutgoingMessage:
    return OutgoingMessage(
        routing_key=routing_key,
        body=f"body-{n}".encode(),
        type="novacorrente.events.v1.Test",
        message_id=f"{n}-{uuid.uuid4().hex[:8]}",
    )


async def publish_until_accepted(bus: EventBus, batch: list[OutgoingMessage]) -> None:
    """The caller's retry loop (what the outbox relay does): BusUnavailable until the bus has recovered."""
    async with asyncio.timeout(RECOVERY):
        while True:
            try:
                await bus.publish(batch)
                return
            except BusUnavailable:
                await asyncio.sleep(0.1)


async def delete_queue(amqp_url: str, name: str) -> None:
    """Delete queue ``name`` behind the bus's back, as an operator would."""
    admin = await aio_pika.connect(amqp_url)
    try:
        channel = await admin.channel()
        await channel.queue_delete(name, if_unused=False, if_empty=False)
    finally:
        await admin.close()


async def eventually(holds: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    """Wait until ``holds()`` (a plain or async predicate) is true; fail after ``RECOVERY`` seconds."""
    deadline = time.monotonic() + RECOVERY
    while True:
        outcome = holds()
        if await outcome if inspect.isawaitable(outcome) else outcome:
            return
        assert time.monotonic() < deadline, f"not recovered within {RECOVERY}s: {what}"
        await asyncio.sleep(0.1)


@pytest.mark.fault
@pytest.mark.timeout(90)
async def test_publish_and_consume_recover_after_the_broker_restarts(amqp_url: str, unique: str) -> None:
    url = f"{amqp_url}?reconnect_interval=0.5"
    consumer_bus = await open_bus(url, exchange=f"{unique}.events")
    publisher_bus = await open_bus(url, exchange=f"{unique}.events")
    received: list[Delivery] = []

    async def handler(delivery: Delivery) -> None:
        if delivery.body == b"poison":
            raise PoisonMessage("rejected after the restart")
        received.append(delivery)

    try:
        await consumer_bus.subscribe(f"{unique}.q", ["work.*"], handler)
        before = message(0)
        await publisher_bus.publish([before])
        await eventually(lambda: len(received) == 1, "first delivery")

        with rabbitmq_restored():
            await asyncio.to_thread(stop_rabbitmq_app)
            # Down: publishing fails loudly (no hang), and neither handle claims to be healthy.
            with pytest.raises(BusUnavailable):
                await publisher_bus.publish([message(1)])
            assert await publisher_bus.check() is False
            assert await consumer_bus.check() is False
            await asyncio.to_thread(start_rabbitmq_app)

        # Up again: the same handles publish and consume without being reopened.
        after = [message(n) for n in range(2, 12)]
        await publish_until_accepted(publisher_bus, after)
        expected = {m.message_id for m in after}
        await eventually(lambda: expected <= {d.message_id for d in received}, "deliveries")
        assert [d.message_id for d in received[:1]] == [before.message_id]
        await eventually(publisher_bus.check, "publisher check")
        await eventually(consumer_bus.check, "consumer check")

        # The consumer's handle can publish too (dead-lettering goes through its own publishing channel).
        poison = OutgoingMessage("work.bad", b"poison", "novacorrente.events.v1.Test", f"p-{unique}")
        await publish_until_accepted(publisher_bus, [poison])

        async def dead_lettered() -> bool:
            return len(await consumer_bus.dead_letters(f"{unique}.q")) == 1

        await eventually(dead_lettered, "dead letter")
        [letter] = await consumer_bus.dead_letters(f"{unique}.q")
        assert letter.message_id == poison.message_id
        assert letter.headers[DEAD_LETTER_REASON_HEADER] == "rejected after the restart"
    finally:
        await publisher_bus.close()
        await consumer_bus.close()


async def test_a_subscription_whose_queue_was_deleted_declares_it_again(amqp_url: str, unique: str) -> None:
    bus = await open_bus(amqp_url, exchange=f"{unique}.events")
    received: list[Delivery] = []

    async def handler(delivery: Delivery) -> None:
        received.append(delivery)

    try:
        await bus.subscribe(f"{unique}.q", ["work.*"], handler)
        # Deleting the queue makes the broker cancel the consumer while its channel stays open.
        await delete_queue(amqp_url, f"{unique}.q")
        after = message(1)
        # Re-declared (and bound) by the subscription; until then the event would match no queue and be
        # dropped, as the port documents, so publish until it arrives.
        deadline = time.monotonic() + RECOVERY
        while after.message_id not in {d.message_id for d in received}:
            assert time.monotonic() < deadline, (
                "the subscription did not come back after its queue was deleted"
            )
            await bus.publish([after])
            await asyncio.sleep(0.2)
        await eventually(bus.check, "check")
    finally:
        await bus.close()


async def dead_letter_one(
    amqp_url: str, unique: str, change_dead_letter_queue: Callable[[], Awaitable[None]]
) -> tuple[OutgoingMessage, list[str], list[Delivery]]:
    """A handler that refuses every message on queue ``q``; ``change_dead_letter_queue`` runs once it is
    subscribed, then one message goes out. Returns it, the ids the handler saw, and the dead letters of
    ``q`` once there are any."""
    bus = await open_bus(amqp_url, exchange=f"{unique}.events")
    handled: list[str] = []

    async def refuse(delivery: Delivery) -> None:
        handled.append(delivery.message_id)
        raise PoisonMessage("cannot be read")

    letters: list[Delivery] = []

    async def dead_lettered() -> bool:
        letters[:] = await bus.dead_letters(f"{unique}.q")
        return bool(letters)

    try:
        await bus.subscribe(f"{unique}.q", ["work.*"], refuse)
        await change_dead_letter_queue()
        poison = message(1)
        await bus.publish([poison])
        await eventually(dead_lettered, "the message in the dead-letter queue")
    finally:
        await bus.close()
    return poison, handled, letters


async def test_a_poison_message_is_kept_when_its_dead_letter_queue_was_deleted(
    amqp_url: str, unique: str
) -> None:
    async def delete() -> None:
        await delete_queue(amqp_url, f"{unique}.q.dlq")

    poison, _, letters = await dead_letter_one(amqp_url, unique, delete)
    # Dead-lettered into a queue declared again, not dropped by the broker for want of one.
    assert [d.message_id for d in letters] == [poison.message_id]
    assert letters[0].headers[DEAD_LETTER_REASON_HEADER] == "cannot be read"


async def test_a_dead_letter_queue_declared_otherwise_by_an_operator_still_takes_dead_letters(
    amqp_url: str, unique: str
) -> None:
    async def replace_with_a_classic_queue() -> None:
        # Same name and binding: the adapter's declaration (quorum) is refused from now on.
        await delete_queue(amqp_url, f"{unique}.q.dlq")
        admin = await aio_pika.connect(amqp_url)
        try:
            channel = await admin.channel()
            classic = await channel.declare_queue(f"{unique}.q.dlq", durable=True)
            await classic.bind(f"{unique}.events.dlx", routing_key=f"{unique}.q")
        finally:
            await admin.close()

    poison, handled, letters = await dead_letter_one(amqp_url, unique, replace_with_a_classic_queue)
    # Moved at the first attempt, with the handler's reason (not by the broker at the delivery limit).
    assert handled == [poison.message_id]
    assert letters[0].headers[DEAD_LETTER_REASON_HEADER] == "cannot be read"
