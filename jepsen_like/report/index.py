"""index.html: one run at a glance: what ran, each checker's verdict, the plots, the timeline, the files.

Built from results.json and the run directory alone, so the store browser
can also build it for a run made before index pages existed.
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

from .style import VERDICT_COLOURS, VERDICT_WORDS, fault_colour
from .ops import describe_fault
from .summary import detail

FIRST_VIOLATIONS = 5
LISTED_FILES = ("history.jsonl", "results.json", "final.json", "summary.txt")
PICTURES = ("plot.png", "latency.png", "rate.png")


def verdict_badge(verdict: str | None, big: bool = False) -> str:
    colour = VERDICT_COLOURS.get(verdict, VERDICT_COLOURS[None])
    return (f"<span class='verdict{' big' if big else ''}' style='background:{colour}'>"
            f"{VERDICT_WORDS.get(verdict, str(verdict))}</span>")


def render(run_dir: Path, results: dict[str, Any]) -> str:
    test = results.get("test", {})
    opts = test.get("options", {})
    name = test.get("name") or run_dir.parent.name
    started = test.get("start_wall")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else run_dir.name
    gist = " · ".join(x for x in (
        f"{opts.get('time_limit_s', '?'):g} s of load" if isinstance(opts.get("time_limit_s"), (int, float)) else "",
        "workloads " + ", ".join(opts.get("workloads", [])),
        "nemesis " + (", ".join(opts.get("nemeses", [])) or "none"),
        f"{opts.get('etcd_members', 3)} etcd members, {opts.get('regions', 3)} regions",
        f"seed {opts.get('seed', '?')}", when) if x)
    sabotage = opts.get("sabotage") or []
    warn = f"<div class=sabotage>sabotage planted: {html.escape(', '.join(sabotage))}</div>" if sabotage else ""
    out = [f"<!doctype html><meta charset=utf-8><title>{html.escape(name)} {html.escape(run_dir.name)}</title>",
           f"<style>{CSS}</style>",
           f"<header><h1>{html.escape(name)}</h1> {verdict_badge(results.get('verdict'), big=True)}"
           f"<div class=sub>{html.escape(gist)}</div>{warn}</header>",
           "<main><div class=cols><div>", _checkers(results), "</div><div>", _faults(results), _ops(results),
           "</div></div>", _pictures(run_dir), _parameters(opts, results, run_dir), _files(run_dir), "</main>"]
    return "\n".join(out)


def _parameters(opts: dict[str, Any], results: dict[str, Any], run_dir: Path) -> str:
    regions, members = opts.get("regions", 3), opts.get("etcd_members", 3)
    hosts = max(regions, members)
    nodes = ", ".join(f"n{i + 1}: " + " ".join(
        ([f"etcd{i + 1}"] if i < members else []) + ([f"redis-r{i + 1}", f"api-r{i + 1}"] if i < regions else []))
        for i in range(hosts))
    rows = [("workloads", ", ".join(opts.get("workloads", []))),
            ("nemesis", ", ".join(opts.get("nemeses", [])) or "none"),
            ("time limit", f"{opts.get('time_limit_s', '?')} s of load"
             + (f" (run took {results['timings']['run_s']:.1f} s with heal and final reads)"
                if isinstance(results.get("timings", {}).get("run_s"), (int, float)) else "")),
            ("nodes", f"{members} etcd members, {regions} regions ({nodes})"),
            ("network", opts.get("net", "proxy")),
            ("seed", opts.get("seed", "")),
            ("sabotage", ", ".join(opts.get("sabotage", [])) or "none"),
            ("healthy after heal", results.get("healthy_after_heal")),
            ("clients completed an operation", results.get("clients_completed")),
            ("directory", str(run_dir))]
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<section><h2>Run</h2><table class=kv>{body}</table></section>"


def _checkers(results: dict[str, Any]) -> str:
    rows = []
    for name, r in results.get("checkers", {}).items():
        vs = "".join(f"<li><b>{html.escape(v['kind'])}</b> {html.escape(v['message'][:400])}</li>"
                     for v in r.get("violations", [])[:FIRST_VIOLATIONS])
        more = r.get("violation_count", 0) - min(FIRST_VIOLATIONS, len(r.get("violations", [])))
        if more > 0:
            vs += f"<li>… and {more} more in results.json</li>"
        anomaly = next((p["anomaly"] for p in r.get("partitions", []) if p.get("anomaly")), None)
        if anomaly:
            vs += f"<li><pre>{html.escape(anomaly[:3000])}</pre></li>"
        rows.append(f"<tr><td class=name>{html.escape(name)}</td><td>{verdict_badge(r.get('verdict'))}</td>"
                    f"<td>{html.escape(detail(name, r))}{f'<ul>{vs}</ul>' if vs else ''}</td></tr>")
    return f"<section><h2>Checkers</h2><table class=checkers>{''.join(rows)}</table></section>"


def _faults(results: dict[str, Any]) -> str:
    windows = sorted(results.get("nemesis_windows", []), key=lambda w: w[0])
    if not windows:
        return "<section><h2>Faults</h2><p>none</p></section>"
    said = _fault_details(results.get("test", {}).get("nemesis_log", []), windows)
    items = "".join(f"<li><span class=swatch style='background:{fault_colour(n)}'></span> <b>{i} {html.escape(n)}</b>"
                    f" {s / 1e9:.1f}–{e / 1e9:.1f} s <span class=said>{html.escape(d)}</span></li>"
                    for i, ((s, e, n), d) in enumerate(zip(windows, said), 1))
    return (f"<section><h2>Faults</h2><p>{len(windows)} window{'s' if len(windows) != 1 else ''}, numbered as on the plots and the timeline</p>"
            f"<ul class=faults>{items}</ul></section>")


def _fault_details(log: list[dict[str, Any]], windows: list[Any]) -> list[str]:
    """What the nemesis said at each window's start: the k-th start of a family is its k-th window."""
    starts: dict[str, list[dict[str, Any]]] = {}
    for entry in log:
        if entry.get("f") == "start":
            starts.setdefault(entry.get("fault", "?"), []).append(entry)
    seen: dict[str, int] = {}
    out = []
    for _, _, name in windows:
        k = seen.get(name, 0)
        seen[name] = k + 1
        entries = starts.get(name, [])
        out.append(describe_fault(entries[k]) if k < len(entries) else "")
    return out


def _ops(results: dict[str, Any]) -> str:
    ops = results.get("ops", {})
    if not ops:
        return ""
    rows = "".join(f"<tr><td>{html.escape(f)}</td><td>{c['ok']}</td><td class=fail>{c['fail']}</td>"
                   f"<td class=info>{c['info']}</td></tr>" for f, c in sorted(ops.items()))
    return ("<section><h2>Operations</h2><table class=ops><tr><th>operation</th><th>ok</th><th>fail</th>"
            f"<th>info</th></tr>{rows}</table><p class=said>fail: did not happen; info: outcome unknown "
            "(a 504 or a timeout)</p></section>")


def _pictures(run_dir: Path) -> str:
    timelines = sorted(run_dir.glob("timeline*.html"), key=lambda p: (len(p.name), p.name))
    links = " · ".join(f"<a href={p.name}>{p.name}</a>" for p in timelines)
    pages = f" ({len(timelines)} pages: {links})" if len(timelines) > 1 else ""
    parts = [f"<section><h2>Timeline and plots</h2><p class=big><a href=timeline.html>Open the timeline</a>{pages}:"
             f" every operation as a box, one column per client, grouped by region; hover a box for its details</p>"
             if timelines else "<section><h2>Plots</h2><p>no timeline or plots (run with --no-plots?)</p>"]
    if (run_dir / "plot.png").exists():
        parts.append("<p><a href=latency.png>latency.png</a> · <a href=rate.png>rate.png</a></p>"
                     "<img src=plot.png alt='latency and throughput over time, faults shaded'>")
    else:
        parts += [f"<img src={p} alt={p}>" for p in PICTURES[1:] if (run_dir / p).exists()]
    parts.append("</section>")
    return "".join(parts)


def _files(run_dir: Path) -> str:
    items = []
    for name in LISTED_FILES:
        p = run_dir / name
        if p.exists():
            items.append(f"<li><a href={name}>{name}</a> ({_size(p.stat().st_size)})</li>")
    logs = sorted((run_dir / "cluster" / "logs").glob("*")) if (run_dir / "cluster" / "logs").is_dir() else []
    if logs:
        links = " ".join(f"<a href='cluster/logs/{html.escape(p.name)}'>{html.escape(p.name)}</a>" for p in logs)
        items.append(f"<li>process logs: {links}</li>")
    return f"<section><h2>Files</h2><ul>{''.join(items)}</ul></section>"


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB"):
        if n < 1024 or unit == "MB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1f2328}
header{padding:12px 20px;background:#f6f8fa;border-bottom:1px solid #d0d7de}
header h1{display:inline;font-size:22px;margin-right:12px;word-break:break-all}
.sub{color:#57606a;margin-top:4px}
main{padding:0 20px 40px;max-width:1400px}
h2{font-size:17px;margin:18px 0 6px;border-bottom:1px solid #d8dee4}
.verdict{color:#fff;border-radius:4px;padding:1px 8px;font-weight:bold;font-size:13px;white-space:nowrap}
.checkers td{padding-bottom:5px}
.verdict.big{font-size:22px;padding:2px 14px;vertical-align:middle}
table{border-collapse:collapse}
td,th{padding:3px 10px 3px 0;vertical-align:top;text-align:left}
.kv th{color:#57606a;font-weight:normal}
.checkers td.name{font-weight:bold;font-family:ui-monospace,monospace}
.checkers ul{margin:2px 0;padding-left:18px;color:#cf222e}
.ops td{text-align:right;font-family:ui-monospace,monospace}.ops td:first-child{text-align:left}
td.fail{color:#bf3989}td.info{color:#bc4c00}
ul.faults{list-style:none;padding:0;margin:4px 0}
.said{color:#57606a;font-size:13px}
.cols{display:grid;grid-template-columns:minmax(0,3fr) minmax(0,2fr);gap:28px}
.sabotage{color:#cf222e;font-weight:bold;margin-top:4px}
.swatch{display:inline-block;width:12px;height:12px;border:1px solid #0003;vertical-align:middle}
.big{font-size:16px}
img{max-width:100%;border:1px solid #d0d7de;margin-top:6px}
pre{font-size:12px;color:#1f2328;white-space:pre-wrap}
"""

