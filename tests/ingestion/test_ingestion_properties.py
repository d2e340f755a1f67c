"""Property tests: whatever a client sends, ingestion answers OK (with per-record verdicts) or
INVALID_ARGUMENT naming the field, never INTERNAL or UNKNOWN, and writes nothing for a rejected record."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from novacorrente.common.v1 import common_pb2
from novacorrente.ingestion.v1 import ingestion_pb2 as pb
from novacorrente.ingestion.v1 import ingestion_pb2_grpc
from novacorrente.ingestion.v1 import records_pb2 as rec

from services.ingestion.app import build_app
from services.ingestion.settings import IngestionSettings
from tests.conftest import bad_request_fields, bearer

CLIENT_ERRORS = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION}


class Server:
    """The ingestion service on its own event loop thread, so hypothesis can drive it synchronously."""

    def __init__(self, url: str, jwt_key: bytes) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        settings = IngestionSettings(database_url=url, port=0, jwt_secret=jwt_key.decode())
        self.app = self._run(build_app(settings, jwt_key=jwt_key))
        self._run(self.app.start())
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.app.server.port}")
        self.stub = ingestion_pb2_grpc.IngestionServiceStub(self.channel)

    def _run(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def close(self) -> None:
        self.channel.close()
        self._run(self.app.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, jwt_key: bytes) -> Iterator[Server]:
    s = Server(f"duckdb:///{tmp_path_factory.mktemp('props')}/sor.duckdb", jwt_key)
    yield s
    s.close()


@pytest.fixture(scope="module")
def auth(token_for: Callable[..., str]) -> tuple[tuple[str, str], ...]:
    return bearer(token_for("ingestor"))


def watermark(server: Server, auth: tuple[tuple[str, str], ...]) -> int:
    return server.stub.GetWatermark(pb.GetWatermarkRequest(), metadata=auth).sequence


texts = st.text(max_size=30)
numbers = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**6), 10**6).map(float)
dates = st.builds(
    common_pb2.Date, year=st.integers(-5, 3000), month=st.integers(-1, 14), day=st.integers(-1, 33)
)
enums = st.integers(-3, 7)

records = st.one_of(
    st.builds(
        lambda req, key, mat, site, sup, qty, unit, d1, d2, fam: rec.Record(
            consumption=rec.Consumption(
                requisition_id=req,
                line_key=key,
                material_code=mat,
                site_code=site,
                supplier_code=sup,
                quantity=qty,
                unit=unit,
                solicited_date=d1,
                purchase_date=d2,
                family=fam,
            )
        ),
        texts,
        texts,
        st.sampled_from(["010601", "011029", ""]) | texts,
        st.sampled_from(["ALMOX-BA", "N/A", ""]) | texts,
        texts,
        numbers,
        st.sampled_from(["UN", "KG", "CX", "PARSECS", ""]),
        dates,
        dates,
        texts,
    ),
    st.builds(
        lambda code, name, fam, unit, crit: rec.Record(
            material=rec.Material(code=code, name=name, family=fam, unit=unit, criticality=crit)
        ),
        texts,
        texts,
        texts,
        st.sampled_from(["UN", "KG", "M", "??"]),
        enums,
    ),
    st.builds(
        lambda sid, d, v, unit: rec.Record(
            external_observation=rec.ExternalObservation(
                series_id=sid, date=d, value=v, unit=unit, source="x"
            )
        ),
        st.sampled_from(["ptax.usd.sell", "weather.salvador.precipitation_mm", "Bad Id"]) | texts,
        dates,
        numbers,
        texts,
    ),
    st.just(rec.Record()),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(records, min_size=1, max_size=8), all_or_nothing=st.booleans())
def test_any_batch_gets_verdicts_or_invalid_argument_and_rejected_records_write_nothing(
    server: Server, auth: tuple[tuple[str, str], ...], batch: list[rec.Record], all_or_nothing: bool
) -> None:
    before = watermark(server, auth)
    request = pb.SubmitBatchRequest(
        idempotency_key=uuid.uuid4().hex, records=batch, all_or_nothing=all_or_nothing
    )
    try:
        answer = server.stub.SubmitBatch(request, metadata=auth, timeout=30)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
        assert bad_request_fields(error), "INVALID_ARGUMENT without the fields"
        assert watermark(server, auth) == before, "a rejected batch wrote records"
        return
    assert len(answer.verdicts) == len(batch)
    written = 0
    for verdict in answer.verdicts:
        if verdict.verdict == pb.VERDICT_REJECTED:
            assert verdict.violations, "a rejection must name its fields"
            assert all(v.field.startswith(f"records[{verdict.index}].") for v in verdict.violations)
            assert verdict.sequence == 0
        elif verdict.verdict in (pb.VERDICT_ACCEPTED, pb.VERDICT_SUPERSEDED):
            written += 1
    assert watermark(server, auth) == before + written


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=300))
def test_malformed_request_bytes_are_a_client_error(
    server: Server, auth: tuple[tuple[str, str], ...], payload: bytes
) -> None:
    call = server.channel.unary_unary(
        "/novacorrente.ingestion.v1.IngestionService/SubmitBatch",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    try:
        call(payload, metadata=auth, timeout=30)
    except grpc.RpcError as error:
        assert error.code() in CLIENT_ERRORS, (error.code(), error.details())
        if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
            assert bad_request_fields(error)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.text(max_size=400),
    name=st.sampled_from(
        [
            "x.csv",
            "bcb_ptax_usd.json",
            "bcb_sgs_selic.json",
            "openmeteo_hourly_recife_pe.json",
            "y.json",
            "z.xlsx",
        ]
    ),
    record_type=st.sampled_from(["", "consumption", "material", "nonsense"]),
)
def test_malformed_files_get_verdicts_or_invalid_argument(
    server: Server,
    auth: tuple[tuple[str, str], ...],
    tmp_path_factory: pytest.TempPathFactory,
    text: str,
    name: str,
    record_type: str,
) -> None:
    before = watermark(server, auth)
    parts = [
        pb.UploadFileRequest(
            header=pb.UploadHeader(filename=name, record_type=record_type, idempotency_key=uuid.uuid4().hex)
        ),
        pb.UploadFileRequest(chunk=text.encode()),
    ]
    try:
        answer = server.stub.UploadFile(iter(parts), metadata=auth, timeout=30)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
        assert bad_request_fields(error)
        assert watermark(server, auth) == before
        return
    for verdict in answer.exceptions:
        if verdict.verdict == pb.VERDICT_REJECTED:
            assert verdict.violations
    assert watermark(server, auth) == before + answer.counts.accepted + answer.counts.superseded
