"""Open Inference Protocol v2 (``inference.GRPCInferenceService``) over the model repository.

Every input is checked before onnxruntime sees it: known name, declared datatype, shape that fits the
declared one, element count that matches the shape, no NaN (unless the sidecar declares NaN as 'missing' for
that input) and no infinity. A failure is INVALID_ARGUMENT with a ``google.rpc.BadRequest`` naming the input.
Inputs may come as typed ``contents`` or as ``raw_input_contents``; outputs always go back as
``raw_output_contents``, which is what tritonclient reads.
"""

from __future__ import annotations

import time
from importlib import metadata

import grpc
import numpy as np
from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc

from services.forecast.metrics import ForecastMetrics
from services.forecast.repository import DATATYPES, LoadedModel, ModelRepository, TensorSpec
from services.forecast.runner import InferenceRunner
from services.kit.errors import FieldViolation, InvalidArgument

__all__ = ["SERVER_NAME", "OipServicer", "decode_input"]

SERVER_NAME = "nova-forecast"
PLATFORM = "onnxruntime_onnx"
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}
_STATES = {"ready": "READY", "loading": "LOADING"}


def _version() -> str:
    try:
        return metadata.version("nova-corrente-platform")
    except metadata.PackageNotFoundError:
        return "0"


def _bad(name: str, field: str, description: str) -> InvalidArgument:
    return InvalidArgument([FieldViolation(f"inputs[{name}].{field}", description)])


def decode_input(
    spec: TensorSpec, tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None
) -> np.ndarray:
    """The validated numpy array of one input tensor; raises InvalidArgument naming the input."""
    name = spec.name
    if tensor.datatype != spec.datatype:
        raise _bad(
            name, "datatype", f"input '{name}' must be {spec.datatype}, got {tensor.datatype or 'nothing'}"
        )
    shape = tuple(int(d) for d in tensor.shape)
    if len(shape) != len(spec.shape) or any(
        d < 0 or (want >= 0 and d != want) for d, want in zip(shape, spec.shape, strict=True)
    ):
        raise _bad(name, "shape", f"input '{name}' shape {list(shape)} does not fit {list(spec.shape)}")
    count = int(np.prod(shape, dtype=np.int64))
    dtype = DATATYPES.get(spec.datatype)
    if dtype is None:
        raise _bad(
            name, "datatype", f"input '{name}' has datatype {spec.datatype}, which this server cannot feed"
        )
    if raw is not None:
        if tensor.HasField("contents"):
            raise _bad(name, "contents", f"input '{name}' comes both as contents and as raw_input_contents")
        if len(raw) != count * dtype.itemsize:
            raise _bad(
                name,
                "raw_input_contents",
                f"input '{name}' needs {count * dtype.itemsize} bytes for shape {list(shape)}, "
                f"got {len(raw)}",
            )
        array = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False).reshape(shape)
    else:
        values = getattr(tensor.contents, _CONTENTS_FIELD[spec.datatype])
        if len(values) != count:
            raise _bad(
                name,
                "contents",
                f"input '{name}' needs {count} values for shape {list(shape)}, got {len(values)}",
            )
        array = np.asarray(values, dtype=dtype).reshape(shape)
    if dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            bad = ~finite if not spec.allow_nan else np.isinf(array)
            if bad.any():
                index = int(np.flatnonzero(bad.ravel())[0])
                what = "NaN or infinite" if not spec.allow_nan else "infinite"
                raise _bad(
                    name, "contents", f"input '{name}' holds {what} values (first at flat index {index})"
                )
    return array


def _tensor_metadata(spec: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(
        name=spec.name, datatype=spec.datatype, shape=list(spec.shape)
    )


class OipServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Thin adapter: validation and conversion here, model state in the repository, runs in the runner."""

    def __init__(
        self, repository: ModelRepository, runner: InferenceRunner, metrics: ForecastMetrics | None = None
    ):
        self._repository = repository
        self._runner = runner
        self._metrics = metrics

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._repository.ready())

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        model = self._repository.serving(request.name)
        ready = model is not None and (not request.version or request.version == model.version)
        return pb.ModelReadyResponse(ready=ready)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=_version(), extensions=["model_repository"]
        )

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        model = self._repository.get(request.name, request.version)
        return pb.ModelMetadataResponse(
            name=model.name,
            versions=[model.version],
            platform=PLATFORM,
            inputs=[_tensor_metadata(s) for s in model.inputs],
            outputs=[_tensor_metadata(s) for s in model.outputs],
        )

    def _feeds(self, model: LoadedModel, request: pb.ModelInferRequest) -> dict[str, np.ndarray]:
        raw = list(request.raw_input_contents)
        if raw and len(raw) != len(request.inputs):
            raise InvalidArgument(
                [
                    FieldViolation(
                        "raw_input_contents", f"{len(raw)} raw buffers for {len(request.inputs)} inputs"
                    )
                ]
            )
        feeds: dict[str, np.ndarray] = {}
        for i, tensor in enumerate(request.inputs):
            spec = model.input(tensor.name)
            if spec is None:
                raise InvalidArgument(
                    [
                        FieldViolation(
                            f"inputs[{tensor.name}]", f"model '{model.name}' has no input '{tensor.name}'"
                        )
                    ]
                )
            if tensor.name in feeds:
                raise _bad(tensor.name, "name", f"input '{tensor.name}' is given twice")
            feeds[tensor.name] = decode_input(spec, tensor, raw[i] if raw else None)
        missing = [spec.name for spec in model.inputs if spec.name not in feeds]
        if missing:
            raise InvalidArgument(
                [FieldViolation(f"inputs[{n}]", f"input '{n}' is missing") for n in missing]
            )
        batch = {int(a.shape[0]) for a in feeds.values() if a.ndim}
        if len(batch) > 1:
            raise InvalidArgument(
                [FieldViolation("inputs", f"inputs disagree on the batch size: {sorted(batch)}")]
            )
        return feeds

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        start = time.perf_counter()
        # One lookup: the whole request runs on this version even if a newer one is switched in meanwhile.
        model = self._repository.get(request.model_name, request.model_version)
        feeds = self._feeds(model, request)
        names = [o.name for o in request.outputs] or [spec.name for spec in model.outputs]
        for name in names:
            if model.output(name) is None:
                raise InvalidArgument(
                    [FieldViolation(f"outputs[{name}]", f"model '{model.name}' has no output '{name}'")]
                )
        results = await self._runner.run(model, feeds, names)
        response = pb.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id)
        for name, array in zip(names, results, strict=True):
            spec = model.output(name)
            assert spec is not None
            out = np.ascontiguousarray(array, dtype=DATATYPES[spec.datatype].newbyteorder("<"))
            response.outputs.add(name=name, datatype=spec.datatype, shape=list(out.shape))
            response.raw_output_contents.append(out.tobytes())
        if self._metrics is not None:
            self._metrics.requests.labels("ModelInfer", model.name, model.version).inc()
            self._metrics.request_latency.labels("ModelInfer", model.name, model.version).observe(
                time.perf_counter() - start
            )
        return response

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        response = pb.RepositoryIndexResponse()
        for record in sorted(self._repository.records(), key=lambda r: (r.name, int(r.version))):
            state = _STATES.get(record.state, "UNAVAILABLE")
            if request.ready and state != "READY":
                continue
            response.models.add(name=record.name, version=record.version, state=state, reason=record.reason)
        return response

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        if any(p.HasField("bytes_param") for p in request.parameters.values()):
            raise InvalidArgument(
                [FieldViolation("parameters", "the repository is read only: inline model files are refused")]
            )
        await self._repository.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        await self._repository.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()
