"""Faults: partitions, crashes, pauses, clock skew and bad links, on a seeded schedule.

Each family knows how to start one fault (chosen with the schedule's random
generator), stop it, and heal everything it may have left behind. The
schedule runs in its own thread: a quiet gap, one fault for a while, heal
it, and again, until the time limit; every start and stop is recorded in
the history as the ``nemesis`` process (invoke, then info once done), so
reports can shade the fault windows. At the end `heal_all` undoes every
fault, whatever state the schedule was in.

Families (Jepsen's etcd test names where they exist):

- ``partition``: ``halves`` (a random minority against the rest), ``one``
  (one random host isolated), ``leader`` (the etcd leader's host isolated),
  ``majorities-ring`` (every host sees a majority, no two the same one:
  one-way cuts), ``bridge`` (two sides that only one host connects).
- ``kill``: kill -9 an etcd member (sometimes the leader, sometimes a
  majority), a region's Redis or a region's API node, restarted when the
  fault stops.
- ``pause``: SIGSTOP the same kinds of targets, or an API node; SIGCONT at the end.
- ``clock``: an offset on API nodes' HLC wall clocks: ``bump`` (a fixed
  skew, either way, up to several seconds) or ``strobe`` (flipping between
  skewed and true every few hundred milliseconds).
- ``net``: cross-host links slow (``delay`` with jitter) or lossy (``drop``),
  or one host's links reset.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request
from typing import Any

from .cluster import Cluster, host_of
from .proxy import BLACKHOLE, DELAY, DROP, PASS_RULE, RESET, Rule
from .recorder import Recorder

FAMILIES = ("partition", "kill", "pause", "clock", "net")
# What kill and pause act on unless told otherwise: every kind of process.
TARGETS = ("etcd", "redis", "api")


def set_clock(cluster: Cluster, region: str, offset_ms: int) -> bool:
    req = urllib.request.Request(f"{cluster.api_url(region)}/_faults/clock", method="PUT",
                                 data=json.dumps({"offset_ms": offset_ms}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=3) as r:
            return r.status == 200
    except OSError:
        return False  # a paused or dead node: its offset is reset on restart anyway


class Partition:
    name = "partition"
    kinds = ("halves", "one", "leader", "majorities-ring", "bridge")

    def __init__(self, cluster: Cluster) -> None:
        self.c = cluster
        self.pairs: list[tuple[str, str]] = []

    def grudge(self, kind: str, rng: random.Random) -> dict[str, set[str]]:
        """host -> the hosts it hears nothing from."""
        hosts = list(self.c.hosts)
        rng.shuffle(hosts)
        if kind == "leader":
            kind, first = "one", self.c.leader_host() or hosts[0]
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
                      for p in self.c.on_host(src) for q in self.c.on_host(dst)]
        self.c.net.set(self.pairs, Rule(BLACKHOLE))
        return {"kind": kind, "drops": {h: sorted(s) for h, s in sorted(grudge.items()) if s}}

    def stop(self) -> dict[str, Any]:
        self.c.net.set(self.pairs, PASS_RULE)
        self.pairs = []
        return {}

    heal = stop


class Kill:
    """kill -9, restarted at stop. `verb` pause makes it SIGSTOP/SIGCONT instead."""

    name = "kill"
    verb = "kill"

    def __init__(self, cluster: Cluster, targets: tuple[str, ...] = TARGETS) -> None:
        self.c = cluster
        self.targets = targets
        self.victims: list[str] = []

    def choose(self, rng: random.Random) -> list[str]:
        kind = rng.choice(self.targets)
        if kind == "etcd":
            members = [m.name for m in self.c.d.etcd]
            r = rng.random()
            if r < 0.3:
                leader = self.c.d.etcd_leader()
                return [leader.name] if leader else [rng.choice(members)]
            if r < 0.45:
                return rng.sample(members, len(members) // 2 + 1)  # quorum lost for a while
            return [rng.choice(members)]
        prefix = {"redis": "redis-", "api": "api-"}[kind]
        return [prefix + rng.choice(self.c.regions)]

    def start(self, rng: random.Random) -> dict[str, Any]:
        self.victims = self.choose(rng)
        for name in self.victims:
            p = self.c.process(name)
            p.kill() if self.verb == "kill" else p.pause()
        return {"targets": self.victims}

    def stop(self) -> dict[str, Any]:
        for name in self.victims:
            p = self.c.process(name)
            p.start() if self.verb == "kill" else p.resume()
        done, self.victims = self.victims, []
        return {"targets": done}

    def heal(self) -> None:
        self.stop()
        for p in self.c.processes():
            if p.paused:
                p.resume()
            if not p.running:
                p.start()


class Pause(Kill):
    name = "pause"
    verb = "pause"


class Clock:
    name = "clock"

    def __init__(self, cluster: Cluster, max_skew_ms: int = 8000) -> None:
        self.c = cluster
        self.max_skew_ms = max_skew_ms
        self.skewed: list[str] = []
        self._strobe: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self, rng: random.Random) -> dict[str, Any]:
        kind = rng.choice(("bump", "bump", "strobe"))
        self.skewed = rng.sample(self.c.regions, rng.randint(1, len(self.c.regions)))
        offsets = {r: rng.choice((-1, 1)) * rng.randint(100, self.max_skew_ms) for r in self.skewed}
        if kind == "bump":
            for r, ms in offsets.items():
                set_clock(self.c, r, ms)
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
                set_clock(self.c, r, ms if on else 0)

    def fix(self, offsets: dict[str, int]) -> dict[str, Any]:
        """A skew held for the whole run (not drawn by the schedule)."""
        self.skewed = list(offsets)
        for r, ms in offsets.items():
            set_clock(self.c, r, ms)
        return {"kind": "fixed", "offsets_ms": offsets}

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._strobe is not None:
            self._strobe.join(5)
            self._strobe = None
        for r in self.skewed:
            set_clock(self.c, r, 0)
        self.skewed = []
        return {}

    def heal(self) -> None:
        self.stop()
        for r in self.c.regions:
            set_clock(self.c, r, 0)


class NetFault:
    name = "net"

    def __init__(self, cluster: Cluster) -> None:
        self.c = cluster
        self.pairs: list[tuple[str, str]] = []

    def start(self, rng: random.Random) -> dict[str, Any]:
        kind = rng.choice(("delay", "drop", "reset"))
        procs = [p.name for p in self.c.processes()]
        if kind == "reset":
            host = rng.choice(self.c.hosts)
            self.pairs = [(p, q) for p in self.c.on_host(host) for q in procs if host_of(q) != host]
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
        self.c.net.set(self.pairs, rule)
        return desc

    def stop(self) -> dict[str, Any]:
        self.c.net.set(self.pairs, PASS_RULE)
        self.pairs = []
        return {}

    heal = stop


def make(families: list[str], cluster: Cluster, kill_targets: tuple[str, ...] = TARGETS,
         pause_targets: tuple[str, ...] = TARGETS) -> list[Any]:
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown nemesis {sorted(unknown)}; known: {list(FAMILIES)}")
    build = {"partition": lambda: Partition(cluster), "kill": lambda: Kill(cluster, kill_targets),
             "pause": lambda: Pause(cluster, pause_targets), "clock": lambda: Clock(cluster),
             "net": lambda: NetFault(cluster)}
    return [build[f]() for f in families]


class Schedule:
    """Faults one at a time, in a thread, until `stop()` or the deadline.

    `order` "random" draws each fault's family; "cycle" takes the families in
    turn (each fault's details are still drawn), so a short run covers all.
    """

    def __init__(self, faults: list[Any], rec: Recorder, seed: int, *, gap_s: tuple[float, float] = (1.0, 3.0),
                 hold_s: tuple[float, float] = (3.0, 6.0), order: str = "random") -> None:
        if order not in ("random", "cycle"):
            raise ValueError("order is random or cycle")
        self.order = order
        self.faults = faults
        self.rec = rec
        self.rng = random.Random(seed)
        self.gap_s, self.hold_s = gap_s, hold_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.log: list[dict[str, Any]] = []

    def start(self, duration_s: float) -> None:
        self._thread = threading.Thread(target=self._run, args=(time.monotonic() + duration_s,),
                                        name="nemesis", daemon=True)
        self._thread.start()

    def _run(self, deadline: float) -> None:
        n = 0
        while self.faults and not self._stop.is_set():
            if self._stop.wait(self.rng.uniform(*self.gap_s)):
                return
            hold = self.rng.uniform(*self.hold_s)
            if time.monotonic() + hold > deadline:
                return
            fault = self.faults[n % len(self.faults)] if self.order == "cycle" else self.rng.choice(self.faults)
            n += 1
            self.apply("start", fault, lambda: fault.start(self.rng))
            self._stop.wait(hold)
            self.apply("stop", fault, fault.stop)

    def apply(self, f: str, fault: Any, action: Any) -> None:
        self.rec.nemesis(f, {"fault": fault.name}, type="invoke")
        try:
            desc = {"fault": fault.name, **action()}
        except Exception as e:  # a fault that cannot be applied is logged, never fatal
            desc = {"fault": fault.name, "error": f"{type(e).__name__}: {e}"}
        self.rec.nemesis(f, desc)
        self.log.append({"f": f, **desc})

    def stop(self) -> None:
        """Stop drawing faults; the one in force is stopped by its own thread before it exits."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)


def heal_all(faults: list[Any], cluster: Cluster, rec: Recorder) -> None:
    """Undo every fault: links, processes, clocks; recorded as one nemesis operation."""
    rec.nemesis("heal", None, type="invoke")
    for fault in faults:
        try:
            fault.heal()
        except Exception:  # keep healing the rest
            pass
    cluster.net.heal()
    for p in cluster.processes():
        if p.paused:
            p.resume()
        if not p.running:
            p.start()
    for r in cluster.regions:
        set_clock(cluster, r, 0)
    rec.nemesis("heal", {"net": cluster.net.active()})
