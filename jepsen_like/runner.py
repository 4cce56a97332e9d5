"""One test, start to end: cluster up, clients and faults for the time limit, heal, quiet, final reads, checks.

    cluster up -> setup -> clients -> every client completed an operation
      -> nemesis schedule (time limit) -> the fault in force ends (under load)
      -> every client completed one more operation -> stop clients
      -> heal every fault -> wait healthy -> quiet period
      -> final reads -> cluster down -> checkers -> store/<test>/<time>/

Everything is bounded: clients stop after the time limit (each finishes the
operation in flight, itself bounded by the client timeout), the nemesis
thread by the same deadline plus one fault's stop (a restart waits for
health up to `nemesis.HEALTH_TIMEOUT_S`; in cycle order its first round
always runs whole), the waits for the clients by three client timeouts,
healing and final reads by their own waits.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from . import nemesis, netns, report
from .checkers import availability
from .checkers.result import Verdict, worst
from .client import Api
from .cluster import CLUSTERED_NETNS, Cluster
from .history import INFO, INVOKE, Event, as_operations
from .recorder import Process, Recorder
from .schedule import Schedule, heal_all
from .workloads import WORKLOADS, Context, Workload

WORLD = "jepsen"
SHARD_NEEDS_CLUSTER = "the shard nemesis needs clustered regions: --ap-shards N (N > 1) or --ap-replicas R (R > 0)"


@dataclass
class Options:
    workloads: list[str] = field(default_factory=lambda: ["register", "observations", "watch"])
    nemeses: list[str] = field(default_factory=lambda: ["partition", "kill", "pause", "clock"])
    time_limit_s: float = 60.0
    seed: int = 0
    store: Path = Path("store")
    name: str | None = None
    sabotage: list[str] = field(default_factory=list)
    clock_skew: dict[str, int] = field(default_factory=dict)   # region -> ms held for the whole run
    kill_targets: list[str] = field(default_factory=lambda: list(nemesis.TARGETS))
    pause_targets: list[str] = field(default_factory=lambda: list(nemesis.TARGETS))
    regions: int = 3
    net: str = "proxy"                                         # proxy (no privileges) or netns (root)
    etcd_members: int = 3
    cp_timeout_s: float = 3.0
    client_timeout_s: float = 6.0
    think_s: float = 0.05
    quiet_s: float = 5.0
    final_wait_s: float = 15.0
    heal_wait_s: float = 60.0
    gap_s: tuple[float, float] = (1.0, 3.0)
    hold_s: tuple[float, float] = (3.0, 6.0)
    order: str = "random"                                      # faults' families: random or cycle
    check_time_limit_s: float = 60.0
    workload_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    plots: bool = True
    keep_data: bool = False                                    # keep etcd/Redis data dirs (logs are always kept)
    edges: int | None = None                                   # edge nodes; None: 2 with the edge workload, else 0
    # Each region's AP store a Redis Cluster of ap_shards masters with ap_replicas each (1/0: one Redis);
    # ap_ack_replicas: the API nodes' WORLDSTATE_AP_ACK_REPLICAS, None for their automatic choice.
    ap_shards: int = 1
    ap_replicas: int = 0
    ap_ack_replicas: int | None = None


@dataclass
class Outcome:
    verdict: Verdict              # the worst of every checker's
    dir: Path
    results: dict[str, Any]
    summary: str

    @property
    def valid(self) -> bool | None:
        return self.verdict.valid


def test_name(o: Options) -> str:
    if o.name:
        return o.name
    parts = ["+".join(o.workloads), "+".join(o.nemeses) or "none"]
    return "-".join(parts + ([f"sabotage={'+'.join(o.sabotage)}"] if o.sabotage else []))


def edge_count(o: Options) -> int:
    return o.edges if o.edges is not None else (2 if "edge" in o.workloads else 0)


def run(o: Options) -> Outcome:
    if o.net == "netns":  # refuse before anything exists (no netem for the net family, no root, no iptables)
        why = CLUSTERED_NETNS if o.ap_shards > 1 or o.ap_replicas > 0 else netns.refusal(o.nemeses)
        if not why and edge_count(o):
            why = "edge nodes run in proxy mode only (--net proxy): their links to the core are proxied"
        if why:
            raise netns.Unavailable(why)
    if not edge_count(o) and any(n.startswith("edge-") for n in o.nemeses):
        raise ValueError("the edge-cut and edge-kill nemeses need edge nodes: --workload edge, or --edges N")
    if {"shard", "shard-behind", "shard-cut"} & set(o.nemeses) and o.ap_shards <= 1 and o.ap_replicas <= 0:
        raise ValueError(SHARD_NEEDS_CLUSTER)
    out = o.store / test_name(o) / datetime.now().strftime("%Y%m%dT%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    rec = Recorder(out / "history.jsonl")
    timings: dict[str, float] = {}
    cluster = Cluster(out / "cluster", etcd_members=o.etcd_members, regions=o.regions, cp_timeout_s=o.cp_timeout_s,
                      sabotage=tuple(o.sabotage), seed=o.seed, mode=o.net, edges=edge_count(o), world=WORLD,
                      ap_shards=o.ap_shards, ap_replicas=o.ap_replicas, ap_ack_replicas=o.ap_ack_replicas)
    try:
        faults = nemesis.make(o.nemeses, cluster, tuple(o.kill_targets), tuple(o.pause_targets))
    except BaseException:
        cluster.stop()  # in netns mode the namespaces exist already
        raise
    fixed = nemesis.Clock(cluster) if o.clock_skew else None
    finals: dict[str, Any] = {}
    workloads: list[Workload] = []
    schedule = Schedule(faults, rec, o.seed, gap_s=o.gap_s, hold_s=o.hold_s, order=o.order)
    try:
        t = time.monotonic()
        cluster.start()
        timings["cluster_start_s"] = time.monotonic() - t
        t = time.monotonic()
        workloads = asyncio.run(_exercise(o, cluster, rec, schedule, faults, fixed, finals))
        timings["run_s"] = time.monotonic() - t
    finally:
        schedule.stop()
        rec.close()
        t = time.monotonic()
        cluster.stop()
        timings["cluster_stop_s"] = time.monotonic() - t
        if not o.keep_data:  # etcd's WAL alone is ~60 MB a member; the logs are what a reader needs
            for d in (out / "cluster").iterdir():
                if d.is_dir() and d.name != "logs":
                    shutil.rmtree(d, ignore_errors=True)
    (out / "final.json").write_text(json.dumps(finals, indent=1, default=str))
    results = check(rec.events, workloads, finals, timings, etcd_members=o.etcd_members)
    results["test"] = {"name": test_name(o), "options": _jsonable(asdict(o)), "nemesis_log": schedule.log,
                       "start_wall": rec.wall0, "dir": str(out)}
    net = cluster.net.describe()  # netns mode: which namespaces and addresses the hosts had
    if net is not None:
        results["test"]["net"] = net
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    summary = report.summary(results)
    (out / "summary.txt").write_text(summary + "\n")
    if o.plots:
        report.write_all(out, rec.events, results)
    _link_latest(o.store / test_name(o), out)
    return Outcome(Verdict(results["verdict"]), out, results, summary)


async def _exercise(o: Options, cluster: Cluster, rec: Recorder, schedule: Schedule,
                    faults: list[nemesis.Fault], fixed: nemesis.Clock | None, finals: dict[str, Any]) -> list[Workload]:
    api = Api({r: cluster.api_url(r) for r in cluster.regions}, o.client_timeout_s, cluster.auth_headers(),
              {r: cluster.grpc_target(r) for r in cluster.regions})
    ctx = Context(api, rec, cluster.regions, WORLD, asyncio.Event(), o.think_s, o.final_wait_s)
    workloads = [WORKLOADS[name](ctx, **o.workload_options.get(name, {})) for name in o.workloads]
    if "register" in o.workloads:
        for w in workloads:
            if w.name == "register":
                w.check_time_limit_s = o.check_time_limit_s  # type: ignore[attr-defined]
    for w in workloads:
        if w.name == "edge" and cluster.edges is not None:
            w.attach(cluster.edges.describe())  # type: ignore[attr-defined]
    try:
        await _setup(ctx, workloads)
        stride = sum(w.clients for w in workloads)
        tasks: dict[asyncio.Task[None], Workload] = {}
        looping: set[int] = set()  # slots of clients that loop over operations (watchers hold one)
        slot = 0
        for w in workloads:
            for _ in range(w.clients):
                rng = random.Random(o.seed * 1_000_003 + slot)
                tasks[asyncio.create_task(w.run_client(Process(slot, stride), rng))] = w
                if not w.until_final:
                    looping.add(slot)
                slot += 1
        if fixed is not None:
            schedule.apply("start", fixed, lambda: fixed.fix(o.clock_skew))
        # The faults fall inside the load at both ends, whatever the machine's speed: they start
        # once every client has completed an operation, and the clients stop only once the
        # fault in force at the time limit has ended (a killed process is healthy again) and
        # every client has completed one more operation after it.
        moved = {"before_faults": await _every_client_completes(rec, looping, stride, o.client_timeout_s * 3)}
        schedule.start(o.time_limit_s)
        await asyncio.sleep(o.time_limit_s)
        await asyncio.to_thread(schedule.finish)
        moved["after_faults"] = await _every_client_completes(rec, looping, stride, o.client_timeout_s * 3)
        finals["clients_completed"] = moved
        ctx.stop.set()
        if fixed is not None:
            schedule.apply("stop", fixed, fixed.stop)
        ending = [t for t, w in tasks.items() if not w.until_final]
        await asyncio.wait(ending, timeout=o.client_timeout_s * 3) if ending else None
        await asyncio.to_thread(heal_all, faults, cluster, rec)
        healthy = await asyncio.to_thread(cluster.wait_healthy, o.heal_wait_s)
        rec.nemesis("healthy", {"healthy": healthy})
        await asyncio.sleep(o.quiet_s)
        for w in workloads:
            await w.final()
            finals[w.name] = w.final_state()
        await asyncio.wait(list(tasks), timeout=o.client_timeout_s * 3)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        finals["healthy_after_heal"] = healthy
    finally:
        await api.close()
    return workloads


async def _every_client_completes(rec: Recorder, slots: set[int], stride: int, timeout_s: float) -> bool:
    """Wait until each client slot in `slots` has invoked an operation after this call and
    seen it complete (ok, fail or info), or until `timeout_s`; True when every one did.

    A slot's process id is the slot plus a multiple of `stride` (a new id after each info).
    """
    seen = len(rec.events)
    invoked: set[int] = set()
    done: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while True:
        new = rec.events[seen:]
        seen += len(new)
        for e in new:
            if not isinstance(e.process, int) or e.process % stride not in slots:
                continue
            if e.type == INVOKE:
                invoked.add(e.process)
            elif e.process in invoked:
                done.add(e.process % stride)
        if done >= slots:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)


async def _setup(ctx: Context, workloads: list[Workload]) -> None:
    """Create the world on every node (bounded retries): its AP tier accepts observations only then."""
    for region in ctx.regions:
        for _ in range(50):
            a = await ctx.api.call(region, "PUT", f"/v1/worlds/{ctx.world}", write=True, body={"test": "jepsen"})
            if a.type == "ok":
                break
            await asyncio.sleep(0.2)
        else:
            raise RuntimeError(f"could not create world {ctx.world} through {region}: {a.error}")
    for w in workloads:
        await w.setup()


def nemesis_windows(events: list[Event]) -> list[tuple[float, float, str]]:
    """(start, end, fault) of each fault: from its start invocation to its stop completion."""
    out: list[tuple[float, float, str]] = []
    open_: dict[str, float] = {}
    for e in events:
        if e.process != "nemesis" or e.f not in ("start", "stop") or not isinstance(e.value, dict):
            continue
        fault = e.value.get("fault", "?")
        if e.f == "start" and e.type == INVOKE:
            open_[fault] = e.time
        elif e.f == "stop" and e.type == INFO and fault in open_:
            out.append((open_.pop(fault), e.time, fault))
    end = max((e.time for e in events), default=0)
    out += [(s, end, f) for f, s in open_.items()]
    return sorted(out)


def check(events: list[Event], workloads: list[Workload], finals: dict[str, Any],
          timings: dict[str, float], etcd_members: int = 3) -> dict[str, Any]:
    """Every checker's result, and the run's verdict: the worst of theirs (`verdict`, and `valid` as
    True / False / None for unknown, which results.json has always had)."""
    results: dict[str, Any] = {"checkers": {}, "timings": timings}
    verdicts: list[Verdict] = []
    for w in workloads:
        t = time.monotonic()
        checked = w.check(events, finals.get(w.name, {}))
        timings[f"check_{w.name}_s"] = round(time.monotonic() - t, 3)
        for name, res in checked.items():
            results["checkers"][name] = dict(report.result_json(res), workload=w.name)
            verdicts.append(res.verdict)
    windows = nemesis_windows(events)
    ops = [op for op in as_operations(events) if op.f != "watch"]
    avail = availability.check(ops, [(s, e) for s, e, _ in windows], faults=availability.fault_windows(events),
                               etcd_members=etcd_members)
    results["checkers"]["availability"] = report.result_json(avail)
    # Judged on answers of 500 (no fault excuses an unclassified failure) and on serializable
    # reads refused while a pause or kill left a live etcd member and the client's own node.
    verdicts.append(avail.verdict)
    results["nemesis_windows"] = windows
    results["ops"] = _op_counts(events)
    # Reported, not judged: the final reads' checkers judge what a slow recovery left behind.
    results["healthy_after_heal"] = finals.get("healthy_after_heal")
    # Whether every client completed an operation before the first fault and after the last one.
    results["clients_completed"] = finals.get("clients_completed")
    verdict = worst(verdicts)
    results["verdict"], results["valid"] = verdict.value, verdict.valid
    return results


def _op_counts(events: list[Event]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for e in events:
        if e.process == "nemesis" or e.type == INVOKE:
            continue
        c = counts.setdefault(e.f, {"ok": 0, "fail": 0, "info": 0})
        c[e.type] += 1
    return counts


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=str))


def _link_latest(parent: Path, out: Path) -> None:
    latest = parent / "latest"
    try:
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(out.name)
    except OSError:
        pass
