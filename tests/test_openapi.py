"""The OpenAPI document describes the API as it is, and /docs works with no network beyond the node.

A node's app is built in process and never started: the document and /docs need no backend.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from api import openapi
from api.app import create_app
from consistency import ap_keys, cp_keys
from service.config import Settings

pytestmark = pytest.mark.unit
METHODS = ("get", "put", "post", "delete", "patch")


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    # No `with`: the lifespan (which would connect to etcd and Redis) never runs.
    yield TestClient(create_app(Settings()), base_url="http://127.0.0.1")


@pytest.fixture(scope="module")
def doc(client: TestClient) -> dict[str, Any]:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    return r.json()  # type: ignore[no-any-return]


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if method in METHODS:
                yield path, method, op


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from refs(v)


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_every_ref_resolves_the_observations_body_included(doc: dict[str, Any]) -> None:
    unresolved = []
    for ref in set(refs(doc)):
        try:
            resolve(doc, ref)
        except (KeyError, AssertionError):
            unresolved.append(ref)
    assert unresolved == []
    body = doc["paths"]["/v1/worlds/{world}/observations"]["post"]["requestBody"]["content"]["application/json"]
    assert "#/components/schemas/ObservationIn" in set(refs(body))


def test_every_operation_has_an_example(doc: dict[str, Any]) -> None:
    def has_example(node: Any) -> bool:
        return isinstance(node, dict) and (any(k in node for k in ("example", "examples"))
                                           or any(has_example(v) for v in node.values()))

    missing = [f"{m.upper()} {p}" for p, m, op in operations(doc)
               if not has_example(op.get("requestBody", {})) and not any(
                   has_example(r.get("content", {})) for s, r in op["responses"].items() if s.startswith("2"))]
    assert missing == []


def test_every_error_status_is_a_problem_document(doc: dict[str, Any]) -> None:
    bad = [f"{m.upper()} {p} {s}" for p, m, op in operations(doc) for s, r in op["responses"].items()
           if not s.startswith("2") and "application/problem+json" not in r.get("content", {})]
    assert bad == []
    problem = doc["components"]["schemas"]["Problem"]
    assert {"type", "title", "status"} <= set(problem["required"])


def test_every_put_and_post_declares_its_body(doc: dict[str, Any]) -> None:
    assert [f"{m.upper()} {p}" for p, m, op in operations(doc) if m in ("put", "post") and "requestBody" not in op] == []


def test_v1_operations_take_a_bearer_key_and_say_how_they_refuse(doc: dict[str, Any]) -> None:
    assert doc["components"]["securitySchemes"][openapi.SECURITY_SCHEME] == {
        **doc["components"]["securitySchemes"][openapi.SECURITY_SCHEME], "type": "http", "scheme": "bearer"}
    for path, method, op in operations(doc):
        if path.startswith("/v1/"):
            assert op["security"] == [{openapi.SECURITY_SCHEME: []}], (method, path)
            assert {"401", "403", "429"} <= set(op["responses"]), (method, path)
            if "requestBody" in op:
                assert "415" in op["responses"], (method, path)
        else:
            assert op["security"] == [], (method, path)


def test_documented_name_patterns_are_the_validators(doc: dict[str, Any]) -> None:
    assert openapi.WORLD["pattern"] == f"^{cp_keys._WORLD.pattern}$"
    segment = cp_keys._SEGMENT.pattern
    assert openapi.KEY["pattern"] == f"^{segment}(/{segment})*$" and openapi.KEY["maxLength"] == cp_keys.MAX_KEY_LEN
    assert openapi.ENTITY["pattern"] == f"^{ap_keys.ENTITY_RE.pattern}$"
    put = doc["paths"]["/v1/worlds/{world}/params/{key}"]["put"]
    schemas = {p["name"]: p["schema"] for p in put["parameters"] if p["in"] == "path"}
    assert schemas["world"]["pattern"] == openapi.WORLD["pattern"] and schemas["key"]["pattern"] == openapi.KEY["pattern"]
    for world in ("lab", "a.b-c_9", "x" * 64):
        assert re.fullmatch(openapi.WORLD["pattern"][1:-1], world)
    for world in ("", ".lab", "x" * 65, "a/b"):
        assert not re.fullmatch(openapi.WORLD["pattern"][1:-1], world)


def test_docs_load_nothing_from_outside_the_node(client: TestClient) -> None:
    r = client.get("/docs")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", r.text)
    assert re.findall(r"https?://", r.text) == []
    assets = [u for u in urls if u.endswith((".js", ".css"))]
    assert len(assets) == 2, urls
    for url in urls + ["/openapi.json"]:
        got = client.get(url)
        assert got.status_code == 200 and got.content, url
    assert client.get("/redoc").status_code == 404
