"""Inputs that gave a 500 or poisoned later reads: each gets a clear 4xx problem and changes
nothing, against real etcd, Redis and API processes (issue 12, "No input gives a 500")."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.launcher import Deployment, wait_until
from tests.conftest import auth_headers, etcd_revision
from world_model.checkpoints import CheckpointStore

PHYSICS = {"gravity": 9.81, "restitution": 0.9, "drag": 0.1, "time_step": 0.05}
WORLD = "poison"
BIG = 2**63  # one past etcd's int64 revisions
GOOD = {"x": 5.0, "y": 5.0, "vx": 0.5, "vy": 0.0}


def deep(n: int, leaf: str = "1") -> str:
    return "[" * n + leaf + "]" * n


@pytest.fixture(scope="module")
def poisoned(cluster: Deployment) -> Iterator[httpx.Client]:
    """A world with one good body, one at x=1e308 and one whose x is a string; a model served."""
    cluster.publish_default_model()
    api = httpx.Client(base_url=cluster.api["r1"].url, timeout=60, headers=auth_headers(cluster))
    assert wait_until(lambda: api.get("/v1/models/current").json().get("state") == "ok", 60)
    api.put(f"/v1/worlds/{WORLD}", json={})
    assert api.put(f"/v1/worlds/{WORLD}/physics", json=PHYSICS).status_code in (200, 201)
    assert api.put(f"/v1/worlds/{WORLD}/params/a", json=1).status_code in (200, 201)
    w = api.post(f"/v1/worlds/{WORLD}/observations", json=[
        {"event_id": "ball", "entity": "ball", "source": "t", "fields": GOOD},
        {"event_id": "huge", "entity": "huge", "source": "t", "fields": {**GOOD, "x": 1e308}},
        {"event_id": "strx", "entity": "strx", "source": "t", "fields": {**GOOD, "x": "far"}}])
    assert w.status_code == 202, w.text
    api.get(f"/v1/worlds/{WORLD}/entities/ball", params={"token": w.json()["token"]})
    yield api
    api.close()


@dataclass
class Case:
    method: str
    path: str  # under /v1/worlds/{WORLD} unless it starts with /v1/models
    status: int
    type: str
    json: Any = None
    content: str | bytes | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    code: str | None = None  # the model's code, for model-input problems
    absent_entity: str | None = None  # an AP write that must not have happened

    def url(self) -> str:
        return self.path if self.path.startswith("/v1/models") else f"/v1/worlds/{WORLD}{self.path}"


J = {"content-type": "application/json"}
OBS = {"event_id": "p1", "entity": "poison-at", "source": "t"}

CASES = {
    # revisions past int64, and in the future
    "if-match-2^63-put": Case("PUT", "/params/a", 400, "invalid-precondition", json=2,
                              headers={"If-Match": f'"{BIG}"'}),
    "if-match-2^63-delete": Case("DELETE", "/params/a", 400, "invalid-precondition",
                                 headers={"If-Match": f'"{BIG}"'}),
    "list-revision-2^63": Case("GET", "/params", 422, "validation-error", params={"revision": BIG}),
    "list-revision-future": Case("GET", "/params", 422, "future-revision", params={"revision": 10**15}),
    "watch-start-2^63": Case("GET", "/watch", 422, "validation-error", params={"start_revision": BIG}),
    "watch-last-event-id-2^63-1": Case("GET", "/watch", 422, "validation-error",
                                       headers={"Last-Event-ID": str(BIG - 1)}),
    "watch-last-event-id-superscript": Case("GET", "/watch", 422, "validation-error",
                                            headers={"Last-Event-ID": b"\xb2"}),  # '2' in Latin-1
    # numbers
    "observed-at-1e308": Case("POST", "/observations", 422, "validation-error",
                              json={**OBS, "observed_at": 1e308}, absent_entity="poison-at"),
    "observation-int-2^64": Case("POST", "/observations", 422, "validation-error", headers=J,
                                 content='{"event_id":"p2","entity":"poison-u64","source":"t",'
                                         '"fields":{"f":%d}}' % 2**64, absent_entity="poison-u64"),
    "observation-int-below-int64": Case("POST", "/observations", 422, "validation-error", headers=J,
                                        content='{"event_id":"p3","entity":"poison-i64","source":"t",'
                                                '"fields":{"f":%d}}' % (-(2**63) - 1),
                                        absent_entity="poison-i64"),
    "param-int-2^64": Case("PUT", "/params/big", 422, "validation-error", headers=J, content=str(2**64)),
    "physics-true": Case("PUT", "/physics", 422, "validation-error", json={**PHYSICS, "gravity": True}),
    "physics-string": Case("PUT", "/physics", 422, "validation-error", json={**PHYSICS, "drag": "0.1"}),
    "physics-param-true": Case("PUT", "/params/physics/constants", 422, "validation-error",
                               json={**PHYSICS, "restitution": True}),
    "physics-param-string": Case("PUT", "/params/physics/constants", 422, "validation-error",
                                 json={**PHYSICS, "gravity": "9.81"}),
    "predict-horizon-1e12-actions": Case("POST", "/predict", 422, "model-input", code="horizon_out_of_range",
                                         json={"horizon": 10**12, "entities": ["ball"],
                                               "actions": {"ball": [[0.1, 0.0]]}}),
    # depth and size of stored values
    "param-deep-33": Case("PUT", "/params/deep", 422, "value-too-deep", headers=J, content=deep(33)),
    "param-deep-957": Case("PUT", "/params/deep", 422, "value-too-deep", headers=J, content=deep(957)),
    "param-deep-960": Case("PUT", "/params/deep", 422, "value-too-deep", headers=J, content=deep(960)),
    "param-deep-990-long-int": Case("PUT", "/params/deep", 422, "value-too-deep", headers=J,
                                    content=deep(990, "1234567890123456789")),
    "world-meta-deep-960": Case("PUT", "", 422, "value-too-deep", headers=J,
                                content='{"a":%s}' % deep(960), params={}),
    "observation-field-deep-960": Case("POST", "/observations", 422, "validation-error", headers=J,
                                       content='{"event_id":"p4","entity":"poison-deep","source":"t",'
                                               '"fields":{"f":%s}}' % deep(960), absent_entity="poison-deep"),
    "param-too-large-escaped": Case("PUT", "/params/wide", 422, "value-too-large", json="\u00e9" * 300_000),
    # entities the model cannot use, named
    "predict-named-x-1e308": Case("POST", "/predict", 422, "model-input", code="state_outside_box",
                                  json={"horizon": 3, "entities": ["huge"]}),
    "plan-for-x-1e308": Case("POST", "/plan", 422, "model-input", code="state_outside_box",
                             json={"entity": "huge", "goal": {"x": 6, "y": 5, "radius": 0.5}, "horizon": 5,
                                   "budget": 16}),
    "predict-named-string-x": Case("POST", "/predict", 422, "entity-incomplete",
                                   json={"horizon": 3, "entities": ["strx"]}),
}


def _send(api: httpx.Client, case: Case) -> tuple[int, Any, str]:
    """Status, problem body, content type; a watch is read only up to its first answer."""
    with api.stream(case.method, case.url(), json=case.json, content=case.content, headers=case.headers,
                    params=case.params) as r:
        raw = next(r.iter_bytes(), b"") if case.path == "/watch" else r.read()
        return r.status_code, raw, r.headers.get("content-type", "")


@pytest.mark.parametrize("name", list(CASES))
def test_poison_input_is_a_4xx_problem_and_changes_nothing(cluster: Deployment, poisoned: httpx.Client,
                                                           name: str) -> None:
    case = CASES[name]
    before = etcd_revision(cluster)
    status, raw, ctype = _send(poisoned, case)
    assert status == case.status, raw[:500]
    assert ctype.startswith("application/problem+json")
    problem = httpx.Response(status, content=raw).json()
    assert problem["type"] == f"/problems/{case.type}", problem
    assert problem["status"] == case.status
    if case.code:
        assert problem["code"] == case.code
    assert etcd_revision(cluster) == before, "the CP tier changed"
    if case.absent_entity:
        assert poisoned.get(f"/v1/worlds/{WORLD}/entities/{case.absent_entity}").status_code == 404


def test_a_future_revision_does_not_leak_etcds_text(poisoned: httpx.Client) -> None:
    r = poisoned.get(f"/v1/worlds/{WORLD}/params", params={"revision": 10**15})
    assert r.status_code == 422
    body = r.json()
    assert "etcd" not in body["detail"] and "OUT_OF_RANGE" not in body["detail"], body
    assert body["current_revision"] > 0


def test_bounds_admit_what_they_should(poisoned: httpx.Client) -> None:
    """The limits sit where they say: 32 levels, 64-bit integers, revision 2^63-2 as an event id."""
    assert poisoned.put(f"/v1/worlds/{WORLD}/params/deep32", content=deep(32), headers=J).status_code == 200
    got = poisoned.put(f"/v1/worlds/{WORLD}/params/u64", content=str(2**64 - 1), headers=J)
    assert got.status_code == 200
    assert poisoned.get(f"/v1/worlds/{WORLD}/params/u64").json()["value"] == 2**64 - 1
    ids = poisoned.post(f"/v1/worlds/{WORLD}/observations", headers=J,
                        content='{"event_id":"1796152709143000000","entity":"ball","source":"t","fields":{}}')
    assert ids.status_code == 202, "a long digit run inside a string is no integer"
    with poisoned.stream("GET", f"/v1/worlds/{WORLD}/watch", headers={"Last-Event-ID": str(BIG - 2)}) as r:
        assert r.status_code == 200
        assert next(r.iter_bytes()).startswith(b": watching from revision 9223372036854775807")


def test_the_params_listing_survives_a_deep_write(poisoned: httpx.Client) -> None:
    """A param ~957 deep was stored, and then the listing answered 500 to everyone."""
    assert poisoned.put(f"/v1/worlds/{WORLD}/params/listed", content=deep(957), headers=J).status_code == 422
    listing = poisoned.get(f"/v1/worlds/{WORLD}/params")
    assert listing.status_code == 200, listing.text[:300]


@pytest.mark.parametrize("route", ["predict", "surprise", "plan"])
def test_a_chunked_body_over_the_limit_is_413(poisoned: httpx.Client, route: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"horizon": 1, "pad": "'
        for _ in range(50):
            yield b"x" * (1 << 20)
        yield b'"}'

    r = poisoned.post(f"/v1/worlds/{WORLD}/{route}", content=chunks(), headers=J)
    assert r.status_code == 413, r.text[:300]
    assert r.json()["type"] == "/problems/payload-too-large"


@pytest.mark.parametrize("route, body", [
    ("predict", {"horizon": 3}),
    ("surprise", {"observed": {"ball": [{"x": 5.0, "y": 5.0, "vx": 0.5, "vy": 0.0}]}}),
    ("plan", {"entity": "ball", "goal": {"x": 6, "y": 5, "radius": 0.5}, "horizon": 5, "budget": 16}),
])
def test_whole_world_queries_skip_entities_the_model_cannot_use(poisoned: httpx.Client, route: str,
                                                                body: dict[str, Any]) -> None:
    r = poisoned.post(f"/v1/worlds/{WORLD}/{route}", json=body)
    assert r.status_code == 200, r.text[:500]
    skipped = r.json()["skipped"]
    assert skipped.get("huge") == ["x"] and skipped.get("strx") == ["x"], skipped


def test_a_training_snapshot_is_no_model(cluster: Deployment, poisoned: httpx.Client) -> None:
    """A resume snapshot hashes fine, but published it left restarted nodes with no model."""
    checkpoints = Path(cluster.api["r1"].env["WORLDSTATE_CHECKPOINT_DIR"])  # type: ignore[index]
    current = poisoned.get("/v1/models/manifest")
    manifest = current.json()["manifest"]
    snapshot = CheckpointStore(checkpoints).save({"kind": "resume", "config": manifest["config"], "step": 1})
    before = etcd_revision(cluster)
    r = poisoned.put("/v1/models/manifest", json={**manifest, "hash": snapshot, "version": manifest["version"] + 1},
                     headers={"If-Match": current.headers["etag"]})
    assert r.status_code == 422, r.text
    assert r.json()["type"] == "/problems/manifest-invalid" and "resume" in r.json()["detail"]
    assert etcd_revision(cluster) == before
    assert poisoned.get("/v1/models/manifest").json()["manifest"]["hash"] == manifest["hash"]
