"""The world model served over HTTP, against real etcd and Redis: manifest CAS, hot-swap, queries."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import httpx
import pytest

from deploy.launcher import Deployment, wait_until
from world_model.config import tiny_config
from world_model.train import train

PHYSICS = {"gravity": 9.81, "restitution": 0.9, "drag": 0.1, "time_step": 0.05}


def _checkpoints(cluster: Deployment) -> Path:
    return Path(cluster.api["r1"].env["WORLDSTATE_CHECKPOINT_DIR"])  # type: ignore[index]


def _train(cluster: Deployment, seed: int) -> dict:
    cfg = tiny_config()
    cfg.data = dataclasses.replace(cfg.data, train_rollouts=128, val_rollouts=64, seed=seed)
    cfg.train = dataclasses.replace(cfg.train, steps=20, probe_steps=20, probe_windows=128, seed=seed,
                                    threads=1, checkpoint_dir=str(_checkpoints(cluster)))
    return train(cfg, progress=False).manifest


def _serving(api: httpx.Client, digest: str) -> bool:
    return api.get("/v1/models/current").json().get("hash") == digest


@pytest.fixture(scope="module")
def lab(cluster: Deployment) -> str:
    api = httpx.Client(base_url=cluster.api["r1"].url, timeout=30)
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


def test_no_model_published_is_503(api: httpx.Client, lab: str) -> None:
    if api.get("/v1/models/current").json()["state"] != "none":
        pytest.skip("a model was already published in this session")
    r = api.post(f"/v1/worlds/{lab}/predict", json={"horizon": 3, "entities": ["ball0"]})
    assert r.status_code == 503 and r.json()["type"] == "/problems/model-unavailable"


@pytest.fixture(scope="module")
def published(cluster: Deployment, lab: str) -> dict:
    api = httpx.Client(base_url=cluster.api["r1"].url, timeout=30)
    manifest = _train(cluster, seed=1)
    current = api.get("/v1/models/manifest")
    headers = {"If-Match": current.headers["etag"]} if current.status_code == 200 else {"If-None-Match": "*"}
    r = api.put("/v1/models/manifest", json=manifest, headers=headers)
    assert r.status_code == 200, r.text
    for region in cluster.api:
        node = httpx.Client(base_url=cluster.api[region].url, timeout=30)
        assert wait_until(lambda: _serving(node, manifest["hash"]), 60), node.get("/v1/models/current").json()
    return manifest


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


def test_concurrent_predicts_are_batched_and_match_one_by_one(cluster: Deployment, api: httpx.Client,
                                                              lab: str, published: dict) -> None:
    query = {"horizon": 8, "entities": ["ball0", "ball1", "ball2"]}
    alone = api.post(f"/v1/worlds/{lab}/predict", json=query).json()["trajectories"]
    before = api.get("/v1/models/current").json()["batches"]

    async def many() -> list[dict]:
        async with httpx.AsyncClient(base_url=cluster.api["r1"].url, timeout=30) as c:
            rs = await asyncio.gather(*[c.post(f"/v1/worlds/{lab}/predict", json=query) for _ in range(16)])
        return [r.json()["trajectories"] for r in rs]

    for t in asyncio.run(many()):
        for ent in alone:
            for a, b in zip(alone[ent]["positions"], t[ent]["positions"]):
                assert a == pytest.approx(b, abs=1e-4)
    status = api.get("/v1/models/current").json()
    assert status["batches"] - before < 17  # at least two queries shared a forward pass


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
    r = api.post(f"/v1/worlds/{lab}/predict", content=b'{"horizon": 3, "actions": {"ball0": [[1e400, 0]]}}')
    assert r.status_code == 422
    other = "model-lab-moon"
    api.put(f"/v1/worlds/{other}", json={})
    api.put(f"/v1/worlds/{other}/physics", json={**PHYSICS, "time_step": 0.01})  # outside the trained range
    w = api.post(f"/v1/worlds/{other}/observations", json={"event_id": "m1", "entity": "rock", "source": "s",
                                                            "fields": {"x": 1, "y": 1, "vx": 0, "vy": 0}})
    assert w.status_code == 202
    r = api.post(f"/v1/worlds/{other}/predict", json={"horizon": 3})
    assert r.status_code == 422 and r.json()["code"] == "physics_out_of_range"


def test_hot_swap_without_dropping_requests(cluster: Deployment, api: httpx.Client, lab: str,
                                            published: dict) -> None:
    second = _train(cluster, seed=2)
    query = {"horizon": 4, "entities": ["ball0", "ball1"]}

    async def load_while_swapping() -> set[str]:
        hashes: set[str] = set()
        async with httpx.AsyncClient(base_url=cluster.api["r1"].url, timeout=30) as c:
            async def hammer() -> None:
                for _ in range(15):
                    r = await c.post(f"/v1/worlds/{lab}/predict", json=query)
                    assert r.status_code == 200, r.text
                    hashes.add(r.json()["provenance"]["model"]["hash"])
                    await asyncio.sleep(0.02)

            async def publish() -> None:
                while not hashes:  # swap only once the old model has answered, however slow the machine
                    await asyncio.sleep(0.01)
                etag = (await c.get("/v1/models/manifest")).headers["etag"]
                r = await c.put("/v1/models/manifest", json=second, headers={"If-Match": etag})
                assert r.status_code == 200, r.text

            await asyncio.gather(*[hammer() for _ in range(4)], publish())
        return hashes

    hashes = asyncio.run(load_while_swapping())
    assert wait_until(lambda: _serving(api, second["hash"]), 60)
    assert published["hash"] in hashes  # served before the swap, every request answered throughout
