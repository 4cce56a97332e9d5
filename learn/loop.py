"""`worldstate learn ... --every S` and `worldstate aggregate ... --every S`: the one-shot commands
as long-lived roles (what `worldstate up --learn` and docker-compose run).

    a round (the one-shot command's run)  ->  one JSON line on stdout  ->  sleep S  ->  again

A round that ends with the one-shot's exit 3/4/5, or with any error (a node, Redis or the world not
there yet, no data yet), is logged as its line and the loop goes on: a role must outlive the
deployment's hiccups. SIGTERM or SIGINT stops the loop between rounds, or aborts a round in
progress where it is: each publish is one compare-and-swap (an announcement one HSET), written
after the blobs it names, so an aborted round leaves at most an unreferenced blob behind.

An idle world costs nothing: the learner skips the fine-tune when its shards gained fewer than
`--min-new-samples` samples since its last fine-tune in this process, and the aggregator skips a
round when neither the manifest's revision nor the set of announced updates changed since its
last round. `--key-file` reads the API key from a file at every round (the admin key `worldstate
up` writes to its run directory); it works without `--every` too.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any

from .publish import finite

KINDS = ("learn", "aggregate")
DEFAULT_MIN_NEW_SAMPLES = 32  # two windows of 16 frames for each of 16 entities, about


class Stopped(BaseException):
    """SIGTERM or SIGINT arrived during a round (a BaseException: no `except Exception` swallows it)."""


class _Stopper:
    """Sets `stop` on SIGTERM/SIGINT and, inside a round, aborts it by raising Stopped."""

    def __init__(self) -> None:
        self.stop = False
        self.in_round = False

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.stop = True
        if self.in_round:
            self.in_round = False
            raise Stopped()

    @contextmanager
    def round(self) -> Iterator[None]:
        self.in_round = True
        try:
            yield
        finally:
            self.in_round = False

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stop and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.2))


def loop_parser(kind: str) -> argparse.ArgumentParser:
    # allow_abbrev off: an abbreviation of the one-shot's own options must reach its parser whole.
    p = argparse.ArgumentParser(prog=f"worldstate {kind}", add_help=False, allow_abbrev=False)
    p.add_argument("--every", type=float, help="run a round every this many seconds until SIGTERM")
    if kind == "learn":
        p.add_argument("--min-new-samples", type=int, help="with --every: fine-tune only once the shards gained "
                       f"this many samples since the last fine-tune (default {DEFAULT_MIN_NEW_SAMPLES})")
    p.add_argument("--key-file", type=Path, help="read the API key from this file (at every round)")
    return p


@dataclass
class LoopOptions:
    every: float | None
    min_new_samples: int
    key_file: Path | None


def split_argv(kind: str, argv: list[str]) -> tuple[LoopOptions, list[str]]:
    """The loop's own flags and the one-shot's; bad values exit 2 before anything is read."""
    p = loop_parser(kind)
    ns, rest = p.parse_known_args(argv)
    if ns.every is not None and not (math.isfinite(ns.every) and ns.every > 0):
        p.error(f"--every must be a number of seconds > 0, not {ns.every:g}")
    min_new = getattr(ns, "min_new_samples", None)
    if min_new is not None and min_new < 0:
        p.error(f"--min-new-samples must be 0 or more, not {min_new}")
    if min_new is not None and ns.every is None:
        p.error("--min-new-samples goes with --every (a one-shot `learn` always fine-tunes)")
    return LoopOptions(ns.every, DEFAULT_MIN_NEW_SAMPLES if min_new is None else min_new, ns.key_file), rest


def _read_key(path: Path | None, fallback: str | None) -> str | None:
    if path is None:
        return fallback
    try:
        return path.read_text().strip() or fallback
    except FileNotFoundError:
        raise RuntimeError(f"--key-file {path}: not there yet") from None


@dataclass
class _State:
    trained_at: int = 0  # the shards' sample count at the last fine-tune
    inputs: tuple[Any, ...] | None = None  # the aggregator's last round's (revision, announced updates)


def _shard_samples(shard_dir: str, world: str) -> int:
    from .shards import NoShards, ShardDir

    try:
        return ShardDir(shard_dir, world).index().samples
    except NoShards:
        return 0


def learn_round(base: argparse.Namespace, opts: LoopOptions, state: _State) -> tuple[dict[str, Any], int | None]:
    from client import Client

    from . import learner

    args = copy.deepcopy(base)  # a round mutates its args (data offsets, groups): start clean each time
    args.key = _read_key(opts.key_file, args.key)
    log = None
    if args.from_log:
        with Client(args.api, args.key) as ws:
            log = learner._catch_up(ws, args)
        # Caught up here so the new samples can be counted first; the run must not read the log again.
        args.region, args.announce, args.from_log = args.region or log["region"], args.announce or args.from_log, None
    total = _shard_samples(args.shard_dir, args.world) if args.shard_dir else None
    if total is not None and opts.every is not None and total - state.trained_at < opts.min_new_samples:
        return {"status": "skipped", "new_samples": total - state.trained_at, "samples": total,
                "min_new_samples": opts.min_new_samples, **({"log": log} if log else {})}, None
    report = learner.run(args)
    if log is not None:
        report["log"] = log
    if total is not None and report["status"] != learner.LOST_RACE:  # lost: learn again against the new model
        state.trained_at = total
    return report, learner.EXIT[report["status"]]


def aggregate_round(base: argparse.Namespace, opts: LoopOptions, state: _State) -> tuple[dict[str, Any], int | None]:
    import redis

    from client import Client

    from . import federated
    from .updates import announced

    args = copy.deepcopy(base)
    args.key = _read_key(opts.key_file, args.key)
    with Client(args.api, args.key) as ws:
        revision = ws.manifest().revision
    offered: list[str] = []
    for region, url in sorted(args.region_redis.items()):
        try:
            offered += [f"{region}/{u.hash}" for u in announced(url, args.world)]
        except redis.RedisError:
            offered.append(f"{region}/unreachable")
    inputs = (revision, tuple(sorted(offered)))
    if opts.every is not None and inputs == state.inputs:
        return {"status": "skipped", "reason": "no new update and the manifest unchanged",
                "base_revision": revision, "announced": len(offered)}, None
    report = federated.run(args)
    state.inputs = inputs
    return report, federated.EXIT[report["status"]]


def _emit(line: dict[str, Any]) -> None:
    print(json.dumps(finite(line), separators=(",", ":"), default=str), flush=True)


def serve(kind: str, base: argparse.Namespace, opts: LoopOptions,
          one_round: Callable[[argparse.Namespace, LoopOptions, _State], tuple[dict[str, Any], int | None]]) -> int:
    """Rounds every opts.every seconds until SIGTERM/SIGINT; 0 when stopped."""
    stopper, state, n = _Stopper(), _State(), 0
    stopper.install()
    _emit({"role": kind, "world": base.world, "event": "started", "every": opts.every,
           **({"min_new_samples": opts.min_new_samples} if kind == "learn" else {})})
    while not stopper.stop:
        n += 1
        t0 = time.monotonic()
        line: dict[str, Any] = {"role": kind, "world": base.world, "round": n,
                                "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        try:
            with stopper.round():
                report, code = one_round(base, opts, state)
            line.update(status=report["status"], exit=code, report=report)
        except Stopped:
            line.update(status="aborted", exit=None, reason="SIGTERM during the round: nothing half-published")
        except SystemExit as e:  # the one-shot's "cannot do this now" (no data yet, no such world yet)
            if not isinstance(e.code, str):
                raise
            line.update(status="error", exit=2, error=e.code)
        except Exception as e:  # noqa: BLE001 - a role outlives a node, Redis or the world not being there yet
            line.update(status="error", exit=None, error=f"{type(e).__name__}: {e}")
        line["seconds"] = round(time.monotonic() - t0, 2)
        _emit(line)
        if opts.every is None:
            break
        stopper.sleep(opts.every)
    _emit({"role": kind, "world": base.world, "event": "stopped", "rounds": n})
    return 0


def main(kind: str, argv: list[str]) -> int:
    """`worldstate learn|aggregate ARGS`: the one-shot command unless --every is given."""
    if kind not in KINDS:
        raise ValueError(kind)
    if "-h" in argv or "--help" in argv:  # the loop's flags first, then the one-shot's help (which exits)
        loop_parser(kind).print_help()
        print()
    opts, rest = split_argv(kind, argv)
    if opts.key_file is not None:
        try:
            rest = [*rest, "--key", _read_key(opts.key_file, None) or ""]
        except RuntimeError as e:
            if opts.every is None:
                print(f"worldstate {kind}: {e}", file=sys.stderr)
                return 2
    if opts.every is None:
        from . import federated, learner

        return (learner.main if kind == "learn" else federated.main)(rest)
    if kind == "learn":
        from . import learner

        base = learner.parser().parse_args(rest)
        return serve(kind, base, opts, learn_round)
    from . import federated

    return serve(kind, federated.parse(rest), opts, aggregate_round)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
