"""bench/learn.py's proof through the API: agents post a world, the learner reads it from the log.

    .venv/bin/python bench/learn_posted.py                # the lossy-bounce world
    .venv/bin/python bench/learn_posted.py --world wind   # the sideways wind
    .venv/bin/python bench/learn_posted.py --smoke        # seconds: the pipeline runs, not a measurement

Starts a deployment (`worldstate up`'s processes: one etcd member, one region), publishes the
shipped model, and posts bench/learn.py's world as agents would: every present body's state at
every step is one observation (learn/observed.py), 500 to a POST, the boxes one after another as
episodes of one scene. Then it runs `worldstate learn
--from-log` as a user runs it: the learner reads the region's stream as a registered consumer,
cuts per-entity trajectories into shards, fine-tunes, asks the gate and, when the gate says yes,
publishes by compare-and-swap. Printed: bench/learn.py's table from the learner's own report, the
time posting and learning took, and the manifest before and after. Then the same learner again:
it reads nothing new and adds no sample.

What differs from bench/learn.py: the log holds one trajectory per entity, and the learner puts
the bodies that met back into scenes (learn/scenes.py); a body's samples start on the learner's
grid (every --sample-frames steps), not at the box's first step.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:  # run as a file: bench/learn.py would shadow learn/
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import httpx  # noqa: E402

from bench.learn import TARGET, table, unseen_world, world_arguments, world_physics  # noqa: E402
from deploy.launcher import Deployment, Topology  # noqa: E402
from learn.finetune import FinetuneConfig, base_config  # noqa: E402
from learn.observed import as_observations  # noqa: E402
from world_model import shipped  # noqa: E402
from world_model.config import PRESENT  # noqa: E402

WORLD = "posted"


def post_world(api: str, key: str | None, a: argparse.Namespace) -> dict[str, Any]:
    cfg = base_config(shipped.default_blob())
    world = unseen_world(a.world, cfg, a.rollouts, a.rollout_len, a.seed, a.wind)
    physics = dict(zip(("gravity", "restitution", "drag", "time_step"), world.physics[0].tolist()))
    span = a.rollouts * (a.rollout_len + 10) * physics["time_step"]  # the episodes end before now
    batch = as_observations(world, physics["time_step"], a.world, time.time() - span - 60, episodes=True)
    t0 = time.time()
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(base_url=api, headers=headers, timeout=120) as c:
        c.put(f"/v1/worlds/{WORLD}", json={}).raise_for_status()
        c.put(f"/v1/worlds/{WORLD}/physics", json=physics).raise_for_status()
        for i in range(0, len(batch), 500):
            c.post(f"/v1/worlds/{WORLD}/observations", json=batch[i:i + 500]).raise_for_status()
    return {"observations": len(batch), "post_seconds": round(time.time() - t0, 1),
            "bodies": int((world.frames[:, 0, :, PRESENT] > 0).sum())}


def learn(d: Deployment, shards: Path, a: argparse.Namespace) -> tuple[dict[str, Any], float]:
    argv = [str(Path(sys.executable).parent / "worldstate"), "learn", "--world", WORLD,
            "--api", d.api["r1"].url, "--key", d.admin_key or "", "--checkpoint-dir", str(d.run_dir / "checkpoints"),
            "--from-log", d.redis["r1"].client_url, "--shard-dir", str(shards), "--steps", str(a.steps),
            "--sample-frames", str(a.sample_frames),
            "--replay-rollouts", str(a.replay_rollouts), "--suite-cases", str(a.suite_cases),
            "--threads", str(a.threads), "--seed", str(a.seed), *(["--no-calibrate"] if a.smoke else [])]
    t0 = time.time()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    if done.returncode not in (0, 3):  # 3: the gate said no, which is a result
        raise SystemExit(f"worldstate learn exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout), round(time.time() - t0, 1)


def measure(a: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-learn-posted-") as tmp, \
            Deployment(Topology(etcd_members=1, regions=1, run_dir=Path(tmp) / "run",
                                api_env={"WORLDSTATE_DEVICE": "cpu"})) as d:
        outcome, _ = d.publish_default_model()
        if outcome not in ("published", "already-published"):
            raise SystemExit(f"the shipped model was not published: {outcome}")
        api = d.api["r1"].url
        posted = post_world(api, d.admin_key, a)
        with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {d.admin_key}"} if d.admin_key else {},
                          timeout=30) as c:
            before = c.get("/v1/models/current").json()
            report, seconds = learn(d, Path(tmp) / "shards", a)
            after = c.get("/v1/models/current").json()
        again, _ = learn(d, Path(tmp) / "shards", a) if not a.smoke else ({}, 0.0)
    w = report["gate"]["figures"]["world"]
    ratio = w["after"]["10"] / w["before"]["10"] if "10" in w["after"] and w["before"]["10"] > 0 else float("nan")
    return {"world": a.world, "physics": world_physics(a.world).__dict__, "wind_m_s2": a.wind if a.world == "wind" else None,
            "rollouts": a.rollouts, **posted, "train_samples": report["train_samples"],
            "heldout_samples": report["heldout_samples"], "sample_bodies": report["bodies"], "log": report.get("log"),
            "gate": report["gate"],
            "finetune": {"steps": a.steps, "world_fraction": FinetuneConfig.world_fraction, "trainable": "adapt",
                         "adapt_lr": FinetuneConfig.adapt_lr, "lr": FinetuneConfig.lr},
            "finetune_seconds": report["finetune_seconds"], "learn_seconds": seconds, "threads": a.threads,
            "status": report.get("status"), "model_before": before.get("hash"), "model_after": after.get("hash"),
            "again_new_samples": (again.get("log") or {}).get("samples"),
            "ratio_at_10": ratio, "target": TARGET, "target_met": bool(ratio <= TARGET)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/learn_posted.py", description=__doc__.split("\n")[0])
    world_arguments(p)
    p.add_argument("--sample-frames", type=int, default=24, help="the learner's --sample-frames (22 reach 20 steps)")
    p.add_argument("--replay-rollouts", type=int, default=FinetuneConfig.replay_rollouts)
    p.add_argument("--suite-cases", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="tiny sizes: the pipeline runs, the numbers mean nothing")
    p.add_argument("--json", help="also write the result here")
    a = p.parse_args(argv)
    if a.smoke:
        a.rollouts, a.rollout_len, a.steps, a.replay_rollouts, a.suite_cases = 6, 48, 4, 16, 2
    res = measure(a)
    res["smoke"] = a.smoke
    print(table(res))
    print(f"\nposted {res['observations']} observations of {res['bodies']} bodies in {res['post_seconds']} s; "
          f"worldstate learn --from-log took {res['learn_seconds']} s (log: {res['log']})")
    print(f"learner's answer: {res['status']}; serving model {str(res['model_before'])[:12]} -> "
          f"{str(res['model_after'])[:12]}")
    if res["again_new_samples"] is not None:
        print(f"the same learner again: {res['again_new_samples']} new samples from the log")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
