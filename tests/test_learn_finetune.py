"""`worldstate learn`: fine-tune on a world's trajectories, gate, publish by compare-and-swap.

Against a real deployment (one etcd member, one region) serving the shipped model. The world is
bench/learn.py's "lossy" one: bounces that keep none of the speed into the wall (restitution 0.0,
the shipped model trained on 0.5 to 1.0), so its physics is also one the shipped model refuses.
Sizes are small for time, and the improvement test uses a lenient gate, stated where it is set.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.learn import unseen_world
from client import Client
from deploy.launcher import Deployment, Topology, wait_until
from learn.finetune import FinetuneConfig, base_config, finetune
from learn.gate import Verdict, split
from learn.learner import main as learn_main, save_rollouts
from learn.publish import LOST_RACE, publish
from tests.conftest import auth_headers
from learn.observed import as_observations
from world_model import shipped
from world_model.checkpoints import CheckpointStore

ROOT = Path(__file__).resolve().parent.parent
LOSSY = {"gravity": 9.81, "restitution": 0.0, "drag": 0.1, "time_step": 0.05}
# Small enough for a test on 2 busy cores: replay and calibration cut down, few steps.
SMALL = ["--threads", "1", "--suite-cases", "8", "--replay-rollouts", "64"]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with Deployment(Topology(etcd_members=1, regions=1, run_dir=tmp_path_factory.mktemp("learn"),
                             api_env={"WORLDSTATE_DEVICE": "cpu"})) as d:
        outcome, _ = d.publish_default_model()
        assert outcome == "published"
        yield d


@pytest.fixture
def ws(deployment: Deployment) -> Iterator[Client]:
    with Client(deployment.api["r1"].url, deployment.admin_key) as c:
        yield c


@pytest.fixture(scope="module")
def rollouts_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = base_config(shipped.default_blob())
    path = tmp_path_factory.mktemp("world") / "lossy.pt"
    save_rollouts(path, unseen_world("lossy", cfg, 24, 40, seed=3))
    return path


def _args(d: Deployment, rollouts: Path, *extra: str) -> list[str]:
    return ["--world", "bouncy", "--api", d.api["r1"].url, "--key", d.admin_key or "",
            "--checkpoint-dir", str(d.run_dir / "checkpoints"), "--rollouts", str(rollouts), *SMALL, *extra]


def test_split_keeps_a_trajectory_on_one_side() -> None:
    cfg = base_config(shipped.default_blob())
    world = unseen_world("lossy", cfg, 12, 12, seed=1)
    groups = [f"entity-{i // 3}" for i in range(12)]  # four trajectories, three samples each
    train, held = split(world, 0.25, seed=0, groups=groups)
    assert train.frames.shape[0] + held.frames.shape[0] == 12 and held.frames.shape[0] == 3
    held_rows = {tuple(f.flatten()[:4].tolist()) for f in held.frames}
    train_rows = {tuple(f.flatten()[:4].tolist()) for f in train.frames}
    assert not held_rows & train_rows
    # and the split is the same every time
    again, _ = split(world, 0.25, seed=0, groups=groups)
    assert bool((again.frames == train.frames).all())


def test_a_candidate_that_does_not_improve_is_refused_and_nothing_changes(
        deployment: Deployment, ws: Client, rollouts_file: Path) -> None:
    """Zero fine-tune steps: the candidate predicts exactly as its parent, so the world's error does
    not fall by the default 20% and the gate says no. Run as a user runs it, in a subprocess."""
    before = ws.manifest()
    blobs = set(CheckpointStore(deployment.run_dir / "checkpoints").list())
    worldstate = str(Path(sys.executable).parent / "worldstate")
    proc = subprocess.run([worldstate, "learn", *_args(deployment, rollouts_file, "--steps", "0", "--no-calibrate")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert '"status": "refused-by-gate"' in proc.stdout and "world error at 10 steps is 1.000x" in proc.stdout
    after = ws.manifest()
    assert after.revision == before.revision and after.manifest == before.manifest
    assert set(CheckpointStore(deployment.run_dir / "checkpoints").list()) == blobs, "a refused blob is not stored"
    assert ws.serving()["hash"] == before.manifest["hash"]


def test_a_candidate_that_improves_is_published_with_its_lineage_and_served(
        deployment: Deployment, ws: Client, rollouts_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """60 steps on 18 small boxes of the lossy world, under the default gate (the world's error at
    10 steps at most 0.8x, the suite's at most 1.1x): the default fine-tune trains only the
    adaptation terms (world_model/adapt.py), which learn contacts below the trained restitution
    range and cannot move an in-range prediction. bench/learn.py measures at full size."""
    api = httpx.Client(base_url=deployment.api["r1"].url, timeout=30, headers=auth_headers(deployment))
    api.put("/v1/worlds/bouncy", json={})
    assert api.put("/v1/worlds/bouncy/physics", json=LOSSY).status_code == 200
    w = api.post("/v1/worlds/bouncy/observations", json={"event_id": "b1", "entity": "ball", "source": "cam",
                                                          "fields": {"x": 3, "y": 0.6, "vx": 1, "vy": -4,
                                                                     "radius": 0.5, "mass": 1}})
    assert w.status_code == 202
    refused = api.post("/v1/worlds/bouncy/predict", json={"horizon": 5})
    assert refused.status_code == 422 and refused.json()["code"] == "physics_out_of_range"

    base = ws.manifest()
    code = learn_main(_args(deployment, rollouts_file, "--steps", "60", "--learner", "test-learner",
                            "--data-offsets", '{"r1": "1700000000000-0"}'))
    out = capsys.readouterr().out
    assert code == 0, out
    now = ws.manifest()
    assert now.revision > base.revision
    doc = now.manifest
    lineage = doc["lineage"]
    assert lineage["parent"] == base.manifest["hash"] and doc["hash"] != base.manifest["hash"]
    assert lineage["parent_manifest_revision"] == base.revision
    assert lineage["data_offsets"] == {"r1": "1700000000000-0"} and lineage["learner"] == "test-learner"
    assert lineage["world"] == "bouncy" and lineage["ranges_widened"] == {"restitution": [0.0, 1.0]}
    gate = lineage["gate"]
    assert gate["world"]["after"]["10"] <= 0.8 * gate["world"]["before"]["10"]
    assert gate["suite"]["after"]["10"] <= 1.1 * gate["suite"]["before"]["10"]
    assert set(gate["suite"]["before"]) == {"1", "5", "10", "20"}
    assert doc["config"]["sim"]["ranges"]["restitution"] == [0.0, 1.0]
    assert wait_until(lambda: ws.serving().get("hash") == doc["hash"], 60), "the node never served the candidate"
    served = api.post("/v1/worlds/bouncy/predict", json={"horizon": 5})
    assert served.status_code == 200, served.text


def test_a_lost_race_is_reported_and_overwrites_nothing(deployment: Deployment, ws: Client,
                                                        rollouts_file: Path) -> None:
    """The manifest moves after the learner read it: publishing over the old revision loses, says so,
    and the other publisher's manifest stays."""
    from learn.learner import load_rollouts_file

    start = ws.manifest()
    base_blob = CheckpointStore(deployment.run_dir / "checkpoints").get_bytes(start.manifest["hash"])
    world, _ = load_rollouts_file(rollouts_file)
    candidate = finetune(base_blob, world, FinetuneConfig(steps=2, replay_rollouts=16, calibrate=False, seed=5))
    theirs: dict[str, Any] = {**start.manifest, "version": start.manifest["version"] + 1000}
    their_revision = ws.publish(theirs, if_revision=start.revision)  # someone else, meanwhile
    yes = Verdict(True, [], {"note": "accepted for this test"})
    out = publish(ws, candidate, yes, base_manifest=start.manifest, base_revision=start.revision,
                  checkpoint_dir=deployment.run_dir / "checkpoints", world="bouncy", learner="late")
    assert out.status == LOST_RACE and out.current_revision == their_revision and out.revision is None
    now = ws.manifest()
    assert now.revision == their_revision and now.manifest["version"] == theirs["version"]
    assert now.manifest["hash"] != candidate.hash


def test_finetune_is_deterministic() -> None:
    blob = shipped.default_blob()
    world = unseen_world("lossy", base_config(blob), 6, 16, seed=2)
    cfg = FinetuneConfig(steps=3, replay_rollouts=8, calibrate=False, seed=1, threads=1)
    a, b = finetune(blob, world, cfg), finetune(blob, world, cfg)
    assert a.hash == b.hash and a.lineage["parent"] == shipped.default_manifest()["hash"]
    with pytest.raises(ValueError, match="no trajectory of 8 frames"):
        finetune(blob, unseen_world("lossy", base_config(blob), 2, 4, seed=2), cfg)


def test_the_wind_pushes_a_free_body_sideways_and_no_wind_changes_nothing() -> None:
    """The simulator's optional steady acceleration (the benchmark's wind world)."""
    import torch

    from world_model.simulator import rollout

    cfg = base_config(shipped.default_blob())
    start = torch.zeros(1, 1, 7)
    start[0, 0, :7] = torch.tensor([2.0, 5.0, 0.0, 0.0, 0.3, 1.0, 1.0])
    physics = torch.tensor([[0.0, 0.9, 0.0, 0.05]])  # no gravity, no drag: free flight is exact
    actions = torch.zeros(1, 10, 1, 2)
    windy = rollout(start, physics, actions, cfg.sim.box, accel=torch.tensor([[2.0, 0.0]]))
    # semi-implicit Euler: x_k = x_0 + a dt^2 k (k + 1) / 2
    assert abs(float(windy[0, 10, 0, 0]) - (2.0 + 2.0 * 0.05 ** 2 * 55)) < 1e-5
    assert float(windy[0, 10, 0, 1]) == 5.0
    assert bool((rollout(start, physics, actions, cfg.sim.box, accel=torch.zeros(1, 2))
                 == rollout(start, physics, actions, cfg.sim.box)).all())


def _readme_block(heading: str, d: Deployment, rollouts_file: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """The one sh block of the README's section `heading`, run by bash as a user runs it: $API, $WORLDSTATE_KEY and
    $RUN set, the trajectories file in the working folder as lab-trajectories.pt."""
    from tests.test_readme_streams import blocks, section

    (block,) = [b for b in blocks(section(heading), "sh")]
    shutil.copy(rollouts_file, tmp_path / "lab-trajectories.pt")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("WORLDSTATE_")},
           "API": d.api["r1"].url, "WORLDSTATE_KEY": d.admin_key or "", "RUN": str(d.run_dir)}
    return subprocess.run(["bash", "-c", f"cd {tmp_path} && ln -sf {ROOT / '.venv'} .venv && {block}"], env=env,
                          capture_output=True, text=True, timeout=600)


def test_the_readme_dry_run_runs_as_shown(deployment: Deployment, ws: Client, rollouts_file: Path,
                                          tmp_path: Path) -> None:
    """The README's `worldstate learn ... --dry-run` block, run by bash as a user runs it, with $API,
    $WORLDSTATE_KEY and $RUN set and the trajectories file in the working folder: the gate's report,
    and nothing published."""
    before = ws.manifest()
    done = _readme_block("### Learning from a world: `worldstate learn`", deployment, rollouts_file, tmp_path)
    assert done.returncode in (0, 3), done.stdout + done.stderr
    assert '"gate"' in done.stdout and '"status"' in done.stdout, done.stdout
    assert ws.manifest().revision == before.revision  # a dry run publishes nothing


def test_the_readme_torchrun_block_trains_on_two_copies_that_agree(deployment: Deployment, ws: Client,
                                                                    rollouts_file: Path, tmp_path: Path) -> None:
    """The README's torchrun block: two data-parallel copies (torch.distributed, gloo) fine-tune, rank 0
    alone reports, with the world size; a dry run publishes nothing."""
    import json as _json

    before = ws.manifest()
    done = _readme_block("### Fine-tuning on several processes: `torchrun`", deployment, rollouts_file, tmp_path)
    report = _json.loads(done.stdout)  # one document: the other copy printed nothing
    assert report["data_parallel"] == {"world_size": 2} and report["status"] in ("accepted", "refused-by-gate"), report
    # torchrun reports any non-zero exit of a copy as its own exit 1: the gate's no (3) reads as 1
    assert done.returncode == (0 if report["status"] == "accepted" else 1), done.stderr[-2000:]
    assert ws.manifest().revision == before.revision  # a dry run publishes nothing


def test_data_parallel_copies_average_gradients_and_stay_equal(tmp_path: Path) -> None:
    """learn/parallel.py on two real gloo processes: a gradient only one copy has is averaged (halved) and
    kept, one no copy has stays None, and the copies' weights agree."""
    script = tmp_path / "dp.py"
    # Each copy says "ok" in one write: both share the pipe, and under PYTHONUNBUFFERED print() writes each
    # piece on its own (read back once as 'okok  0 12 ' under CI's busy loops).
    script.write_text("""
import os
import torch, torch.distributed as dist
from learn import parallel
r = parallel.start()
a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
if r.rank == 0:
    a.grad = torch.ones(3)
parallel.average_gradients([a, b])
assert torch.equal(a.grad, torch.full((3,), 0.5)) and b.grad is None, (r.rank, a.grad, b.grad)
assert parallel.agree([a, b])
c = torch.nn.Parameter(torch.full((2,), float(r.rank)))
assert not parallel.agree([c])
parallel.stop()
os.write(1, f"ok {r.rank} {r.size}\\n".encode())
""")
    torchrun = str(Path(sys.executable).parent / "torchrun")
    done = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", str(script)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(line for line in done.stdout.splitlines() if line.startswith("ok")) == ["ok 0 2", "ok 1 2"]


def test_the_loop_from_posted_observations_to_the_gate(deployment: Deployment, ws: Client, tmp_path: Path) -> None:
    """Agents post a world's observations; `worldstate learn --from-log` reads the region's stream
    into shards (a registered consumer), learns from them and asks the gate. Run twice: the second
    run reads nothing new and learns from the same samples (no duplicate)."""
    import json as _json
    import time

    cfg = base_config(shipped.default_blob())
    world = unseen_world("lossy", cfg, 4, 40, seed=11)
    p = dict(zip(("gravity", "restitution", "drag", "time_step"), world.physics[0].tolist()))
    with httpx.Client(base_url=deployment.api["r1"].url, headers=auth_headers(deployment), timeout=60) as api:
        api.put("/v1/worlds/lossy-log", json={}).raise_for_status()
        api.put("/v1/worlds/lossy-log/physics", json=p).raise_for_status()
        batch = as_observations(world, p["time_step"], "lossy", time.time() - 600, episodes=True)
        for i in range(0, len(batch), 500):
            api.post("/v1/worlds/lossy-log/observations", json=batch[i:i + 500]).raise_for_status()
    before = ws.manifest().revision
    worldstate = str(Path(sys.executable).parent / "worldstate")
    argv = [worldstate, "learn", "--world", "lossy-log", "--api", deployment.api["r1"].url,
            "--key", deployment.admin_key or "", "--checkpoint-dir", str(deployment.run_dir / "checkpoints"),
            "--from-log", deployment.redis["r1"].client_url, "--shard-dir", str(tmp_path / "shards"),
            "--steps", "0", "--no-calibrate", "--dry-run", *SMALL]
    reports = []
    for _ in range(2):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        assert done.returncode in (0, 3), done.stdout + done.stderr
        reports.append(_json.loads(done.stdout))
    first, second = reports
    assert first["log"]["region"] == "r1" and first["log"]["observations"] == len(batch)
    assert first["log"]["samples"] > 0 and second["log"]["samples"] == 0, (first["log"], second["log"])
    # the bodies that met in a window train together (learn/scenes.py): fewer scenes than samples, every body once
    assert first["bodies"] == first["log"]["samples"] > first["train_samples"] + first["heldout_samples"], first
    assert (second["train_samples"], second["heldout_samples"]) == (first["train_samples"], first["heldout_samples"])
    assert ws.manifest().revision == before  # dry runs publish nothing


def test_a_learner_started_before_its_world_has_physics_already_holds_the_trim_floor(
        deployment: Deployment, tmp_path: Path) -> None:
    """The learner registers its consumer before it reads the physics: registered later, it would begin
    after whatever housekeeping trimmed meanwhile, and miss observations posted before it (seen once as a
    learner role that never learned: its first rounds failed on the missing physics, the stream was
    shipped and trimmed, then it registered past everything)."""
    import asyncio

    import redis.asyncio as aioredis

    from consistency.ap_consumers import StreamConsumers

    with httpx.Client(base_url=deployment.api["r1"].url, headers=auth_headers(deployment), timeout=60) as api:
        api.put("/v1/worlds/not-yet", json={}).raise_for_status()
    worldstate = str(Path(sys.executable).parent / "worldstate")
    done = subprocess.run([worldstate, "learn", "--world", "not-yet", "--api", deployment.api["r1"].url,
                           "--key", deployment.admin_key or "", "--checkpoint-dir", str(deployment.run_dir / "checkpoints"),
                           "--from-log", deployment.redis["r1"].client_url, "--shard-dir", str(tmp_path / "shards"),
                           "--consumer", "early-bird", "--dry-run", *SMALL], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "not found" in (done.stdout + done.stderr), done.stdout + done.stderr

    async def offset() -> dict[int, str] | None:
        r = aioredis.Redis.from_url(deployment.redis["r1"].client_url)
        try:
            return await StreamConsumers(r, "r1").offsets("early-bird")
        finally:
            await r.aclose()

    assert asyncio.run(offset()) is not None, "the consumer was registered before the physics was read"


def test_the_default_finetune_learns_a_wind_and_changes_only_the_adapt_terms() -> None:
    """The wind is an acceleration the physics document does not name; only adapt.py's terms train
    by default (every other weight keeps its bytes), and they carry the wind each body's window shows
    into the prediction: the held-out error at 10 steps falls well below the serving model's."""
    from learn.finetune import load_jepa
    from learn.gate import world_errors
    from world_model.adapt import PREFIX

    blob = shipped.default_blob()
    world = unseen_world("wind", base_config(blob), 24, 40, seed=4)
    train, held = split(world, 0.25, seed=0)
    cand = finetune(blob, train, FinetuneConfig(steps=60, replay_rollouts=32, calibrate=False, seed=2, threads=1))
    (base, cfg, _), (new, _, _) = load_jepa(blob), load_jepa(cand.blob)
    b, n = base.state_dict(), new.state_dict()
    assert all(torch_equal(b[k], n[k]) for k in b)  # the base stores no term: they were all zero
    learned = [k for k in n if k not in b]
    assert learned and all(k.startswith(PREFIX) for k in learned), learned
    before = world_errors(base, cfg, held, windows=128)["model"]["10"]
    after = world_errors(new, cfg, held, windows=128)["model"]["10"]
    assert after <= 0.6 * before, (before, after)


def torch_equal(a: Any, b: Any) -> bool:
    import torch

    return bool(torch.equal(a, b))
