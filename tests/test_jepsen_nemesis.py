"""Fault families behind one protocol, their schedule, and healing that leaves nothing behind (no cluster needed)."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import pytest

from jepsen_like import nemesis
from jepsen_like.hosts import host_of
from deploy.processes import ProcessFailed
from jepsen_like.nemesis import FAMILIES, Fault, Kill, Pause, ProcessFault, make
from jepsen_like.proxy import PASS_RULE, Rule
from jepsen_like.recorder import Recorder
from jepsen_like.schedule import Schedule, heal_all


class _Process:
    def __init__(self, name: str, journal: list[tuple[str, str]] | None = None) -> None:
        self.name, self.running, self.paused = name, True, False
        self.journal = journal if journal is not None else []  # (verb, name), in order, shared by a cluster
        self.boots = True  # False: never passes its health check

    def kill(self) -> None:
        self.running = False

    def start(self) -> None:
        self.running = True
        self.journal.append(("start", self.name))

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self.journal.append(("resume", self.name))

    def wait_healthy(self, timeout: float = 30.0) -> None:
        self.journal.append(("wait_healthy", self.name))
        assert 0 < timeout <= nemesis.HEALTH_TIMEOUT_S, timeout
        if not (self.running and not self.paused and self.boots):
            raise ProcessFailed(f"{self.name} not healthy after {timeout}s")


class _Links:
    def __init__(self) -> None:
        self.rules: dict[tuple[str, str], Rule] = {}

    def set(self, pairs: Iterable[tuple[str, str]], rule: Rule) -> None:
        for pair in pairs:
            if rule == PASS_RULE:
                self.rules.pop(pair, None)
            else:
                self.rules[pair] = rule

    def heal(self) -> None:
        self.rules.clear()

    def active(self) -> dict[str, str]:
        return {f"{s}->{d}": r.mode for (s, d), r in self.rules.items()}


class _Cluster:
    """What the nemesis uses of a Cluster, in memory."""

    def __init__(self) -> None:
        self.hosts = ["n1", "n2", "n3"]
        self.regions = ["r1", "r2", "r3"]
        names = [f"etcd{i}" for i in (1, 2, 3)] + [f"{k}-r{i}" for k in ("redis", "api") for i in (1, 2, 3)]
        self.journal: list[tuple[str, str]] = []
        self._processes = {n: _Process(n, self.journal) for n in names}
        self.net = _Links()

    def processes(self) -> list[_Process]:
        return list(self._processes.values())

    def process(self, name: str) -> _Process:
        return self._processes[name]

    def on_host(self, host: str) -> list[str]:
        return [n for n in self._processes if host_of(n) == host]

    def redis_names(self, region: str) -> list[str]:
        return [f"redis-{region}"]  # one Redis a region (a clustered one names its nodes)

    def etcd_members(self) -> list[str]:
        return ["etcd1", "etcd2", "etcd3"]

    def etcd_leader(self) -> str | None:
        return "etcd2"

    def leader_host(self) -> str | None:
        return "n2"

    def api_url(self, region: str) -> str:
        return "http://127.0.0.1:9"  # never called: set_clock is replaced below


@pytest.fixture
def clocks(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    offsets: dict[str, int] = {}

    def set_clock(cluster: Any, region: str, offset_ms: int) -> bool:
        offsets[region] = offset_ms
        return True

    monkeypatch.setattr(nemesis, "set_clock", set_clock)
    return offsets


def test_every_family_is_a_fault() -> None:
    faults = make(list(FAMILIES), _Cluster())  # type: ignore[arg-type]
    assert [f.name for f in faults] == list(FAMILIES)
    assert all(isinstance(f, Fault) for f in faults)
    assert not issubclass(Pause, Kill) and not issubclass(Kill, Pause)
    assert issubclass(Kill, ProcessFault) and issubclass(Pause, ProcessFault)  # one body, two verbs


def test_kill_and_pause_undo_what_they_did() -> None:
    c = _Cluster()
    for fault, down in ((Kill(c, ("redis",)), lambda p: not p.running),  # type: ignore[arg-type]
                        (Pause(c, ("etcd",)), lambda p: p.paused)):  # type: ignore[arg-type]
        desc = fault.start(random.Random(1))
        assert desc["targets"] and all(down(c.process(n)) for n in desc["targets"])
        assert fault.stop() == desc
        assert all(p.running and not p.paused for p in c.processes())


@pytest.mark.parametrize("fault", [Kill, Pause])
def test_a_process_fault_ends_once_every_victim_is_healthy(fault: type[ProcessFault]) -> None:
    c = _Cluster()
    f = fault(c, ("etcd",))  # type: ignore[arg-type]
    rng = random.Random(0)
    while len(f.start(rng)["targets"]) < 2:  # a majority of etcd members: they need each other
        f.stop()
    c.journal.clear()
    victims = f.victims
    f.stop()
    undo = "start" if fault is Kill else "resume"
    assert c.journal == [(undo, n) for n in victims] + [("wait_healthy", n) for n in victims]


def test_a_process_that_never_gets_healthy_fails_the_stop_and_is_healed() -> None:
    c = _Cluster()
    kill = Kill(c, ("api-r2",))  # type: ignore[arg-type]
    kill.start(random.Random(0))
    c.process("api-r2").boots = False
    with pytest.raises(ProcessFailed):
        kill.stop()  # the schedule logs this as the stop's error
    kill.start(random.Random(0))
    with pytest.raises(ProcessFailed):
        kill.heal()
    assert c.process("api-r2").running  # restarted all the same


def test_a_target_may_name_one_process() -> None:
    c = _Cluster()
    for seed in range(20):
        assert Kill(c, ("api-r1",)).start(random.Random(seed)) == {"targets": ["api-r1"]}  # type: ignore[arg-type]
        c.process("api-r1").start()
    with pytest.raises(KeyError):
        Pause(c, ("api-r9",)).start(random.Random(0))  # type: ignore[arg-type]


def test_redis_targets_any_node_of_a_clustered_region_and_partitions_cut_it_with_its_host() -> None:
    c = _Cluster()
    shards = {f"redis-r{i}-{k}": _Process(f"redis-r{i}-{k}", c.journal) for i in (1, 2, 3) for k in range(4)}
    c._processes = {n: p for n, p in c._processes.items() if not n.startswith("redis-")} | shards
    c.redis_names = lambda region: [n for n in shards if n.startswith(f"redis-{region}-")]  # type: ignore[method-assign]
    hit = set()
    for seed in range(40):
        [victim] = Kill(c, ("redis",)).start(random.Random(seed))["targets"]  # type: ignore[arg-type]
        hit.add(victim)
        c.process(victim).start()
    assert hit <= set(shards) and len(hit) > 4  # several nodes, across regions
    assert set(c.on_host("n2")) == {"etcd2", "api-r2", *(f"redis-r2-{k}" for k in range(4))}


def test_the_first_round_of_a_cycle_runs_whole_past_the_deadline() -> None:
    c = _Cluster()
    faults = make(["kill", "pause"], c, kill_targets=("api-r1",), pause_targets=("redis-r2",))  # type: ignore[arg-type]
    schedule = Schedule(faults, Recorder(None), seed=0, gap_s=(0.0, 0.01), hold_s=(0.0, 0.01), order="cycle")
    schedule.start(0.0)  # the deadline has passed before the first fault
    schedule.finish()
    assert [(e["f"], e["fault"], e.get("targets")) for e in schedule.log[:4]] == [
        ("start", "kill", ["api-r1"]), ("stop", "kill", ["api-r1"]),
        ("start", "pause", ["redis-r2"]), ("stop", "pause", ["redis-r2"])]
    assert not [e for e in schedule.log if "error" in e]
    random_order = Schedule(faults, Recorder(None), seed=0, gap_s=(0.0, 0.01), hold_s=(0.5, 1.0))
    random_order.start(0.0)
    random_order.finish()
    assert random_order.log == []  # random order promises no round: nothing fits in no time


def test_heal_all_restores_processes_links_and_clocks(clocks: dict[str, int]) -> None:
    c = _Cluster()
    faults = make(["partition", "kill", "pause", "clock"], c)  # type: ignore[arg-type]
    rng = random.Random(3)
    for f in faults:
        f.start(rng)
    c.process("api-r1").kill()     # no family knows about these two: heal_all restores them anyway
    c.process("etcd3").pause()
    c.net.set([("etcd1", "etcd2")], Rule("reset"))

    class Broken:
        name = "broken"

        def start(self, rng: random.Random) -> dict[str, Any]:
            return {}

        def stop(self) -> dict[str, Any]:
            return {}

        def heal(self) -> None:
            raise RuntimeError("cannot heal")

    rec = Recorder(None)
    heal_all([Broken(), *faults], c, rec)  # type: ignore[arg-type]
    assert all(p.running and not p.paused for p in c.processes())
    assert c.net.rules == {}
    assert clocks == {"r1": 0, "r2": 0, "r3": 0}
    assert rec.events[-1].value == {"net": {}}


def test_a_fault_that_cannot_start_is_logged_not_fatal() -> None:
    class Refuses:
        name = "refuses"

        def start(self, rng: random.Random) -> dict[str, Any]:
            raise OSError("no such process")

        def stop(self) -> dict[str, Any]:
            return {}

        def heal(self) -> None:
            pass

    fault: Fault = Refuses()
    schedule = Schedule([fault], Recorder(None), seed=0)
    schedule.apply("start", fault, lambda: fault.start(schedule.rng))
    assert schedule.log == [{"f": "start", "fault": "refuses", "error": "OSError: no such process"}]
