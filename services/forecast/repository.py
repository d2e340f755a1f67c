"""The model repository: verified ONNX model versions, switched in atomically.

Layout (read only)::

    <root>/<model>/<version>/model.onnx     the graph (version: a positive integer folder name)
    <root>/<model>/<version>/model.json     its sidecar: name, version, inputs, outputs, feature_spec_version,
                                           quantiles, sha256, vocabularies, metrics, created_at, ...

A version is used only after every check below passes; otherwise it is *refused* with a logged reason and
the version already serving keeps serving:

1. no symlink anywhere from the model folder down (a link could point at files nobody reviewed);
2. the sidecar parses and names this model and version, and its feature spec is one this service builds;
3. the ONNX bytes hash to the sidecar's sha256 (a truncated or swapped file fails here) and parse as a
   protobuf; their external-data references, if any, stay inside the version folder as regular files;
4. onnxruntime builds a session from those very bytes (no second read: what was hashed is what runs), and the
   session's inputs and outputs equal the sidecar's names, datatypes and shapes.

Loading and checking run in a worker thread; the switch is one reference assignment on the event loop, so
every request sees either the old or the new version, never neither: readiness never drops during a swap.
Only the newest valid version of each model is kept loaded (a refused newer version never unloads it).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from services.forecast import features
from services.forecast.history import A_MONDAY
from services.forecast.metrics import ForecastMetrics
from services.forecast.onnx_scan import external_data_refs
from services.kit.errors import FailedPrecondition, NotFound

__all__ = [
    "DATATYPES",
    "KNOWN_FEATURE_SPECS",
    "LoadedModel",
    "ModelRepository",
    "RefusedVersion",
    "TensorSpec",
    "VersionRecord",
    "load_version",
]

log = logging.getLogger(__name__)

KNOWN_FEATURE_SPECS: frozenset[str] = frozenset({features.FEATURE_SPEC_VERSION})
"""Feature spec versions this build of the service can compute inputs for."""

ONNX_FILE, SIDECAR_FILE = "model.onnx", "model.json"

# Open Inference Protocol datatype -> numpy dtype, and onnxruntime's type names -> protocol datatype.
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
_ORT_TYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}
_NUMPY_NAMES = {dtype.name: name for name, dtype in DATATYPES.items()} | {"float": "FP32", "double": "FP64"}


def _datatype(value: object) -> str:
    """A sidecar datatype in any common spelling (FP32, float32, tensor(float)) -> protocol datatype."""
    text = str(value).strip()
    if text.upper() in DATATYPES or text.upper() == "BYTES":
        return text.upper()
    if text.lower() in _ORT_TYPES:
        return _ORT_TYPES[text.lower()]
    if text.lower() in _NUMPY_NAMES:
        return _NUMPY_NAMES[text.lower()]
    raise ValueError(f"unknown datatype {value!r}")


def _dims(shape: Iterable[object] | None) -> tuple[int, ...]:
    """Shape with every symbolic or unknown dimension as -1."""
    return tuple(d if isinstance(d, int) and not isinstance(d, bool) and d >= 0 else -1 for d in shape or ())


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output of a model: protocol name, datatype and shape (-1 = any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    allow_nan: bool = False
    """NaN is accepted in this input (it means 'missing' to the model); infinities never are."""


class RefusedVersion(Exception):
    """A version failed a check; ``kind`` is a stable label (metrics), the message says why."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A verified, loaded model version. Immutable: a request holding it keeps a consistent version."""

    name: str
    version: str
    path: Path
    session: ort.InferenceSession
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    quantiles: tuple[float, ...]
    feature_spec_version: str
    vocabularies: Mapping[str, Sequence[str]]
    sidecar: Mapping[str, Any]
    loaded_at: float
    series_methods: Mapping[str, str] = field(default_factory=dict)
    """Method recorded by training per series key ``material|site`` (``lgbm_conformal``, ``tsb``, ...)."""
    class_methods: Mapping[str, str] = field(default_factory=dict)
    """Method recorded by training per demand class, for series without their own entry."""
    training_first_week: np.datetime64 | None = None
    """Monday of the training window's first week (sidecar ``training_data.window.first_week``): training
    saw every series from that week on, zeros before its first demand. None when the sidecar has none."""

    @property
    def max_horizon(self) -> int | None:
        value = self.sidecar.get("horizon_weeks") or self.sidecar.get("max_horizon_weeks")
        return int(value) if isinstance(value, int | float) and value > 0 else None

    def input(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.inputs if spec.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.outputs if spec.name == name), None)

    def run(
        self, feeds: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None
    ) -> list[np.ndarray]:
        """One onnxruntime run (releases the GIL, so it may run in a worker thread)."""
        names = list(output_names) if output_names else [spec.name for spec in self.outputs]
        return self.session.run(names, dict(feeds))


@dataclass
class VersionRecord:
    """What the repository knows about one version folder."""

    name: str
    version: str
    state: str  # "ready" (serving), "loading", "refused", "superseded", "unloaded"
    reason: str = ""
    fingerprint: tuple[Any, ...] = ()
    sidecar: Mapping[str, Any] = field(default_factory=dict)


def _version_key(version: str) -> int:
    return int(version)


def _check_no_symlink(path: Path, root: Path) -> None:
    """Refuse ``path`` when it, or a folder between ``root`` and it, is a symbolic link."""
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        if current.is_symlink():
            raise RefusedVersion("symlink", f"{current.relative_to(root)} is a symbolic link")


def _read_regular(path: Path, root: Path) -> bytes:
    _check_no_symlink(path, root)
    try:
        info = os.lstat(path)
    except FileNotFoundError as exc:
        raise RefusedVersion("missing", f"{path.name} is missing") from exc
    if not stat.S_ISREG(info.st_mode):
        raise RefusedVersion("not_a_file", f"{path.name} is not a regular file")
    # O_NOFOLLOW: a link swapped in after the check above still cannot be followed.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def _tensor_specs(raw: object, what: str) -> tuple[TensorSpec, ...]:
    if isinstance(raw, Mapping):
        raw = [{"name": name, **spec} for name, spec in raw.items()]
    if not isinstance(raw, list) or not raw:
        raise RefusedVersion("sidecar", f"sidecar '{what}' must be a non-empty list of tensors")
    specs = []
    for entry in raw:
        if not isinstance(entry, Mapping) or not entry.get("name"):
            raise RefusedVersion("sidecar", f"sidecar '{what}' entry without a name")
        try:
            datatype = _datatype(entry.get("datatype", entry.get("dtype", entry.get("type", ""))))
        except ValueError as exc:
            raise RefusedVersion("sidecar", f"sidecar {what} '{entry['name']}': {exc}") from exc
        allow_nan = bool(entry.get("allow_nan", entry.get("nan_is_missing", False)))
        specs.append(TensorSpec(str(entry["name"]), datatype, _dims(entry.get("shape")), allow_nan))
    return tuple(specs)


def _session_specs(args: Sequence[Any]) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {arg.name: (_ORT_TYPES.get(arg.type, arg.type), _dims(arg.shape)) for arg in args}


def _compare(
    kind: str, declared: tuple[TensorSpec, ...], actual: Mapping[str, tuple[str, tuple[int, ...]]]
) -> None:
    names = [spec.name for spec in declared]
    if sorted(names) != sorted(actual):
        raise RefusedVersion(
            "signature", f"sidecar {kind} {sorted(names)} differ from the graph's {sorted(actual)}"
        )
    for spec in declared:
        datatype, shape = actual[spec.name]
        if datatype != spec.datatype:
            raise RefusedVersion(
                "signature", f"{kind[:-1]} '{spec.name}': sidecar says {spec.datatype}, graph says {datatype}"
            )
        if len(shape) != len(spec.shape) or any(
            a != d and not (a == -1 and d == -1) for a, d in zip(shape, spec.shape, strict=True)
        ):
            raise RefusedVersion(
                "signature",
                f"{kind[:-1]} '{spec.name}': sidecar shape {list(spec.shape)} != graph shape {list(shape)}",
            )


def load_version(
    root: Path,
    name: str,
    version: str,
    *,
    intra_op_threads: int,
    known_feature_specs: frozenset[str] = KNOWN_FEATURE_SPECS,
) -> LoadedModel:
    """Check and load ``<root>/<name>/<version>``; raises RefusedVersion naming the failed check."""
    folder = root / name / version
    _check_no_symlink(folder, root)
    if not folder.is_dir():
        raise RefusedVersion("missing", f"{name}/{version} is not a folder")
    try:
        sidecar = json.loads(_read_regular(folder / SIDECAR_FILE, root))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RefusedVersion("sidecar", f"{SIDECAR_FILE} does not parse: {exc}") from exc
    if not isinstance(sidecar, dict):
        raise RefusedVersion("sidecar", f"{SIDECAR_FILE} is not a JSON object")
    if str(sidecar.get("name", name)) != name or str(sidecar.get("version", version)) != version:
        raise RefusedVersion(
            "sidecar",
            f"sidecar names {sidecar.get('name')}/{sidecar.get('version')}, folder is {name}/{version}",
        )
    spec_version = str(sidecar.get("feature_spec_version", ""))
    if spec_version not in known_feature_specs:
        raise RefusedVersion(
            "feature_spec",
            f"feature spec version {spec_version!r} is not one this service builds "
            f"({sorted(known_feature_specs)})",
        )
    names = sidecar.get("feature_names")
    if names is not None and list(names) != list(features.FEATURE_NAMES):
        # Same spec version, different columns: a drift that would feed the model misplaced features.
        raise RefusedVersion(
            "feature_spec",
            f"feature spec {spec_version!r}: sidecar lists {len(names)} feature names, this service builds "
            f"{len(features.FEATURE_NAMES)} ({_first_difference(list(names), list(features.FEATURE_NAMES))})",
        )
    expected_hash = str(sidecar.get("sha256", "")).lower()
    if len(expected_hash) != 64:
        raise RefusedVersion("sidecar", "sidecar has no sha256 of model.onnx")
    inputs = _tensor_specs(sidecar.get("inputs"), "inputs")
    outputs = _tensor_specs(sidecar.get("outputs"), "outputs")
    quantiles = tuple(float(q) for q in sidecar.get("quantiles", ()))
    if not quantiles or any(not 0 < q < 1 for q in quantiles) or list(quantiles) != sorted(set(quantiles)):
        raise RefusedVersion(
            "sidecar", f"sidecar quantiles {list(quantiles)} must be ascending levels in (0, 1)"
        )

    model_bytes = _read_regular(folder / ONNX_FILE, root)
    expected_size = sidecar.get("size_bytes")
    if isinstance(expected_size, int) and len(model_bytes) != expected_size:
        raise RefusedVersion(
            "truncated", f"model.onnx holds {len(model_bytes)} bytes, sidecar says {expected_size}"
        )
    actual_hash = hashlib.sha256(model_bytes).hexdigest()
    if actual_hash != expected_hash:
        raise RefusedVersion(
            "sha256", f"sha256 of model.onnx is {actual_hash[:16]}..., sidecar says {expected_hash[:16]}..."
        )
    try:
        refs = external_data_refs(model_bytes)
    except ValueError as exc:
        raise RefusedVersion("truncated", f"model.onnx is not a complete ONNX protobuf ({exc})") from exc
    real_folder = os.path.realpath(folder)
    for ref in refs:
        target = os.path.realpath(os.path.join(real_folder, ref.location))
        if (
            not ref.location
            or os.path.isabs(ref.location)
            or os.path.commonpath([real_folder, target]) != real_folder
        ):
            raise RefusedVersion(
                "external_data",
                f"tensor '{ref.tensor}' keeps its data outside the model folder ({ref.location!r})",
            )
        path = folder / ref.location
        _check_no_symlink(path, root)
        if not path.is_file():
            raise RefusedVersion("external_data", f"external data file {ref.location!r} is missing")
        if ref.length is not None and path.stat().st_size < ref.offset + ref.length:
            raise RefusedVersion("truncated", f"external data file {ref.location!r} is shorter than declared")

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        if refs:
            # External data is resolved against the model's folder, which only a path load provides; the
            # references were checked above and the graph bytes were hashed.
            session = ort.InferenceSession(
                str(folder / ONNX_FILE), options, providers=["CPUExecutionProvider"]
            )
        else:
            session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several unrelated exception types
        raise RefusedVersion("onnxruntime", f"onnxruntime cannot load the graph: {str(exc)[:300]}") from exc
    _compare("inputs", inputs, _session_specs(session.get_inputs()))
    _compare("outputs", outputs, _session_specs(session.get_outputs()))
    width = outputs[0].shape[-1] if outputs[0].shape else -1
    if width not in (-1, len(quantiles)):
        raise RefusedVersion("signature", f"output width {width} != {len(quantiles)} quantile levels")
    vocabularies = sidecar.get("vocabularies") or {}
    series_methods, class_methods = _model_choice(folder, root, sidecar)
    first_week = _training_first_week(sidecar)
    return LoadedModel(
        name=name,
        version=version,
        path=folder,
        session=session,
        inputs=inputs,
        outputs=outputs,
        quantiles=quantiles,
        feature_spec_version=spec_version,
        vocabularies=vocabularies if isinstance(vocabularies, Mapping) else {},
        sidecar=sidecar,
        loaded_at=time.time(),
        series_methods=series_methods,
        class_methods=class_methods,
        training_first_week=first_week,
    )


def _training_first_week(sidecar: Mapping[str, Any]) -> np.datetime64 | None:
    """The training window's first Monday, or None when the sidecar does not record a window (a model
    exported without ``training_data``: its histories are then used as analytics serves them). A value that
    is there but is no Monday refuses the version: histories aligned to it would not match training's."""
    data = sidecar.get("training_data")
    window = data.get("window") if isinstance(data, Mapping) else None
    value = window.get("first_week") if isinstance(window, Mapping) else None
    if value is None:
        return None
    try:
        week = np.datetime64(str(value), "D")
    except ValueError as exc:
        raise RefusedVersion("sidecar", f"training_data.window.first_week {value!r} is not a date") from exc
    if np.isnat(week) or (week - A_MONDAY).astype(np.int64) % 7 != 0:
        raise RefusedVersion("sidecar", f"training_data.window.first_week {value!r} is not a Monday")
    return week


def _model_choice(
    folder: Path, root: Path, sidecar: Mapping[str, Any]
) -> tuple[dict[str, str], dict[str, str]]:
    """Per-series and per-class method choices recorded by training (optional file named by the sidecar)."""
    choice = sidecar.get("model_choice")
    if not isinstance(choice, Mapping) or not choice.get("file"):
        return {}, {}
    name = str(choice["file"])
    if "/" in name or "\\" in name or name.startswith("."):
        raise RefusedVersion("sidecar", f"model_choice file {name!r} must be a plain file name")
    try:
        data = json.loads(_read_regular(folder / name, root))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RefusedVersion("sidecar", f"{name} does not parse: {exc}") from exc
    series = {
        str(key): str(entry.get("method", ""))
        for key, entry in (data.get("series") or {}).items()
        if isinstance(entry, Mapping)
    }
    classes = {
        str(k): str(v) for k, v in (data.get("class_choice") or choice.get("class_choice") or {}).items()
    }
    return series, classes


def _first_difference(a: list[str], b: list[str]) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"column {i}: {x!r} vs {y!r}"
    return f"lengths {len(a)} vs {len(b)}"


def _fingerprint(folder: Path) -> tuple[Any, ...]:
    """Cheap change detector of a version folder: (size, mtime, inode) of both files, or None if absent."""
    out: list[Any] = []
    for file in (ONNX_FILE, SIDECAR_FILE):
        try:
            info = os.lstat(folder / file)
            out.append((info.st_size, info.st_mtime_ns, info.st_ino, stat.S_IFMT(info.st_mode)))
        except OSError:
            out.append(None)
    return tuple(out)


def _sidecar_summary(folder: Path) -> Mapping[str, Any]:
    try:
        data = json.loads((folder / SIDECAR_FILE).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


class ModelRepository:
    """Tracks every version under ``root``, keeps the newest valid one of each model loaded, reloads on demand
    (``reload``) and by polling (``start``)."""

    def __init__(
        self,
        root: Path,
        *,
        intra_op_threads: int = 1,
        poll_seconds: float = 0.0,
        metrics: ForecastMetrics | None = None,
        known_feature_specs: frozenset[str] = KNOWN_FEATURE_SPECS,
        pinned_versions: Mapping[str, str] | None = None,
    ):
        self.root = Path(root)
        # model -> the only version to serve (a rollback pin); other versions are ignored.
        self._pinned = dict(pinned_versions or {})
        self._threads = intra_op_threads
        self._poll_seconds = poll_seconds
        self._metrics = metrics
        self._known = known_feature_specs
        self._serving: dict[str, LoadedModel] = {}
        self._records: dict[tuple[str, str], VersionRecord] = {}
        self._unloaded: set[str] = set()
        self._lock = asyncio.Lock()
        self._poller: asyncio.Task[None] | None = None

    # -- reading (event loop, lock-free: one dict lookup returns one immutable version) ---------------------

    def serving(self, name: str) -> LoadedModel | None:
        return self._serving.get(name)

    def get(self, name: str, version: str = "") -> LoadedModel:
        """The serving version of ``name`` (or exactly ``version``); NotFound or FailedPrecondition."""
        model = self._serving.get(name)
        if model is None:
            if not any(key[0] == name for key in self._records):
                raise NotFound(
                    f"model '{name}' is not in the repository", resource_type="model", resource_name=name
                )
            raise FailedPrecondition(f"model '{name}' has no version loaded", reason="MODEL_NOT_READY")
        if version and version != model.version:
            raise NotFound(
                f"model '{name}' version '{version}' is not loaded (serving: {model.version})",
                resource_type="model_version",
                resource_name=f"{name}/{version}",
            )
        return model

    def ready(self) -> bool:
        return bool(self._serving)

    def models(self) -> list[LoadedModel]:
        return list(self._serving.values())

    def records(self) -> list[VersionRecord]:
        """Every version seen, serving first, then by model name and newest version."""
        return sorted(
            self._records.values(),
            key=lambda r: (r.state != "ready", r.name, -_version_key(r.version)),
        )

    # -- loading -----------------------------------------------------------------------------------------

    def _scan(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        try:
            entries = sorted(self.root.iterdir())
        except FileNotFoundError:
            log.warning("model repository %s does not exist", self.root)
            return found
        for model_dir in entries:
            if model_dir.name.startswith(".") or not model_dir.is_dir():
                continue
            versions = [
                p.name
                for p in model_dir.iterdir()
                if not p.name.startswith(".")
                and p.name.isdigit()
                and int(p.name) > 0
                and (p.is_dir() or p.is_symlink())
            ]
            pin = self._pinned.get(model_dir.name)
            if pin:
                versions = [v for v in versions if v == pin]
            found[model_dir.name] = sorted(versions, key=_version_key, reverse=True)
        return found

    def _refuse(self, record: VersionRecord, error: RefusedVersion) -> None:
        record.state, record.reason = "refused", str(error)
        log.warning(
            "model %s version %s refused: %s",
            record.name,
            record.version,
            error,
            extra={"model": record.name, "version": record.version, "kind": error.kind, "reason": str(error)},
        )
        if self._metrics:
            self._metrics.model_loads.labels(record.name, "refused", error.kind).inc()

    async def _reload_model(self, name: str, versions: list[str]) -> None:
        current = self._serving.get(name)
        for version in versions:
            folder = self.root / name / version
            fingerprint = await asyncio.to_thread(_fingerprint, folder)
            record = self._records.get((name, version))
            if current is not None and _version_key(version) <= _version_key(current.version):
                if record is None:
                    summary = await asyncio.to_thread(_sidecar_summary, folder)
                    self._records[(name, version)] = VersionRecord(
                        name,
                        version,
                        "superseded",
                        f"older than serving version {current.version}",
                        fingerprint,
                        summary,
                    )
                continue
            if (
                record is not None
                and record.fingerprint == fingerprint
                and record.state in ("refused", "ready")
            ):
                continue  # unchanged since it was judged
            record = VersionRecord(name, version, "loading", "", fingerprint)
            self._records[(name, version)] = record
            try:
                model = await asyncio.to_thread(
                    load_version,
                    self.root,
                    name,
                    version,
                    intra_op_threads=self._threads,
                    known_feature_specs=self._known,
                )
            except RefusedVersion as error:
                self._refuse(record, error)
                continue
            except Exception as exc:  # an I/O error mid-check refuses the version, never the process
                self._refuse(record, RefusedVersion("io", f"{type(exc).__name__}: {exc}"))
                continue
            record.sidecar = model.sidecar
            self._switch(name, model, record)
            return

    def _switch(self, name: str, model: LoadedModel, record: VersionRecord) -> None:
        previous = self._serving.get(name)
        self._serving[name] = model  # the switch: one assignment, seen whole by every later request
        record.state, record.reason = "ready", ""
        if previous is not None:
            old = self._records.get((name, previous.version))
            if old is not None:
                old.state, old.reason = "superseded", f"replaced by version {model.version}"
        log.info(
            "model %s version %s serving",
            name,
            model.version,
            extra={
                "model": name,
                "version": model.version,
                "previous": previous.version if previous else None,
            },
        )
        if self._metrics:
            self._metrics.model_loads.labels(name, "loaded", "").inc()
            if previous is not None:
                self._metrics.serving_version.remove(name, previous.version)
            self._metrics.serving_version.labels(name, model.version).set(1)

    async def reload(self, name: str | None = None) -> None:
        """Scan the repository (or one model) and switch each model to its newest valid version."""
        async with self._lock:
            found = await asyncio.to_thread(self._scan)
            names = [name] if name is not None else [n for n in found if n not in self._unloaded]
            for model_name in names:
                await self._reload_model(model_name, found.get(model_name, []))

    async def load(self, name: str) -> LoadedModel:
        """RepositoryModelLoad: re-read ``name`` (also after an unload) and return the version serving."""
        self._unloaded.discard(name)
        if not (self.root / name).is_dir():
            raise NotFound(
                f"model '{name}' is not in the repository", resource_type="model", resource_name=name
            )
        await self.reload(name)
        model = self._serving.get(name)
        if model is None:
            reasons = "; ".join(
                f"{r.version}: {r.reason}" for r in self.records() if r.name == name and r.state == "refused"
            )
            raise FailedPrecondition(f"model '{name}' has no valid version ({reasons or 'no versions'})")
        return model

    async def unload(self, name: str) -> None:
        """RepositoryModelUnload: stop serving ``name`` until it is loaded again (polling leaves it alone)."""
        async with self._lock:
            model = self._serving.pop(name, None)
            if model is None:
                raise NotFound(f"model '{name}' is not loaded", resource_type="model", resource_name=name)
            self._unloaded.add(name)
            record = self._records.get((name, model.version))
            if record is not None:
                record.state, record.reason = "unloaded", "unloaded on request"
            if self._metrics:
                self._metrics.serving_version.remove(name, model.version)
            log.info("model %s version %s unloaded", name, model.version, extra={"model": name})

    # -- polling -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """First scan (awaited, so the service starts with its models), then poll in the background."""
        await self.reload()
        if self._poll_seconds > 0 and self._poller is None:
            self._poller = asyncio.create_task(self._poll(), name="model-repository-poller")

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_seconds)
            try:
                await self.reload()
            except Exception:
                log.exception("model repository scan failed")

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None
