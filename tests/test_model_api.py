"""The world model served over HTTP, against real etcd and Redis: manifest CAS, hot-swap, queries."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.launcher import ApiNode, Deployment, api_args, wait_until
from deploy.processes import free_port
from service.queries import MAX_ENTITIES
from tests.conftest import auth_headers
from world_model.config import tiny_config
from world_model.train import train

PHYSICS = {"gravity": 9.81, "restitution": 0.9, "drag": 0.1, "time_step": 0.05}

# The batching node's batcher runs a forward pass only once BATCH queries are queued, or BATCH_WAIT_S
# after the first of them: concurrent queries share a pass however slowly the machine lets them arrive,
# and BATCH - 1 queries are certainly still waiting BATCH_WAIT_S after they were sent.
BATCH = 4
BATCH_WAIT_S = 5.0


def _checkpoints(cluster: Deployment) -> Path:
    return Path(cluster.api["r1"].env["WORLDSTATE_CHECKPOINT_DIR"])  # type: ignore[index]


def _train(cluster: Deployment, seed: int) -> dict:
    cfg = tiny_config()
    cfg.data = dataclasses.replace(cfg.data, train_rollouts=128, val_rollouts=64, seed=seed)
    cfg.train = dataclasses.replace(cfg.train, steps=20, seed=seed,
                                    threads=1, checkpoint_dir=str(_checkpoints(cluster)))
    return train(cfg, progress=False).manifest


def _serving(api: httpx.Client, digest: str) -> bool:
    return api.get("/v1/models/current").json().get("hash") == digest


async def _until(check: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Poll `check` (plain or async) until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if inspect.isawaitable(got):
            got = await got
        if got:
            return got
        assert time.monotonic() < deadline, f"not true after {timeout} s"
        await asyncio.sleep(0.02)


@pytest.fixture(scope="module")
def lab(cluster: Deployment) -> str:
    api = httpx.Client(base_url=cluster.api["r1"].url, timeout=30, headers=auth_headers(cluster))
    world = "model-lab"
    api.put(f"/v1/worlds/{world}", json={})
    assert api.put(f"/v1/worlds/{world}/physics", json=PHYSICS).status_code == 200
    obs = [{"event_id": f"init-{i}", "entity": f"ball{i}", "source": "sim",
            "fields": {"x": 2.0 + 2 * i, "y": 5.0, "vx": 1.0 - i, "vy": 0.5, "radius": 0.4, "mass": 1.0}}
           for i in range(3)]
    obs.append({"event_id": "init-x", "entity": "ghost", "source": "sim", "fields": {"x": 1.0}})
    w = api.post(f"/v1/worlds/{world}/observations", json=obs)
    assert w.status_code == 202
    api.get(f"/v1/worlds/{world}/entities/ball0", params={"token": w.json()["token"]})
    return world


@pytest.fixture(scope="module")
def published(cluster: Deployment, lab: str) -> dict:
    api = httpx.Client(base_url=cluster.api["r1"].url, timeout=30, headers=auth_headers(cluster))
    manifest = _train(cluster, seed=1)
    current = api.get("/v1/models/manifest")
    headers = {"If-Match": current.headers["etag"]} if current.status_code == 200 else {"If-None-Match": "*"}
    r = api.put("/v1/models/manifest", json=manifest, headers=headers)
    assert r.status_code == 200, r.text
    for region in cluster.api:
        node = httpx.Client(base_url=cluster.api[region].url, timeout=30, headers=auth_headers(cluster))
        assert wait_until(lambda: _serving(node, manifest["hash"]), 60), node.get("/v1/models/current").json()
    return manifest


@pytest.fixture(scope="module")
def batching_node(cluster: Deployment, published: dict) -> Iterator[str]:
    """One more API node on r1's stores (no replication of its own) whose batcher waits for BATCH queries,
    or BATCH_WAIT_S: a node with the default 2 ms wait batches only what happens to arrive together."""
    port = free_port()
    env = {**(cluster.api["r1"].env or {}), "WORLDSTATE_NODE_ID": "api-r1-batching", "WORLDSTATE_PEERS": "",
           "WORLDSTATE_PREDICT_MAX_BATCH": str(BATCH), "WORLDSTATE_PREDICT_MAX_WAIT_MS": str(BATCH_WAIT_S * 1000),
           "WORLDSTATE_PREDICT_MEMO": "0"}  # the same query 16 times: each must reach a batch
    node = ApiNode("r1", port, [sys.executable, "-m", "deploy", *api_args("127.0.0.1", port)],
                   cluster.run_dir / "logs" / "api-r1-batching.log", env)
    node.start()
    try:
        node.wait_healthy(60)
        with httpx.Client(base_url=node.url, timeout=30, headers=auth_headers(cluster)) as c:
            assert wait_until(lambda: _serving(c, published["hash"]), 60), c.get("/v1/models/current").json()
        yield node.url
    finally:
        node.stop()


def test_manifest_is_cas_and_checked_against_the_blob(cluster: Deployment, api: httpx.Client,
                                                      published: dict) -> None:
    got = api.get("/v1/models/manifest")
    assert got.json()["manifest"]["hash"] == published["hash"]
    stale = api.put("/v1/models/manifest", json=published, headers={"If-Match": '"1"'})
    assert stale.status_code == 412
    missing = api.put("/v1/models/manifest", json={**published, "hash": "0" * 64})
    assert missing.status_code == 422 and missing.json()["type"] == "/problems/manifest-invalid"
    # A blob whose bytes no longer match its name is refused.
    tampered = "f" * 64
    (_checkpoints(cluster) / f"{tampered}.pt").write_bytes(b"not the bytes that hash to this")
    bad = api.put("/v1/models/manifest", json={**published, "hash": tampered})
    assert bad.status_code == 422 and "f" * 12 in bad.json()["detail"]
    assert api.get("/v1/models/manifest").json()["revision"] == got.json()["revision"]  # nothing changed


def test_predict_reads_both_tiers_and_says_so(api: httpx.Client, api2: httpx.Client, lab: str,
                                              published: dict) -> None:
    r = api2.post(f"/v1/worlds/{lab}/predict", json={"horizon": 5, "entities": ["ball0", "ball1", "ball2"],
                                                     "actions": {"ball1": [[0.5, 0.0]]}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body["trajectories"]) == {"ball0", "ball1", "ball2"}
    assert len(body["trajectories"]["ball0"]["positions"]) == 5
    assert all(len(p) == 2 for p in body["trajectories"]["ball2"]["velocities"])
    prov = body["provenance"]
    assert prov["model"]["hash"] == published["hash"]
    assert prov["physics_revision"] == api.get(f"/v1/worlds/{lab}/physics").json()["revision"]
    assert prov["physics_consistency"] == "linearizable"
    assert prov["ap"]["replica"] == "r2" and "r1" in prov["ap"]["watermark"]


def test_concurrent_predicts_are_batched_and_match_one_by_one(cluster: Deployment, api: httpx.Client, lab: str,
                                                              published: dict, batching_node: str) -> None:
    query = {"horizon": 8, "entities": ["ball0", "ball1", "ball2"]}
    alone = api.post(f"/v1/worlds/{lab}/predict", json=query).json()["trajectories"]  # r1: a batch of one
    with httpx.Client(base_url=batching_node, timeout=30, headers=auth_headers(cluster)) as c:
        before = c.get("/v1/models/current").json()

        async def many() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=batching_node, timeout=BATCH_WAIT_S + 60,
                                         headers=auth_headers(cluster)) as ac:
                return await asyncio.gather(*[ac.post(f"/v1/worlds/{lab}/predict", json=query) for _ in range(16)])

        answers = asyncio.run(many())
        after = c.get("/v1/models/current").json()
    assert [r.status_code for r in answers] == [200] * 16, [r.text for r in answers if r.status_code != 200]
    for t in (r.json()["trajectories"] for r in answers):
        for ent in alone:
            for a, b in zip(alone[ent]["positions"], t[ent]["positions"]):
                assert a == pytest.approx(b, abs=1e-4)
    assert after["hash"] == before["hash"] == published["hash"]
    queries, batches = after["queries"] - before["queries"], after["batches"] - before["batches"]
    assert queries == 16
    # Fewer forward passes than queries: at least one pass answered two or more queries together;
    # and no pass took more than the node's BATCH.
    assert 16 // BATCH <= batches < queries, (queries, batches)


def test_surprise_scores_an_impossible_jump_higher(api: httpx.Client, lab: str, published: dict) -> None:
    pred = api.post(f"/v1/worlds/{lab}/predict", json={"horizon": 2, "entities": ["ball0", "ball1", "ball2"]})
    p = pred.json()["trajectories"]["ball0"]
    expected = [{"x": x, "y": y, "vx": vx, "vy": vy} for (x, y), (vx, vy) in zip(p["positions"], p["velocities"])]
    teleport = [{**f, "x": f["x"] + 6.0, "y": 9.0} for f in expected]
    normal = api.post(f"/v1/worlds/{lab}/surprise", json={"observed": {"ball0": expected},
                                                          "entities": ["ball0", "ball1", "ball2"]})
    jump = api.post(f"/v1/worlds/{lab}/surprise", json={"observed": {"ball0": teleport},
                                                        "entities": ["ball0", "ball1", "ball2"]})
    assert normal.status_code == 200 and jump.status_code == 200, jump.text
    assert jump.json()["scores"]["ball0"] > normal.json()["scores"]["ball0"]
    assert jump.json()["most_surprising"] == "ball0" and "threshold" in jump.json()


def test_plan_returns_actions_and_path(api: httpx.Client, lab: str, published: dict) -> None:
    r = api.post(f"/v1/worlds/{lab}/plan", json={"entity": "ball0", "goal": {"x": 5.0, "y": 5.0, "radius": 1.0},
                                                 "horizon": 6, "budget": 32, "entities": ["ball0", "ball1"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["actions"]) == 6 and len(body["predicted_path"]) == 6
    assert isinstance(body["final_energy"], float) and isinstance(body["reaches_goal"], bool)
    assert body["provenance"]["model"]["hash"] == published["hash"]


@pytest.mark.parametrize("path,body,status,kind", [
    ("predict", {"horizon": 10_000, "entities": ["ball0"]}, 422, "model-input"),
    ("predict", {"horizon": 0, "entities": ["ball0"]}, 422, "validation-error"),
    ("predict", {"horizon": 3, "entities": ["nobody"]}, 404, "unknown-entity"),
    ("predict", {"horizon": 3, "entities": ["ghost"]}, 422, "entity-incomplete"),
    ("predict", {"horizon": 3, "entities": ["ball0"], "actions": {"ball9": [[1, 0]]}}, 404, "unknown-entity"),
    ("predict", {"horizon": 3, "entities": ["ball0"], "actions": {"ball0": [[1, 0]] * 4}}, 422, "validation-error"),
    ("predict", {"horizon": 3, "entities": ["bad name"]}, 422, "validation-error"),
    ("plan", {"entity": "ball0", "goal": {"x": 1, "y": 1, "radius": -1}, "horizon": 3}, 422, "validation-error"),
    ("plan", {"entity": "ball0", "goal": {"x": 1, "y": 1, "radius": 1}, "horizon": 3, "budget": 2}, 422,
     "validation-error"),
    ("plan", {"entity": "nobody", "entities": ["ball0"], "goal": {"x": 1, "y": 1, "radius": 1}, "horizon": 3,
              "budget": 8}, 404, "unknown-entity"),
    ("surprise", {"entities": ["ball0"], "observed": {"nobody": [{"x": 1, "y": 1, "vx": 0, "vy": 0}]}}, 404,
     "unknown-entity"),
    ("surprise", {"observed": {}}, 422, "validation-error"),
    ("surprise", {"observed": {"ball0": [{"x": 1, "y": 1, "vx": 0, "vy": 0}],
                               "ball1": []}}, 422, "validation-error"),
])
def test_bad_model_queries(api: httpx.Client, lab: str, published: dict, path: str, body: dict, status: int,
                           kind: str) -> None:
    r = api.post(f"/v1/worlds/{lab}/{path}", json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == f"/problems/{kind}"


def test_non_finite_and_untrained_physics_are_refused(api: httpx.Client, lab: str, published: dict) -> None:
    # 1e400 is valid JSON syntax for a number no double holds: refused where it stands, not as a bad body.
    r = api.post(f"/v1/worlds/{lab}/predict", headers={"Content-Type": "application/json"},
                 content=b'{"horizon": 3, "entities": ["ball0"], "actions": {"ball0": [[1e400, 0]]}}')
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "/problems/validation-error"
    assert [(e["loc"], e["type"]) for e in r.json()["errors"]] == [(["body", "actions", "ball0", 0, 0],
                                                                   "finite_number")]
    other = "model-lab-moon"
    api.put(f"/v1/worlds/{other}", json={})
    api.put(f"/v1/worlds/{other}/physics", json={**PHYSICS, "time_step": 0.01})  # outside the trained range
    w = api.post(f"/v1/worlds/{other}/observations", json={"event_id": "m1", "entity": "rock", "source": "s",
                                                            "fields": {"x": 1, "y": 1, "vx": 0, "vy": 0}})
    assert w.status_code == 202
    r = api.post(f"/v1/worlds/{other}/predict", json={"horizon": 3})
    assert r.status_code == 422 and r.json()["code"] == "physics_out_of_range"


@pytest.fixture(scope="module")
def crowd(cluster: Deployment) -> list[str]:
    """A world of MAX_ENTITIES + 1 entities, named so that they list in order (the last one last)."""
    api = httpx.Client(base_url=cluster.api["r1"].url, timeout=30, headers=auth_headers(cluster))
    world = "model-lab-crowd"
    api.put(f"/v1/worlds/{world}", json={})
    assert api.put(f"/v1/worlds/{world}/physics", json=PHYSICS).status_code == 200
    names = [f"c{i:03d}" for i in range(MAX_ENTITIES + 1)]
    obs = [{"event_id": f"crowd-{i}", "entity": name, "source": "sim",
            "fields": {"x": 0.5 + i % 9, "y": 0.5 + 1.2 * (i // 9), "vx": 0.0, "vy": 0.0, "radius": 0.2}}
           for i, name in enumerate(names)]
    w = api.post(f"/v1/worlds/{world}/observations", json=obs)
    assert w.status_code == 202, w.text
    assert api.get(f"/v1/worlds/{world}/entities/{names[-1]}", params={"token": w.json()["token"]}).status_code == 200
    return names


def test_more_entities_than_the_model_takes(api: httpx.Client, crowd: list[str], published: dict) -> None:
    world, first, last = "model-lab-crowd", crowd[:MAX_ENTITIES], crowd[MAX_ENTITIES]
    frame = {"x": 1.0, "y": 1.0, "vx": 0.0, "vy": 0.0}
    # predict names at most MAX_ENTITIES (its schema); by default it takes every body, and there are too many.
    r = api.post(f"/v1/worlds/{world}/predict", json={"horizon": 2, "entities": crowd})
    assert r.status_code == 422 and r.json()["type"] == "/problems/validation-error", r.text
    assert [e["loc"] for e in r.json()["errors"]] == [["body", "entities"]]
    r = api.post(f"/v1/worlds/{world}/predict", json={"horizon": 2, "entities": first})
    assert r.status_code == 200 and list(r.json()["trajectories"]) == first, r.text
    # surprise and plan add the entity they are about to the entities named: one more than the model takes;
    # named nowhere, every body of the world takes part: one more again.
    for path, body in [("predict", {"horizon": 2}),
                       ("surprise", {"entities": first, "observed": {last: [frame]}}),
                       ("plan", {"entities": first, "entity": last, "goal": {"x": 1, "y": 1, "radius": 1},
                                 "horizon": 2, "budget": 8}),
                       ("surprise", {"observed": {last: [frame]}}),
                       ("plan", {"entity": last, "goal": {"x": 1, "y": 1, "radius": 1}, "horizon": 2, "budget": 8})]:
        r = api.post(f"/v1/worlds/{world}/{path}", json=body)
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text
        assert (r.json()["type"], r.json()["code"]) == ("/problems/model-input", "too_many_entities")
    for path, body in [("surprise", {"entities": first[:3], "observed": {"nobody": [frame]}}),
                       ("plan", {"entities": first[:3], "entity": "nobody", "goal": {"x": 1, "y": 1, "radius": 1},
                                 "horizon": 2})]:
        r = api.post(f"/v1/worlds/{world}/{path}", json=body)
        assert r.status_code == 404 and r.json()["type"] == "/problems/unknown-entity", r.text


def test_a_whole_world_query_takes_every_body_and_says_which_it_left_out(api: httpx.Client, lab: str,
                                                                          published: dict) -> None:
    """`ghost` has only an x: it is no body the model can move, so it is skipped, and the answer says why."""
    r = api.post(f"/v1/worlds/{lab}/predict", json={"horizon": 2})
    assert r.status_code == 200, r.text
    assert sorted(r.json()["trajectories"]) == ["ball0", "ball1", "ball2"]
    assert r.json()["skipped"] == {"ghost": ["y", "vx", "vy"]}
    r = api.post(f"/v1/worlds/{lab}/plan", json={"entity": "ball1", "goal": {"x": 5, "y": 5, "radius": 1},
                                                 "horizon": 2, "budget": 8})
    assert r.status_code == 200 and r.json()["bodies"] == ["ball0", "ball1", "ball2"], r.text
    r = api.post(f"/v1/worlds/{lab}/plan", json={"entity": "ghost", "goal": {"x": 5, "y": 5, "radius": 1},
                                                 "horizon": 2, "budget": 8})
    assert r.status_code == 422 and r.json()["type"] == "/problems/entity-incomplete", r.text


@pytest.fixture(scope="module")
def far(cluster: Deployment) -> str:
    """A world with an entity observed at x=1e30: a finite number, accepted as an observation."""
    api = httpx.Client(base_url=cluster.api["r1"].url, timeout=30, headers=auth_headers(cluster))
    world = "model-lab-far"
    api.put(f"/v1/worlds/{world}", json={})
    assert api.put(f"/v1/worlds/{world}/physics", json=PHYSICS).status_code == 200
    w = api.post(f"/v1/worlds/{world}/observations", json=[
        {"event_id": "far-1", "entity": "far", "source": "sim", "fields": {"x": 1e30, "y": 5.0, "vx": 0.0, "vy": 0.0}},
        {"event_id": "far-2", "entity": "near", "source": "sim", "fields": {"x": 5.0, "y": 5.0, "vx": 0.0, "vy": 0.0}}])
    assert w.status_code == 202, w.text
    assert api.get(f"/v1/worlds/{world}/entities/far", params={"token": w.json()["token"]}).status_code == 200
    return world


def test_a_whole_world_query_leaves_out_a_body_outside_the_box(api: httpx.Client, published: dict,
                                                               far: str) -> None:
    r = api.post(f"/v1/worlds/{far}/predict", json={"horizon": 3})
    assert r.status_code == 200, r.text
    assert list(r.json()["trajectories"]) == ["near"] and r.json()["skipped"] == {"far": ["x"]}


@pytest.mark.parametrize("path,body,code", [
    ("predict", {"horizon": 3, "entities": ["near"], "actions": {"near": [[1e30, 0.0]]}}, "speed_out_of_range"),
    ("predict", {"horizon": 3, "entities": ["far"]}, "state_outside_box"),
    ("surprise", {"entities": ["near"], "observed": {"near": [{"x": 1e20, "y": 1.0, "vx": 0.0, "vy": 0.0}]}},
     "non_finite_input"),
    ("plan", {"entity": "near", "entities": ["near"], "goal": {"x": 1e20, "y": 1.0, "radius": 1.0}, "horizon": 3,
              "budget": 8}, "invalid_goal"),
])
def test_states_and_numbers_outside_the_world_are_refused(api: httpx.Client, published: dict, far: str,
                                                          path: str, body: dict, code: str) -> None:
    """A body outside the box, an impulse no body could take, a goal outside the box: each is refused
    with its code. An observation far outside the box is a surprise query's right (that is what it
    measures), but one so far its energy overflows float32 is refused as non-finite."""
    r = api.post(f"/v1/worlds/{far}/{path}", json=body)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text
    assert (r.json()["type"], r.json()["code"]) == ("/problems/model-input", code)


@pytest.mark.parametrize("path,body,status,kind", [
    ("predict", b'{"horizon": 3, "entities": ["ball0"], "actions": {"ball0": [[0, -1e400]]}}', 422, "validation-error"),
    ("surprise", b'{"observed": {"ball0": [{"x": 1e400, "y": 1, "vx": 0, "vy": 0}]}}', 422, "validation-error"),
    ("surprise", b'{"observed": {"ball0": [{"x": NaN, "y": 1, "vx": 0, "vy": 0}]}}', 422, "validation-error"),
    ("observations", b'{"event_id": "inf-1", "entity": "inf", "source": "s", "fields": {"x": 1e400}}', 400,
     "invalid-json"),
    ("observations", b'{"event_id": "nan-1", "entity": "nan", "source": "s", "fields": {"x": NaN}}', 400,
     "invalid-json"),
])
def test_non_finite_numbers_never_reach_the_model(api: httpx.Client, lab: str, published: dict, path: str,
                                                  body: bytes, status: int, kind: str) -> None:
    """The model's own non_finite_input check on its inputs cannot be reached over HTTP: every number
    a query or an observation carries is checked first. What the user gets instead is this."""
    r = api.post(f"/v1/worlds/{lab}/{path}", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status and r.headers["content-type"] == "application/problem+json", r.text
    assert r.json()["type"] == f"/problems/{kind}"
    if kind == "validation-error":
        assert [e["type"] for e in r.json()["errors"]] == ["finite_number"]
    for entity in ("inf", "nan"):
        assert api.get(f"/v1/worlds/{lab}/entities/{entity}").status_code == 404  # nothing was stored


def test_hot_swap_without_dropping_requests(cluster: Deployment, api: httpx.Client, lab: str, published: dict,
                                            batching_node: str) -> None:
    """Swap the model while r1 is hammered and while BATCH - 1 queries wait in the batching node's
    batcher: no request may be dropped, and the waiting ones finish on the model they started with.

    The waiting queries prove that requests were in flight across the swap: the old batcher cannot
    answer them before BATCH_WAIT_S after they were sent, and the node reports the moment it swapped
    (`loaded_at`, wall clock, the same host as this test). A swap that comes later, or before they
    reached the old batcher, proves nothing, so the test swaps again, back and forth between two
    models, until one does."""
    second = _train(cluster, seed=2)
    query = {"horizon": 4, "entities": ["ball0", "ball1"]}
    predict = f"/v1/worlds/{lab}/predict"

    async def swap_under_load(r1: httpx.AsyncClient, node: httpx.AsyncClient, manifest: dict) -> Swap:
        hammered: list[httpx.Response] = []
        stop = asyncio.Event()

        async def hammer() -> None:
            while not stop.is_set():
                hammered.append(await r1.post(predict, json=query))

        async def swap() -> Swap:
            try:
                await _until(lambda: hammered)  # the old model is answering r1's load
                sent_at = time.time()
                waiting = [asyncio.create_task(node.post(predict, json=query)) for _ in range(BATCH - 1)]
                etag = (await r1.get("/v1/models/manifest")).headers["etag"]
                put = await r1.put("/v1/models/manifest", json=manifest, headers={"If-Match": etag})
                assert put.status_code == 200, put.text
                new = put.json()["revision"]
                swapped = await _until(lambda: _serving_revision(node, new))
                # The hammer goes on until the new model answers it too.
                await _until(lambda: any(r.status_code == 200 and _answered_by(r) >= new for r in hammered))
                full = await asyncio.gather(*[node.post(predict, json=query) for _ in range(BATCH)])
                return Swap(new, sent_at, swapped["loaded_at"], list(await asyncio.gather(*waiting)), full,
                            hammered)
            finally:
                stop.set()

        done, *_ = await asyncio.gather(swap(), *[hammer() for _ in range(4)])
        return done

    async def swap_until_one_is_crossed() -> list[Swap]:
        swaps: list[Swap] = []
        deadline = time.monotonic() + 150  # each swap takes about BATCH_WAIT_S; pytest-timeout is 300 s
        key = auth_headers(cluster)
        async with (httpx.AsyncClient(base_url=cluster.api["r1"].url, timeout=60, headers=key) as r1,
                    httpx.AsyncClient(base_url=batching_node, timeout=BATCH_WAIT_S + 60, headers=key) as node):
            while time.monotonic() < deadline:
                swaps.append(await swap_under_load(r1, node, [second, published][len(swaps) % 2]))
                if swaps[-1].crossed() or swaps[-1].dropped():
                    break
        return swaps

    swaps = asyncio.run(swap_until_one_is_crossed())
    for s in swaps:
        assert not s.dropped(), s.dropped()
        assert all(_answered_by(r) >= s.new for r in s.full)
    assert any(s.crossed() for s in swaps), [(s.swapped_at - s.sent_at, [_answered_by(r) for r in s.waiting])
                                             for s in swaps]
    assert {r.json()["provenance"]["model"]["hash"] for s in swaps for r in s.hammered} == {published["hash"],
                                                                                          second["hash"]}
    last = [second, published][(len(swaps) - 1) % 2]
    assert wait_until(lambda: _serving(api, last["hash"]), 60)


@dataclasses.dataclass
class Swap:
    """One publication of a model under load, and what every request sent around it got."""

    new: int  # the manifest revision published
    sent_at: float  # time.time() just before the waiting queries were sent to the batching node
    swapped_at: float  # the batching node's loaded_at for `new`
    waiting: list[httpx.Response]  # BATCH - 1 queries sent to the batching node before the publication
    full: list[httpx.Response]  # BATCH queries sent to it once it served `new`
    hammered: list[httpx.Response]  # r1's load throughout

    def dropped(self) -> list[str]:
        """The answers of requests that were not answered."""
        return [r.text for r in [*self.hammered, *self.waiting, *self.full] if r.status_code != 200]

    def crossed(self) -> bool:
        """The waiting queries were answered by the old model, which cannot have run them before
        BATCH_WAIT_S after they were sent: if the node swapped before that, they were in flight."""
        return (all(r.status_code == 200 and _answered_by(r) < self.new for r in self.waiting)
                and self.swapped_at < self.sent_at + BATCH_WAIT_S)


async def _serving_revision(c: httpx.AsyncClient, revision: int) -> dict[str, Any] | None:
    """The node's model status once it serves manifest `revision` (or a later one)."""
    status = (await c.get("/v1/models/current")).json()
    return status if status.get("manifest_revision", 0) >= revision else None


def _answered_by(r: httpx.Response) -> int:
    return int(r.json()["provenance"]["model"]["manifest_revision"])
