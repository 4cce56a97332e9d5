"""What a run leaves behind: results.json, a text summary, timeline.html, latency.png and rate.png.

The timeline is Jepsen's: one column per process, one box per operation
from invocation to completion, coloured by outcome (ok green, info orange,
fail pink), with the nemesis's fault windows as grey bands across all
columns. The plots use matplotlib's Agg backend (no display needed) and
shade the same windows.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from .checkers.availability import table as availability_table
from .checkers.linearizability import LinearizabilityResult
from .checkers.result import CheckerResult, Result, Verdict
from .history import FAIL, INFO, OK, Event, Operation, pair

MAX_VIOLATIONS = 50
COLOURS = {OK: "#6DB6FE", INFO: "#FFAA26", FAIL: "#FEB5DA"}
PLOT_COLOURS = {OK: "#1f77b4", INFO: "#ff7f0e", FAIL: "#d62728"}


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


def _line(name: str, r: dict[str, Any]) -> str:
    verdict = SHOWN[Verdict(r["verdict"])]
    s = r.get("stats", {})
    if name == "linearizability":
        detail = f"{r['ops']} ops, {len(r['partitions'])} keys, {r['seconds']:.2f}s"
    elif name == "staleness":
        lv = s.get("levels", {})
        detail = "; ".join(f"{k}: {v['reads']} reads, {v['stale']} stale" for k, v in lv.items())
        ser = lv.get("serializable", {})
        if ser.get("revisions_behind"):
            detail += f" (serializable max {ser['revisions_behind']['max']} revisions behind)"
    elif name == "convergence":
        detail = (f"{s.get('regions')} regions, {s.get('entities')} entities, {s.get('acknowledged')} acknowledged "
                  f"and {s.get('unknown')} unknown events")
    elif name == "causal":
        detail = f"{s.get('causal_writes')} read-then-write posts, {s.get('reads_after_writes')} reads after them"
    elif name == "watch":
        detail = f"{s.get('watchers')} watchers, {s.get('events')} events"
    elif name == "availability":
        detail = f"{s.get('server_errors', r.get('violation_count', 0))} answers of 500"
        judged = s.get("serializable", {}).get("judged")
        if judged and judged["total"]:
            detail += f"; serializable reads with a live member: {judged['ok']}/{judged['total']} answered"
    else:
        detail = ""
    out = f"  {name:<16} {verdict:<8} {detail}"
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


# -- pictures ------------------------------------------------------------------------------

def write_all(out: Path, events: list[Event], results: dict[str, Any]) -> None:
    ops = pair(events, strict=False)
    windows = results.get("nemesis_windows", [])
    (out / "timeline.html").write_text(timeline(ops, windows, results.get("test", {}).get("name", "")))
    plots(out, ops, windows)


def _ms(ns: float) -> float:
    return ns / 1e6


def timeline(ops: list[Operation], windows: list[tuple[float, float, str]], title: str) -> str:
    """An HTML page: processes as columns, time downwards, 1 px per `scale` ms."""
    end = max([o.call for o in ops] + [o.ret for o in ops if o.ret != math.inf] + [w[1] for w in windows] + [1])
    scale = max(1.0, _ms(end) / 20000)  # at most ~20000 px tall
    procs = sorted({o.process for o in ops}, key=lambda p: (isinstance(p, str), p))
    col = {p: i for i, p in enumerate(procs)}
    width = 64
    parts = [f"<!doctype html><meta charset=utf-8><title>timeline {html.escape(title)}</title>",
             "<style>body{font:11px sans-serif;margin:0}.op{position:absolute;overflow:hidden;"
             "border:1px solid #0003;box-sizing:border-box;padding:1px}.band{position:absolute;left:0;"
             "background:#8882;border-top:1px solid #888;color:#555}.head{position:absolute;top:0}</style>",
             f"<h3 style='margin:4px'>{html.escape(title)}: {len(ops)} operations, {len(procs)} processes; "
             "ok <span style='background:#6DB6FE'>blue</span>, info <span style='background:#FFAA26'>orange</span>,"
             " fail <span style='background:#FEB5DA'>pink</span>; grey bands: faults</h3>",
             "<div style='position:relative'>"]
    top = 20
    full = len(procs) * width
    for s, e, name in windows:
        y, h = top + _ms(s) / scale, max(2, _ms(e - s) / scale)
        parts.append(f"<div class=band style='top:{y:.0f}px;height:{h:.0f}px;width:{full}px'>{html.escape(name)}</div>")
    for p in procs:
        parts.append(f"<div class=head style='left:{col[p] * width}px'>p{html.escape(str(p))}</div>")
    for o in ops:
        ret = o.ret if o.ret != math.inf else end
        y, h = top + _ms(o.call) / scale, max(3, _ms(ret - o.call) / scale)
        out = "?" if o.type == INFO else ("" if o.type == FAIL else json.dumps(o.output, default=str)[:200])
        tip = html.escape(f"p{o.process} {o.f} {o.key} {json.dumps(o.value, default=str)[:200]} -> {o.type} {out} "
                          f"[{_ms(o.call):.1f} ms, {_ms(ret - o.call):.1f} ms] {o.get('error') or ''}", quote=True)
        parts.append(f"<div class=op title=\"{tip}\" style='top:{y:.0f}px;left:{col[o.process] * width}px;"
                     f"width:{width - 2}px;height:{h:.0f}px;background:{COLOURS.get(o.type, '#ccc')}'>"
                     f"{html.escape(o.f)}</div>")
    parts.append("</div>")
    return "\n".join(parts)


def plots(out: Path, ops: list[Operation], windows: list[tuple[float, float, str]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fs = sorted({o.f for o in ops if o.f != "watch"})
    markers = dict(zip(fs, "o^sDvP*X"))

    def shade(ax: Any) -> None:
        for s, e, name in windows:
            ax.axvspan(s / 1e9, e / 1e9, color="0.85", zorder=0)
            ax.text(s / 1e9, 1.0, name, transform=ax.get_xaxis_transform(), fontsize=6, va="top", color="0.4")

    fig, ax = plt.subplots(figsize=(11, 5))
    shade(ax)
    for f in fs:
        for t in (OK, INFO, FAIL):
            xs = [o for o in ops if o.f == f and o.type == t and o.ret != math.inf]
            if xs:
                ax.scatter([o.call / 1e9 for o in xs], [max(1e-1, (o.ret - o.call) / 1e6) for o in xs], s=6,
                           marker=markers.get(f, "o"), color=PLOT_COLOURS[t], alpha=0.6, label=f"{f} {t}")
    ax.set_yscale("log")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title("latency by operation and outcome; grey: faults")
    ax.legend(fontsize=6, ncol=3, loc="upper right")
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(11, 4))
    shade(ax)
    end = max([o.call for o in ops] + [1]) / 1e9
    bins = max(1, int(math.ceil(end)))
    palette = plt.get_cmap("tab10")
    for i, f in enumerate(fs):
        for t in (OK, INFO, FAIL):
            counts = [0] * bins
            for o in ops:
                if o.f == f and o.type == t:
                    counts[min(bins - 1, int(o.call / 1e9))] += 1
            if any(counts):
                ax.plot(range(bins), counts, drawstyle="steps-post", color=palette(i % 10),
                        linestyle={OK: "-", INFO: ":", FAIL: "--"}[t], linewidth=1.5 if t == OK else 1.0,
                        label=f"{f} {t}")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("operations / s")
    ax.set_title("throughput by operation (colour) and outcome (ok solid, info dotted, fail dashed); grey: faults")
    ax.legend(fontsize=6, ncol=3, loc="upper right")
    fig.tight_layout()
    fig.savefig(out / "rate.png", dpi=110)
    plt.close(fig)
