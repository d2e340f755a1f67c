"""Fixtures of the forecast-serving tests.

- ``trained_repo``: a real model trained once per session by ``python -m ml_training train --quick`` on the
  real export (kept in the system temp folder under a hash of the training code and data, so a second run
  on an unchanged tree reuses it).
- ``panel``: the real export's weekly series, as the training package reads them.
- ``AnalyticsDouble``: a small AnalyticsService servicer serving histories, lead times and demand series
  built from those real rows, and external series when given (the end-to-end suite runs against the real
  analytics service; ``test_externals`` too).
- ``tiny_model``: builders of small ONNX models with the ``onnx`` helper API, for repository edge cases.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_status import rpc_status
from novacorrente.analytics.v1 import analytics_pb2 as apb
from novacorrente.analytics.v1 import analytics_pb2_grpc as apb_grpc
from novacorrente.common.v1 import common_pb2 as cpb

from services.forecast import features
from services.forecast.app import ForecastApp, build_app
from services.forecast.settings import ForecastSettings
from services.kit.errors import NotFound

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"
WATERMARK = 4207


@dataclass
class PanelData:
    weeks: np.ndarray
    series: dict[tuple[str, str], tuple[str, np.ndarray]]  # (material, site) -> (family, weekly)
    materials: dict[str, tuple[str, np.ndarray]]  # material -> (family, weekly)
    lead_days: dict[str, list[float]]
    units: dict[str, str]


@pytest.fixture(scope="session")
def panel() -> PanelData:
    from ml_training.datasets import build_panel, detect_window, read_consumption

    cons = read_consumption(DATA / "dadosSuprimentos.xlsx")
    built = build_panel(cons, detect_window(cons))
    series = {(s.material, s.site): (s.family, s.y) for s in built.by_level("material_site")}
    materials = {s.material: (s.family, s.y) for s in built.by_level("material")}
    return PanelData(built.weeks, series, materials, built.lead_days, built.units)


_CRITICALITY = {"low": cpb.CRITICALITY_LOW, "medium": cpb.CRITICALITY_MEDIUM, "high": cpb.CRITICALITY_HIGH}


def _date(value: np.datetime64) -> cpb.Date:
    y, m, d = (int(x) for x in str(value.astype("datetime64[D]")).split("-"))
    return cpb.Date(year=y, month=m, day=d)


def _day(value: cpb.Date) -> np.datetime64:
    return np.datetime64(f"{value.year:04d}-{value.month:02d}-{value.day:02d}", "D")


@dataclass
class AnalyticsDouble(apb_grpc.AnalyticsServiceServicer):
    """Serves the real export's weekly series; counts calls so tests can see batching and caching."""

    data: PanelData
    watermark: int = WATERMARK
    stock: dict[tuple[str, str], float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    history_requests: list[int] = field(default_factory=list)
    overrides: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    external: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
    """External series (id -> days, values) served at day grain; None: GetExternalSeries is unimplemented."""
    external_requests: list[apb.GetExternalSeriesRequest] = field(default_factory=list)
    partial_week: float | None = None
    """Demand of a week in progress after the panel's last week (the data then ends on its Wednesday)."""

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def _provenance(self) -> cpb.Provenance:
        return cpb.Provenance(data_watermark=f"seq:{self.watermark}")

    async def GetSeriesHistory(self, request, context):  # type: ignore[no-untyped-def]
        self._count("GetSeriesHistory")
        self.history_requests.append(len(request.series))
        out = apb.GetSeriesHistoryResponse(provenance=self._provenance())
        for key in request.series:
            found = self.data.series.get((key.material_code, key.site_code))
            weekly = self.overrides.get((key.material_code, key.site_code))
            if found is None and weekly is None:
                out.series.add(key=key, unknown=True)
                continue
            family = found[0] if found else "EPI"
            weekly = weekly if weekly is not None else found[1]  # type: ignore[index]
            out.series.add(
                key=key,
                first_week=_date(self.data.weeks[-len(weekly)]),
                weekly_quantity=weekly.tolist(),
                family=family,
                site_type=cpb.SITE_TYPE_TOWER,
                material_criticality=_CRITICALITY[features.criticality_for_family(family)],
                site_criticality=cpb.CRITICALITY_MEDIUM,
                unit=self.data.units.get(key.material_code, "UN"),
            )
        return out

    def lead_sample(self, material: str) -> tuple[list[float], str]:
        days = self.data.lead_days.get(material, [])
        if len(days) >= 3:
            return days, "material"
        return [d for values in self.data.lead_days.values() for d in values], "all"

    async def GetLeadTimes(self, request, context):  # type: ignore[no-untyped-def]
        self._count("GetLeadTimes")
        days, scope = self.lead_sample(request.filter.material_codes[0])
        arr = np.asarray(days)
        return apb.GetLeadTimesResponse(
            days=days,
            mean_days=float(arr.mean()),
            p50_days=float(np.median(arr)),
            p90_days=float(np.quantile(arr, 0.9)),
            std_days=float(arr.std()),
            scope=scope,
            provenance=self._provenance(),
        )

    async def ListInventoryStatus(self, request, context):  # type: ignore[no-untyped-def]
        self._count("ListInventoryStatus")
        out = apb.ListInventoryStatusResponse(provenance=self._provenance())
        for (material, site), position in self.stock.items():
            if material in request.filter.material_codes and site in request.filter.site_codes:
                out.rows.add(material_code=material, site_code=site, stock_position=position)
        return out

    async def GetWatermark(self, request, context):  # type: ignore[no-untyped-def]
        self._count("GetWatermark")
        return apb.GetWatermarkResponse(sequence=self.watermark, data_watermark=f"seq:{self.watermark}")

    async def GetExternalSeries(self, request, context):  # type: ignore[no-untyped-def]
        """As analytics answers: request order, NOT_FOUND (with ResourceInfo) for the whole call when one
        series is unknown, the catalogue without points for an empty list. Day grain only."""
        self._count("GetExternalSeries")
        self.external_requests.append(request)
        if self.external is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
        out = apb.GetExternalSeriesResponse(provenance=self._provenance())
        if not request.series_ids:
            for series_id in sorted(self.external):
                out.series.add(series_id=series_id)
            return out
        if request.grain != cpb.TIME_GRAIN_DAY:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "this double serves day grain only")
        rng = request.date_range
        start = _day(rng.start) if rng.start.year else np.datetime64("1900-01-01", "D")
        end = _day(rng.end) if rng.end.year else np.datetime64("2999-12-31", "D")
        for series_id in request.series_ids:
            if series_id not in self.external:
                error = NotFound(
                    f"no external series {series_id!r}",
                    resource_type="external_series",
                    resource_name=series_id,
                )
                await context.abort_with_status(rpc_status.to_status(error.to_status()))
            days, values = self.external[series_id]
            inside = (days >= start) & (days <= end)
            out.series.add(
                series_id=series_id,
                dates=[_date(d) for d in days[inside]],
                values=values[inside].tolist(),
            )
        return out

    async def GetDemandSeries(self, request, context):  # type: ignore[no-untyped-def]
        """As analytics answers a slice without an end date: periods up to the one holding the last day of
        data. That day is the panel's last Sunday, or the Wednesday after it when ``partial_week`` adds the
        week in progress (with that quantity)."""
        self._count("GetDemandSeries")
        material = request.filter.material_codes[0]
        last_day = self.data.weeks[-1] + np.timedelta64(6 if self.partial_week is None else 9, "D")
        if request.grain == cpb.TIME_GRAIN_DAY:
            start = _day(request.filter.date_range.start)
            days = np.arange(start, last_day + np.timedelta64(1, "D"), dtype="datetime64[D]")
            points = [apb.DemandPoint(period_start=_date(day)) for day in days]
        else:
            _, weekly = self.data.materials[material]
            weeks, values = self.data.weeks, list(weekly)
            if self.partial_week is not None:
                weeks = np.append(weeks, weeks[-1] + np.timedelta64(7, "D"))
                values.append(self.partial_week)
            points = [
                apb.DemandPoint(period_start=_date(week), quantity=float(q))
                for week, q in zip(weeks, values, strict=True)
            ]
        return apb.GetDemandSeriesResponse(
            points=points, unit=self.data.units[material], provenance=self._provenance()
        )

    async def ListMaterials(self, request, context):  # type: ignore[no-untyped-def]
        self._count("ListMaterials")
        family, _ = self.data.materials.get(request.query, ("", None))
        out = apb.ListMaterialsResponse()
        if family:
            out.materials.add(code=request.query, family=family)
        return out


@dataclass
class Harness:
    app: ForecastApp
    analytics: AnalyticsDouble
    address: str
    bus_url: str


@pytest.fixture
def make_harness(jwt_key: bytes, panel: PanelData, tmp_path: Path) -> Callable[..., AsyncIterator[Harness]]:
    """Async context factory: a started forecast app (real gRPC, real onnxruntime) on an analytics double."""
    import contextlib

    @contextlib.asynccontextmanager
    async def make(repo: Path | None, **overrides: object) -> AsyncIterator[Harness]:
        analytics = AnalyticsDouble(panel)
        double = grpc.aio.server()
        apb_grpc.add_AnalyticsServiceServicer_to_server(analytics, double)
        double_port = double.add_insecure_port("127.0.0.1:0")
        await double.start()
        name = uuid.uuid4().hex[:10]
        options: dict[str, object] = {
            "host": "127.0.0.1",
            "port": 0,
            "model_repository": repo if repo is not None else tmp_path / "empty-repo",
            "analytics_target": f"127.0.0.1:{double_port}",
            "broker_url": f"memory://forecast-{name}",
            "cache_url": f"memory://forecast-{name}",
            "repository_poll_seconds": 0,
            "grace_seconds": 1,
        }
        settings = ForecastSettings(**{**options, **overrides})
        (tmp_path / "empty-repo").mkdir(exist_ok=True)
        app = await build_app(settings, jwt_key=jwt_key)
        await app.start()
        try:
            yield Harness(app, analytics, f"127.0.0.1:{app.port}", settings.broker_url)
        finally:
            await app.stop()
            await double.stop(None)

    return make


# --------------------------------------------------------------------------------------------- tiny models


def tiny_onnx(value: float, *, width: int = 3, quantiles: int = 2, external: str | None = None) -> bytes:
    """features [N, width] -> quantiles [N, quantiles] = value + level index (the weights are zero)."""
    from onnx import TensorProto, helper

    bias = np.array([[value + j for j in range(quantiles)]], dtype=np.float32)
    weight = np.zeros((width, quantiles), dtype=np.float32)
    w_tensor = helper.make_tensor("w", TensorProto.FLOAT, weight.shape, weight.ravel().tolist())
    if external is not None:
        w_tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=list(weight.shape))
        w_tensor.data_location = TensorProto.EXTERNAL
        entry = w_tensor.external_data.add()
        entry.key, entry.value = "location", external
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "w"], ["mm"]),
            helper.make_node("Add", ["mm", "b"], ["quantiles"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("quantiles", TensorProto.FLOAT, ["N", quantiles])],
        initializer=[w_tensor, helper.make_tensor("b", TensorProto.FLOAT, bias.shape, bias.ravel().tolist())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    return model.SerializeToString()


def tiny_sidecar(name: str, version: str, onnx_bytes: bytes, **extra: object) -> dict[str, object]:
    return {
        "name": name,
        "version": version,
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 3]}],
        "outputs": [{"name": "quantiles", "datatype": "FP32", "shape": [-1, 2]}],
        "feature_spec_version": features.FEATURE_SPEC_VERSION,
        "quantiles": [0.5, 0.9],
        "sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        **extra,
    }


def write_version(
    repo: Path, name: str, version: str, onnx_bytes: bytes, sidecar: dict[str, object] | None = None
) -> Path:
    """Lay a version down atomically (temporary sibling renamed into place), as the training export does."""
    folder = repo / name
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=folder))
    (tmp / "model.onnx").write_bytes(onnx_bytes)
    side = sidecar if sidecar is not None else tiny_sidecar(name, version, onnx_bytes)
    (tmp / "model.json").write_text(json.dumps(side))
    os.chmod(tmp, 0o755)
    tmp.rename(folder / version)
    return folder / version
