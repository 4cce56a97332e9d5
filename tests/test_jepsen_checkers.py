"""Convergence, watch, staleness and availability checkers: a clean case and planted violations."""

from __future__ import annotations

import copy

import pytest

from jepsen_like import synth
from jepsen_like.checkers import availability, convergence, staleness, watch
from jepsen_like.history import FAIL, INFO, INVOKE, OK, Event


def ev_pair(p, f, key, value, call, ret, out=None, type=OK, **extra) -> list[Event]:
    inv_extra = {k: v for k, v in extra.items() if k in ("consistency",)}
    done_extra = {k: v for k, v in extra.items() if k == "revision"}
    tier = {"tier": extra["tier"]} if "tier" in extra else {}
    return [Event(INVOKE, p, f, key, value, call, extra=tier, **inv_extra),
            Event(type, p, f, key, out if type == OK else value, ret, extra=tier, **done_extra)]


def history(*pairs: list[Event]) -> list[Event]:
    """Interleave invocation/completion pairs by time."""
    return sorted((e for pr in pairs for e in pr), key=lambda e: e.time)


# --- convergence -----------------------------------------------------------------

def _hlc(t: int, node: str = "n1") -> list:
    return [t, 0, node]


EVENTS = [
    {"id": "e1", "entity": "ball", "status": "ok", "fields": {"x": 1.0}, "hlc": _hlc(10), "counters": {"hits": 1}},
    {"id": "e2", "entity": "ball", "status": "ok", "fields": {"x": 2.0}, "hlc": _hlc(20), "counters": {"hits": 1},
     "tags": ["red"]},
    {"id": "e2", "entity": "ball", "status": "info", "fields": {"x": 2.0}, "hlc": _hlc(20), "counters": {"hits": 1},
     "tags": ["red"]},  # a retry of an acknowledged event: counted once
    {"id": "e3", "entity": "ball", "status": "info", "fields": {"y": 5}, "counters": {"hits": 1}},
    {"id": "e4", "entity": "cube", "status": "ok", "fields": {"x": 0.5}, "hlc": _hlc(15, "n2")},
]
STATE = {
    "ball": {"fields": {"x": {"value": 2.0, "hlc": _hlc(20)}}, "counters": {"hits": 2}, "tags": ["red"]},
    "cube": {"fields": {"x": {"value": 0.5, "hlc": _hlc(15, "n2")}}},
}


def regions(**edits) -> dict:
    out = {"r1": copy.deepcopy(STATE), "r2": copy.deepcopy(STATE)}
    for path, value in edits.items():
        region, entity, part, name = path.split("__")
        out[region][entity].setdefault(part, {})[name] = value
    return out


def test_convergence_clean() -> None:
    res = convergence.check(regions(), EVENTS)
    assert res.valid, res.describe()
    assert res.stats["acknowledged"] == 3 and res.stats["unknown"] == 1
    # The unknown increment may have landed too (3), in both regions.
    assert convergence.check(regions(r1__ball__counters__hits=3, r2__ball__counters__hits=3), EVENTS).valid


@pytest.mark.parametrize("edits,kinds", [
    ({"r2__ball__counters__hits": 3}, {"diverged"}),
    ({"r1__ball__counters__hits": 1, "r2__ball__counters__hits": 1}, {"counter"}),
    ({"r1__ball__counters__hits": 4, "r2__ball__counters__hits": 4}, {"counter"}),
    ({"r1__ball__fields__x": {"value": 1.0, "hlc": _hlc(10)},
      "r2__ball__fields__x": {"value": 1.0, "hlc": _hlc(10)}}, {"lost-write"}),
    ({"r1__ball__fields__x": {"value": 9.0, "hlc": _hlc(30)},
      "r2__ball__fields__x": {"value": 9.0, "hlc": _hlc(30)}}, {"phantom"}),
])
def test_convergence_planted(edits: dict, kinds: set) -> None:
    res = convergence.check(regions(**edits), EVENTS)
    assert res.kinds() == kinds, res.describe()


def test_convergence_missing_entity_and_tag() -> None:
    r = regions()
    del r["r1"]["cube"], r["r2"]["cube"]
    r["r1"]["ball"]["tags"] = r["r2"]["ball"]["tags"] = []
    assert convergence.check(r, EVENTS).kinds() == {"lost-write", "lost-tag"}


@pytest.mark.parametrize("field,kinds", [
    ({"value": 2, "hlc": "0005", "node": "n2", "event_id": "e6"}, set()),
    ({"value": 1, "hlc": "0005", "node": "n1", "event_id": "e5"}, {"lost-write"}),   # the tie-break lost e6
    ({"value": 3, "hlc": "0005", "node": "n2", "event_id": "e6"}, {"lost-write", "phantom"}),
    ({"value": 2, "hlc": "0004", "node": "n2"}, {"lost-write", "phantom"}),
])
def test_convergence_hlc_tie_break_and_event_ids(field: dict, kinds: set) -> None:
    events = [{"event_id": "e5", "entity": "cone", "status": "ok", "fields": {"x": 1}, "hlc": "0005", "node": "n1"},
              {"event_id": "e6", "entity": "cone", "status": "ok", "fields": {"x": 2}, "hlc": "0005", "node": "n2"}]
    state = {"cone": {"fields": {"x": field}}}
    assert convergence.check({"r1": state, "r2": copy.deepcopy(state)}, events).kinds() == kinds


def test_observations_from_history() -> None:
    evs = history(
        ev_pair(0, "post", "ball", {"id": "e1", "fields": {"x": 1.0}}, 0, 5, out={"hlc": [10, 0, "n1"]}),
        ev_pair(1, "post", "ball", {"id": "e2", "counters": {"hits": 1}}, 1, 6, type=INFO),
        ev_pair(2, "post", "ball", {"id": "e3", "counters": {"hits": 1}}, 2, 7, type=FAIL),
    )
    obs = convergence.observations_from_history(evs)
    assert [(o["id"], o["status"], o["entity"], o.get("hlc")) for o in obs] == [
        ("e1", "ok", "ball", [10, 0, "n1"]), ("e2", "info", "ball", None)]


# --- watch -----------------------------------------------------------------------

def _writes() -> list[list[Event]]:
    return [ev_pair(0, "write", "m", "a", 0, 10, revision=2), ev_pair(0, "write", "m", "b", 20, 30, revision=3),
            ev_pair(1, "cas", "m", ["b", "c"], 40, 50, revision=5), ev_pair(1, "write", "n", "z", 60, 70, revision=6)]


def _watcher(p: int, seen: list, start=None, key="m", type=OK) -> list[Event]:
    return ev_pair(p, "watch", key, start, 0, 100, out=seen, type=OK) if type == OK else \
        [Event(INVOKE, p, "watch", key, start, 0), Event(INFO, p, "watch", key, seen, 100)]


def test_watch_clean() -> None:
    h = history(*_writes(), _watcher(5, [[2, "a"], [3, "b"], [5, "c"]]),
                _watcher(6, [[2, "a"], [3, "b"]], start=1),                # closed early: a prefix
                _watcher(7, [{"revision": 3, "value": "b"}, {"revision": 5, "value": "c"}], {"from_revision": 3}),
                _watcher(8, [[5, "c"]], type=INFO),                         # died; joined late
                _watcher(9, [{"key": "m", "revision": 5, "value": "c"}, {"key": "n", "revision": 6, "value": "z"}],
                         {"from_revision": 4, "prefix": True}, key=""))
    res = watch.check(h)
    assert res.valid, res.describe()
    assert res.stats["watchers"] == 5


@pytest.mark.parametrize("seen,start,kind", [
    ([[2, "a"], [5, "c"]], None, "gap"),
    ([[3, "b"], [5, "c"]], 2, "gap"),                # missed the first event after its start
    ([[3, "b"], [2, "a"]], None, "order"),
    ([[2, "a"], [2, "a"], [3, "b"]], None, "order"),
    ([[2, "a"], [3, "x"]], None, "mismatch"),
    ([[2, "a"], [3, "b"], [4, "q"], [5, "c"]], None, "phantom"),
])
def test_watch_planted(seen: list, start, kind: str) -> None:
    res = watch.check(history(*_writes(), _watcher(5, seen, start)))
    assert kind in res.kinds(), res.describe()


def test_watchers_disagree() -> None:
    # No acknowledged revisions to compare with: the watchers still must agree.
    h = history(ev_pair(0, "write", "m", "a", 0, 10), ev_pair(0, "write", "m", "b", 20, 30),
                _watcher(5, [[2, "a"], [3, "b"]]), _watcher(6, [[2, "b"]]))
    assert "conflict" in watch.check(h).kinds()


def test_prefix_watcher_must_see_every_key() -> None:
    h = history(*_writes(), _watcher(9, [{"key": "m", "revision": 5, "value": "c"}, {"key": "m", "revision": 7,
                                                                                      "value": "c"}],
                                      {"prefix": True}, key=""))
    assert watch.check(h).kinds() >= {"gap"}  # skipped n@6


# --- staleness -------------------------------------------------------------------

def test_staleness_measures_serializable_and_flags_linearizable() -> None:
    writes = [ev_pair(0, "write", "k", 1, 0, 10, revision=10), ev_pair(0, "write", "k", 2, 20, 30, revision=11),
              ev_pair(0, "write", "k", 3, 40, 50, revision=14)]
    fresh = ev_pair(1, "read", "k", None, 60, 70, out=3, consistency="linearizable", revision=14)
    stale_ok = ev_pair(2, "read", "k", None, 80, 90, out=1, consistency="serializable", revision=10)
    stale_bad = ev_pair(3, "read", "k", None, 100, 110, out=2, revision=11)  # default: linearizable
    res = staleness.check(history(*writes, fresh, stale_ok, stale_bad))
    assert [v.kind for v in res.violations] == ["stale-read"] and res.violations[0].details["process"] == 3
    by_proc = {e["process"]: e for e in res.stats["stale_reads"]}
    assert (by_proc[2]["writes_behind"], by_proc[2]["revisions_behind"], by_proc[2]["time_behind_ns"]) == (2, 4, 50)
    assert (by_proc[3]["writes_behind"], by_proc[3]["revisions_behind"]) == (1, 3)
    ser = res.stats["levels"]["serializable"]
    assert ser["reads"] == 1 and ser["stale"] == 1 and ser["writes_behind"]["max"] == 2
    assert res.stats["levels"]["linearizable"]["stale"] == 1


def test_staleness_without_revisions_uses_values() -> None:
    writes = [ev_pair(0, "write", "k", 1, 0, 10), ev_pair(0, "write", "k", 2, 20, 30)]
    concurrent = ev_pair(4, "write", "k", 9, 25, 45)
    reads = [ev_pair(1, "read", "k", None, 40, 50, out=1, consistency="serializable"),   # behind by write 2
             ev_pair(2, "read", "k", None, 40, 50, out=2),                             # fresh
             ev_pair(3, "read", "k", None, 5, 8, out=None)]                            # nothing completed yet
    res = staleness.check(history(*writes, concurrent, *reads))
    assert res.valid, res.describe()
    (e,) = res.stats["stale_reads"]
    assert (e["process"], e["writes_behind"], e["revisions_behind"], e["time_behind_ns"]) == (1, 1, None, 10)


def test_staleness_clean_on_generated_history() -> None:
    res = staleness.check(synth.generate(3000, keys=5, processes=8, seed=4))
    assert res.valid and res.stats["levels"]["linearizable"]["stale"] == 0


# --- availability ----------------------------------------------------------------

def test_availability_inside_and_outside_faults() -> None:
    ops = history(
        ev_pair(0, "read", "k", None, 0, 5, out=1, tier="cp"),
        ev_pair(1, "read", "k", None, 100, 105, type=FAIL, tier="cp"),      # refused in the partition
        ev_pair(2, "read", "k", None, 110, 500, type=INFO, tier="cp"),
        ev_pair(3, "cas", "k", [1, 2], 120, 130, out={"cas_ok": False}, tier="cp"),  # an answer: ok
        ev_pair(4, "post", "e", {"id": "a"}, 101, 102, out={}, tier="ap"),
        ev_pair(5, "post", "e", {"id": "b"}, 300, 302, out={}, tier="ap"),
    )
    res = availability.check(ops, [(100, 200), (150, 160)], minimum={("ap", "inside"): 0.99, ("cp", "inside"): 0.5})
    t = res.stats["tiers"]
    assert t["cp"]["inside"] == {"ok": 1, "fail": 1, "info": 1, "total": 3, "ok_fraction": 1 / 3}
    assert t["cp"]["outside"]["ok_fraction"] == 1.0 and t["ap"]["inside"]["ok_fraction"] == 1.0
    assert t["ap"]["all"]["total"] == 2
    assert [v.details["tier"] for v in res.violations] == ["cp"]
    assert "cp" in availability.table(res)
    assert availability.check(ops, [], minimum={("cp", "outside"): 0.5}).stats["tiers"]["cp"]["inside"]["total"] == 0


def test_availability_flags_every_500() -> None:
    def failed(p: int, error: str) -> list[Event]:
        return [Event(INVOKE, p, "read", "k", None, 10 * p), Event(FAIL, p, "read", "k", None, 10 * p + 5, error=error)]

    typed = history(failed(1, "503 /problems/unavailable: no quorum"), failed(2, "not sent: ConnectError"),
                    failed(3, "504 /problems/outcome-unknown: etcd did not answer"))
    assert availability.check(typed).valid
    untyped = history(failed(1, "503 /problems/unavailable: no quorum"),
                      failed(4, "500 /problems/internal: etcd refused the request (UNKNOWN: x)"))
    res = availability.check(untyped)
    assert res.kinds() == {"server-error"} and len(res.violations) == 1



def nemesis(fault: str, start: int, stop: int, targets: list[str] | None = None) -> list[Event]:
    """One fault as the schedule records it: start invoked then done (naming its targets), stop likewise."""
    done = {"fault": fault, **({"targets": targets} if targets is not None else {})}
    return [Event(INVOKE, "nemesis", "start", None, {"fault": fault}, start),
            Event(INFO, "nemesis", "start", None, done, start + 1),
            Event(INVOKE, "nemesis", "stop", None, {"fault": fault}, stop - 1),
            Event(INFO, "nemesis", "stop", None, done, stop)]


def sread(p: int, call: int, type: str = OK, region: str = "r1", consistency: str = "serializable") -> list[Event]:
    """A register read as the workload records it (its region and tier on both events)."""
    extra = {"tier": "cp", "region": region}
    error = None if type == OK else "503 /problems/unavailable: etcd has no quorum or is unreachable"
    return [Event(INVOKE, p, "read", "reg/k0", None, call, consistency=consistency, extra=extra),
            Event(type, p, "read", "reg/k0", 7 if type == OK else None, call + 5, error=error, extra=extra)]


def judge(*parts: list[Event]) -> availability.Result:
    events = history(*parts)
    faults = availability.fault_windows(events)
    return availability.check(events, [(w.start, w.end) for w in faults], faults=faults, etcd_members=3)


def test_fault_windows_name_what_each_fault_acted_on() -> None:
    events = history(nemesis("pause", 100, 200, ["etcd1", "etcd3"]), nemesis("partition", 300, 400),
                     nemesis("kill", 500, 600, ["api-r2"]), [Event(INVOKE, "nemesis", "start", None,
                                                                   {"fault": "clock"}, 700)], sread(1, 800))
    assert availability.fault_windows(events) == [
        availability.FaultWindow(100, 200, "pause", ("etcd1", "etcd3")),
        availability.FaultWindow(300, 400, "partition"),
        availability.FaultWindow(500, 600, "kill", ("api-r2",)),
        availability.FaultWindow(700, 805, "clock"),  # never stopped: open to the history's end
    ]


def test_serializable_reads_answered_while_a_member_lives() -> None:
    res = judge(nemesis("pause", 100, 200, ["etcd1", "etcd2"]), sread(1, 10), sread(2, 110), sread(3, 150),
                sread(4, 160, region="r2"), sread(5, 250))
    assert res.valid, res.describe()
    phases = res.stats["serializable"]["phases"]
    assert phases["pause etcd 2/3"] == {"ok": 3, "fail": 0, "info": 0, "total": 3, "ok_fraction": 1.0}
    assert phases["no fault"]["total"] == 2
    assert res.stats["serializable"]["judged"]["total"] == 3
    assert "pause etcd 2/3" in availability.table(res)


@pytest.mark.parametrize("fault,targets", [("pause", ["etcd1", "etcd2"]), ("pause", ["etcd2"]),
                                           ("kill", ["etcd3"]), ("pause", ["redis-r1"]), ("pause", ["api-r2"])])
def test_serializable_read_refused_while_a_member_lives_is_a_violation(fault: str, targets: list[str]) -> None:
    res = judge(nemesis(fault, 100, 200, targets), sread(1, 110), sread(2, 120, type=FAIL), sread(3, 130))
    assert res.kinds() == {"serializable-unavailable"} and len(res.violations) == 1, res.describe()
    assert res.violations[0].details["op"] == 1
    assert res.stats["serializable"]["judged"]["ok_fraction"] == 2 / 3


def test_serializable_reads_not_judged_where_nothing_could_answer() -> None:
    res = judge(nemesis("pause", 100, 200, ["etcd1", "etcd2", "etcd3"]), sread(1, 110, type=FAIL),  # no member
                nemesis("pause", 300, 400, ["api-r1"]), sread(2, 310, type=FAIL),  # the client's own node
                nemesis("partition", 500, 600), sread(3, 510, type=FAIL),  # not a judged family
                [Event(INVOKE, "nemesis", "start", None, {"fault": "pause"}, 700),  # a start that failed:
                 Event(INFO, "nemesis", "start", None, {"fault": "pause", "error": "x"}, 701),  # victims unknown
                 Event(INFO, "nemesis", "stop", None, {"fault": "pause"}, 800)], sread(4, 710, type=FAIL),
                nemesis("pause", 900, 1000, ["etcd1"]), sread(5, 910, type=FAIL, consistency="linearizable"),
                sread(6, 920, region="r2"))
    assert res.valid, res.describe()
    phases = res.stats["serializable"]["phases"]
    assert phases["pause etcd 3/3"]["fail"] == 1 and phases["pause api"]["fail"] == 1
    assert phases["partition"]["fail"] == 1 and phases["pause"]["fail"] == 1
    assert res.stats["serializable"]["judged"] == {"ok": 1, "fail": 0, "info": 0, "total": 1, "ok_fraction": 1.0}


def test_clock_skew_does_not_excuse_or_hide_a_refused_serializable_read() -> None:
    res = judge(nemesis("clock", 0, 1000), nemesis("pause", 100, 200, ["etcd1"]), sread(1, 50, type=FAIL),
                sread(2, 150, type=FAIL))
    assert [v.details["op"] for v in res.violations] == [1], res.describe()  # op ids: invocation order
    assert res.stats["serializable"]["phases"]["clock"]["fail"] == 1


# --- one verdict for every checker -----------------------------------------------

def test_worst_verdict_orders_illegal_then_unknown_then_ok() -> None:
    from jepsen_like.checkers.result import Verdict, worst

    assert worst([]) == Verdict.OK
    assert worst([Verdict.OK, Verdict.OK]) == Verdict.OK
    assert worst([Verdict.OK, Verdict.UNKNOWN]) == Verdict.UNKNOWN
    assert worst([Verdict.UNKNOWN, Verdict.ILLEGAL, Verdict.OK]) == Verdict.ILLEGAL
    assert [v.valid for v in Verdict] == [True, False, None]  # results.json's `valid`
    assert f"{Verdict.ILLEGAL:>8}|{Verdict.OK}" == " illegal|ok"


@pytest.mark.parametrize("verdicts,want,valid,exit_status", [
    (["ok", "ok"], "ok", True, 0),
    (["ok", "unknown"], "unknown", None, 2),
    (["illegal", "unknown"], "illegal", False, 1),
])
def test_runner_takes_the_worst_verdict(verdicts: list[str], want: str, valid: bool | None, exit_status: int) -> None:
    from jepsen_like import report, runner
    from jepsen_like.__main__ import EXIT_STATUS
    from jepsen_like.checkers.linearizability import LinearizabilityResult
    from jepsen_like.checkers.result import Result, Verdict, Violation

    def result(v: str) -> object:
        if v == "unknown":  # only the search can run out of time
            return LinearizabilityResult(Verdict.UNKNOWN, 10, 0.5)
        return Result("watch", [Violation("gap", "skipped 3")] if v == "illegal" else [])

    class Planted:
        name = "planted"

        def check(self, history: list[Event], final: dict) -> dict:
            return {f"c{i}": result(v) for i, v in enumerate(verdicts)}

    results = runner.check([], [Planted()], {}, {})  # type: ignore[list-item]
    assert (results["verdict"], results["valid"]) == (want, valid)
    assert [c["verdict"] for c in results["checkers"].values()] == verdicts + ["ok"]  # + availability
    assert [c["valid"] for c in results["checkers"].values()] == [Verdict(v).valid for v in verdicts] + [True]
    assert EXIT_STATUS[Verdict(results["verdict"])] == exit_status
    shown = {"ok": "VALID", "illegal": "INVALID", "unknown": "UNKNOWN"}[want]  # the summary's words, as before
    assert report.summary(results).endswith(f"verdict: {shown}")


@pytest.mark.parametrize("read,status", [(2, 0), (1, 1)])
def test_check_command_exit_status(tmp_path, capsys, read: int, status: int) -> None:
    """`python -m jepsen_like check <dir>` on a stored register run: 0 valid, 1 a violation."""
    import json

    from jepsen_like.__main__ import main
    from jepsen_like.history import dumps

    events = (ev_pair(0, "write", "reg/k0", 1, 0, 10, tier="cp") + ev_pair(1, "write", "reg/k0", 2, 20, 30, tier="cp")
              + ev_pair(2, "read", "reg/k0", None, 40, 50, out=read, tier="cp"))
    (tmp_path / "history.jsonl").write_text(dumps(events))
    (tmp_path / "final.json").write_text("{}")
    options = {"regions": 3, "workloads": ["register"], "workload_options": {}}
    (tmp_path / "results.json").write_text(json.dumps({"test": {"name": "t", "options": options}}))
    assert main(["check", str(tmp_path)]) == status
    out = capsys.readouterr().out
    assert out.rstrip().endswith("verdict: VALID" if status == 0 else "verdict: INVALID")
