"""A small synthetic run for the report tests: a history shaped like the runner's, and its results.json.

Client slots 0..5 talk to r1..r3 (tier cp), some operations fail and some end
`info` (so slots get a second process, slot + 6), two faults (a partition,
then a kill) sit inside the load, and three final reads come after it, as
processes 1000000 and up. Every operation starts 4 s into the history's
clock, as in a real run, where the cluster starts first.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from jepsen_like import report, synth
from jepsen_like.history import INFO, INVOKE, OK, Event

SLOTS = 6
START_NS = 4_000_000_000


def history() -> list[Event]:
    events = synth.generate(500, keys=3, processes=SLOTS, seed=5, info_rate=0.03, fail_rate=0.05,
                            latency_ms=25, think_ms=10)
    events = [replace(e, time=e.time + START_NS, extra={"tier": "cp", "region": f"r{e.process % SLOTS % 3 + 1}"})
              for e in events]
    end = max(e.time for e in events)
    span = end - START_NS
    nemesis = []
    for fault, a, b in (("partition", 0.3, 0.5), ("kill", 0.6, 0.7)):
        s, t = START_NS + int(span * a), START_NS + int(span * b)
        said = {"fault": fault, "kind": "halves"} if fault == "partition" else {"fault": fault, "targets": ["etcd2"]}
        nemesis += [Event(INVOKE, "nemesis", "start", None, {"fault": fault}, s),
                    Event(INFO, "nemesis", "start", None, said, s + 1000),
                    Event(INVOKE, "nemesis", "stop", None, {"fault": fault}, t),
                    Event(INFO, "nemesis", "stop", None, {"fault": fault}, t + 1000)]
    finals = []
    for i in range(3):
        t = end + 200_000_000 + i * 30_000_000
        extra = {"tier": "cp", "region": f"r{i + 1}", "final": True}
        finals += [Event(INVOKE, 1_000_000 + i, "read", "k0", None, t, extra=extra),
                   Event(OK, 1_000_000 + i, "read", "k0", 1, t + 10_000_000, extra=extra)]
    return sorted(events + nemesis, key=lambda e: e.time) + finals


def windows(events: list[Event]) -> list[tuple[int, int, str]]:
    from jepsen_like.runner import nemesis_windows

    return nemesis_windows(events)


def results(events: list[Event], run_dir: Path, verdict: str = "illegal") -> dict[str, Any]:
    counts: dict[str, Counter[str]] = {}
    for e in events:
        if isinstance(e.process, int) and e.type != INVOKE:
            counts.setdefault(e.f, Counter())[e.type] += 1
    bad = [{"kind": "stale-read", "message": "p3 read 'k0' answered an overwritten value 7"}]
    return {
        "checkers": {
            "linearizability": {"valid": True, "verdict": "ok", "ops": 400, "seconds": 0.01, "partitions": []},
            "watch": {"valid": verdict != "illegal", "verdict": verdict,
                      "violation_count": len(bad) if verdict == "illegal" else 0, "kinds": [],
                      "violations": bad if verdict == "illegal" else [], "stats": {"watchers": 3, "events": 9}},
        },
        "nemesis_windows": windows(events),
        "ops": {f: {"ok": c[OK], "fail": c["fail"], "info": c[INFO]} for f, c in counts.items()},
        "verdict": verdict, "valid": {"ok": True, "illegal": False}.get(verdict),
        "timings": {"run_s": 12.5},
        "test": {"name": "register-partition+kill", "dir": str(run_dir), "start_wall": 1_790_000_000.0,
                 "options": {"workloads": ["register"], "nemeses": ["partition", "kill"], "time_limit_s": 10.0,
                             "regions": 3, "etcd_members": 3, "seed": 5, "net": "proxy", "sabotage": []},
                 "nemesis_log": [{"f": "start", "fault": "partition", "kind": "halves"},
                                 {"f": "stop", "fault": "partition"},
                                 {"f": "start", "fault": "kill", "targets": ["etcd2"]},
                                 {"f": "stop", "fault": "kill"}]},
    }


def write_run(store: Path, verdict: str = "illegal", stamp: str = "20261201T120000") -> Path:
    """A run folder as `run` leaves it: history, results, a log, and every report."""
    import json

    from jepsen_like.history import write_jsonl

    run_dir = store / "register-partition+kill" / stamp
    (run_dir / "cluster" / "logs").mkdir(parents=True)
    (run_dir / "cluster" / "logs" / "etcd1.log").write_text("etcd1 started\n")
    events = history()
    write_jsonl(str(run_dir / "history.jsonl"), events)
    res = results(events, run_dir, verdict)
    (run_dir / "results.json").write_text(json.dumps(res))
    (run_dir / "summary.txt").write_text("summary\n")
    report.write_all(run_dir, events, res)
    return run_dir
