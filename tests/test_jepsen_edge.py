"""jepsen_like's edge workload: edge nodes cut off from the core and killed keep their promises,
and each of the three checkers catches the bug planted against it.

- The checkers on small histories: where each draws its line (pure, instant).
- The README's command, run as a user runs it: 15 s of load on a real cluster with two edges,
  an edge cut and an edge killed (cycle order: both, however slow the machine); valid, and
  every checker had something to judge. About a minute.
- One run with the three edge sabotages planted (WORLDSTATE_EDGE_SABOTAGE, test-only): each
  checker reports its own violation. About half a minute.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge import sabotage
from edge.follower import Follower
from jepsen_like import runner
from jepsen_like.checkers import edge_convergence, edge_delivery, edge_staleness
from jepsen_like.history import FAIL, INFO, INVOKE, OK, Event, pair, read_jsonl

ROOT = Path(__file__).resolve().parent.parent
RUN = ".venv/bin/python -m jepsen_like run --workload edge --nemesis edge-cut,edge-kill --order cycle " \
      "--time-limit 15 --seed 3"
MS = 1_000_000  # ns


def _op(process: int, f: str, key: str, value: Any, call_ms: int, ret_ms: int, out: Any = None,
        type_: str = OK, **extra: Any) -> list[Event]:
    return [Event(INVOKE, process, f, key, value, call_ms * MS, extra=extra),
            Event(type_, process, f, key, value if out is None else out, ret_ms * MS, extra=extra)]


def _read(call_ms: int, n: int | None, stale_ms: int | None, process: int = 9) -> list[Event]:
    return _op(process, "edge-read", "edge-reg-r1-0", None, call_ms, call_ms + 5, {"n": n, "stale_ms": stale_ms},
               edge="edge-1", follows="r1")


def test_staleness_judges_each_read_by_the_staleness_it_declared() -> None:
    writes = _op(1, "core-write", "edge-reg-r1-0", 1, 0, 100, region="r1") + \
        _op(1, "core-write", "edge-reg-r1-0", 2, 200, 1000, region="r1")
    # Invoked at 1500 ms and 500 ms stale: n=2, acknowledged at 1000, is exactly at the bound: fine.
    assert edge_staleness.check(writes + _read(1500, 1, 500)).valid is True
    # 499 ms stale: n=2 was acknowledged before 1001 ms, and the answer does not reflect it.
    res = edge_staleness.check(writes + _read(1500, 1, 499))
    assert res.kinds() == {"stale-answer"} and res.violations[0].details["write"] == 2, res.describe()
    # An absent entity is n=0; an answer without a label (a 404 has none) is counted, not judged.
    assert edge_staleness.check(writes + _read(1500, None, 100)).kinds() == {"stale-answer"}
    unlabelled = edge_staleness.check(writes + _read(1500, None, None))
    assert unlabelled.valid is True and unlabelled.stats["unlabelled"] == 1
    # Writes at another region than the edge follows are not its promise; failed writes are none at all.
    elsewhere = _op(2, "core-write", "edge-reg-r1-0", 3, 0, 10, region="r2") + \
        _op(3, "core-write", "edge-reg-r1-0", 4, 0, 10, type_=FAIL, region="r1")
    assert edge_staleness.check(elsewhere + _read(1500, 1, 0)).valid is True
    # Params by revision, whichever region acknowledged the put.
    put = [Event(INVOKE, 4, "core-put", "edge/p0", 7, 0, extra={"region": "r2"}),
           Event(OK, 4, "core-put", "edge/p0", 7, 100 * MS, revision=40, extra={"region": "r2"})]
    param = _op(5, "edge-read-param", "edge/p0", None, 1000, 1005, {"value": 6, "revision": 39, "stale_ms": 800},
                edge="edge-1", follows="r1")
    assert edge_staleness.check(put + param).kinds() == {"stale-answer"}


def test_convergence_wants_every_edge_equal_to_its_region() -> None:
    view = {"entities": {"edge-reg-r1-0": {"n": [3, "01a-0000", "api-r1"]}}, "params": {"edge/p0": [7, 40]}}
    final = {"bound_s": 30.0, "healed_at_ns": 0, "agreed_at_ns": 2 * 10**9, "core": {"r1": view},
             "edges": {"edge-1": {"follows": "r1", "view": view}}}
    ok = edge_convergence.check(final)
    assert ok.valid is True and ok.stats["converged_after_s"] == 2.0
    behind = {"entities": {"edge-reg-r1-0": {"n": [2, "019-0000", "api-r1"]}}, "params": {"edge/p0": [7, 40]}}
    diverged = edge_convergence.check({**final, "agreed_at_ns": None,
                                       "edges": {"edge-1": {"follows": "r1", "view": behind}}})
    assert diverged.kinds() == {"diverged"} and "edge-reg-r1-0" in diverged.violations[0].message
    unread = edge_convergence.check({**final, "edges": {"edge-1": {"follows": "r1", "view": None}}})
    assert unread.kinds() == {"unread"}


def test_delivery_wants_each_acknowledged_observation_once_in_every_region() -> None:
    def post(process: int, k: int, type_: str) -> list[Event]:
        ev = {"id": f"edge-obs-ev-{k}", "entity": f"edge-obs-{k}", "x": k}
        return _op(process, "edge-post", ev["entity"], ev, 0, 10, {"accepted": 1} if type_ == OK else None,
                   type_=type_, edge="edge-1")

    history = post(1, 1, OK) + post(2, 2, OK) + post(3, 3, INFO) + post(4, 4, FAIL) + post(5, 2, FAIL)
    once = {"total": 1, "event_id": None}
    region = {"edge-obs-1": {**once, "x": 1}, "edge-obs-2": {**once, "x": 2}}
    assert edge_delivery.acknowledged(history).keys() == {"edge-obs-ev-1", "edge-obs-ev-2"}
    ok = edge_delivery.check(history, {"regions": {"r1": region, "r2": region}})
    assert ok.valid is True and ok.stats["acknowledged"] == 2 and ok.stats["unknown"] == 1, ok.describe()
    bad = {"edge-obs-1": {**once, "x": 1, "total": 2}, "edge-obs-4": {**once, "x": 4}}
    res = edge_delivery.check(history, {"regions": {"r1": region, "r2": bad}})
    assert res.kinds() == {"lost", "duplicated", "phantom"}, res.describe()


def argv(command: str) -> list[str]:
    """The README's command with this interpreter for .venv/bin/python (the test may run from another venv)."""
    words = command.split()
    assert words[0] == ".venv/bin/python"
    return [sys.executable, *words[1:]]


def test_the_readme_run_is_valid_through_an_edge_cut_and_an_edge_kill(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(argv(RUN), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    print(done.stdout)
    assert done.returncode == 0 and "verdict: VALID" in done.stdout, done.stdout[-4000:] + done.stderr[-4000:]
    run = next(p for p in (tmp_path / "store").glob("*/*") if p.is_dir() and not p.is_symlink())
    results = json.loads((run / "results.json").read_text())
    checkers = results["checkers"]
    assert {"edge-staleness", "edge-convergence", "edge-delivery"} <= set(checkers)
    log = results["test"]["nemesis_log"]
    assert not [e for e in log if "error" in e], log  # every fault applied and undone (the killed edge healthy)
    assert {f for _, _, f in results["nemesis_windows"]} == {"edge-cut", "edge-kill"}
    # Every part ran: reads judged, observations acknowledged and counted, edges compared with the core.
    assert checkers["edge-staleness"]["stats"]["reads"] > 0
    assert checkers["edge-delivery"]["stats"]["acknowledged"] > 0
    assert checkers["edge-convergence"]["stats"]["edges"] == 2
    assert checkers["edge-convergence"]["stats"]["converged_after_s"] is not None
    # The cut was real and reads were answered through it: the cut edge said how stale it was.
    ops = pair(read_jsonl(str(run / "history.jsonl")), strict=True)
    cuts = [(s, e, w) for s, e, w in _cut_windows(results)]
    during = [op.output["stale_ms"] for op in ops if op.f == "edge-read" and op.type == OK
              and op.output.get("stale_ms") is not None
              and any(s <= op.call < e and op.get("edge") in w for s, e, w in cuts)]
    assert during and max(during) > 1000, during
    for name in ("edge-1.log", "edge-2.log"):  # kept with the others (warnings and errors only: may be empty)
        assert (run / "cluster" / "logs" / name).is_file(), name
    timeline = (run / "timeline.html").read_text()
    assert "edge-read" in timeline and "edge-post" in timeline and "core-write" in timeline


def _cut_windows(results: dict[str, Any]) -> list[tuple[float, float, list[str]]]:
    """(start, end, edges cut) of each edge-cut, from the windows and the nemesis log in order."""
    cut = [e["edges"] for e in results["test"]["nemesis_log"] if e["f"] == "start" and e["fault"] == "edge-cut"]
    spans = [(s, e) for s, e, f in results["nemesis_windows"] if f == "edge-cut"]
    return [(s, e, w) for (s, e), w in zip(spans, cut)]


def test_each_edge_checker_catches_the_bug_planted_against_it(tmp_path: Path) -> None:
    # edge-under-report-staleness: labels 2 s fresher than measured (a cut makes the edge seconds
    # stale); edge-drop-outbox: every third acknowledged observation never forwarded; edge-freeze:
    # the entity feed stops 10 s after the edge starts, within the 12 s of load.
    o = runner.Options(workloads=["edge"], nemeses=["edge-cut"], time_limit_s=12, seed=5, store=tmp_path,
                       regions=2, etcd_members=1, quiet_s=1, final_wait_s=5, plots=False, gap_s=(0.5, 1.0),
                       hold_s=(3.0, 4.0), order="cycle",
                       sabotage=["edge-under-report-staleness", "edge-drop-outbox", "edge-freeze"],
                       workload_options={"edge": {"converge_s": 5.0}})
    out = runner.run(o)
    print(out.summary)
    checkers = out.results["checkers"]
    assert out.valid is False
    assert "stale-answer" in checkers["edge-staleness"]["kinds"], checkers["edge-staleness"]
    assert checkers["edge-convergence"]["valid"] is False, checkers["edge-convergence"]
    assert "lost" in checkers["edge-delivery"]["kinds"], checkers["edge-delivery"]
    assert checkers["availability"]["valid"] is True  # the bugs are the edges', not unclassified errors


def test_the_harness_readme_shows_this_command() -> None:
    """The command above is jepsen_like/README.md's, as written there (a changed README must change it)."""
    assert f"```sh\n{RUN}\n```" in (ROOT / "jepsen_like" / "README.md").read_text()
    assert f"```sh\n{RUN}\n```" in (ROOT / "README.md").read_text()


def test_edge_faults_without_edges_are_refused_before_anything_starts(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "jepsen_like", "run", "--workload", "register", "--nemesis",
                           "edge-cut"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2 and "need edge nodes" in done.stderr, done.stderr
    assert not (tmp_path / "store").exists()


def test_edge_sabotage_is_read_from_its_variable_and_refuses_unknown_names() -> None:
    assert sabotage.plan({}) == sabotage.EdgePlan()  # production: nothing planted
    planted = sabotage.plan({sabotage.ENV: "edge-freeze,edge-under-report-staleness"})
    assert planted.follower is sabotage.FreezingFollower and planted.under_report_ms == sabotage.UNDER_REPORT_MS
    assert issubclass(planted.follower, Follower) and planted.forwarder is not sabotage.DroppingForwarder
    with pytest.raises(ValueError, match="unknown edge sabotage"):
        sabotage.plan({sabotage.ENV: "edge-freez"})


def test_observations_an_edge_took_reach_a_region_whose_clock_is_behind(tmp_path: Path) -> None:
    """r1's node clock held 3 s behind the edges': the core refuses their rows as stamped ahead
    (clock-drift, 422) until its clock catches up, and the forwarder must wait, not set them aside.
    Setting them aside lost every observation edge-1 acknowledged (edge-delivery: `lost`)."""
    o = runner.Options(workloads=["edge"], nemeses=[], time_limit_s=8, seed=6, store=tmp_path, regions=2,
                       etcd_members=1, quiet_s=1, final_wait_s=8, plots=False, clock_skew={"r1": -3000})
    out = runner.run(o)
    print(out.summary)
    delivery = out.results["checkers"]["edge-delivery"]
    assert delivery["valid"] is True and delivery["stats"]["acknowledged"] > 0, delivery
