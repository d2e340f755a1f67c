"""Reads the external-data references of an ONNX file without the ``onnx`` package (a training dependency).

An ONNX tensor may keep its bytes in a separate file named by a ``location`` entry; onnxruntime opens that
path relative to the model. A crafted ``../../etc/shadow`` would read outside the model folder, so serving
lists every reference first and refuses the model unless each one stays inside it. The walk covers every
place a tensor can hide: graph initializers, sparse initializers, node attributes (tensors and subgraphs, at
any depth) and local functions. A buffer that is not a well-formed protobuf (e.g. a truncated file) raises
``ValueError``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["ExternalRef", "external_data_refs"]

# onnx.proto field numbers (stable across IR versions).
_MODEL_GRAPH, _MODEL_FUNCTIONS = 7, 25
_FUNCTION_NODE = 7
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INITIALIZER = 1, 5, 15
_NODE_ATTRIBUTE = 5
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_TENSOR_NAME, _TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 8, 13, 14
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_DATA_LOCATION_EXTERNAL = 1
_MAX_DEPTH = 64


@dataclass(frozen=True, slots=True)
class ExternalRef:
    """One tensor whose data lives in another file."""

    tensor: str
    location: str
    offset: int
    length: int | None


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of one message; length-delimited values are sub-buffers."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire == 1:
            pos += 8
            yield number, wire, 0
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise ValueError("length-delimited field runs past the end of the buffer")
            yield number, wire, buf[pos : pos + size]
            pos += size
        elif wire == 5:
            pos += 4
            yield number, wire, 0
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise ValueError("field runs past the end of the buffer")


def _tensor(buf: memoryview, out: list[ExternalRef]) -> None:
    name, location, entries = "", 0, {}
    for number, _, value in _fields(buf):
        if number == _TENSOR_NAME and isinstance(value, memoryview):
            name = bytes(value).decode("utf-8", "replace")
        elif number == _TENSOR_DATA_LOCATION and isinstance(value, int):
            location = value
        elif number == _TENSOR_EXTERNAL_DATA and isinstance(value, memoryview):
            key = val = ""
            for sub_number, _, sub_value in _fields(value):
                if isinstance(sub_value, memoryview):
                    text = bytes(sub_value).decode("utf-8", "replace")
                    key, val = (text, val) if sub_number == 1 else (key, text)
            entries[key] = val
    if location == _DATA_LOCATION_EXTERNAL or entries:
        length = entries.get("length")
        out.append(
            ExternalRef(
                tensor=name,
                location=entries.get("location", ""),
                offset=int(entries.get("offset", "0") or 0),
                length=int(length) if length else None,
            )
        )


def _sparse(buf: memoryview, out: list[ExternalRef]) -> None:
    for number, _, value in _fields(buf):
        if number in (_SPARSE_VALUES, _SPARSE_INDICES) and isinstance(value, memoryview):
            _tensor(value, out)


def _node(buf: memoryview, out: list[ExternalRef], depth: int) -> None:
    for number, _, value in _fields(buf):
        if number != _NODE_ATTRIBUTE or not isinstance(value, memoryview):
            continue
        for attr_number, _, attr_value in _fields(value):
            if not isinstance(attr_value, memoryview):
                continue
            if attr_number in (_ATTR_T, _ATTR_TENSORS):
                _tensor(attr_value, out)
            elif attr_number in (_ATTR_G, _ATTR_GRAPHS):
                _graph(attr_value, out, depth + 1)
            elif attr_number in (_ATTR_SPARSE, _ATTR_SPARSES):
                _sparse(attr_value, out)


def _graph(buf: memoryview, out: list[ExternalRef], depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise ValueError("subgraphs nested too deep")
    for number, _, value in _fields(buf):
        if not isinstance(value, memoryview):
            continue
        if number == _GRAPH_INITIALIZER:
            _tensor(value, out)
        elif number == _GRAPH_SPARSE_INITIALIZER:
            _sparse(value, out)
        elif number == _GRAPH_NODE:
            _node(value, out, depth)


def external_data_refs(model_bytes: bytes) -> list[ExternalRef]:
    """Every external-data reference of a serialized ``ModelProto``; raises ValueError when malformed."""
    out: list[ExternalRef] = []
    seen_graph = False
    for number, _, value in _fields(memoryview(model_bytes)):
        if not isinstance(value, memoryview):
            continue
        if number == _MODEL_GRAPH:
            seen_graph = True
            _graph(value, out, 0)
        elif number == _MODEL_FUNCTIONS:
            for fn_number, _, fn_value in _fields(value):
                if fn_number == _FUNCTION_NODE and isinstance(fn_value, memoryview):
                    _node(fn_value, out, 0)
    if not seen_graph:
        raise ValueError("no graph in the model")
    return out
