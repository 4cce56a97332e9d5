"""`worldstate learn --world W`: fine-tune the serving model on a world's trajectories, gate it,
and publish it by compare-and-swap when the gate says yes.

    read the manifest (hash, revision)  ->  the world's trajectories  ->  split by trajectory
    ->  finetune (finetune.py)  ->  gate (gate.py)  ->  publish over that revision (publish.py)

The world's trajectories come from `load_world(world, args)`: the seam for the observation log
(learn/shards.py's load_rollouts). Until that is wired, `--rollouts FILE` reads a file written by
`save_rollouts`. Exit status: 0 published (or --dry-run and the gate said yes, or --publish update
and the update announced: learn/updates.py), 3 the gate said
no, 4 someone published first (the manifest moved since the learner read it), 2 bad usage.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

import torch

from client import Client
from world_model.checkpoints import CheckpointStore
from world_model.config import PRESENT
from world_model.simulator import Rollouts

from . import parallel
from .finetune import FinetuneConfig, base_config, finetune
from .gate import GateConfig, gate, split
from .publish import LOST_RACE, PUBLISHED, finite, publish

LoadWorld = Callable[[str, argparse.Namespace], Rollouts]
WORKER = "worker"  # a data-parallel copy other than rank 0: it trained, the lead reports
EXIT = {PUBLISHED: 0, "accepted": 0, "announced": 0, "refused-by-gate": 3, LOST_RACE: 4, WORKER: 0}


def save_rollouts(path: str | os.PathLike[str], data: Rollouts, groups: list[str] | None = None) -> None:
    """Write trajectories as plain tensors (what --rollouts reads; no pickled classes)."""
    doc: dict[str, Any] = {"frames": data.frames, "actions": data.actions, "physics": data.physics}
    if groups is not None:
        doc["groups"] = list(groups)
    torch.save(doc, path)


def load_rollouts_file(path: str | os.PathLike[str]) -> tuple[Rollouts, list[str] | None]:
    doc = torch.load(path, map_location="cpu", weights_only=True)  # a file from elsewhere runs no code
    if not isinstance(doc, dict) or not {"frames", "actions", "physics"} <= set(doc):
        raise ValueError(f"{path}: expected a dict with frames, actions and physics (learn.learner.save_rollouts)")
    return Rollouts(doc["frames"].float(), doc["actions"].float(), doc["physics"].float()), doc.get("groups")


def parser() -> argparse.ArgumentParser:
    d, g = FinetuneConfig(), GateConfig()
    p = argparse.ArgumentParser(prog="worldstate learn", description=(
        "Fine-tune the serving model on a world's trajectories mixed with simulator replay; publish it "
        "by compare-and-swap only if it gets better on the world and no worse than a bound on the suite."))
    p.add_argument("--world", required=True)
    p.add_argument("--api", help="a node's URL (default $WORLDSTATE_URL)")
    p.add_argument("--key", help="an API key allowed to publish models (default $WORLDSTATE_KEY)")
    p.add_argument("--checkpoint-dir", required=True, help="where the nodes load blobs from "
                   "(worldstate up: <run-dir>/checkpoints)")
    p.add_argument("--shard-dir", help="the world's trajectories from the observation log: the shard folder "
                   "learn.log.consume writes (its offsets go into the lineage)")
    p.add_argument("--from-log", metavar="REDIS_URL",
                   help="first bring --shard-dir up to date from this region's Redis replica (its delta stream, "
                        "as a registered consumer with a durable offset)")
    p.add_argument("--region", help="the region of --from-log's replica (default: the --api node's)")
    p.add_argument("--consumer", default="learner", help="the consumer name its offset is kept under")
    p.add_argument("--sample-frames", type=int, default=16, help="with --from-log: frames per sample the log is cut "
                   "into (default 16: error measured up to 10 steps; 22 or more reach 20). A shard folder keeps "
                   "the length it was first written with")
    p.add_argument("--rollouts", help="or the world's trajectories from a file written by learn.learner.save_rollouts")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--world-fraction", type=float, default=d.world_fraction,
                   help=f"share of each batch from the world; the rest is simulator replay (default {d.world_fraction})")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--trainable", choices=["adapt", "contact", "all"], default=d.trainable)
    p.add_argument("--replay-rollouts", type=int, default=d.replay_rollouts,
                   help="simulator rollouts the replay half of each batch is drawn from")
    p.add_argument("--no-calibrate", action="store_true",
                   help="keep the parent's surprise calibration (saves ~30 s; for trials)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--heldout", type=float, default=0.25, help="share of the trajectories held out for the gate")
    p.add_argument("--horizon", type=int, default=g.horizon)
    p.add_argument("--min-improvement", type=float, default=g.min_improvement,
                   help=f"world error must fall by this share (default {g.min_improvement})")
    p.add_argument("--max-suite-regression", type=float, default=g.max_suite_regression,
                   help=f"suite error may grow by at most this share (default {g.max_suite_regression})")
    p.add_argument("--suite-cases", type=int, default=g.suite_cases)
    p.add_argument("--data-offsets", default="{}", help="JSON object recorded in the lineage (e.g. stream offsets)")
    p.add_argument("--learner", default=f"learner@{socket.gethostname()}", help="recorded in the lineage")
    p.add_argument("--dry-run", action="store_true", help="gate only; publish nothing")
    p.add_argument("--publish", choices=["manifest", "update"], default="manifest", help="update: store the "
                   "difference from the base and announce it for `worldstate aggregate` (learn/updates.py)")
    p.add_argument("--announce", metavar="REDIS_URL", help="the region's Redis an update is announced in "
                   "(default: --from-log's)")
    return p


def _catch_up(ws: Client, args: argparse.Namespace) -> dict[str, Any]:
    """--from-log: consume the region's stream into --shard-dir, the world's physics read through the API."""
    from learn.log import consume, register
    from world_model.config import Physics

    if not args.shard_dir:
        raise SystemExit("worldstate learn: --from-log needs --shard-dir, where the shards go")
    if args.region:
        region = args.region
    else:  # the region of the node asked: its replica is the one --from-log names, as the README says
        answer = ws.http.get(f"/v1/worlds/{args.world}/positions")
        answer.raise_for_status()
        region = answer.json()["region"]
    register(args.from_log, region, args.consumer)  # first: the floor holds even while the world has no physics
    p = ws.get_physics(args.world)
    physics = Physics.from_dict({"gravity": p.gravity, "restitution": p.restitution, "drag": p.drag,
                                 "time_step": p.time_step})
    stats = consume(args.from_log, region, args.world, args.shard_dir, args.consumer, physics=physics,
                    frames=args.sample_frames)
    return {"region": region, "entries": stats.entries, "observations": stats.observations,
            "samples": stats.samples, "shards": stats.shards, "gaps": stats.gaps, "through": stats.through}


def _from_file(world: str, args: argparse.Namespace) -> Rollouts:
    """--shard-dir (the log's shards as scenes, learn/scenes.py) or --rollouts (a file)."""
    if getattr(args, "shard_dir", None):
        from learn.shards import ShardDir, load_scenes

        data, groups = load_scenes(world, args.shard_dir, args.max_bodies)
        args.groups = groups
        offsets = json.loads(args.data_offsets)
        if not offsets:  # what the shards cover, unless the caller said otherwise
            args.data_offsets = json.dumps(ShardDir(args.shard_dir, world).index().offsets)
        return data
    if not args.rollouts:
        raise SystemExit("worldstate learn: no trajectories: pass --shard-dir DIR or --rollouts FILE")
    data, groups = load_rollouts_file(args.rollouts)
    args.groups = groups
    return data


def run(args: argparse.Namespace, load_world: LoadWorld = _from_file) -> dict[str, Any]:
    offsets = json.loads(args.data_offsets)
    if not isinstance(offsets, dict):
        raise SystemExit("worldstate learn: --data-offsets must be a JSON object")
    ranks = parallel.start()  # one of torchrun's copies, or alone (learn/parallel.py)
    with Client(args.api, args.key) as ws:
        log = _catch_up(ws, args) if getattr(args, "from_log", None) and ranks.lead else None
        parallel.barrier()  # the other copies read the shards once the lead has brought them up to date
        current = ws.manifest()
        base_blob = CheckpointStore(args.checkpoint_dir).get_bytes(current.manifest["hash"])
        args.max_bodies = base_config(base_blob).sim.max_bodies  # the most bodies a scene may hold
        world = load_world(args.world, args)
        offsets = json.loads(args.data_offsets)  # the shards' own, when they came from the log
        train, heldout = split(world, args.heldout, args.seed, getattr(args, "groups", None))
        cfg = FinetuneConfig(steps=args.steps, world_fraction=args.world_fraction, lr=args.lr,
                             trainable=args.trainable, replay_rollouts=args.replay_rollouts,
                             calibrate=not args.no_calibrate, seed=args.seed, threads=args.threads)
        candidate = finetune(base_blob, train, cfg)
        if not ranks.lead:
            return {"status": WORKER, "rank": ranks.rank}  # trained its share; rank 0 gates and publishes
        verdict = gate(base_blob, candidate.blob, heldout,
                       GateConfig(horizon=args.horizon, min_improvement=args.min_improvement,
                                  max_suite_regression=args.max_suite_regression, suite_cases=args.suite_cases))
        report: dict[str, Any] = {"world": args.world, "parent": candidate.base_hash, "candidate": candidate.hash,
                                  "base_revision": current.revision, "finetune_seconds": candidate.seconds,
                                  "train_samples": int(train.frames.shape[0]),
                                  "heldout_samples": int(heldout.frames.shape[0]),
                                  "bodies": int((world.frames[:, 0, :, PRESENT] > 0).sum()), "gate": verdict.as_dict()}
        if log is not None:
            report["log"] = log
        if ranks.size > 1:
            report["data_parallel"] = {"world_size": ranks.size}
        if args.dry_run:
            report["status"] = "accepted" if verdict.accept else "refused-by-gate"
            return report
        if args.publish == "update":
            from .updates import offer
            return report | offer(ws, base_blob, candidate.blob, world=args.world, base_revision=current.revision,
                                  redis_url=args.announce or getattr(args, "from_log", None), region=args.region,
                                  samples=report["train_samples"], checkpoint_dir=args.checkpoint_dir,
                                  learner=args.learner, data_offsets=offsets, gate=verdict.as_dict(),
                                  fisher=candidate.fisher)
        out = publish(ws, candidate, verdict, base_manifest=current.manifest, base_revision=current.revision,
                      checkpoint_dir=args.checkpoint_dir, world=args.world, learner=args.learner,
                      data_offsets=offsets)
        report.update(status=out.status, revision=out.revision, current_revision=out.current_revision)
        return report


def main(argv: list[str] | None = None, load_world: LoadWorld = _from_file) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.sample_frames < 2:
        p.error("--sample-frames must be 2 or more")
    try:
        report = run(args, load_world)
    finally:
        parallel.stop()
    if report["status"] == WORKER:
        return 0
    print(json.dumps(finite(report), indent=2))
    if report["status"] == LOST_RACE:
        print(f"the manifest moved from revision {report['base_revision']} to {report['current_revision']} while "
              "learning: nothing published; run again to learn against the model serving now", file=sys.stderr)
    return EXIT[report["status"]]


if __name__ == "__main__":
    sys.exit(main())
