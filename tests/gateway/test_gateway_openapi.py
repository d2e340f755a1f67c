"""The OpenAPI document: structurally valid, precise, at a stable URL; and a fuzz over it finds no 5xx."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.app import OPENAPI_URL
from gateway.auth import GRPC_METHOD_KEY

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def structural_problems(doc: dict[str, Any]) -> list[str]:
    """OpenAPI 3.1 rules that matter to clients and generators (no validator package is in the lock)."""
    problems = []
    if not str(doc.get("openapi", "")).startswith("3.1"):
        problems.append("openapi version is not 3.1.x")
    if not doc.get("info", {}).get("title") or not doc.get("info", {}).get("version"):
        problems.append("info.title / info.version missing")
    schemas = doc.get("components", {}).get("schemas", {})
    for ref in _refs(doc):
        if not ref.startswith("#/components/schemas/") or ref.rsplit("/", 1)[1] not in schemas:
            problems.append(f"dangling $ref {ref}")
    operation_ids: set[str] = set()
    for path, item in doc["paths"].items():
        template_params = set(re.findall(r"\{([^}]+)\}", path))
        for verb, op in item.items():
            where = f"{verb.upper()} {path}"
            if verb not in HTTP_METHODS:
                problems.append(f"{where}: not an HTTP method")
                continue
            if op.get("operationId") in operation_ids:
                problems.append(f"{where}: duplicate operationId")
            operation_ids.add(op.get("operationId"))
            if not op.get("responses"):
                problems.append(f"{where}: no responses")
            for code, response in op.get("responses", {}).items():
                if code != "default" and not re.fullmatch(r"[1-5]\d\d|[1-5]XX", code):
                    problems.append(f"{where}: bad response code {code}")
                if "description" not in response:
                    problems.append(f"{where} {code}: response without description")
            declared_path = set()
            seen = set()
            for p in op.get("parameters", []):
                if p.get("in") not in ("query", "path", "header", "cookie") or not p.get("name"):
                    problems.append(f"{where}: malformed parameter {p}")
                if (p.get("in"), p.get("name")) in seen:
                    problems.append(f"{where}: parameter {p.get('name')} twice")
                seen.add((p.get("in"), p.get("name")))
                if "schema" not in p and "content" not in p:
                    problems.append(f"{where}: parameter {p.get('name')} has no schema")
                if p.get("in") == "path":
                    declared_path.add(p["name"])
                    if p.get("required") is not True:
                        problems.append(f"{where}: path parameter {p['name']} not required")
            if declared_path != template_params:
                problems.append(f"{where}: path parameters {declared_path} != template {template_params}")
    return problems


async def test_document_is_valid_and_precise(client: httpx.AsyncClient) -> None:
    response = await client.get(OPENAPI_URL)
    assert response.status_code == 200
    doc = response.json()
    assert structural_problems(doc) == []
    assert doc["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": doc["components"]["securitySchemes"]["HTTPBearer"]["description"],
    }
    for path, item in doc["paths"].items():
        if not path.startswith("/api/v1"):
            continue
        for verb, op in item.items():
            where = f"{verb.upper()} {path}"
            error_schema = op["responses"]["400"]["content"]["application/json"]["schema"]
            assert error_schema == {"$ref": "#/components/schemas/ErrorBody"}, where
            if path == "/api/v1/login":
                assert "security" not in op and GRPC_METHOD_KEY not in op
                continue
            assert op["security"] == [{"HTTPBearer": []}], where
            assert op[GRPC_METHOD_KEY].startswith("/novacorrente."), where
            assert {"401", "403", "503", "504"} <= set(op["responses"]), where
            ok = op["responses"]["200"]["content"]
            if path.endswith("/stream"):
                assert set(ok) == {"text/event-stream"}
            else:
                assert ok["application/json"]["schema"]["$ref"].startswith("#/components/schemas/"), where
    # Invalid input is answered 400 with ErrorBody, never FastAPI's 422, so the document names no 422.
    operations = [(f"{verb} {path}", op) for path, item in doc["paths"].items() for verb, op in item.items()]
    assert [where for where, op in operations if "422" in op["responses"]] == []
    assert not {"HTTPValidationError", "ValidationError"} & set(doc["components"]["schemas"])
    assert (await client.get(OPENAPI_URL)).json() == doc  # built once, the same every time
    # Enums are spelled out, so generated clients get them as types.
    status = doc["components"]["schemas"]["InventoryRowOut"]["properties"]["status"]
    assert status["enum"] == ["unspecified", "normal", "attention", "critical"]
    assert doc["paths"]["/readyz"]["get"]["responses"]["503"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ReadyOut"
    }


# -- fuzz --------------------------------------------------------------------------------------------------


def _strategy(schema: dict[str, Any], components: dict[str, Any]) -> st.SearchStrategy[Any]:
    if "$ref" in schema:
        return _strategy(components[schema["$ref"].rsplit("/", 1)[1]], components)
    if "anyOf" in schema:
        return st.one_of([_strategy(s, components) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "string":
        if schema.get("format") == "date":
            return st.dates(dt.date(1900, 1, 1), dt.date(2200, 12, 31)).map(dt.date.isoformat)
        return st.text(max_size=min(schema.get("maxLength", 40), 40))
    if kind == "integer":
        return st.integers(schema.get("minimum", -(2**40)), schema.get("maximum", 2**40))
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False, width=32)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(_strategy(schema.get("items", {}), components), max_size=3)
    if kind == "null":
        return st.none()
    if kind == "object":
        props = {k: _strategy(v, components) for k, v in schema.get("properties", {}).items()}
        return st.fixed_dictionaries({}, optional=props)
    return st.text(max_size=10)


def _junk() -> st.SearchStrategy[Any]:
    """Values outside the schema: the gateway must answer 400, never 5xx."""
    return st.one_of(
        st.text(max_size=12),
        st.sampled_from(["nan", "inf", "-1", "1e309", "2147483648", "99999999999999999999", "", " ", "0x10"]),
    )


def _requests(doc: dict[str, Any]) -> st.SearchStrategy[tuple[str, str, dict[str, Any], Any]]:
    components = doc["components"]["schemas"]
    per_operation = []
    for path, item in doc["paths"].items():
        for verb, op in item.items():
            if path.endswith("/stream") or path == "/metrics":
                continue  # endless by design; covered by the streaming tests
            params = {}
            for p in op.get("parameters", []):
                if p["name"] == "access_token":
                    continue
                valid = _strategy(p["schema"], components)
                value = st.one_of(valid, _junk()) if p["in"] == "query" else valid
                params[(p["in"], p["name"])] = value if p.get("required") else st.none() | value
            body_schema = (
                op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            )
            body = (
                st.one_of(
                    st.none(),
                    _strategy(body_schema, components),
                    st.dictionaries(st.text(max_size=5), st.integers()),
                )
                if body_schema
                else st.none()
            )
            per_operation.append(
                st.tuples(st.just(verb.upper()), st.just(path), st.fixed_dictionaries(params), body)
            )
    return st.one_of(per_operation)


async def test_fuzz_finds_no_server_error(
    app: FastAPI, client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    doc = (await client.get(OPENAPI_URL)).json()
    loop = asyncio.get_running_loop()
    headers = {"Authorization": f"Bearer {token_for('admin')}"}
    seen: dict[int, int] = {}

    async def call(verb: str, path: str, params: dict[tuple[str, str], Any], body: Any) -> httpx.Response:
        for (where, name), value in params.items():
            if where == "path":
                path = path.replace("{" + name + "}", quote(str(value), safe="") or "x")
        query = {
            name: value for (where, name), value in params.items() if where == "query" and value is not None
        }
        kwargs: dict[str, Any] = {"params": query, "headers": headers}
        if body is not None:
            kwargs["json"] = body
        return await client.request(verb, path, **kwargs)

    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(_requests(doc))
    def run(request: tuple[str, str, dict[tuple[str, str], Any], Any]) -> None:
        response = asyncio.run_coroutine_threadsafe(call(*request), loop).result(timeout=30)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert response.status_code < 500, (request, response.status_code, response.text[:500])
        if response.status_code >= 400:
            assert response.json()["error"]["status"] == response.status_code

    # Hypothesis drives the examples from a worker thread; the app and the gRPC doubles stay on this loop.
    await asyncio.to_thread(run)
    assert seen.get(200, 0) > 50 and seen.get(400, 0) > 10, seen
