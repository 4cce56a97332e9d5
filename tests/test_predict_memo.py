"""The predict memo (world_model/memo.py): a query asked again with the same inputs is answered
without a forward pass, with the answer the model gave; any change to its inputs (an
observation, the physics, the horizon, an impulse) is a new query. Against a real deployment."""

from __future__ import annotations

import asyncio
import httpx
import numpy as np
import pytest

from deploy.launcher import Deployment, wait_until
from service.config import Settings
from world_model import shipped
from world_model.batching import MicroBatcher
from world_model.inference import WorldModel
from world_model.memo import PredictionMemo, memo_key

PHYSICS = {"gravity": 9.81, "restitution": 0.9, "drag": 0.1, "time_step": 0.05}
ROWS = [[1.0 + i, 2.0 + 0.5 * i, 0.5, 0.0, 0.2, 1.0] for i in range(3)]


def test_keys_are_the_exact_inputs() -> None:
    base = memo_key(ROWS, PHYSICS, 5)
    assert base == memo_key(np.array(ROWS), dict(reversed(PHYSICS.items())), 5)  # same values, any container
    changed = [r[:] for r in ROWS]
    changed[1][0] += 1e-9
    others = [memo_key(changed, PHYSICS, 5), memo_key(ROWS, {**PHYSICS, "drag": 0.2}, 5), memo_key(ROWS, PHYSICS, 6),
              memo_key(ROWS, PHYSICS, 5, np.zeros((5, 3, 2))), memo_key(np.array(ROWS).reshape(1, 3, 6), PHYSICS, 5)]
    assert base not in others and len(set(others)) == len(others)
    assert memo_key([[1, 2], [3]], PHYSICS, 5) is None and memo_key("x", PHYSICS, 5) is None


def test_least_recently_used_goes_first_and_answers_are_read_only() -> None:
    memo = PredictionMemo(2)
    keys = [memo_key(ROWS, PHYSICS, h) for h in (1, 2, 3)]
    from world_model.inference import Prediction
    answers = [Prediction(np.zeros((h, 3, 2)), np.zeros((h, 3, 2))) for h in (1, 2, 3)]
    memo.put(keys[0], answers[0])
    memo.put(keys[1], answers[1])
    assert memo.get(keys[0]) is answers[0]  # now the most recent
    memo.put(keys[2], answers[2])
    assert memo.get(keys[1]) is None and memo.get(keys[0]) is answers[0] and len(memo) == 2
    with pytest.raises(ValueError):
        answers[0].positions[0, 0, 0] = 1.0
    off = PredictionMemo(0)
    off.put(keys[0], answers[0])
    assert off.get(keys[0]) is None and off.hits == 0


def test_a_hit_is_the_answer_the_model_gave(tmp_path) -> None:
    manifest = shipped.install(tmp_path)
    model = WorldModel.load(manifest["hash"], str(tmp_path), "cpu")

    async def scenario() -> None:
        async with MicroBatcher(model, memo_size=8) as mb:
            first = await mb.predict(ROWS, PHYSICS, 10)
            again = await mb.predict(ROWS, PHYSICS, 10)
            assert again is first and mb.memo.hits == 1 and mb.stats.queries == 1
            fresh = model.predict(ROWS, PHYSICS, 10)  # the model, asked directly
            assert np.allclose(fresh.positions, first.positions, atol=1e-5)
            moved = [r[:] for r in ROWS]
            moved[0][0] += 0.5
            other = await mb.predict(moved, PHYSICS, 10)
            assert mb.stats.queries == 2 and not np.allclose(other.positions[:, 0], first.positions[:, 0])
            with pytest.raises(Exception) as bad:  # bad input is still refused, memo or not
                await mb.predict([[1.0, 2.0]], PHYSICS, 10)
            assert type(bad.value).__name__ == "BadShape"

    asyncio.run(scenario())


def _memo(api: httpx.Client) -> dict:
    return api.get("/v1/models/current").json()["memo"]


def test_a_node_answers_a_repeated_query_from_the_memo(cluster: Deployment, api: httpx.Client) -> None:
    cluster.publish_default_model()
    assert wait_until(lambda: api.get("/v1/models/current").json().get("state") == "ok", 120)
    world = "memo-lab"
    api.put(f"/v1/worlds/{world}", json={})
    assert api.put(f"/v1/worlds/{world}/physics", json=PHYSICS).status_code == 200

    def observe(event: str, x: float) -> str:
        obs = [{"event_id": event, "entity": "ball", "source": "t",
                "fields": {"x": x, "y": 5.0, "vx": 1.0, "vy": 0.0, "radius": 0.3, "mass": 1.0}}]
        r = api.post(f"/v1/worlds/{world}/observations", json=obs)
        assert r.status_code == 202, r.text
        return r.json()["token"]

    token = observe("m-1", 2.0)
    query = {"horizon": 6, "entities": ["ball"]}
    ask = lambda tok: api.post(f"/v1/worlds/{world}/predict", json=query, params={"token": tok})  # noqa: E731
    before = _memo(api)
    first, second = ask(token), ask(token)
    assert first.status_code == second.status_code == 200, first.text
    assert first.json()["trajectories"] == second.json()["trajectories"]
    assert _memo(api)["hits"] == before["hits"] + 1
    moved = ask(observe("m-2", 3.0))  # a new observation of the body: a new query
    assert moved.status_code == 200
    assert moved.json()["trajectories"]["ball"]["positions"][0][0] > first.json()["trajectories"]["ball"]["positions"][0][0]
    assert _memo(api)["hits"] == before["hits"] + 1
    assert api.put(f"/v1/worlds/{world}/physics", json={**PHYSICS, "drag": 0.3}).status_code == 200
    assert ask(token).json()["trajectories"] != moved.json()["trajectories"]  # new physics: computed again
    assert _memo(api)["hits"] == before["hits"] + 1


def test_a_negative_memo_size_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="WORLDSTATE_PREDICT_MEMO must be 0"):
        Settings.from_env({"WORLDSTATE_PREDICT_MEMO": "-1"})
    assert Settings.from_env({}).predict_memo == 256 and Settings.from_env({"WORLDSTATE_PREDICT_MEMO": "0"}).predict_memo == 0
