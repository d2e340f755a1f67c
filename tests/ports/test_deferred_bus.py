"""DeferredBus: a bus that a service can start without, opened once the broker answers."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from services.ports import bus as bus_module
from services.ports.bus import BusUnavailable, DeferredBus, Delivery, EventBus, OutgoingMessage, open_bus


async def test_uses_are_unavailable_until_the_broker_answers_then_go_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    attempts = 0

    async def broker_up_at_third_attempt(url: str, **options: Any) -> EventBus:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise BusUnavailable("connection refused")
        return await open_bus(url, **options)

    monkeypatch.setattr(bus_module, "open_bus", broker_up_at_third_attempt)
    deferred = DeferredBus(f"memory://deferred-{uuid.uuid4().hex}")
    message = OutgoingMessage(routing_key="t.x", body=b"1", type="t", message_id="m1")
    with pytest.raises(BusUnavailable):
        await deferred.publish([message])
    assert not await deferred.check()  # the second attempt
    got: list[Delivery] = []

    async def handle(delivery: Delivery) -> None:
        got.append(delivery)

    sub = await deferred.subscribe("deferred.q", ["t.#"], handle)  # the third: the broker answers
    await deferred.publish([message])
    for _ in range(100):
        if got:
            break
        await asyncio.sleep(0.01)
    assert [d.message_id for d in got] == ["m1"]
    assert await deferred.check()
    assert attempts == 3  # opened once, then kept
    await sub.stop()
    await deferred.close()
    with pytest.raises(BusUnavailable):
        await deferred.publish([message])
