"""Edges after the heal: each one's view equals the core's within `CONVERGE_S`.

Input: the edge workload's final reads (workloads/edge_final.py), made again from the heal
until every edge agreed or the bound passed::

    {"bound_s": 30.0, "healed_at_ns": ..., "agreed_at_ns": ... | None, "read_at_ns": ...,
     "core":  {"r1": {"entities": {entity: {field: [value, hlc, node]}}, "params": {key: [value, revision]}}},
     "edges": {"edge-1": {"follows": "r1", "view": <the same shape> | None}}}

Violations: ``diverged`` (an edge's last view differs from its region's: entities or fields
missing, extra, or with another value or stamp, params likewise), ``unread`` (the edge or its
region did not answer), ``late`` (they agreed, but later than the bound after the heal).
"""

from __future__ import annotations

from typing import Any, Mapping

from .result import Result, Violation

# How long after the heal (every process back and healthy) an edge may take to show the core's
# state: its streams reconnect within 2 s of backoff, and a relisting of a few hundred entities
# takes well under a second; 30 s leaves room for a busy 2-core machine.
CONVERGE_S = 30.0


def _differences(edge: Mapping[str, Any], core: Mapping[str, Any], limit: int = 5) -> list[str]:
    out: list[str] = []
    for part, word in (("entities", "entity"), ("params", "param")):
        mine, theirs = edge.get(part) or {}, core.get(part) or {}
        for key in sorted(set(mine) | set(theirs)):
            if mine.get(key) != theirs.get(key):
                out.append(f"{word} {key!r}: edge {mine.get(key, 'absent')!r}, core {theirs.get(key, 'absent')!r}")
    return out[:limit] + ([f"... {len(out) - limit} more"] if len(out) > limit else [])


def check(final: Mapping[str, Any]) -> Result:
    res = Result("edge-convergence")
    bound_s = float(final.get("bound_s", CONVERGE_S))
    healed, agreed = final.get("healed_at_ns"), final.get("agreed_at_ns")
    core = final.get("core") or {}
    edges = final.get("edges") or {}
    res.stats = {"bound_s": bound_s, "edges": len(edges), "final_reads": final.get("reads"),
                 "converged_after_s": None if agreed is None or healed is None else round((agreed - healed) / 1e9, 3)}
    for name, e in sorted(edges.items()):
        region, view = e.get("follows"), e.get("view")
        if view is None or core.get(region) is None:
            who = name if view is None else f"region {region}"
            res.violations.append(Violation("unread", f"{who} did not answer the final read",
                                            {"edge": name, "region": region}))
            continue
        diff = _differences(view, core[region])
        if diff:
            res.violations.append(Violation(
                "diverged", f"{name} still differs from {region} {bound_s:.0f} s after the heal: " + "; ".join(diff),
                {"edge": name, "region": region, "differences": diff}))
    if not res.violations and agreed is not None and healed is not None and agreed - healed > bound_s * 1e9:
        res.violations.append(Violation("late", f"the edges agreed with the core {(agreed - healed) / 1e9:.1f} s "
                                        f"after the heal, past the bound of {bound_s:.0f} s", dict(res.stats)))
    if not edges:
        res.stats["note"] = "no edges were read"
    return res
