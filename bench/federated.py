"""Federated learning across regions: does the aggregate beat each region alone, and does a saboteur get in?

    .venv/bin/python bench/federated.py                # 3 regions of the draughty world
    .venv/bin/python bench/federated.py --world lossy  # 3 regions of the lossy-bounce world
    .venv/bin/python bench/federated.py --rounds 3     # also 3 rounds against each region alone for 3x the steps
    .venv/bin/python bench/federated.py --smoke        # seconds: the pipeline runs, not a measurement

Two worlds, each seen by three regions in different parts:
  draughts  a building whose rooms have draughts the physics document does not name: each region
            watches rooms of one strength (--winds, m/s^2, default 0.5, 1.5 and 4 sideways), so
            each teaches its own bands of the model's unexplained-acceleration gain
            (world_model/adapt.py) and no region sees the others' draughts;
  lossy     bench/learn.py's lossy world (bounces keep none of the speed into the wall); each
            region watches one third of the box by x, as a camera would: the left region sees the
            left wall's bounces, the right region the right wall's, the middle one floor and
            ceiling only. Every region learns the same few contact terms here.
Every body's trajectory is cut into samples of --sample-len frames, one body each (as the
observation log's shards are). Each region splits its samples by trajectory (75% / 25%), fine-tunes
the shipped model on its 75% (learn/finetune.py, which also measures where the region's data
informs the weights: learn/fisher.py), and offers the difference as an update (learn/updates.py).
The aggregator (learn/rounds.py, learn/aggregate.py) screens and combines the updates, by Fisher
share (the default) and by plain FedAvg for comparison; every model is measured on the union of
the regions' held-out samples, the whole world's. A further run adds sabotaged updates (the middle
region's scaled x100, and noise of the same norm as the honest ones) and shows which rule rejected
each.

Printed: the held-out position error at 1/5/10/20 steps of the shipped model (before), each region's
candidate alone, the aggregate, the aggregate with the saboteur present, the rejections, and the
time each part took. Nothing here touches a deployment; tests/test_learn_federated.py does.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:  # run as a file: bench/learn.py would shadow learn/
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import torch  # noqa: E402

from bench.learn import unseen_world  # noqa: E402
from learn.aggregate import Rules  # noqa: E402
from learn.finetune import FinetuneConfig, base_config, finetune, load_jepa  # noqa: E402
from learn.gate import GateConfig, split, world_errors  # noqa: E402
from learn.rounds import Ancestry, Offered, build_blob, screen  # noqa: E402
from learn.updates import Update, delta_norm, delta_of, model_state  # noqa: E402
from world_model import shipped  # noqa: E402
from world_model.checkpoints import from_bytes, sha256_hex  # noqa: E402
from world_model.config import PRESENT, X  # noqa: E402
from world_model.simulator import Rollouts  # noqa: E402

REGIONS = ("r1", "r2", "r3")


def regional_samples(world: Rollouts, box: float, sample_len: int, regions: int = 3,
                     rooms: list[int] | None = None) -> list[tuple[Rollouts, list[str]]]:
    """Cut every present body's trajectory into `sample_len`-frame samples, one body each, and deal
    each sample to the region whose slice of the box (by x) holds its mean x, or with `rooms` to
    the region watching its box (rooms[b]). Returns per region the samples and the trajectory each
    came from (the groups a split keeps on one side)."""
    frames: list[list[torch.Tensor]] = [[] for _ in range(regions)]
    groups: list[list[str]] = [[] for _ in range(regions)]
    physics: list[list[torch.Tensor]] = [[] for _ in range(regions)]
    r, t, n, _ = world.frames.shape
    for b in range(r):
        for k in range(n):
            if world.frames[b, 0, k, PRESENT] <= 0:
                continue
            for start in range(0, t - sample_len + 1, sample_len):
                s = world.frames[b, start:start + sample_len, k:k + 1]
                region = rooms[b] if rooms is not None else min(int(float(s[:, 0, X].mean()) / box * regions),
                                                                regions - 1)
                frames[region].append(s)
                groups[region].append(f"box{b}-body{k}")
                physics[region].append(world.physics[b])
    out = []
    for i in range(regions):
        if not frames[i]:
            raise ValueError(f"region {i + 1} saw no sample: a bigger world is needed")
        f = torch.stack(frames[i])
        out.append((Rollouts(f, torch.zeros(f.shape[0], sample_len - 1, 1, 2), torch.stack(physics[i])), groups[i]))
    return out


def concat(parts: list[Rollouts]) -> Rollouts:
    return Rollouts(torch.cat([p.frames for p in parts]), torch.cat([p.actions for p in parts]),
                    torch.cat([p.physics for p in parts]))


def errors_of(blob: bytes, heldout: Rollouts, windows: int) -> dict[str, float]:
    """On the gate's own seeded windows, as the aggregator measures each update alone."""
    jepa, cfg, _ = load_jepa(blob)
    return world_errors(jepa, cfg, heldout, windows, GateConfig().seed)["model"]  # type: ignore[arg-type]


def world_of(a: argparse.Namespace, cfg: Any) -> tuple[Rollouts, list[int] | None]:
    """The world and, for the draughty one, the region watching each box."""
    if a.world == "lossy":
        return unseen_world("lossy", cfg, a.rollouts, a.rollout_len, a.seed), None
    winds = [float(w) for w in a.winds.split(",")]
    per = max(1, a.rollouts // len(winds))
    parts = [unseen_world("wind", cfg, per, a.rollout_len, a.seed + i, wind=w) for i, w in enumerate(winds)]
    return concat(parts), [i for i in range(len(winds)) for _ in range(per)]


def _offer(base_blob: bytes, region: str, delta: dict[str, torch.Tensor], samples: int, ranges: Any,
           fisher: dict[str, torch.Tensor] | None = None) -> Offered:
    digest = sha256_hex(f"{region}:{sorted(delta)}:{delta_norm(delta)}".encode())  # a stand-in for the blob's hash
    u = Update(digest, "bench", region, sha256_hex(base_blob), 0, samples, delta_norm(delta))
    return Offered(u, delta, ranges, fisher=None if fisher is None else {k: v for k, v in fisher.items() if k in delta})


def aggregate(base_blob: bytes, offered: list[Offered], heldout: Rollouts, rules: Rules, windows: int
              ) -> tuple[bytes, dict[str, Any]]:
    t0 = time.time()
    res = screen(base_blob, offered, Ancestry([sha256_hex(base_blob)]), heldout, rules, windows=windows)
    by_id = {o.update.hash: o for o in offered}
    blob, _, _ = build_blob(base_blob, res.accepted, [r for e in res.accepted if (r := by_id[e.id].ranges)], rules,
                            {"consumed": [o.update.hash for o in offered]})
    names = {o.update.hash: o.update.region for o in offered}
    return blob, {"accepted": [names[e.id] for e in res.accepted],
                  "rejected": [{"region": names[r.id], "rule": r.rule, "reason": r.reason} for r in res.rejected],
                  "seconds": round(time.time() - t0, 1)}


def measure(a: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(a.threads)
    base_blob = shipped.default_blob()
    cfg = base_config(base_blob)
    world, rooms = world_of(a, cfg)
    parts = regional_samples(world, cfg.sim.box, a.sample_len, rooms=rooms)
    ft = FinetuneConfig(steps=a.steps, lr=a.lr, replay_rollouts=a.replay_rollouts, calibrate=False, seed=a.seed,
                        threads=a.threads)
    base_state = model_state(base_blob)
    heldouts, offered, rows, seconds, trains = [], [], {}, {}, []
    for region, (data, groups) in zip(REGIONS, parts):
        train, held = split(data, 0.25, a.seed, groups)
        heldouts.append(held)
        trains.append(train)
        t0 = time.time()
        cand = finetune(base_blob, train, ft)
        seconds[region] = round(time.time() - t0, 1)
        offered.append(_offer(base_blob, region, delta_of(base_state, model_state(cand.blob)),
                              int(train.frames.shape[0]), cand.config.sim.ranges.__dict__, cand.fisher))
        rows[f"{region} alone ({int(train.frames.shape[0])} samples)"] = cand.blob
    heldout = concat(heldouts)
    rules = Rules(server_lr=a.server_lr)
    agg_blob, honest = aggregate(base_blob, offered, heldout, rules, a.windows)
    fedavg_blob, _ = aggregate(base_blob, offered, heldout, dataclasses.replace(rules, merge="fedavg"), a.windows)
    middle = offered[1]
    scaled = {k: v * 100 for k, v in middle.delta.items()}  # type: ignore[union-attr]
    gen = torch.Generator().manual_seed(a.seed + 99)
    noise = {k: torch.randn(v.shape, generator=gen) for k, v in middle.delta.items()}  # type: ignore[union-attr]
    scale = delta_norm(middle.delta or {}) / max(delta_norm(noise), 1e-12)
    noise = {k: v * scale for k, v in noise.items()}
    sabotaged = [*offered, _offer(base_blob, "x100", scaled, middle.update.samples, middle.ranges, middle.fisher),
                 _offer(base_blob, "noise", noise, middle.update.samples, middle.ranges, middle.fisher)]
    sab_blob, with_sabotage = aggregate(base_blob, sabotaged, heldout, rules, a.windows)
    table = {"before (shipped)": errors_of(base_blob, heldout, a.windows),
             **{k: errors_of(v, heldout, a.windows) for k, v in rows.items()},
             "aggregate": errors_of(agg_blob, heldout, a.windows),
             "aggregate, plain FedAvg": errors_of(fedavg_blob, heldout, a.windows),
             "aggregate, saboteurs present": errors_of(sab_blob, heldout, a.windows)}
    if a.rounds > 1:  # FedAvg's own mechanism: the regions start each round from the last aggregate
        later, more = agg_blob, dataclasses.replace(ft, steps=a.steps * a.rounds)
        for _ in range(a.rounds - 1):
            later_state = model_state(later)
            offers = []
            for region, train in zip(REGIONS, trains):
                cand = finetune(later, train, ft)
                offers.append(_offer(later, region, delta_of(later_state, model_state(cand.blob)),
                                     int(train.frames.shape[0]), None, cand.fisher))
            later = aggregate(later, offers, heldout, rules, a.windows)[0]
        table[f"aggregate after {a.rounds} rounds"] = errors_of(later, heldout, a.windows)
        for region, train in zip(REGIONS, trains):
            table[f"{region} alone, {a.rounds}x the steps"] = errors_of(finetune(base_blob, train, more).blob,
                                                                       heldout, a.windows)
    same = from_bytes(agg_blob)["jepa"]
    unaffected = all(torch.equal(v, from_bytes(sab_blob)["jepa"][k]) for k, v in same.items())
    return {"errors": table, "heldout_samples": int(heldout.frames.shape[0]), "finetune_seconds": seconds,
            "honest_round": honest, "sabotaged_round": with_sabotage, "unaffected_by_sabotage": unaffected,
            "config": {k: getattr(a, k) for k in ("world", "winds", "rollouts", "rollout_len", "sample_len", "steps", "lr",
                                                    "replay_rollouts", "threads", "server_lr", "seed", "rounds")}}


def render(res: dict[str, Any]) -> str:
    rows = res["errors"]
    hs = list(next(iter(rows.values())))
    c = res["config"]
    title = (f"draughty world (rooms with {c['winds']} m/s^2 draughts, one strength per region)"
             if c["world"] == "draughts" else "lossy-bounce world, 3 regions (thirds of the box by x)")
    lines = [f"{title}; {res['heldout_samples']} held-out samples of the whole world", "", f"{'position error (m) at horizon':<40}" + "".join(f"{h:>9}" for h in hs)]
    lines += [f"{name:<40}" + "".join(f"{v[h]:9.4f}" for h in hs) for name, v in rows.items()]
    best_single = min(v["10"] for k, v in rows.items() if k.endswith("samples)")) if "10" in hs else float("nan")
    agg = rows["aggregate"].get("10", float("nan"))
    fedavg = rows["aggregate, plain FedAvg"].get("10", float("nan"))
    lines += ["", f"aggregate / best single region at 10 steps: {agg / best_single:.3f} "
              f"(plain FedAvg: {fedavg / best_single:.3f})",
              f"accepted: {', '.join(res['honest_round']['accepted'])}",
              "with saboteurs: " + "; ".join(f"{r['region']} rejected ({r['rule']}): {r['reason']}"
                                             for r in res["sabotaged_round"]["rejected"]),
              f"published weights with saboteurs present equal the honest round's: {res['unaffected_by_sabotage']}",
              f"fine-tune seconds per region: {res['finetune_seconds']}; aggregation seconds: "
              f"{res['honest_round']['seconds']} (honest), {res['sabotaged_round']['seconds']} (saboteurs present); "
              f"{res['config']['threads']} threads"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/federated.py", description=__doc__.split("\n")[0])
    p.add_argument("--world", choices=("draughts", "lossy"), default="draughts")
    p.add_argument("--winds", default="0.5,1.5,4.0", help="draughts: each region's draught, m/s^2")
    p.add_argument("--rollouts", type=int, default=64, help="boxes of the world observed")
    p.add_argument("--rollout-len", type=int, default=96, help="steps per box")
    p.add_argument("--sample-len", type=int, default=24, help="frames per sample (22 allow horizon 20)")
    p.add_argument("--steps", type=int, default=150, help="fine-tune steps per region")
    p.add_argument("--lr", type=float, default=FinetuneConfig.lr)
    p.add_argument("--replay-rollouts", type=int, default=256)
    p.add_argument("--rounds", type=int, default=1, help="also run this many rounds, each region starting "
                   "from the last aggregate, against each region alone for as many steps in all")
    p.add_argument("--server-lr", type=float, default=Rules.server_lr)
    p.add_argument("--windows", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="tiny sizes: the pipeline runs, the numbers mean nothing")
    p.add_argument("--json", help="also write the result here")
    a = p.parse_args(argv)
    if a.smoke:
        a.rollouts, a.rollout_len, a.steps, a.replay_rollouts, a.windows = 12, 48, 3, 16, 32
    t0 = time.time()
    res = measure(a)
    res["seconds"] = round(time.time() - t0, 1)
    res["smoke"] = a.smoke
    print(render(res))
    print(f"total: {res['seconds']} s")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
