"""Learning faults: SIGKILL a region's learner and the aggregator in the middle of their rounds,
restart them, and check the model manifest's history (checkers/learning.py).

    a deployment with `worldstate up --learn`'s roles (2 regions, a round every --every s)
    ->  per cycle: agents post new observations; once each role has finished a round, kill -9
        both at a random instant of their next one, then start them again
    ->  settle: the learner has learned everything posted and the aggregator has nothing new
    ->  every version the manifest key held, read from etcd by revision  ->  the checker

    .venv/bin/python -m jepsen_like.learning --cycles 3 --seed 7 --out store/learning

Exit status: 0 valid, 1 a violation (printed), 2 too little happened to judge (no federated
publish: the run proves nothing; give it more cycles or a more lenient gate).
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import random
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from deploy.launcher import Deployment, Topology
from deploy.processes import ManagedProcess, wait_until

from .checkers.learning import Published, Thresholds, check

MANIFEST_KEY = "/worldstate/v1/models/manifest"
FED_KEY = "ws:fed:lab"  # where a region's learner announces its updates of the world lab (learn/updates.py)
PHYSICS = {"gravity": 9.81, "restitution": 0.8, "drag": 0.1, "time_step": 0.05}
# Small for 2 busy cores; the gate lenient (so rounds publish and the checker has publishes to judge).
THRESHOLDS = Thresholds(min_improvement=-10.0, max_suite_regression=99.0)
GATE = ["--min-improvement", "-10", "--max-suite-regression", "99"]
LEARNER_ARGS = ["--steps", "2", "--no-calibrate", "--suite-cases", "2", "--replay-rollouts", "8", "--threads", "1",
                "--min-new-samples", "4", *GATE]
AGGREGATOR_ARGS = ["--suite-cases", "2", "--windows", "8", "--threads", "1", "--max-update-regression", "99", *GATE]


@dataclass
class Options:
    cycles: int = 3
    seed: int = 0
    every: float = 1.0
    bodies: int = 4  # entities posted per cycle
    steps: int = 48  # their trajectories' length (3 samples of 16 each)
    settle_s: float = 180.0
    thresholds: Thresholds = THRESHOLDS
    learner_args: list[str] = field(default_factory=lambda: list(LEARNER_ARGS))
    aggregator_args: list[str] = field(default_factory=lambda: list(AGGREGATOR_ARGS))


def trajectories(cycle: int, bodies: int, steps: int, rng: random.Random, t0: float) -> list[dict[str, Any]]:
    """Balls in a 10 m box under PHYSICS, as agents post them (entity per body, one per step)."""
    g, e, drag, dt = (PHYSICS[k] for k in ("gravity", "restitution", "drag", "time_step"))
    out = []
    for b in range(bodies):
        x, y, vx, vy = rng.uniform(1, 9), rng.uniform(3, 9), rng.uniform(-3, 3), rng.uniform(-2, 2)
        for t in range(steps):
            out.append({"event_id": f"c{cycle}-b{b}-{t}", "entity": f"c{cycle}-ball{b}", "source": "jepsen",
                        "observed_at": t0 + t * dt,
                        "fields": {"x": x, "y": y, "vx": vx, "vy": vy, "radius": 0.5, "mass": 1.0}})
            vy -= g * dt
            vx, vy = vx * (1 - drag * dt), vy * (1 - drag * dt)
            x, y = x + vx * dt, y + vy * dt
            if not 0.5 <= x <= 9.5:
                x, vx = min(max(x, 0.5), 9.5), -e * vx
            if not 0.5 <= y <= 9.5:
                y, vy = min(max(y, 0.5), 9.5), -e * vy
    return out


def rounds(p: ManagedProcess) -> list[dict[str, Any]]:
    """The round lines of a role's log (learn/loop.py), every incarnation's."""
    out = []
    try:
        text = p.log_path.read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if "round" in doc:
                out.append(doc)
    return out


def manifest_history(etcd_url: str) -> list[Published]:
    """Every version the manifest key held, oldest first, walking back one mod revision at a time."""
    key, rev, out = base64.b64encode(MANIFEST_KEY.encode()).decode(), 0, []
    while True:
        body = json.dumps({"key": key, **({"revision": rev} if rev else {})}).encode()
        req = urllib.request.Request(f"{etcd_url}/v3/kv/range", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:
            kvs = json.loads(resp.read()).get("kvs") or []
        if not kvs:
            break
        kv = kvs[0]
        out.append(Published(int(kv["mod_revision"]), json.loads(base64.b64decode(kv["value"]))))
        if int(kv.get("version", 1)) <= 1:
            break
        rev = int(kv["mod_revision"]) - 1
    return out[::-1]


def _kill_and_restart(p: ManagedProcess, every: float, rng: random.Random, events: list[dict[str, Any]]) -> None:
    """kill -9, noting whether it was inside a round: its loop writes a line as each round ends and
    sleeps `every` after it, so a log untouched for longer than that means a round had begun."""
    quiet = time.time() - p.log_path.stat().st_mtime
    done = rounds(p)
    p.kill()
    events.append({"at": time.time(), "kill": p.name, "after_round": done[-1]["round"] if done else 0,
                   "mid_round": quiet > every + 0.3, "log_quiet_s": round(quiet, 2)})
    time.sleep(rng.uniform(0.1, 1.0))
    p.start()
    events.append({"at": time.time(), "start": p.name})


def _cycle(d: Deployment, every: float, rng: random.Random, events: list[dict[str, Any]], timeout: float) -> None:
    """After new observations: kill the learner once its catch-up wrote shards (it fine-tunes next),
    then the aggregator once an update is announced (its next round screens it)."""
    learner, aggregator = d.process("learner-r1"), d.process("aggregator")
    index = d.run_dir / "shards" / "r1" / "lab" / "index.json"
    mtime = lambda: index.stat().st_mtime if index.exists() else 0.0  # noqa: E731
    seen = mtime()
    wait_until(lambda: mtime() != seen, timeout, 0.05)
    time.sleep(rng.uniform(0.2, 2.0))
    _kill_and_restart(learner, every, rng, events)
    with redis.Redis.from_url(d.redis["r1"].client_url) as r:
        announced = r.hlen(FED_KEY)
        wait_until(lambda: r.hlen(FED_KEY) > announced, timeout, 0.1)
    # Its log quiet for longer than its sleep: a round has begun (a short one may end first).
    wait_until(lambda: time.time() - aggregator.log_path.stat().st_mtime > every + 0.3, every + 10, 0.02)
    time.sleep(rng.uniform(0.0, 0.3))
    _kill_and_restart(aggregator, every, rng, events)


def _settled(learner: ManagedProcess, aggregator: ManagedProcess, since: tuple[int, int]) -> bool:
    """The learner skipped (nothing new), then the aggregator skipped (nothing new after it)."""
    lr, ar = rounds(learner)[since[0]:], rounds(aggregator)[since[1]:]
    idle = [r["at"] for r in lr if r["status"] == "skipped"]
    return bool(idle) and any(r["status"] == "skipped" and r["at"] >= idle[0] for r in ar)


def run(run_dir: Path, opts: Options) -> dict[str, Any]:
    rng = random.Random(opts.seed)
    events: list[dict[str, Any]] = []
    topo = Topology(etcd_members=1, regions=2, run_dir=run_dir, learn=True, learn_every_s=opts.every,
                    learner_args=opts.learner_args, aggregator_args=opts.aggregator_args,
                    api_env={"WORLDSTATE_DEVICE": "cpu"})
    with Deployment(topo) as d:
        d.publish_default_model()
        learner, aggregator = d.process("learner-r1"), d.process("aggregator")
        with httpx.Client(base_url=d.api["r1"].url, headers={"Authorization": f"Bearer {d.admin_key}"},
                          timeout=60) as api:
            api.put("/v1/worlds/lab", json={}).raise_for_status()
            api.put("/v1/worlds/lab/physics", json=PHYSICS).raise_for_status()
            for cycle in range(opts.cycles):
                batch = trajectories(cycle, opts.bodies, opts.steps, rng, time.time() - 60)
                for i in range(0, len(batch), 500):
                    api.post("/v1/worlds/lab/observations", json=batch[i:i + 500]).raise_for_status()
                events.append({"at": time.time(), "posted": len(batch), "cycle": cycle})
                _cycle(d, opts.every, rng, events, opts.settle_s)
        since = (len(rounds(learner)), len(rounds(aggregator)))
        settled = wait_until(lambda: _settled(learner, aggregator, since), opts.settle_s, 0.5)
        history = manifest_history(d.etcd[0].client_url)
    result = check(history, opts.thresholds)
    return {"result": result, "settled": settled, "events": events, "history": history,
            "kills": sum(1 for e in events if "kill" in e), "mid_round": sum(1 for e in events if e.get("mid_round"))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jepsen_like.learning", description=__doc__.split("\n\n")[0])
    p.add_argument("--cycles", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--every", type=float, default=1.0, help="the roles' --every")
    p.add_argument("--out", type=Path, required=True, help="the run directory (logs, and results.json)")
    args = p.parse_args(argv)
    if args.cycles < 1 or not (math.isfinite(args.every) and args.every > 0):
        p.error("--cycles >= 1 and --every > 0")
    out = run(args.out, Options(cycles=args.cycles, seed=args.seed, every=args.every))
    res = out["result"]
    (args.out / "results.json").write_text(json.dumps(
        {"verdict": str(res.verdict), "valid": res.valid, "stats": res.stats, "settled": out["settled"],
         "violations": [asdict(v) for v in res.violations], "events": out["events"],
         "history": [{"revision": h.revision, "hash": h.manifest.get("hash"),
                      "lineage": h.manifest.get("lineage")} for h in out["history"]]}, indent=1, default=str))
    print(res.describe())
    print(f"{out['kills']} kills ({out['mid_round']} inside a round), {res.stats['federated']} federated publishes, settled: {out['settled']}; "
          f"{args.out / 'results.json'}")
    if not res.valid:
        return 1
    return 0 if res.stats["federated"] else 2


if __name__ == "__main__":
    sys.exit(main())
