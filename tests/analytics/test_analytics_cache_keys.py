"""Cache keys without a replica: narrowed versions, lookup plans and their memo; and through a replica, that a
remembered request is still validated when it is new and answered fresh when its data moved."""

from __future__ import annotations

from collections.abc import Mapping

import grpc
import pytest
from novacorrente.analytics.v1 import analytics_pb2 as a
from novacorrente.common.v1 import common_pb2 as c

from services.analytics.cache_keys import LookupPlan, LookupPlans, cache_key, narrowing, versions
from services.analytics.slices import DIMS_BY_KIND, Kind, Slice
from tests.analytics.conftest import World

Dims = dict[tuple[str, str, str], int]


def reference_versions(kinds: list[str], s: Slice, dims: Mapping, totals: Mapping) -> dict[str, int]:
    """The module docstring's formula, written out plainly."""
    out = {}
    for kind in kinds:
        per_field = [
            max(dims.get((kind, dim, v), 0) for v in s.values(dim))
            for dim in DIMS_BY_KIND[kind]
            if s.values(dim)
        ]
        out[kind] = min(per_field) if per_field else totals.get(kind, 0)
    return out


DIMS: Dims = {
    (Kind.CONSUMPTION, "material", "m1"): 7,
    (Kind.CONSUMPTION, "material", "m2"): 3,
    (Kind.CONSUMPTION, "site", "s1"): 5,
    (Kind.CONSUMPTION, "family", "EPI"): 9,
    (Kind.MATERIAL, "material", "m1"): 2,
    (Kind.STOCK, "site", "s1"): 4,
}
TOTALS = {Kind.CONSUMPTION: 11, Kind.MATERIAL: 6, Kind.STOCK: 8, Kind.DATA_END: 700_000}


@pytest.mark.parametrize(
    "s",
    [
        Slice(),
        Slice.of(materials=["m1"]),
        Slice.of(materials=["m1", "m2"], sites=["s1"]),
        Slice.of(families=["EPI"], sites=["s1", "s9"]),
        Slice.of(materials=["unknown"]),
    ],
)
def test_versions_follow_the_documented_formula(s: Slice) -> None:
    kinds = [Kind.CONSUMPTION, Kind.MATERIAL, Kind.STOCK, Kind.DATA_END]
    assert versions(kinds, s, DIMS, TOTALS) == reference_versions(kinds, s, DIMS, TOTALS)


class FakeWatermarks:
    def __init__(self) -> None:
        self.generation = 0
        self.dims: Dims = dict(DIMS)
        self.totals = dict(TOTALS)
        self.lookups = 0

    def lookup(self) -> tuple[Dims, dict[str, int]]:
        self.lookups += 1
        return self.dims, self.totals


def test_plan_key_is_recomputed_only_when_the_watermarks_or_the_lineage_move() -> None:
    s = Slice.of(materials=["m1"])
    kinds = [Kind.CONSUMPTION, Kind.MATERIAL]
    plan = LookupPlan("GetKpis", "f" * 64, narrowing(kinds, s), a.GetKpisResponse)
    marks = FakeWatermarks()
    first = plan.key_for(marks, "batch-1")
    assert first == cache_key("GetKpis", "f" * 64, versions(kinds, s, DIMS, TOTALS), "batch-1")
    assert plan.key_for(marks, "batch-1") == first and marks.lookups == 1

    marks.dims[(Kind.CONSUMPTION, "material", "m1")] = 12
    marks.generation += 1  # the read model moves the generation after changing the maps
    moved = plan.key_for(marks, "batch-1")
    assert moved != first and "consumption=12" in moved and marks.lookups == 2

    other_log = plan.key_for(marks, "batch-2")
    assert other_log != moved and ":batch-2:" in other_log and marks.lookups == 3


def test_plans_are_bounded_and_skip_long_requests() -> None:
    plans = LookupPlans(max_entries=3, max_request_bytes=10)
    plan = LookupPlan("M", "f", (), a.GetKpisResponse)
    for body in (b"1", b"2", b"3", b"4"):
        plans.add("M", body, plan)
    assert len(plans) == 3 and plans.get("M", b"1") is None and plans.get("M", b"4") is plan
    plans.add("M", b"x" * 11, plan)
    assert plans.get("M", b"x" * 11) is None
    assert plans.get("Other", b"4") is None  # the method is part of the identity


async def test_an_invalid_request_is_refused_every_time(world: World, real_records) -> None:
    replica = await world.replica()
    await world.commit(real_records[:500])
    bad = a.GetKpisRequest(names=["no_such_kpi"])
    for _ in range(3):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await replica.stub.GetKpis(bad, metadata=replica.md())
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_remembered_request_is_answered_fresh_after_new_data(world: World, real_records) -> None:
    replica = await world.replica()
    await world.commit(real_records[:1000])
    request = a.GetKpisRequest(names=["demand_lines"])
    first = await replica.stub.GetKpis(request, metadata=replica.md())
    again = await replica.stub.GetKpis(request, metadata=replica.md())
    assert not first.provenance.from_cache and again.provenance.from_cache
    assert again.kpis == first.kpis

    await world.commit(real_records[1000:2000])
    after = await replica.stub.GetKpis(request, metadata=replica.md())
    assert not after.provenance.from_cache
    assert after.provenance.data_watermark == f"seq:{world.sequencer.watermark}"
    assert after.kpis[0].value > first.kpis[0].value
    assert (await replica.stub.GetKpis(request, metadata=replica.md())).provenance.from_cache


async def test_equivalent_spellings_each_find_the_shared_entry(world: World, real_records) -> None:
    replica = await world.replica()
    await world.commit(real_records[:1000])
    one = a.GetKpisRequest(filter=c.Filter(families=["EPI", "FERRO E AÇO"]), names=["demand_lines"])
    same = a.GetKpisRequest(filter=c.Filter(families=["FERRO E AÇO", " EPI"]), names=["demand_lines"])
    assert not (await replica.stub.GetKpis(one, metadata=replica.md())).provenance.from_cache
    for _ in range(2):  # the second time through the remembered plan of each spelling
        assert (await replica.stub.GetKpis(same, metadata=replica.md())).provenance.from_cache
        assert (await replica.stub.GetKpis(one, metadata=replica.md())).provenance.from_cache
