"""Paging of listings: a page token holds the data version its listing was computed at, so a batch that can
change the listing ends the paging session with ABORTED (restart from the first page) instead of silently
skipping or repeating rows, while a batch that cannot change it leaves the session alone."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from novacorrente.analytics.v1 import analytics_pb2 as a
from novacorrente.common.v1 import common_pb2 as c
from novacorrente.ingestion.v1 import records_pb2

from tests.analytics.analytics_data import snapshot
from tests.analytics.conftest import Replica, World

DAY = dt.date(2025, 10, 20)


@pytest.fixture
async def replica(world: World, real_records) -> Replica:  # type: ignore[no-untyped-def]
    """A replica with demand lines and the stock of ten pairs at each of two sites (the listed pairs)."""
    replica = await world.replica()
    records = real_records[:800]
    by_site: dict[str, list[str]] = {}
    for record in records:
        if record.HasField("consumption"):
            materials = by_site.setdefault(record.consumption.site_code, [])
            if record.consumption.material_code not in materials:
                materials.append(record.consumption.material_code)
    sites = sorted(by_site, key=lambda site: -len(by_site[site]))[:2]
    stock = [
        snapshot(material, site, float(i % 7), DAY)
        for site in sites
        for i, material in enumerate(by_site[site][:10])
    ]
    await world.commit([*records, *stock])
    return replica


async def _inventory(
    replica: Replica, token: str = "", size: int = 5, filter: c.Filter | None = None
) -> a.ListInventoryStatusResponse:
    request = a.ListInventoryStatusRequest(
        filter=filter, page=c.PageRequest(page_size=size, page_token=token)
    )
    return await replica.stub.ListInventoryStatus(request, metadata=replica.md())


def _pairs(page: a.ListInventoryStatusResponse) -> list[tuple[str, str]]:
    return [(r.material_code, r.site_code) for r in page.rows]


async def _refused(call) -> grpc.aio.AioRpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def _reason(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""


def _assert_stale(error: grpc.aio.AioRpcError) -> None:
    assert error.code() == grpc.StatusCode.ABORTED
    message = error.details() or ""
    assert "page.page_token" in message and "first page" in message
    assert _reason(error) == "PAGE_TOKEN_STALE"


async def test_paging_returns_every_row_once_while_nothing_changes(replica: Replica) -> None:
    whole = await _inventory(replica, size=1000)
    assert whole.page.total_size == 20 and not whole.page.next_page_token
    seen: list[tuple[str, str]] = []
    token, pages = "", 0
    while True:
        page = await _inventory(replica, token, size=7)
        assert page.page.total_size == whole.page.total_size
        seen.extend(_pairs(page))
        pages += 1
        token = page.page.next_page_token
        if not token:
            break
    assert pages > 1
    assert seen == _pairs(whole)  # same order, each row exactly once
    # Asking again walks the cached pages, whose tokens are those of the same data version.
    again = await _inventory(replica, (await _inventory(replica, size=7)).page.next_page_token, size=7)
    assert again.provenance.from_cache and _pairs(again) == seen[7:14]


async def test_a_relevant_batch_between_pages_aborts_the_listing(world: World, replica: Replica) -> None:
    first = await _inventory(replica)
    old = first.page.next_page_token
    assert old
    second = await _inventory(replica, old)
    material, site = second.rows[0].material_code, second.rows[0].site_code
    await world.commit([snapshot(material, site, 0.0, DAY)])  # stock of a listed pair: the order can change

    _assert_stale(await _refused(_inventory(replica, old)))

    # Restarting from the first page gives a token of the new version, which pages normally; the page it
    # leads to is now cached under the same offset, and the old token must still not reach it.
    restarted = await _inventory(replica)
    fresh = restarted.page.next_page_token
    assert fresh and fresh != old
    assert (await _inventory(replica, fresh)).page.total_size == restarted.page.total_size
    assert (await _inventory(replica, fresh)).provenance.from_cache
    for _ in range(2):  # the second time through the remembered lookup plan of this request
        _assert_stale(await _refused(_inventory(replica, old)))


async def test_a_batch_the_listing_does_not_depend_on_keeps_its_tokens(
    world: World, replica: Replica
) -> None:
    whole = await _inventory(replica, size=1000)
    sites = [r.site_code for r in whole.rows]
    site = max(set(sites), key=sites.count)
    other = next(s for s in sites if s != site)
    assert sites.count(site) > 2
    mine = c.Filter(site_codes=[site])
    first = await _inventory(replica, size=2, filter=mine)
    token = first.page.next_page_token
    assert token
    before = await _inventory(replica, token, size=2, filter=mine)
    await world.commit(
        [
            snapshot(whole.rows[sites.index(other)].material_code, other, 5.0, DAY),  # another site's stock
            records_pb2.Record(supplier=records_pb2.Supplier(code="SUP-NEW", name="New supplier")),
        ]
    )
    after = await _inventory(replica, token, size=2, filter=mine)
    assert _pairs(after) == _pairs(before) and after.page.next_page_token == before.page.next_page_token
    # The unfiltered listing depends on every site's stock: its tokens from before are stale.
    unfiltered = (await _inventory(replica, size=2)).page.next_page_token
    await world.commit([snapshot(whole.rows[0].material_code, other, 6.0, DAY)])
    _assert_stale(await _refused(_inventory(replica, unfiltered, size=2)))
    assert (await _inventory(replica, token, size=2, filter=mine)).rows == after.rows


async def test_a_token_of_another_request_is_still_invalid(replica: Replica) -> None:
    whole = await _inventory(replica, size=1000)
    site = whole.rows[0].site_code
    token = (await _inventory(replica, size=1, filter=c.Filter(site_codes=[site]))).page.next_page_token
    assert token
    error = await _refused(_inventory(replica, token))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page.page_token" in (error.details() or "")
    garbage = await _refused(_inventory(replica, "e30"))  # "{}": no offset, no request
    assert garbage.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_master_data_listings_abort_on_a_master_data_batch(world: World, replica: Replica) -> None:
    md = replica.md()
    request = a.ListMasterDataRequest(page=c.PageRequest(page_size=10))
    token = (await replica.stub.ListMaterials(request, metadata=md)).page.next_page_token
    assert token
    nxt = a.ListMasterDataRequest(page=c.PageRequest(page_size=10, page_token=token))
    assert (await replica.stub.ListMaterials(nxt, metadata=md)).materials
    await world.commit([records_pb2.Record(material=records_pb2.Material(code="000-NEW", name="New"))])
    _assert_stale(await _refused(replica.stub.ListMaterials(nxt, metadata=md)))
