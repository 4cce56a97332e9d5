"""The log as training data (learn/): a learner consumes its region's stream from a durable
offset of its own, turns one world's observations into per-entity trajectories at the world's
time step, and writes content-addressed shards that `load_rollouts` returns as Rollouts.

Observations are posted over HTTP as agents post them, to a one-region deployment; the physics
(time_step) is read from etcd. Housekeeping against a registered consumer runs on three bare
replicas with the test's own replicators (tests/ap_helpers.py), where the peers' floor is real.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

from consistency.ap_consumers import StreamConsumers
from consistency import ap_keys as K
from consistency.ap_positions import format_vector
from consistency.ap_store import ALL, Observation
from deploy.launcher import Deployment, Topology
from learn.log import consume, consume_async, unregister
from learn.shards import NoShards, ShardDir, load_rollouts, load_samples
from learn.trajectories import Grid, Observed, Trajectories
from tests.ap_helpers import (SCENARIO_S, client_url, fresh, quiesce, replicas, replication,  # noqa: F401 (fixtures)
                              stream_len)
from tests.conftest import auth_headers
from world_model.config import OBS_DIM, PRESENT, Physics
from world_model.state import STATE_FIELDS

PHYSICS = {"gravity": 9.81, "restitution": 0.8, "drag": 0.1, "time_step": 0.05}
DT_MS = 50
FRAMES = 16
# the first instant of the posted trajectories: 100 s ago, on a sample boundary (16 steps of 50 ms)
BASE_MS = (int(time.time() * 1000) - 100_000) // (FRAMES * DT_MS) * (FRAMES * DT_MS)


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with Deployment(Topology(etcd_members=1, regions=1, run_dir=tmp_path_factory.mktemp("learn"),
                             api_env={"WORLDSTATE_DEVICE": "cpu"})) as dep:
        yield dep


@pytest.fixture
def c(d: Deployment) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=d.api["r1"].url, headers=auth_headers(d), timeout=30) as client:
        yield client


@pytest.fixture
def w(c: httpx.Client, world: str) -> str:
    assert c.put(f"/v1/worlds/{world}", json={}).status_code in (200, 201)
    assert c.put(f"/v1/worlds/{world}/physics", json=PHYSICS).status_code in (200, 201)
    return world


def truth(entity: str, step: int) -> dict[str, float]:
    """The state posted for `entity` at grid step `step` (relative to BASE_MS)."""
    k = 1.0 if entity == "a" else -1.0
    return {"x": 1.0 + 0.1 * step * k, "y": 5.0 - 0.02 * step * step, "vx": 2.0 * k, "vy": -0.04 * step}


def posts(entity: str, steps: list[int], first_fields: dict[str, float] | None = None) -> list[dict[str, object]]:
    out = []
    for n, s in enumerate(steps):
        fields = truth(entity, s) | ((first_fields or {}) if n == 0 else {})
        out.append({"event_id": f"{entity}-{s}", "entity": entity, "source": "cam",
                    "observed_at": (BASE_MS + s * DT_MS) / 1000, "fields": fields})
    return out


def post(c: httpx.Client, world: str, body: list[dict[str, object]]) -> None:
    r = c.post(f"/v1/worlds/{world}/observations", json=body)
    assert r.status_code == 202, r.text


# entity a: steps 0..31 without 20 and 21 (a hole of 2: bridged), radius and mass posted once;
# entity b: steps 0..9, a hole of 5 (splits it), then 15..47, no radius or mass (the defaults)
A_STEPS = [s for s in range(32) if s not in (20, 21)]
B_STEPS = list(range(10)) + list(range(15, 48))


def post_world(c: httpx.Client, world: str) -> None:
    post(c, world, posts("a", A_STEPS, {"radius": 0.4, "mass": 2.0}) + posts("b", B_STEPS))
    # Two more observations of step 3 of a, posted after the one above: one 10 ms earlier in the
    # step (stream order later, observed_at earlier: it loses), one 12 ms later (it wins).
    late = [{"event_id": "a-3-early", "entity": "a", "source": "cam2",
             "observed_at": (BASE_MS + 3 * DT_MS - 10) / 1000, "fields": {"x": -99.0, "y": -99.0, "vx": 0, "vy": 0}},
            {"event_id": "a-3-later", "entity": "a", "source": "cam2",
             "observed_at": (BASE_MS + 3 * DT_MS + 12) / 1000, "fields": {"x": 7.5, "y": 7.5, "vx": 1, "vy": 1}}]
    post(c, world, late)


def expected(entity: str, step: int) -> list[float]:
    """What frame `step` of `entity` must hold: the step's latest observation, or the line between
    the neighbours of a bridged hole; radius and mass as posted once, else the defaults."""
    if entity == "a" and step == 3:
        state = {"x": 7.5, "y": 7.5, "vx": 1.0, "vy": 1.0}
    elif entity == "a" and step in (20, 21):
        w = (step - 19) / 3
        state = {k: (1 - w) * truth("a", 19)[k] + w * truth("a", 22)[k] for k in ("x", "y", "vx", "vy")}
    else:
        state = truth(entity, step)
    extra = {"radius": 0.4, "mass": 2.0} if entity == "a" else {"radius": 0.5, "mass": 1.0}
    return [(state | extra)[f] for f in STATE_FIELDS]


def samples_by_key(shard_dir: Path, world: str) -> dict[tuple[str, int], torch.Tensor]:
    d = ShardDir(shard_dir, world)
    out: dict[tuple[str, int], torch.Tensor] = {}
    for entry in d.index().shards:
        shard = d.load_shard(entry["hash"])
        for i, (e, start) in enumerate(zip(shard["entities"], shard["start_ms"].tolist())):
            assert (e, start) not in out, f"sample {(e, start)} written twice"
            out[(e, start)] = shard["frames"][i]
    return out


def test_trajectories_match_the_posted_states_at_the_time_step(d: Deployment, c: httpx.Client, w: str,
                                                               tmp_path: Path) -> None:
    post_world(c, w)
    stats = consume(d.redis["r1"].url, "r1", w, str(tmp_path), "learner-traj", etcd_endpoints=d.etcd_endpoints)
    assert stats.time_step == PHYSICS["time_step"] and not stats.gaps
    assert stats.observations == len(A_STEPS) + len(B_STEPS) + 2

    data = load_rollouts(w, tmp_path)
    # a: windows at steps 0 and 16; b: 0..9 is too short, 15..47 holds the windows at 16 and 32
    keys = samples_by_key(tmp_path, w)
    assert sorted(keys) == sorted([("a", BASE_MS), ("a", BASE_MS + 16 * DT_MS),
                                   ("b", BASE_MS + 16 * DT_MS), ("b", BASE_MS + 32 * DT_MS)])
    assert data.frames.shape == (4, FRAMES, 1, OBS_DIM)
    assert sorted(load_samples(w, tmp_path)[1]) == ["a", "a", "b", "b"]  # each sample's entity
    assert data.actions.shape == (4, FRAMES - 1, 1, 2) and not data.actions.any()
    assert torch.allclose(data.physics, torch.tensor([[PHYSICS[k] for k in ("gravity", "restitution", "drag",
                                                                             "time_step")]] * 4))
    for (entity, start), frames in keys.items():
        first = (start - BASE_MS) // DT_MS
        want = torch.tensor([expected(entity, s) for s in range(first, first + FRAMES)], dtype=torch.float32)
        assert torch.allclose(frames[:, 0, :PRESENT], want, atol=1e-5), (entity, start)
        assert (frames[:, 0, PRESENT] == 1).all()

    index = json.loads((tmp_path / w / "index.json").read_text())
    (shard,) = index["shards"]
    assert shard["region"] == "r1" and shard["world"] == w and shard["samples"] == 4
    assert shard["after"] == "v2" and shard["through"] == stats.through and shard["time_step"] == 0.05
    blob = tmp_path / w / "shards" / f"{shard['hash']}.pt"  # named by the sha256 of its bytes
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == shard["hash"]
    events = ShardDir(tmp_path, w).load_shard(shard["hash"])["events"]
    assert ["a-19", None, None, "a-22"] in [e[3:7] for e in events]  # the bridged hole, by event


def test_replay_and_restart_add_no_duplicate_samples(d: Deployment, c: httpx.Client, w: str,
                                                     tmp_path: Path) -> None:
    url, name = d.redis["r1"].url, "learner-replay"

    def run(**options: object) -> int:
        stats = consume(url, "r1", w, str(tmp_path), name, etcd_endpoints=d.etcd_endpoints, **options)
        assert not stats.gaps
        return stats.samples

    post_world(c, w)
    # read in small batches, so samples become whole across batches and commits
    assert run(batch=7) == 4
    assert len(load_rollouts(w, tmp_path).frames) == 4
    assert run() == 0  # nothing new
    assert run(start="0-0") == 0  # a replay of every delta, in one batch this time

    # a restart that lost its offset's last commits: the consumer is moved back in Redis,
    # then more of the world arrives (b's steps 48..63: one more window)
    async def move_back() -> None:
        import redis.asyncio as aioredis
        r = aioredis.Redis.from_url(url)
        await StreamConsumers(r, "r1").commit(name, dict.fromkeys(ALL, "0-0"))
        await r.aclose()

    asyncio.run(move_back())
    post(c, w, posts("b", list(range(48, 64))))
    assert run(batch=5) == 1
    data = load_rollouts(w, tmp_path)
    assert len(data.frames) == 5 == len(samples_by_key(tmp_path, w))
    assert run(start="0-0", batch=3) == 0
    assert len(load_rollouts(w, tmp_path).frames) == 5


def test_consumer_holds_housekeeping_until_unregistered(fresh: Deployment, tmp_path: Path) -> None:  # noqa: F811
    async def scenario() -> None:
        async with replication(fresh) as reps:
            r1 = reps["r1"]
            consumers = StreamConsumers(r1.home.redis, "r1")
            assert set((await consumers.register("learner")).values()) == {"0-0"}
            ids = [(await r1.home.ingest([ob(i)])).last_id for i in range(20)]
            await quiesce(reps)
            await r1.housekeep()  # every peer has everything; the learner has read nothing
            assert stream_len(fresh, "r1") == 20 and (await r1.home.trimmed())[PART] == "0-0"

            stats = await consume_async(client_url(fresh, "r1"), "r1", "w", str(tmp_path), "learner",
                                        physics=Physics(), max_entries=8)
            assert stats.through == format_vector({PART: ids[7]})
            assert (await consumers.offsets("learner") or {})[PART] == ids[7]
            await r1.housekeep()  # exactly what the learner read goes
            assert stream_len(fresh, "r1") == 12 and (await r1.home.trimmed())[PART] == ids[7]

            assert await unregister(client_url(fresh, "r1"), "r1", "learner")
            await r1.housekeep()
            assert stream_len(fresh, "r1") == 0 and (await r1.home.trimmed())[PART] == ids[-1]

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_S))


def test_a_cap_trim_past_the_consumer_is_reported_as_a_gap(fresh: Deployment, tmp_path: Path) -> None:  # noqa: F811
    cap = 10

    async def scenario() -> None:
        async with replication(fresh, stream_maxlen=cap) as reps:
            r1 = reps["r1"]
            await StreamConsumers(r1.home.redis, "r1").register("learner")
            ids = [(await r1.home.ingest([ob(i)])).last_id for i in range(30)]
            await quiesce(reps)
            await r1.housekeep()  # the cap trims past the learner's offset regardless
            assert stream_len(fresh, "r1") == cap

            url = client_url(fresh, "r1")
            stats = await consume_async(url, "r1", "w", str(tmp_path), "learner", physics=Physics(), frames=4)
            assert stats.gaps == [{"partition": PART, "after": "0-0", "through": ids[-cap - 1]}]
            assert stats.entries == cap and stats.through == format_vector({PART: ids[-1]})
            again = await consume_async(url, "r1", "w", str(tmp_path), "learner", physics=Physics(), frames=4)
            assert again.gaps == [] and again.entries == 0  # reported once, not on every run
            # steps 20..29 were read: two windows of 4 (at 20 and 24); steps 0..19 were lost
            assert sorted(samples_by_key(tmp_path, "w")) == [("e", BASE_MS + 20 * DT_MS), ("e", BASE_MS + 24 * DT_MS)]

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_S))


PART = K.partition("w", "e")  # every observation of these tests: one entity, one partition's stream


def ob(step: int) -> Observation:
    """Entity e of world w at grid step `step` after BASE_MS (time_step 0.05, the default physics)."""
    return Observation("w", "e", f"ev{step}", "cam", truth("a", step), BASE_MS + step * DT_MS)


# -- the trajectories alone (no process) ------------------------------------------------------


def _obs(entity: str, steps: list[int], **fields: object) -> list[Observed]:
    return [Observed(entity, f"{entity}{s}", BASE_MS + s * DT_MS, truth("a", s) | fields, (s, 0)) for s in steps]


def test_a_long_hole_or_a_delete_splits_a_trajectory() -> None:
    grid = Grid(0.05, frames=4, stride=1, max_gap=1)
    t = Trajectories(grid)
    got = t.add(_obs("e", [0, 1, 2, 4, 5, 6]))  # a hole of one step: bridged
    assert [s.start_ms for s in got] == [BASE_MS + k * DT_MS for k in range(4)]  # 3..6 bridges step 3
    assert t.add(_obs("e", [9, 10, 11])) == []  # a hole of two: 9..11 is a new run, too short
    tomb = [Observed("e", "del", BASE_MS + 12 * DT_MS, {"~deleted": True}, (12, 0))]
    assert t.add(tomb + _obs("e", [13, 14])) == []  # the delete at 12 splits 9..14
    assert [s.start_ms for s in t.add(_obs("e", [15, 16]))] == [BASE_MS + 13 * DT_MS]
    # the state round-trips through JSON; a replay of everything adds nothing
    again = Trajectories(grid, json.loads(json.dumps(t.state())))
    assert again.add(_obs("e", list(range(17)))) == []


def test_load_rollouts_without_shards_says_so(tmp_path: Path) -> None:
    with pytest.raises(NoShards):
        load_rollouts("nothing-here", tmp_path)
