"""Faults: partitions, crashes, pauses, clock skew and bad links, on a seeded schedule.

Each family is a `Fault` (the protocol below, as Jepsen's nemesis and
db/Process, db/Pause): it starts one fault (chosen with the schedule's random
generator), stops it, and heals everything it may have left behind. The
schedule (schedule.py) draws them one at a time and records each start
and stop in the history; `heal_all` there undoes every fault at the end.

Families (Jepsen's etcd test names where they exist):

- ``partition``: ``halves`` (a random minority against the rest), ``one``
  (one random host isolated), ``leader`` (the etcd leader's host isolated),
  ``majorities-ring`` (every host sees a majority, no two the same one:
  one-way cuts), ``bridge`` (two sides that only one host connects).
- ``kill``: kill -9 an etcd member (sometimes the leader, sometimes a
  majority), a region's Redis or a region's API node, or one process named
  in the targets (``api-r1``; in a clustered region ``redis`` is any one of its
  nodes, ``redis-r1-0``); restarted when the fault stops, which ends
  once the process is healthy again.
- ``pause``: SIGSTOP the same kinds of targets; SIGCONT at the end, again
  until healthy.
- ``clock``: an offset on API nodes' HLC wall clocks: ``bump`` (a fixed
  skew, either way, up to several seconds) or ``strobe`` (flipping between
  skewed and true every few hundred milliseconds).
- ``net``: cross-host links slow (``delay`` with jitter) or lossy (``drop``),
  or one host's links reset.
- ``edge-cut``: the link between an edge node and its region's API node
  blackholed both ways (one edge, or sometimes every edge); ``edge-kill``:
  kill -9 an edge node, restarted on the same data directory at the stop
  (jepsen_like/edges.py starts them).
- ``shard``: one node of a clustered region's Redis Cluster killed, paused, or
  (a replica) made master by a planned failover; ``shard-behind``: a master killed
  while its replica is held behind; ``shard-cut``: one master cut off from every API node
  (jepsen_like/shards.py).
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from .cluster import Cluster
from .hosts import host_of
from .proxy import BLACKHOLE, DELAY, DROP, PASS_RULE, RESET, Rule
from .shards import BEHIND, CUT, ShardFault

# What kill and pause act on unless told otherwise: every kind of process.
TARGETS = ("etcd", "redis", "api")


@runtime_checkable
class Fault(Protocol):
    """One fault family, as the schedule drives it.

    `start` applies one fault drawn with `rng` and describes it (the
    description goes into the history); `stop` undoes that fault; `heal`
    undoes whatever this family may have left behind, whatever state the
    schedule was in (it runs after the schedule's thread has ended). Neither
    `stop` nor `heal` may assume `start` succeeded.
    """

    name: str

    def start(self, rng: random.Random) -> dict[str, Any]: ...

    def stop(self) -> dict[str, Any]: ...

    def heal(self) -> None: ...


# -- processes, clocks: each restored in one place -------------------------------------

def restore_processes(cluster: Cluster) -> None:
    """Resume every paused process and start every dead one.

    The one place processes come back after a heal: Kill and Pause heal
    through it, and so does `heal_all`, for a fault whose stop failed half-way.
    """
    for process in cluster.processes():
        if process.paused:
            process.resume()
        if not process.running:
            process.start()


def set_clock(cluster: Cluster, region: str, offset_ms: int) -> bool:
    req = urllib.request.Request(f"{cluster.api_url(region)}/_faults/clock", method="PUT",
                                 data=json.dumps({"offset_ms": offset_ms}).encode(),
                                 headers={"Content-Type": "application/json", **cluster.auth_headers()})
    try:
        with urllib.request.urlopen(req, timeout=3) as r:
            return r.status == 200
    except OSError:
        return False  # a paused or dead node: its offset is reset on restart anyway


def reset_clocks(cluster: Cluster) -> None:
    """Every API node's clock offset back to 0 (the one place clocks are restored)."""
    for region in cluster.regions:
        set_clock(cluster, region, 0)


# -- the families --------------------------------------------------------------------------

class LinkFault:
    """A fault on links: `start` gives `pairs` (src, dst) a rule, `stop` lets them pass again."""

    name: str

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.pairs: list[tuple[str, str]] = []

    def stop(self) -> dict[str, Any]:
        self.cluster.net.set(self.pairs, PASS_RULE)
        self.pairs = []
        return {}

    def heal(self) -> None:
        self.stop()


class Partition(LinkFault):
    name = "partition"
    kinds = ("halves", "one", "leader", "majorities-ring", "bridge")

    def grudge(self, kind: str, rng: random.Random) -> dict[str, set[str]]:
        """host -> the hosts it hears nothing from."""
        hosts = list(self.cluster.hosts)
        rng.shuffle(hosts)
        if kind == "leader":
            kind, first = "one", self.cluster.leader_host() or hosts[0]
            hosts.remove(first)
            hosts.insert(0, first)
        if kind in ("halves", "one"):
            cut = 1 if kind == "one" else len(hosts) // 2
            a, b = set(hosts[:cut]), set(hosts[cut:])
            return {h: (b if h in a else a) for h in hosts}
        if kind == "bridge":
            # hosts[0] bridges; the rest split in two halves that hear only the bridge.
            rest = hosts[1:]
            a, b = set(rest[: len(rest) // 2]), set(rest[len(rest) // 2:])
            return {hosts[0]: set(), **{h: (b if h in a else a) for h in rest}}
        if kind == "majorities-ring":
            n = len(hosts)
            sees = n // 2  # besides itself: a majority of n
            return {h: {hosts[(i + k) % n] for k in range(sees + 1, n)} for i, h in enumerate(hosts)}
        raise ValueError(f"unknown partition {kind!r}")

    def start(self, rng: random.Random) -> dict[str, Any]:
        kind = rng.choice(self.kinds)
        grudge = self.grudge(kind, rng)
        self.pairs = [(p, q) for dst, srcs in grudge.items() for src in srcs
                      for p in self.cluster.on_host(src) for q in self.cluster.on_host(dst)]
        self.cluster.net.set(self.pairs, Rule(BLACKHOLE))
        return {"kind": kind, "drops": {h: sorted(s) for h, s in sorted(grudge.items()) if s}}


def choose_victims(cluster: Cluster, targets: tuple[str, ...], rng: random.Random) -> list[str]:
    """Processes for one kill or pause, drawn from `targets`: a kind (an etcd member,
    sometimes the leader, sometimes a majority; a region's Redis or API node) or one
    process by name (``api-r1``), which is then the victim every time."""
    kind = rng.choice(targets)
    if kind not in TARGETS:
        cluster.process(kind)  # KeyError for a name no process has
        return [kind]
    if kind == "etcd":
        members = cluster.etcd_members()
        r = rng.random()
        if r < 0.3:
            leader = cluster.etcd_leader()
            return [leader] if leader else [rng.choice(members)]
        if r < 0.45:
            return rng.sample(members, len(members) // 2 + 1)  # quorum lost for a while
        return [rng.choice(members)]
    region = rng.choice(cluster.regions)
    if kind == "api":
        return [f"api-{region}"]
    names = cluster.redis_names(region)  # a clustered region's: any of its nodes, whatever its role
    return [names[0] if len(names) == 1 else rng.choice(names)]  # one Redis: no draw, same seeds as before


# How long a fault's stop waits for its processes to be healthy again. A killed API
# node was healthy 1-4 s after its restart on the 2-core machine (quiet, and with four
# busy loops), an etcd member or a Redis sooner; 60 s leaves room for one many times busier.
HEALTH_TIMEOUT_S = 60.0


class ProcessFault:
    """A fault done to processes by one verb and undone by another, as Jepsen's db/Process
    (kill!, start!) and db/Pause (pause!, resume!) are two protocols of one shape.

    `stop` undoes the verb, then waits (`health_timeout_s` for all together) until every
    victim passes its health check: the fault's window ends when the process serves
    again. A victim that never does makes `stop` raise, which the schedule logs.
    """

    name: str
    act: str    # ManagedProcess method that starts the fault
    undo: str   # and the one that ends it

    def __init__(self, cluster: Cluster, targets: tuple[str, ...] = TARGETS,
                 health_timeout_s: float = HEALTH_TIMEOUT_S) -> None:
        self.cluster = cluster
        self.targets = targets
        self.health_timeout_s = health_timeout_s
        self.victims: list[str] = []

    def start(self, rng: random.Random) -> dict[str, Any]:
        self.victims = choose_victims(self.cluster, self.targets, rng)
        for name in self.victims:
            getattr(self.cluster.process(name), self.act)()
        return {"targets": self.victims}

    def stop(self) -> dict[str, Any]:
        done, self.victims = self.victims, []
        processes = [self.cluster.process(name) for name in done]
        for p in processes:  # every victim first: restarted etcd members need each other for quorum
            getattr(p, self.undo)()
        deadline = time.monotonic() + self.health_timeout_s
        for p in processes:
            p.wait_healthy(max(1.0, deadline - time.monotonic()))
        return {"targets": done}

    def heal(self) -> None:
        try:
            self.stop()
        finally:
            restore_processes(self.cluster)


class Kill(ProcessFault):
    """kill -9, restarted when the fault stops (Jepsen's db/Process: kill!, start!)."""

    name, act, undo = "kill", "kill", "start"


class Pause(ProcessFault):
    """SIGSTOP, SIGCONT when the fault stops (Jepsen's db/Pause: pause!, resume!)."""

    name, act, undo = "pause", "pause", "resume"


class Clock:
    name = "clock"

    def __init__(self, cluster: Cluster, max_skew_ms: int = 8000) -> None:
        self.cluster = cluster
        self.max_skew_ms = max_skew_ms
        self.skewed: list[str] = []
        self._strobe: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self, rng: random.Random) -> dict[str, Any]:
        kind = rng.choice(("bump", "bump", "strobe"))
        regions = self.cluster.regions
        self.skewed = rng.sample(regions, rng.randint(1, len(regions)))
        offsets = {r: rng.choice((-1, 1)) * rng.randint(100, self.max_skew_ms) for r in self.skewed}
        if kind == "bump":
            for r, ms in offsets.items():
                set_clock(self.cluster, r, ms)
            return {"kind": kind, "offsets_ms": offsets}
        period = rng.uniform(0.05, 0.5)
        self._stop.clear()
        self._strobe = threading.Thread(target=self._flip, args=(offsets, period), daemon=True, name="strobe")
        self._strobe.start()
        return {"kind": kind, "offsets_ms": offsets, "period_s": round(period, 3)}

    def _flip(self, offsets: dict[str, int], period: float) -> None:
        on = False
        while not self._stop.wait(period):
            on = not on
            for r, ms in offsets.items():
                set_clock(self.cluster, r, ms if on else 0)

    def fix(self, offsets: dict[str, int]) -> dict[str, Any]:
        """A skew held for the whole run (not drawn by the schedule)."""
        self.skewed = list(offsets)
        for r, ms in offsets.items():
            set_clock(self.cluster, r, ms)
        return {"kind": "fixed", "offsets_ms": offsets}

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._strobe is not None:
            self._strobe.join(5)
            self._strobe = None
        for r in self.skewed:
            set_clock(self.cluster, r, 0)
        self.skewed = []
        return {}

    def heal(self) -> None:
        self.stop()
        reset_clocks(self.cluster)


class NetFault(LinkFault):
    name = "net"

    def start(self, rng: random.Random) -> dict[str, Any]:
        kind = rng.choice(("delay", "drop", "reset"))
        procs = [p.name for p in self.cluster.processes()]
        if kind == "reset":
            host = rng.choice(self.cluster.hosts)
            self.pairs = [(p, q) for p in self.cluster.on_host(host) for q in procs if host_of(q) != host]
            self.pairs += [(q, p) for p, q in self.pairs]
            rule = Rule(RESET)
            desc: dict[str, Any] = {"kind": kind, "host": host}
        else:
            self.pairs = [(p, q) for p in procs for q in procs if host_of(p) != host_of(q)]
            if kind == "delay":
                rule = Rule(DELAY, delay_ms=rng.choice((20, 50, 100)), jitter_ms=rng.choice((10, 25, 50)))
                desc = {"kind": kind, "delay_ms": rule.delay_ms, "jitter_ms": rule.jitter_ms}
            else:
                rule = Rule(DROP, drop=rng.choice((0.05, 0.1, 0.2)))
                desc = {"kind": kind, "drop": rule.drop}
        self.cluster.net.set(self.pairs, rule)
        return desc


class EdgeCut(LinkFault):
    """One edge (a third of the time every edge) cut off from the core: its link held both ways."""

    name = "edge-cut"

    def start(self, rng: random.Random) -> dict[str, Any]:
        edges = self.cluster.edges.specs if self.cluster.edges else []
        if not edges:
            raise RuntimeError("edge-cut: this run has no edge nodes")
        cut = list(edges) if len(edges) > 1 and rng.random() < 1 / 3 else [rng.choice(edges)]
        self.pairs = [p for e in cut for p in ((e.name, f"api-{e.region}"), (f"api-{e.region}", e.name))]
        self.cluster.net.set(self.pairs, Rule(BLACKHOLE))
        return {"edges": [e.name for e in cut]}


class EdgeKill(Kill):
    """kill -9 one edge node; started again on its data directory when the fault stops."""

    name = "edge-kill"

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(cluster, ())

    def start(self, rng: random.Random) -> dict[str, Any]:
        self.targets = tuple(self.cluster.edge_names())  # known once the cluster is planned
        if not self.targets:
            raise RuntimeError("edge-kill: this run has no edge nodes")
        return super().start(rng)  # every target is an edge's process name


# family name -> how to build it from the cluster and the kill and pause targets
BUILDERS: dict[str, Callable[[Cluster, tuple[str, ...], tuple[str, ...]], Fault]] = {
    "partition": lambda cluster, kill, pause: Partition(cluster),
    "kill": lambda cluster, kill, pause: Kill(cluster, kill),
    "pause": lambda cluster, kill, pause: Pause(cluster, pause),
    "clock": lambda cluster, kill, pause: Clock(cluster),
    "net": lambda cluster, kill, pause: NetFault(cluster),
    "edge-cut": lambda cluster, kill, pause: EdgeCut(cluster),
    "edge-kill": lambda cluster, kill, pause: EdgeKill(cluster),
    "shard": lambda cluster, kill, pause: ShardFault(cluster, HEALTH_TIMEOUT_S),
    "shard-behind": lambda cluster, kill, pause: ShardFault(cluster, HEALTH_TIMEOUT_S, "shard-behind", BEHIND),
    "shard-cut": lambda cluster, kill, pause: ShardFault(cluster, HEALTH_TIMEOUT_S, "shard-cut", CUT),
}
FAMILIES = tuple(BUILDERS)


def make(families: list[str], cluster: Cluster, kill_targets: tuple[str, ...] = TARGETS,
         pause_targets: tuple[str, ...] = TARGETS) -> list[Fault]:
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown nemesis {sorted(unknown)}; known: {list(FAMILIES)}")
    return [BUILDERS[f](cluster, kill_targets, pause_targets) for f in families]
