"""One contract for the event bus, run against the in-process broker and against RabbitMQ."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import pytest

from services.ports.bus import (
    DEAD_LETTER_REASON_HEADER,
    RETURNED_OVER_LIMIT_REASON,
    BusError,
    BusUnavailable,
    Delivery,
    EventBus,
    OutgoingMessage,
    PoisonMessage,
    open_bus,
)
from services.ports.bus_memory import topic_matches
from tests.ports.conftest import BusFactory

WAIT = 10.0  # seconds; generous, a passing test takes milliseconds to a second


def message(routing_key: str, n: int = 0, **headers: str) -> OutgoingMessage:
    return OutgoingMessage(
        routing_key=routing_key,
        body=f"body-{n}".encode(),
        type="novacorrente.events.v1.Test",
        message_id=f"{routing_key}#{n}-{uuid.uuid4().hex[:8]}",
        headers=headers,
    )


class Recorder:
    """A handler that records deliveries and lets a test wait for a number of them."""

    def __init__(self, delay: float = 0.0, also: Recorder | None = None) -> None:
        self.deliveries: list[Delivery] = []
        self.delay = delay
        self.also = also  # a second recorder that sees every delivery too (a tally over several handlers)
        self._changed = asyncio.Event()

    async def __call__(self, delivery: Delivery) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        self.record(delivery)

    def record(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        self._changed.set()
        if self.also is not None:
            self.also.record(delivery)

    @property
    def ids(self) -> list[str]:
        return [d.message_id for d in self.deliveries]

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(WAIT):
            while len(self.deliveries) < count:
                self._changed.clear()
                await self._changed.wait()


async def wait_for_dead_letters(bus: EventBus, queue: str, count: int) -> list[Delivery]:
    deadline = time.monotonic() + WAIT
    while True:
        letters = await bus.dead_letters(queue)
        if len(letters) >= count or time.monotonic() > deadline:
            return letters
        await asyncio.sleep(0.05)


async def test_routes_by_topic_pattern(bus: EventBus, unique: str) -> None:
    recorder = Recorder()
    await bus.subscribe(f"{unique}.q", ["inventory.*.low", "forecast.#"], recorder)
    matching = [
        message("inventory.site1.low", 1, tenant="nova"),
        message("forecast"),
        message("forecast.a.b"),
    ]
    others = [message("inventory.site1.x.low"), message("inventory.low"), message("alerts.raised")]
    await bus.publish([others[0], matching[0], others[1], matching[1], others[2], matching[2]])
    # Published after the first batch was confirmed, so it is queued behind anything that batch routed here.
    sentinel = message("forecast.done")
    await bus.publish([sentinel])

    await recorder.wait_for(4)
    assert recorder.ids == [m.message_id for m in [*matching, sentinel]]
    first = recorder.deliveries[0]
    assert first.routing_key == "inventory.site1.low"
    assert first.body == b"body-1"
    assert first.type == "novacorrente.events.v1.Test"
    assert dict(first.headers) == {"tenant": "nova"}
    assert (first.redelivered, first.delivery_count) == (False, 1)


async def test_batch_of_1000_is_delivered_completely(bus: EventBus, unique: str) -> None:
    recorder = Recorder()
    await bus.subscribe(f"{unique}.q", ["batch.#"], recorder)
    batch = [message("batch.item", n) for n in range(1000)]

    await bus.publish(batch)

    await recorder.wait_for(1000)
    assert Counter(recorder.ids) == Counter(m.message_id for m in batch)


async def test_failed_handler_gets_the_message_again_until_it_succeeds(bus: EventBus, unique: str) -> None:
    attempts: list[Delivery] = []
    done = asyncio.Event()

    async def flaky(delivery: Delivery) -> None:
        attempts.append(delivery)
        if len(attempts) < 3:
            raise ConnectionError("database not ready")
        done.set()

    queue = f"{unique}.q"
    await bus.subscribe(queue, ["work.*"], flaky)
    sent = message("work.item")
    await bus.publish([sent])

    async with asyncio.timeout(WAIT):
        await done.wait()
    await asyncio.sleep(0.2)  # a duplicate after the success would show up here
    assert [a.message_id for a in attempts] == [sent.message_id] * 3
    assert [(a.redelivered, a.delivery_count) for a in attempts] == [(False, 1), (True, 2), (True, 3)]
    assert attempts[-1].body == sent.body
    assert await bus.dead_letters(queue) == []


async def test_message_is_dead_lettered_with_reason_once_the_delivery_limit_is_exceeded(
    open_test_bus: BusFactory, unique: str
) -> None:
    bus = await open_test_bus(delivery_limit=2)
    attempts: list[int] = []

    async def failing(delivery: Delivery) -> None:
        attempts.append(delivery.delivery_count)
        raise ValueError(f"cannot apply {delivery.message_id}")

    queue = f"{unique}.q"
    await bus.subscribe(queue, ["work.*"], failing)
    sent = message("work.item", 7, origin="erp")
    await bus.publish([sent])

    letters = await wait_for_dead_letters(bus, queue, 1)
    assert attempts == [1, 2, 3]  # the first delivery and delivery_limit=2 redeliveries
    assert len(letters) == 1
    letter = letters[0]
    assert (letter.message_id, letter.body, letter.type) == (sent.message_id, sent.body, sent.type)
    assert letter.routing_key == "work.item"
    assert letter.delivery_count == 3
    assert letter.headers[DEAD_LETTER_REASON_HEADER] == f"ValueError: cannot apply {sent.message_id}"
    assert letter.headers["origin"] == "erp"
    # Listing dead letters does not consume them.
    assert await bus.dead_letters(queue) == letters


async def test_poison_message_is_dead_lettered_at_once(bus: EventBus, unique: str) -> None:
    handled = Recorder()

    async def strict(delivery: Delivery) -> None:
        if delivery.body == b"body-0":
            raise PoisonMessage("body is not an events/v1 message")
        await handled(delivery)

    queue = f"{unique}.q"
    await bus.subscribe(queue, ["work.*"], strict)
    poison, good = message("work.item", 0), message("work.item", 1)
    await bus.publish([poison, good])

    letters = await wait_for_dead_letters(bus, queue, 1)
    assert [(d.message_id, d.delivery_count) for d in letters] == [(poison.message_id, 1)]
    assert letters[0].headers[DEAD_LETTER_REASON_HEADER] == "body is not an events/v1 message"
    await handled.wait_for(1)
    assert handled.ids == [good.message_id]


async def test_distinct_queues_each_get_every_message(open_test_bus: BusFactory, unique: str) -> None:
    # Two replicas, each with its own queue on the same binding (per-replica read models).
    replica_a, replica_b = await open_test_bus(), await open_test_bus()
    seen_a, seen_b = Recorder(), Recorder()
    # expires_after: the broker drops the queue of a replica that is gone for good.
    await replica_a.subscribe(f"{unique}.replica-a", ["ingestion.batch.*"], seen_a, expires_after=600)
    await replica_b.subscribe(f"{unique}.replica-b", ["ingestion.batch.*"], seen_b, expires_after=600)
    batch = [message("ingestion.batch.committed", n) for n in range(50)]

    await replica_a.publish(batch)

    await seen_a.wait_for(50)
    await seen_b.wait_for(50)
    expected = sorted(m.message_id for m in batch)
    assert sorted(seen_a.ids) == expected
    assert sorted(seen_b.ids) == expected


async def test_consumers_of_one_queue_share_its_messages(open_test_bus: BusFactory, unique: str) -> None:
    replica_a, replica_b = await open_test_bus(), await open_test_bus()
    seen_any = Recorder()
    seen_a, seen_b = Recorder(delay=0.002, also=seen_any), Recorder(delay=0.002, also=seen_any)
    await replica_a.subscribe(f"{unique}.shared", ["work.*"], seen_a, prefetch=5)
    await replica_b.subscribe(f"{unique}.shared", ["work.*"], seen_b, prefetch=5)
    batch = [message("work.item", n) for n in range(200)]

    await replica_a.publish(batch)

    await seen_any.wait_for(len(batch))
    await asyncio.sleep(0.2)  # a duplicate would arrive here
    assert Counter(seen_a.ids + seen_b.ids) == Counter(m.message_id for m in batch)
    assert seen_a.deliveries and seen_b.deliveries, "both consumers should have taken a share"


async def test_stop_lets_the_handler_in_flight_finish(open_test_bus: BusFactory, unique: str) -> None:
    bus = await open_test_bus()
    queue = f"{unique}.q"
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[str] = []

    async def slow(delivery: Delivery) -> None:
        started.set()
        await release.wait()
        finished.append(delivery.message_id)

    subscription = await bus.subscribe(queue, ["work.*"], slow)
    first = message("work.item", 1)
    await bus.publish([first])
    async with asyncio.timeout(WAIT):
        await started.wait()

    stopping = asyncio.create_task(subscription.stop())
    await asyncio.sleep(0.2)
    assert not stopping.done(), "stop() must wait for the handler in flight"
    release.set()
    async with asyncio.timeout(WAIT):
        await stopping
    assert finished == [first.message_id]

    # The finished message was acknowledged; one published after stop() waits for the next consumer.
    second = message("work.item", 2)
    await bus.publish([second])
    await asyncio.sleep(0.2)
    assert finished == [first.message_id]
    recorder = Recorder()
    await bus.subscribe(queue, ["work.*"], recorder)
    await recorder.wait_for(1)
    await asyncio.sleep(0.2)
    assert recorder.ids == [second.message_id]


async def test_stop_cancels_a_handler_that_outlives_the_grace_period(
    open_test_bus: BusFactory, unique: str
) -> None:
    bus = await open_test_bus()
    queue = f"{unique}.q"
    started = asyncio.Event()

    async def stuck(delivery: Delivery) -> None:
        started.set()
        await asyncio.Event().wait()

    subscription = await bus.subscribe(queue, ["work.*"], stuck)
    sent = message("work.item")
    await bus.publish([sent])
    async with asyncio.timeout(WAIT):
        await started.wait()
        await subscription.stop(grace=0.1)

    # Not acknowledged, so not lost: the next consumer gets it again.
    recorder = Recorder()
    await bus.subscribe(queue, ["work.*"], recorder)
    await recorder.wait_for(1)
    assert recorder.ids == [sent.message_id]
    assert recorder.deliveries[0].redelivered


async def test_a_message_that_never_settles_is_dead_lettered_past_the_limit(
    open_test_bus: BusFactory, unique: str
) -> None:
    # A consumer that dies mid-message every time must not loop on it forever.
    bus = await open_test_bus(delivery_limit=1)
    queue = f"{unique}.q"
    starts: list[int] = []
    started = asyncio.Event()

    async def stuck(delivery: Delivery) -> None:
        starts.append(delivery.delivery_count)
        started.set()
        await asyncio.Event().wait()

    sent = message("work.item", 3)
    for attempt in (1, 2):
        started.clear()
        subscription = await bus.subscribe(queue, ["work.*"], stuck)
        if attempt == 1:
            await bus.publish([sent])
        async with asyncio.timeout(WAIT):
            await started.wait()
        await subscription.stop(grace=0.01)

    letters = await wait_for_dead_letters(bus, queue, 1)
    assert starts == [1, 2]
    assert [(d.message_id, d.routing_key, d.delivery_count) for d in letters] == [
        (sent.message_id, "work.item", 2)
    ]
    assert letters[0].headers[DEAD_LETTER_REASON_HEADER] == RETURNED_OVER_LIMIT_REASON


async def test_dead_letters_of_an_unknown_queue_is_empty(bus: EventBus, unique: str) -> None:
    assert await bus.dead_letters(f"{unique}.never-declared") == []


async def test_handlers_run_concurrently_when_asked(bus: EventBus, unique: str) -> None:
    active, peak = 0, 0
    all_in = asyncio.Event()

    async def handler(delivery: Delivery) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        if active == 4:
            all_in.set()
        async with asyncio.timeout(WAIT):
            await all_in.wait()
        active -= 1

    await bus.subscribe(f"{unique}.q", ["work.*"], handler, concurrency=4)
    await bus.publish([message("work.item", n) for n in range(8)])
    async with asyncio.timeout(WAIT):
        await all_in.wait()
    assert peak == 4


async def test_redeclaring_a_queue_with_another_delivery_limit_is_refused(
    open_test_bus: BusFactory, unique: str
) -> None:
    first, second = await open_test_bus(delivery_limit=5), await open_test_bus(delivery_limit=2)
    await first.subscribe(f"{unique}.q", ["work.*"], Recorder())
    with pytest.raises(BusError, match=f"{unique}.q"):
        await second.subscribe(f"{unique}.q", ["work.*"], Recorder())


async def test_check_and_close(bus: EventBus) -> None:
    assert await bus.check() is True
    await bus.close()
    assert await bus.check() is False
    with pytest.raises(BusUnavailable):
        await bus.publish([message("work.item")])


async def test_publishing_nothing_is_a_no_op(bus: EventBus) -> None:
    await bus.publish([])


async def test_unreachable_broker_is_reported_as_unavailable() -> None:
    started = time.monotonic()
    with pytest.raises(BusUnavailable, match=r"127\.0\.0\.1:1") as raised:
        await open_bus("amqp://guest:secret@127.0.0.1:1/", connect_timeout=2)
    assert "secret" not in str(raised.value)
    assert time.monotonic() - started < 5


async def test_unknown_scheme_is_rejected() -> None:
    with pytest.raises(ValueError, match="kafka"):
        await open_bus("kafka://127.0.0.1:9092")


@pytest.mark.parametrize(
    ("binding", "key", "expected"),
    [
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a.c", False),
        ("a.*.c", "a.b.b.c", False),
        ("a.#", "a", True),
        ("a.#", "a.b.c", True),
        ("#.c", "c", True),
        ("#.c", "a.b.c", True),
        ("#", "anything.at.all", True),
        ("a.#.c", "a.c", True),
        ("a.#.c", "a.x.y.c", True),
        ("a.#.c", "a.x.y.d", False),
        ("*", "a.b", False),
        ("a.b", "a.b", True),
        ("a.b", "a.bb", False),
    ],
)
def test_topic_matching_follows_amqp(binding: str, key: str, expected: bool) -> None:
    assert topic_matches(binding, key) is expected


@pytest.mark.integration
async def test_rabbitmq_bus_recovers_after_the_connection_is_lost(amqp_url: str, unique: str) -> None:
    bus = await open_bus(f"{amqp_url}?reconnect_interval=0.2", exchange=f"{unique}.events")
    try:
        recorder = Recorder()
        await bus.subscribe(f"{unique}.q", ["work.*"], recorder)
        await bus.publish([message("work.item", 0)])
        await recorder.wait_for(1)

        vhost = amqp_url.rsplit("/", 1)[1]
        closer = await asyncio.create_subprocess_exec(
            "rabbitmqctl",
            "-q",
            "close_all_connections",
            "-p",
            vhost,
            "test",
            stdout=asyncio.subprocess.DEVNULL,
        )
        assert await closer.wait() == 0
        # Publishing fails loudly while the connection is down, then works again: the caller's retry loop.
        after = message("work.item", 1)
        async with asyncio.timeout(WAIT):
            while True:
                try:
                    await bus.publish([after])
                    break
                except BusUnavailable:
                    await asyncio.sleep(0.1)
        # The subscription was restored with the connection.
        await recorder.wait_for(2)
        assert recorder.ids[-1] == after.message_id
        assert await bus.check() is True
    finally:
        await bus.close()
