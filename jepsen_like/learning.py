"""Learning faults: SIGKILL a region's learner and the aggregator in the middle of their rounds,
cut a region off, restart and heal, and check the model manifest's history (checkers/learning.py)
and the training samples against what each region acknowledged (checkers/learning_samples.py).

    a deployment with `worldstate up --learn`'s roles (2 regions, a round every --every s), every
    link through a TCP proxy the harness controls (jepsen_like/proxy.py, no privileges needed)
    ->  per cycle: agents post new observations to both regions; on odd cycles region r2 (its
        Redis, API node and learner) is cut off from r1, etcd and the aggregator first; once each
        role has finished a round, kill -9 r1's learner and the aggregator at a random instant of
        their next one, then start them again; heal
    ->  settle: both learners have learned everything posted and the aggregator has nothing new
    ->  every version the manifest key held, read from etcd by revision, and every sample each
        region's shard index lists  ->  the checkers

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
from .checkers.learning_samples import check as check_samples, expected_samples, listed_samples
from .checkers.result import Result
from .proxy import BLACKHOLE, Net, Rule

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
    partition: bool = True  # cut r2 off on odd cycles
    thresholds: Thresholds = THRESHOLDS
    learner_args: list[str] = field(default_factory=lambda: list(LEARNER_ARGS))
    aggregator_args: list[str] = field(default_factory=lambda: list(AGGREGATOR_ARGS))


R2_SIDE = ("redis-r2", "api-r2", "learner-r2")
R1_SIDE = ("redis-r1", "api-r1", "learner-r1", "aggregator", "etcd1")


def trajectories(cycle: int, bodies: int, steps: int, rng: random.Random, t0: float, region: str = "r1"
                 ) -> list[dict[str, Any]]:
    """Balls in a 10 m box under PHYSICS, as agents post them (entity per body, one per step)."""
    g, e, drag, dt = (PHYSICS[k] for k in ("gravity", "restitution", "drag", "time_step"))
    out = []
    for b in range(bodies):
        x, y, vx, vy = rng.uniform(1, 9), rng.uniform(3, 9), rng.uniform(-3, 3), rng.uniform(-2, 2)
        for t in range(steps):
            out.append({"event_id": f"{region}-c{cycle}-b{b}-{t}", "entity": f"{region}-c{cycle}-ball{b}",
                        "source": "jepsen",
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
        announced = set(r.hkeys(FED_KEY))  # a new one, not a count: rounds forget consumed announcements
        wait_until(lambda: bool(set(r.hkeys(FED_KEY)) - announced), timeout, 0.1)
    # Its log quiet for longer than its sleep: a round has begun (a short one may end first).
    wait_until(lambda: time.time() - aggregator.log_path.stat().st_mtime > every + 0.3, every + 10, 0.02)
    time.sleep(rng.uniform(0.0, 0.3))
    _kill_and_restart(aggregator, every, rng, events)


def _settled(learners: list[ManagedProcess], aggregator: ManagedProcess, since: list[int]) -> bool:
    """Every learner skipped (nothing new), then the aggregator skipped (nothing new after them)."""
    idle = []
    for p, n in zip(learners, since):
        skipped = [r["at"] for r in rounds(p)[n:] if r["status"] == "skipped"]
        if not skipped:
            return False
        idle.append(skipped[0])
    return any(r["status"] == "skipped" and r["at"] >= max(idle) for r in rounds(aggregator)[since[-1]:])


def _cut_r2(net: Net, on: bool, events: list[dict[str, Any]]) -> None:
    pairs = [(a, b) for a in R2_SIDE for b in R1_SIDE] + [(b, a) for a in R2_SIDE for b in R1_SIDE]
    if on:
        net.set(pairs, Rule(BLACKHOLE))
    else:
        net.heal()
    events.append({"at": time.time(), "partition" if on else "heal": "r2 | r1, etcd1, aggregator"})


def _unreachable_rounds(aggregator: ManagedProcess) -> int:
    """The aggregator's rounds that left r2 out because it could not reach r2's Redis."""
    return sum(1 for r in rounds(aggregator)
               if any(u.get("region") == "r2" for u in (r.get("report") or {}).get("unreachable", [])))


def run(run_dir: Path, opts: Options) -> dict[str, Any]:
    rng = random.Random(opts.seed)
    events: list[dict[str, Any]] = []
    acked: dict[str, list[dict[str, Any]]] = {"r1": [], "r2": []}  # what each region acknowledged
    net = Net(opts.seed)
    topo = Topology(etcd_members=1, regions=2, run_dir=run_dir, learn=True, learn_every_s=opts.every,
                    learner_args=opts.learner_args, aggregator_args=opts.aggregator_args,
                    api_env={"WORLDSTATE_DEVICE": "cpu"}, link=lambda src, dst, port: net.listen(src, dst, port))
    try:
        with Deployment(topo) as d:
            d.publish_default_model()
            learners = [d.process("learner-r1"), d.process("learner-r2")]
            aggregator = d.process("aggregator")
            headers = {"Authorization": f"Bearer {d.admin_key}"}
            with httpx.Client(base_url=d.api["r1"].url, headers=headers, timeout=60) as api, \
                    httpx.Client(base_url=d.api["r2"].url, headers=headers, timeout=60) as api2:
                api.put("/v1/worlds/lab", json={}).raise_for_status()
                api.put("/v1/worlds/lab/physics", json=PHYSICS).raise_for_status()
                for cycle in range(opts.cycles):
                    cut = opts.partition and cycle % 2 == 1
                    if cut:
                        _cut_r2(net, True, events)
                    for region, client in (("r1", api), ("r2", api2)):  # r2 accepts writes while cut off (AP)
                        batch = trajectories(cycle, opts.bodies, opts.steps, rng, time.time() - 60, region)
                        for i in range(0, len(batch), 500):
                            client.post("/v1/worlds/lab/observations", json=batch[i:i + 500]).raise_for_status()
                            acked[region] += batch[i:i + 500]
                        events.append({"at": time.time(), "posted": len(batch), "region": region, "cycle": cycle})
                    _cycle(d, opts.every, rng, events, opts.settle_s)
                    if cut:
                        wait_until(lambda: _unreachable_rounds(aggregator) > 0, opts.settle_s, 0.2)
                        _cut_r2(net, False, events)
            since = [len(rounds(p)) for p in (*learners, aggregator)]
            settled = wait_until(lambda: _settled(learners, aggregator, since), opts.settle_s, 0.5)
            history = manifest_history(d.etcd[0].client_url)
            found = {r: listed_samples(str(d.run_dir / "shards" / r), "lab") for r in acked}
            unreachable = _unreachable_rounds(aggregator)
    finally:
        net.close()
    result = check(history, opts.thresholds)
    samples = check_samples({r: expected_samples(obs, PHYSICS["time_step"]) for r, obs in acked.items()}, found)
    return {"result": result, "samples": samples, "settled": settled, "events": events, "history": history,
            "kills": sum(1 for e in events if "kill" in e), "mid_round": sum(1 for e in events if e.get("mid_round")),
            "partitions": sum(1 for e in events if "partition" in e), "r2_unreachable_rounds": unreachable}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jepsen_like.learning", description=__doc__.split("\n\n")[0])
    p.add_argument("--cycles", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--every", type=float, default=1.0, help="the roles' --every")
    p.add_argument("--out", type=Path, required=True, help="the run directory (logs, and results.json)")
    p.add_argument("--no-partition", action="store_true", help="kills only: never cut r2 off")
    args = p.parse_args(argv)
    if args.cycles < 1 or not (math.isfinite(args.every) and args.every > 0):
        p.error("--cycles >= 1 and --every > 0")
    out = run(args.out, Options(cycles=args.cycles, seed=args.seed, every=args.every,
                                partition=not args.no_partition))
    res, samples = out["result"], out["samples"]
    valid = bool(res.valid and samples.valid)

    def part(r: Result) -> dict[str, Any]:
        return {"verdict": str(r.verdict), "valid": r.valid, "stats": r.stats,
                "violations": [asdict(v) for v in r.violations]}

    (args.out / "results.json").write_text(json.dumps(
        {"valid": valid, **part(res), "samples": part(samples), "settled": out["settled"], "events": out["events"],
         "r2_unreachable_rounds": out["r2_unreachable_rounds"],
         "history": [{"revision": h.revision, "hash": h.manifest.get("hash"),
                      "lineage": h.manifest.get("lineage")} for h in out["history"]]}, indent=1, default=str))
    print(res.describe())
    print(samples.describe())
    print(f"{out['kills']} kills ({out['mid_round']} inside a round), {out['partitions']} partitions of r2 "
          f"({out['r2_unreachable_rounds']} aggregator rounds left r2 out), {res.stats['federated']} federated "
          f"publishes, settled: {out['settled']}; {args.out / 'results.json'}")
    if not valid:
        return 1
    return 0 if res.stats["federated"] else 2


if __name__ == "__main__":
    sys.exit(main())
