"""Fault families behind one protocol, and healing that leaves nothing behind (no cluster needed)."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import pytest

from jepsen_like import nemesis
from jepsen_like.hosts import host_of
from jepsen_like.nemesis import FAMILIES, Fault, Kill, Pause, Schedule, heal_all, make
from jepsen_like.proxy import PASS_RULE, Rule
from jepsen_like.recorder import Recorder


class _Process:
    def __init__(self, name: str) -> None:
        self.name, self.running, self.paused = name, True, False

    def kill(self) -> None:
        self.running = False

    def start(self) -> None:
        self.running = True

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False


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
        self._processes = {n: _Process(n) for n in names}
        self.net = _Links()

    def processes(self) -> list[_Process]:
        return list(self._processes.values())

    def process(self, name: str) -> _Process:
        return self._processes[name]

    def on_host(self, host: str) -> list[str]:
        return [n for n in self._processes if host_of(n) == host]

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


def test_kill_and_pause_undo_what_they_did() -> None:
    c = _Cluster()
    for fault, down in ((Kill(c, ("redis",)), lambda p: not p.running),  # type: ignore[arg-type]
                        (Pause(c, ("etcd",)), lambda p: p.paused)):  # type: ignore[arg-type]
        desc = fault.start(random.Random(1))
        assert desc["targets"] and all(down(c.process(n)) for n in desc["targets"])
        assert fault.stop() == desc
        assert all(p.running and not p.paused for p in c.processes())


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
