"""bench/edge.py's tables and summary, from the figures its run returns."""

from __future__ import annotations

import argparse
import statistics
from typing import Any


def show(r: dict[str, Any], a: argparse.Namespace) -> list[str]:
    """Print the tables; return the summary lines."""
    f, summary = r["fanout"], []
    print(f"\nfan-out: {r['edges']} edges (asked for {a.edges}; started in {r['start_s']:.0f} s), "
          f"{a.changes} physics PUTs at r1 {a.spacing_s} s apart, edge probe {a.probe_s} s")
    print("each change looked at once on every edge, at one delay after the PUT's ack:")
    print(f"{'look at':>10}{'pairs':>8}{'held the change':>17}")
    for d, (h, n) in f["held"].items():
        print(f"{float(d):>7.0f} ms{n:>8}{h:>8} ({h / n:6.1%})")
    print(f"{'from the PUT ack, ms':52}{'n':>6}{'p50':>9}{'p99':>9}{'max':>9}{'mean':>9}")
    for label, s in (("each edge applied it (its own record: exact)", f["applied_ms"]),
                     ("  the same, from the PUT's sending", f["applied_from_sent_ms"]),
                     ("every pair held the change by (an upper bound)", f["arrived_by_ms"]),
                     (f"  of which late at their look, then polled ({a.poll_ms:g} ms)", f["late_ms"]),
                     ("a look's round trip", f["look_rtt_ms"]),
                     ("raw floor: aetcd watch on the physics key", f["raw_watch_ms"]),
                     ("(the PUT's own round trip at r1)", f["put_ack_ms"])):
        print(f"{label:52}{s['n']:>6}{s['p50']:>9.1f}{s['p99']:>9.1f}{s['max']:>9.1f}{s['mean']:>9.1f}")
    if f["never_arrived"]:
        print(f"{f['never_arrived']} (edge, change) pairs never showed the change within 30 s")
    by, (h, n), rtt = f["arrived_by_ms"], f["held"][str(a.target_ms)], f["look_rtt_ms"]
    exact = f["applied_ms"]
    summary.append(f"fan-out to {r['edges']} edges by the edges' own records: p50 {exact['p50']:.1f}, p99 "
                   f"{exact['p99']:.1f}, max {exact['max']:.1f} ms after the PUT's ack over {exact['n']} pairs "
                   f"(target p99 <= {a.target_ms:g} ms: {'met' if exact['p99'] <= a.target_ms else 'NOT met'})")
    proven = by["p99"] <= a.target_ms and not f["never_arrived"]
    # A look's answer shows the edge as it was when it handled the request, after the look was
    # sent; the bound is the answer's return or the edge's last word from the core, both later.
    summary.append(f"fan-out to {r['edges']} edges, target p99 <= {a.target_ms:g} ms: {h / n:.1%} of {n} pairs "
                   f"held the change when asked {a.target_ms:g} ms after the ack "
                   f"({'met' if h >= 0.99 * n else 'NOT met'} at the look; an answer came back p50 "
                   f"{rtt['p50']:.0f} ms, p99 {rtt['p99']:.0f} ms after it was sent); upper bounds over all "
                   f"{by['n']} pairs: p50 {by['p50']:.1f}, p99 {by['p99']:.1f}, max {by['max']:.1f} ms "
                   f"({'met' if proven else 'not proven'} by them); raw etcd watch p99 "
                   f"{f['raw_watch_ms']['p99']:.1f} ms")
    print(f"\nmemory per edge, MB{'':28}{'n':>4}{'RSS mean':>10}{'RSS max':>9}{'PSS mean':>10}{'PSS max':>9}"
          f"{'USS mean':>10}{'USS max':>9}")
    for label, ms in (("fan-out edges (no model, no torch)", r["memory_no_model"]),
                      ("predict edge (model loaded)", r["memory_model"])):
        cols = "".join(f"{statistics.fmean(m[k] for m in ms):>10.1f}{max(m[k] for m in ms):>9.1f}"
                       for k in ("rss", "pss", "uss"))
        print(f"{label:48}{len(ms):>4}{cols}")
    for workload, by_clients in r["predict"].items():
        for c, rows in by_clients.items():
            summary.append(_predict_table(workload, c, rows, a))
    mem = r["memory_no_model"]
    summary.append(f"memory: an edge without a model {statistics.fmean(m['pss'] for m in mem):.0f} MB PSS "
                   f"({statistics.fmean(m['rss'] for m in mem):.0f} MB RSS); with the model "
                   f"{r['memory_model'][0]['pss']:.0f} MB PSS ({r['memory_model'][0]['rss']:.0f} MB RSS)")
    return summary


WORKLOADS = {"new": "every query new (the model runs for each)",
             "again": "one query asked again (answered from the predict memo)"}


def _predict_table(workload: str, c: str, rows: dict[str, Any], a: argparse.Namespace) -> str:
    """Print one workload's predict table at `c` clients; return its summary line."""
    print(f"\npredict, {WORKLOADS[workload]}, {a.bodies} bodies, horizon {a.horizon}, {c} client(s) "
          f"({'sequential' if c == '1' else 'concurrent'}; plain torch: {c} quer{'y' if c == '1' else 'ies'}"
          f" a forward call), {a.rounds} alternating blocks")
    print(f"{'target':14}{'n':>6}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}{'failed':>8}")
    for name, s in rows.items():
        print(f"{name:14}{s['n']:>6}{s['p50']:>9.2f}{s['p99']:>9.2f}{s['mean']:>9.2f}{s['failed']:>8}")
    core, edge, floor = rows["core r1"], rows["edge"], rows["plain torch"]
    ratios = {k: edge[k] / core[k] for k in ("p50", "p99", "mean")}
    print("edge / core: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items())
          + f"; plain torch p50 is {floor['p50'] / core['p50']:.2f}x of the core's")
    print(f"the edge's answers were at most {edge['stale_ms_max']} ms stale by their labels (asked to accept "
          "any age; by default an edge refuses past 5000 ms)")
    return (f"predict, {workload}, {c} client(s): edge/core p50 {ratios['p50']:.2f}x (target <= 0.5x: "
            f"{'met' if ratios['p50'] <= 0.5 else 'NOT met'}); plain torch alone is "
            f"{floor['p50'] / core['p50']:.2f}x of the core's p50")
