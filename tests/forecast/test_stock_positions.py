"""Stock positions for policies: one inventory listing for many series, paged, restarted when the data
changes between pages, and only the pairs asked for kept from the materials x sites it filters by."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from novacorrente.analytics.v1 import analytics_pb2 as apb
from novacorrente.analytics.v1 import analytics_pb2_grpc as apb_grpc

from services.forecast import history
from services.forecast.history import AnalyticsReader

MATERIALS = [f"M{i:02d}" for i in range(30)]
SITES = [f"S{j:02d}" for j in range(30)]


class PagingInventory(apb_grpc.AnalyticsServiceServicer):
    """Every material x site has a row (position = its index); pages by offset tokens; ``aborts`` page
    requests after the first are refused with ABORTED, as analytics refuses a token of older data."""

    def __init__(self, aborts: int = 0) -> None:
        self.aborts = aborts
        self.calls: list[str] = []

    async def ListInventoryStatus(self, request, context):  # type: ignore[no-untyped-def]
        self.calls.append(request.page.page_token)
        if request.page.page_token and self.aborts:
            self.aborts -= 1
            await context.abort(grpc.StatusCode.ABORTED, "page.page_token: the data changed")
        rows = [
            (m, s, float(i * len(SITES) + j))
            for i, m in enumerate(MATERIALS)
            for j, s in enumerate(SITES)
            if m in request.filter.material_codes and s in request.filter.site_codes
        ]
        start = int(request.page.page_token or 0)
        end = start + request.page.page_size
        out = apb.ListInventoryStatusResponse()
        for m, s, position in rows[start:end]:
            out.rows.add(material_code=m, site_code=s, stock_position=position)
        out.page.next_page_token = str(end) if end < len(rows) else ""
        return out


async def _reader(servicer: apb_grpc.AnalyticsServiceServicer) -> AsyncIterator[AnalyticsReader]:
    server = grpc.aio.server()
    apb_grpc.add_AnalyticsServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield AnalyticsReader(channel, None)
    finally:
        await channel.close()
        await server.stop(None)


# A diagonal: 30 pairs whose filter spans 30 x 30 rows, four pages of 250.
WANTED = [(MATERIALS[i], SITES[i]) for i in range(30)]


@pytest.fixture(autouse=True)
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history, "_INVENTORY_PAGE", 250)


async def test_the_pairs_asked_for_come_from_one_paged_listing() -> None:
    servicer = PagingInventory()
    async for reader in _reader(servicer):
        got = await reader.stock_positions([*WANTED, ("M00", "NOWHERE")])
    assert servicer.calls == ["", "250", "500", "750"]
    assert {k: (p.value, p.known) for k, p in got.items() if p.known} == {
        (m, s): (float(i * 30 + i), True) for i, (m, s) in enumerate(WANTED)
    }
    assert not got[("M00", "NOWHERE")].known and got[("M00", "NOWHERE")].value == 0.0


async def test_a_listing_whose_data_changed_between_pages_is_read_again_from_the_first() -> None:
    servicer = PagingInventory(aborts=2)
    async for reader in _reader(servicer):
        got = await reader.stock_positions(WANTED)
    assert servicer.calls == ["", "250", "", "250", "", "250", "500", "750"]
    assert all(p.known for p in got.values()) and len(got) == len(WANTED)


async def test_without_an_inventory_status_every_position_is_unknown() -> None:
    async for reader in _reader(apb_grpc.AnalyticsServiceServicer()):  # answers UNIMPLEMENTED
        got = await reader.stock_positions(WANTED[:3])
    assert len(got) == 3 and not any(p.known for p in got.values())
