"""The words of a run: each checker's entry in results.json, and the text summary `run` prints.

`detail` is the one line a reader needs per checker; the summary and the
index page both show it.
"""

from __future__ import annotations

import json
from typing import Any

from ..checkers.availability import table as availability_table
from ..checkers.linearizability import LinearizabilityResult
from ..checkers.result import CheckerResult, Result, Verdict

MAX_VIOLATIONS = 50


# How the summary prints a verdict: a violation is what a reader must not miss.
SHOWN = {Verdict.OK: "valid", Verdict.ILLEGAL: "INVALID", Verdict.UNKNOWN: "unknown"}


def result_json(res: CheckerResult) -> dict[str, Any]:
    """A checker's entry in results.json: `verdict` ("ok", "illegal", "unknown") and, as always,
    `valid` (True, False, None for unknown)."""
    if isinstance(res, LinearizabilityResult):
        return {"valid": res.valid, "verdict": res.verdict.value, "ops": res.ops, "seconds": round(res.seconds, 3),
                "partitions": [{"key": p.key, "verdict": p.verdict.value, "ops": p.ops,
                                "seconds": round(p.seconds, 3),
                                "anomaly": p.anomaly.describe() if p.anomaly else None} for p in res.partitions]}
    assert isinstance(res, Result)
    stats = dict(res.stats)
    if isinstance(stats.get("stale_reads"), list):  # one entry per stale read: keep the first few
        stats["stale_reads_total"] = len(stats["stale_reads"])
        stats["stale_reads"] = stats["stale_reads"][:20]
    return {"valid": res.valid, "verdict": res.verdict.value, "violation_count": len(res.violations),
            "kinds": sorted(res.kinds()),
            "violations": [{"kind": v.kind, "message": v.message} for v in res.violations[:MAX_VIOLATIONS]],
            "stats": json.loads(json.dumps(stats, default=str))}


def detail(name: str, r: dict[str, Any]) -> str:
    """One line on what a checker judged (its entry in results.json), or "" for a checker it does not know."""
    s = r.get("stats", {})
    name = name.removeprefix("sdk-").removeprefix("grpc-")  # the SDK and gRPC workloads' twins of a checker
    if name == "linearizability":
        text = f"{r['ops']} ops, {len(r['partitions'])} keys, {r['seconds']:.2f}s"
    elif name == "staleness":
        lv = s.get("levels", {})
        text = "; ".join(f"{k}: {v['reads']} reads, {v['stale']} stale" for k, v in lv.items())
        ser = lv.get("serializable", {})
        if ser.get("revisions_behind"):
            text += f" (serializable max {ser['revisions_behind']['max']} revisions behind)"
    elif name == "convergence":
        text = (f"{s.get('regions')} regions, {s.get('entities')} entities, {s.get('acknowledged')} acknowledged "
                  f"and {s.get('unknown')} unknown events")
    elif name == "causal":
        text = f"{s.get('causal_writes')} read-then-write posts, {s.get('reads_after_writes')} reads after them"
    elif name == "watch":
        text = f"{s.get('watchers')} watchers, {s.get('events')} events"
    elif name == "edge-staleness":
        text = (f"{s.get('reads')} edge reads judged ({s.get('unlabelled')} unlabelled), declared stale_ms max "
                f"{(s.get('stale_ms') or {}).get('max')}, least margin {s.get('least_margin_ms')} ms")
    elif name == "edge-convergence":
        after = s.get("converged_after_s")
        text = (f"{s.get('edges')} edges, " + ("not all equal to the core" if after is None else
                f"equal to the core {after} s after the heal") + f" (bound {s.get('bound_s', 0):.0f} s)")
    elif name == "edge-delivery":
        text = (f"{s.get('acknowledged')} acknowledged, {s.get('unknown')} unknown, {s.get('failed')} failed "
                f"observations; regions {','.join(s.get('regions') or [])}")
    elif name == "availability":
        text = f"{s.get('server_errors', r.get('violation_count', 0))} answers of 500"
        judged = s.get("serializable", {}).get("judged")
        if judged and judged["total"]:
            text += f"; serializable reads with a live member: {judged['ok']}/{judged['total']} answered"
    else:
        text = ""
    return text


def _line(name: str, r: dict[str, Any]) -> str:
    out = f"  {name:<16} {SHOWN[Verdict(r['verdict'])]:<8} {detail(name, r)}"
    for v in r.get("violations", [])[:5]:
        out += f"\n      [{v['kind']}] {v['message'][:300]}"
    if name == "linearizability" and r["verdict"] == Verdict.ILLEGAL:
        for p in r["partitions"]:
            if p["anomaly"]:
                out += "\n" + "\n".join("      " + x for x in p["anomaly"].splitlines()[:30])
                break
    return out


def summary(results: dict[str, Any]) -> str:
    t = results.get("test", {})
    lines = [f"test {t.get('name')}  ->  {t.get('dir')}"]
    ops = results.get("ops", {})
    lines.append("operations: " + ", ".join(f"{f} {c['ok']}/{c['fail']}/{c['info']}" for f, c in sorted(ops.items()))
                 + "  (ok/fail/info)")
    lines.append(f"faults: {len(results.get('nemesis_windows', []))} windows: "
                 + ", ".join(sorted({w[2] for w in results.get("nemesis_windows", [])})))
    lines.append("checkers:")
    for name, r in results["checkers"].items():
        lines.append(_line(name, r))
    avail = results["checkers"].get("availability")
    if avail:
        res = Result("availability", stats=avail["stats"])
        lines.append("availability (ok fraction of operations invoked inside / outside fault windows):")
        lines += ["  " + x for x in availability_table(res).splitlines()]
    tm = results.get("timings", {})
    lines.append("timings: " + ", ".join(f"{k} {v:.1f}" for k, v in tm.items()))
    lines.append(f"verdict: {SHOWN[Verdict(results['verdict'])].upper()}")
    return "\n".join(lines)
