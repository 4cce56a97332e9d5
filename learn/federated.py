"""`worldstate aggregate --world W`: one asynchronous federated round over the regions' updates.

    read the manifest (serving hash, revision)  ->  every reachable region's announced updates
    ->  screen them (learn/rounds.py: consumed, stale, norm, direction, regression on held-out)
    ->  weighted mean of the accepted (learn/aggregate.py)  ->  gate (learn/gate.py)
    ->  publish by compare-and-swap over the revision read (learn/publish.py)

A region it cannot reach this round is simply not in it (FedBuff-style: its updates wait for a
later round, down-weighted by staleness if the model moved meanwhile). The held-out data is the
regions' shards it can read (--shard-dir, repeatable) or trajectory files (--rollouts), each split
by trajectory exactly as the regions' learners split theirs (same --heldout and --seed), so no
held-out sample was trained on. Exit status: 0 published (or --dry-run and the gate said yes),
2 bad usage (nothing read or changed), 3 the gate said no, 4 another aggregator or learner
published first, 5 fewer than --min-updates updates accepted (nothing published).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import socket
import sys
import time
from typing import Any

import redis
import torch

from client import Client
from consistency.ap_keys import REGION_RE
from consistency.cp_keys import check_world
from consistency.errors import InvalidKey
from world_model.checkpoints import CheckpointError, CheckpointStore, from_bytes, sha256_hex
from world_model.simulator import Rollouts

from .aggregate import MERGES, Rules
from .finetune import Candidate, base_config
from .gate import GateConfig, gate, split
from .publish import LOST_RACE, PUBLISHED, finite, publish
from .rounds import Offered, ancestry, build_blob, screen, weights_sha256
from .updates import UpdateStore, announced, forget

EXIT = {PUBLISHED: 0, "accepted": 0, "refused-by-gate": 3, LOST_RACE: 4, "too-few-updates": 5}
# Rejections that judged the update itself, so it is consumed; a stale or unreadable one is not
# this round's to judge (stale stays stale; a blob may yet arrive on a shared volume).
JUDGED = frozenset({"norm", "direction", "regression", "samples", "invalid"})
SCHEMES = ("redis://", "rediss://", "unix://", "redis+cluster://")


def region_urls(text: str) -> dict[str, str]:
    """`r1=redis://h:p,r2=redis://...` -> {region: url}; ValueError saying what is wrong. A Redis
    Cluster's URL lists its startup nodes with commas too (`r1=redis+cluster://h:p,h:p`): an item
    with no `=` after one is its next node, as in WORLDSTATE_PEERS."""
    out: dict[str, str] = {}
    last = ""
    for item in (t.strip() for t in text.split(",")):
        if "=" not in item and last and out[last].startswith("redis+cluster://") and ":" in item:
            out[last] += f",{item}"
            continue
        region, eq, url = item.partition("=")
        if not eq or not REGION_RE.fullmatch(region) or not url.startswith(SCHEMES):
            raise ValueError(f"{item!r} is not REGION=URL (a region matching {REGION_RE.pattern}, "
                             f"a URL starting {' or '.join(SCHEMES)}); e.g. r1=redis://127.0.0.1:6379,r2=...")
        if region in out:
            raise ValueError(f"region {region} named twice")
        out[region] = url
        last = region
    return out


def _region_arg(text: str) -> dict[str, str]:
    try:
        return region_urls(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parser() -> argparse.ArgumentParser:
    r, g = Rules(), GateConfig()
    p = argparse.ArgumentParser(prog="worldstate aggregate", description=(
        "Combine the regions' announced updates of a world (FedAvg weighted by samples and staleness, "
        "each weight by where the regions' data informs it), "
        "reject divergent ones, gate the result and publish it by compare-and-swap."))
    p.add_argument("--world", required=True)
    p.add_argument("--api", help="a node's URL (default $WORLDSTATE_URL)")
    p.add_argument("--key", help="an API key allowed to publish models (default $WORLDSTATE_KEY)")
    p.add_argument("--checkpoint-dir", required=True, help="the blobs the nodes load (updates under updates/)")
    p.add_argument("--region-redis", required=True, type=_region_arg, metavar="R=URL,...",
                   help="each region's Redis, where its learners announce updates")
    p.add_argument("--shard-dir", action="append", default=[], help="a region's shard folder (repeatable): "
                   "its held-out slice is part of the round's held-out data")
    p.add_argument("--rollouts", action="append", default=[], help="a trajectories file (learn.learner.save_rollouts), "
                   "repeatable, held out the same way")
    p.add_argument("--heldout", type=float, default=0.25, help="share held out, as the learners' --heldout")
    p.add_argument("--seed", type=int, default=0, help="the split's seed, as the learners' --seed")
    p.add_argument("--min-updates", type=int, default=1, help="publish only with at least this many accepted")
    p.add_argument("--max-staleness", type=int, default=r.max_staleness,
                   help=f"publishes an update's base may be behind the serving model (default {r.max_staleness})")
    p.add_argument("--norm-factor", type=float, default=r.norm_factor,
                   help=f"reject an update whose norm exceeds this x the others' median (default {r.norm_factor:g})")
    p.add_argument("--min-cosine", type=float, default=r.min_cosine,
                   help=f"reject an update whose cosine with the others' mean is below this (default {r.min_cosine:g})")
    p.add_argument("--max-update-regression", type=float, default=r.max_update_regression,
                   help="an update alone may raise the held-out error by at most this share (default 0)")
    p.add_argument("--server-lr", type=float, default=r.server_lr, help="step along the mean delta (1: FedAvg)")
    p.add_argument("--merge", choices=MERGES, default=r.merge, help="fisher: each weight averaged by the updates' "
                   "Fisher shares (learn/fisher.py); fedavg: by samples and staleness alone (default fisher)")
    p.add_argument("--horizon", type=int, default=g.horizon)
    p.add_argument("--windows", type=int, default=g.windows, help="held-out windows each model is measured on")
    p.add_argument("--min-improvement", type=float, default=g.min_improvement)
    p.add_argument("--max-suite-regression", type=float, default=g.max_suite_regression)
    p.add_argument("--suite-cases", type=int, default=g.suite_cases)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--aggregator", default=f"aggregator@{socket.gethostname()}", help="recorded in the lineage")
    p.add_argument("--dry-run", action="store_true", help="screen, combine and gate; publish nothing")
    return p


def _heldout(world: str, args: argparse.Namespace) -> Rollouts:
    """The held-out slice of every data source, cut by trajectory as the learners cut theirs."""
    from learn.learner import load_rollouts_file
    from learn.shards import NoShards, load_scenes

    parts = []
    for d in args.shard_dir:
        try:
            data, groups = load_scenes(world, d, args.max_bodies)
        except NoShards:
            continue  # a region whose learner has written nothing yet
        parts.append(split(data, args.heldout, args.seed, groups)[1])
    for f in args.rollouts:
        try:
            data, groups = load_rollouts_file(f)
        except (OSError, ValueError, RuntimeError) as e:
            raise SystemExit(f"worldstate aggregate: --rollouts {f}: {e}") from None
        parts.append(split(data, args.heldout, args.seed, groups)[1])
    parts = [p for p in parts if p.frames.shape[0]]
    if not parts:
        raise SystemExit("worldstate aggregate: no held-out data: pass --shard-dir or --rollouts with samples")
    t = min(p.frames.shape[1] for p in parts)  # a prefix of a trajectory is still one
    return Rollouts(torch.cat([p.frames[:, :t] for p in parts]), torch.cat([p.actions[:, :t - 1] for p in parts]),
                    torch.cat([p.physics for p in parts]))


def prune(world: str, regions: dict[str, str], consumed: list[dict[str, Any]]) -> int:
    """Forget, in their regions, the announcements of updates the serving model's rounds consumed (the
    ancestry says so, and the manifest only moves by CAS, so they can never count again). A region it
    cannot reach keeps them until a later round."""
    n = 0
    for region, url in regions.items():
        mine = [s["hash"] for s in consumed if s.get("region") == region]
        try:
            n += forget(url, world, mine)
        except redis.RedisError:
            continue
    return n


def collect(world: str, regions: dict[str, str], store: UpdateStore) -> tuple[list[Offered], list[dict[str, str]]]:
    """Every update announced in the regions it can reach, its blob read and checked against the
    announcement; the regions it could not reach, with why."""
    offered, unreachable, seen = [], [], set()
    for region, url in regions.items():
        try:
            found = announced(url, world)
        except redis.RedisError as e:
            unreachable.append({"region": region, "error": str(e)})
            continue
        for u in found:
            if u.hash in seen:
                continue
            seen.add(u.hash)
            try:
                doc = store.load(u.hash)
            except (CheckpointError, ValueError, RuntimeError) as e:
                offered.append(Offered(u, problem=f"its blob: {e}"))
                continue
            claims = {k: doc.get(k) for k in ("world", "region", "base", "samples")}
            if claims != {"world": u.world, "region": u.region, "base": u.base, "samples": u.samples}:
                offered.append(Offered(u, problem=f"the announcement does not match its blob ({claims})"))
            else:
                offered.append(Offered(u, doc["delta"], doc.get("ranges"), fisher=doc.get("fisher")))
    return offered, unreachable


def run(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.time()
    if args.threads:
        torch.set_num_threads(args.threads)
    rules = Rules(args.max_staleness, args.norm_factor, args.min_cosine, args.max_update_regression, args.server_lr,
                  args.merge)
    blobs, updates = CheckpointStore(args.checkpoint_dir), UpdateStore(args.checkpoint_dir)
    with Client(args.api, args.key) as ws:
        if args.world not in ws.worlds():
            raise SystemExit(f"worldstate aggregate: no world {args.world!r} on {ws.http.base_url}")
        current = ws.manifest()
        serving = current.manifest["hash"]
        try:
            base_blob = blobs.get_bytes(serving)
        except CheckpointError as e:
            raise SystemExit(f"worldstate aggregate: the serving model's blob: {e} (is --checkpoint-dir the "
                             "folder the nodes load from?)") from None
        args.max_bodies = base_config(base_blob).sim.max_bodies  # the most bodies a scene may hold
        heldout = _heldout(args.world, args)
        history = ancestry(serving, blobs.get_bytes, rules.max_staleness)
        offered, unreachable = collect(args.world, args.region_redis, updates)
        res = screen(base_blob, offered, history, heldout, rules, args.horizon, args.windows)
        pruned = prune(args.world, args.region_redis, res.skipped)
        by_id = {o.update.hash: o.update for o in offered}
        accepted = [{**by_id[e.id].brief(), "staleness": e.staleness, "weight": e.weight, "norm": e.norm,
                     "heldout_error_alone": res.errors.get(e.id)} for e in res.accepted]
        rejected = [{**by_id[r.id].brief(), "rule": r.rule, "reason": r.reason, **r.figures} for r in res.rejected]
        report: dict[str, Any] = {
            "world": args.world, "parent": serving, "base_revision": current.revision,
            "regions": sorted(set(args.region_redis) - {u["region"] for u in unreachable}),
            "unreachable": unreachable, "accepted": accepted, "rejected": rejected, "skipped_consumed": res.skipped,
            "pruned": pruned,
            "heldout_samples": int(heldout.frames.shape[0]), "serving_heldout_error": res.errors["serving"],
            "rules": dataclasses.asdict(rules)}
        if len(res.accepted) < max(1, args.min_updates):
            report.update(status="too-few-updates", seconds=round(time.time() - t0, 1))
            return report
        federated = {"aggregator": args.aggregator, "rules": dataclasses.asdict(rules), "accepted": accepted,
                     "rejected": rejected, "unreachable": [u["region"] for u in unreachable],
                     "consumed": sorted(e.id for e in res.accepted) + sorted(r.id for r in res.rejected
                                                                            if r.rule in JUDGED)}
        blob, cfg, weights = build_blob(base_blob, res.accepted, [o.ranges for o in offered
                                                                  if o.update.hash in {e.id for e in res.accepted}
                                                                  and o.ranges], rules, finite(federated))
        verdict = gate(base_blob, blob, heldout, GateConfig(horizon=args.horizon, windows=args.windows,
                                                            min_improvement=args.min_improvement,
                                                            max_suite_regression=args.max_suite_regression,
                                                            suite_cases=args.suite_cases))
        state = from_bytes(base_blob)
        candidate = Candidate(blob, sha256_hex(blob), cfg, serving, round(time.time() - t0, 1),
                              metrics=state.get("metrics", {}), lineage={"federated": federated})
        report.update(candidate=candidate.hash, weights_sha256=weights_sha256(weights), gate=verdict.as_dict())
        if args.dry_run:
            report.update(status="accepted" if verdict.accept else "refused-by-gate", seconds=candidate.seconds)
            return report
        offsets = {f"{u['region']}/{u['hash'][:12]}": by_id[u["hash"]].data_offsets for u in accepted}
        out = publish(ws, candidate, verdict, base_manifest=current.manifest, base_revision=current.revision,
                      checkpoint_dir=args.checkpoint_dir, world=args.world, learner=args.aggregator,
                      data_offsets=offsets)
        report.update(status=out.status, revision=out.revision, current_revision=out.current_revision,
                      seconds=round(time.time() - t0, 1))
        return report


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The arguments, checked before anything is read (bad ones: exit 2); learn/loop.py shares it."""
    p = parser()
    args = p.parse_args(argv)
    try:
        check_world(args.world)
    except InvalidKey as e:
        p.error(str(e))
    if args.min_updates < 1 or not 0 < args.heldout < 1:
        p.error("--min-updates >= 1 and 0 < --heldout < 1")
    try:
        Rules(args.max_staleness, args.norm_factor, args.min_cosine, args.max_update_regression, args.server_lr,
              args.merge)
    except ValueError as e:
        p.error(str(e))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        report = run(args)
    except SystemExit as e:  # a usage problem found once connected: exit 2, the message on stderr
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            return 2
        raise
    print(json.dumps(finite(report), indent=2))
    if report["status"] == LOST_RACE:
        print(f"the manifest moved from revision {report['base_revision']} to {report['current_revision']} during "
              "the round: nothing published; its updates wait for the next round", file=sys.stderr)
    elif report["status"] == "too-few-updates":
        print(f"{len(report['accepted'])} update(s) accepted, --min-updates is {args.min_updates}: nothing published",
              file=sys.stderr)
    return EXIT[report["status"]]


if __name__ == "__main__":
    sys.exit(main())
