"""Server-sent events over a gRPC server stream (AnalyticsService.WatchAlerts).

Wire format (text/event-stream)::

    retry: 5000                         reconnect delay for EventSource
    : connected                         comment, sent at once so the client knows the stream is open

    id: <alert_id>.<n>                  one event per Alert message (raised, then every state change)
    event: alert
    data: {...AlertOut...}

    : keepalive                         every ``sse_heartbeat_seconds`` of silence (proxies, dead peers)

    event: stream_error                 the upstream failed mid-stream; the body is the usual error body,
    data: {"error": {...}}              then the stream ends (EventSource reconnects unless told otherwise)

The stream ends at the first of: client gone, upstream end or error, gateway shutdown, ``sse_max_seconds``,
or the caller's token expiring (a stream must not outlive the credentials that opened it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from pydantic import BaseModel

from gateway.middleware import GatewayMetrics
from gateway.status import ApiError, from_rpc_error
from services.kit.logging import request_id_var

__all__ = ["event", "stream_events"]

_END = object()


def event(name: str, payload: BaseModel | dict[str, Any], *, event_id: str = "") -> bytes:
    data = payload.model_dump_json() if isinstance(payload, BaseModel) else json.dumps(payload)
    head = f"id: {event_id}\n" if event_id else ""
    # model_dump_json never emits raw newlines, so one data line holds the whole object.
    return f"{head}event: {name}\ndata: {data}\n\n".encode()


def _error_payload(error: ApiError) -> dict[str, Any]:
    return {
        "error": {
            "status": error.http_status,
            "code": error.code.name,
            "message": error.message,
            "reason": error.reason,
            "request_id": request_id_var.get() or "",
            "field_violations": [{"field": f, "description": d} for f, d in error.field_violations],
            "retry_after_seconds": error.advised_retry_after,
        }
    }


async def stream_events(
    call: grpc.aio.UnaryStreamCall,
    render: Callable[[Any], tuple[str, BaseModel]],
    *,
    heartbeat_seconds: float,
    deadline: float,
    shutdown: asyncio.Event,
    metrics: GatewayMetrics,
    method: str,
) -> AsyncIterator[bytes]:
    """Yield SSE frames for every message of ``call`` (``render`` gives the event id and payload).

    ``deadline`` is a ``time.monotonic()`` instant. The gRPC call is cancelled whenever the generator ends,
    including when the client disconnects (the response task is cancelled and ``finally`` runs).
    """
    queue: asyncio.Queue[object] = asyncio.Queue(maxsize=256)

    async def pump() -> None:
        # Reading in its own task lets the heartbeat wait on the queue with a timeout without ever
        # cancelling a pending read, which would cancel the whole call.
        try:
            async for message in call:
                await queue.put(message)
            await queue.put(_END)
        except grpc.aio.AioRpcError as exc:
            await queue.put(exc)
        except asyncio.CancelledError:
            raise

    reader = asyncio.create_task(pump(), name="sse-pump")
    stop = asyncio.create_task(shutdown.wait(), name="sse-shutdown")
    # The pending read of the moment: cancelled in `finally` too, since the generator may be closed (client
    # gone) while it waits on it, and an orphaned queue read would outlive the stream.
    get: asyncio.Task[object] | None = None
    metrics.sse_streams.inc()
    code = "OK"
    try:
        yield b"retry: 5000\n: connected\n\n"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            get = asyncio.create_task(queue.get())
            done, _ = await asyncio.wait(
                {get, stop}, timeout=min(heartbeat_seconds, remaining), return_when=asyncio.FIRST_COMPLETED
            )
            if get not in done:
                get.cancel()
                if stop in done:
                    break
                yield b": keepalive\n\n"
                continue
            item = get.result()
            if item is _END:
                break
            if isinstance(item, grpc.aio.AioRpcError):
                code = item.code().name
                if item.code() != grpc.StatusCode.CANCELLED:
                    yield event("stream_error", _error_payload(from_rpc_error(item)))
                break
            event_id, payload = render(item)
            yield event("alert", payload, event_id=event_id)
    finally:
        metrics.sse_streams.dec()
        metrics.count_upstream(method, code)
        call.cancel()
        tasks = [task for task in (reader, stop, get) if task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await task
