"""Observations an edge acknowledged: each present, once, in every region at the end.

Every ``edge-post`` carries one observation with a unique event id and an entity of its
own (``edge-obs-<k>``, field ``x``), so an entity's per-source count is the number of times
the core counted that event. Per event id, over all its posts (replays to any edge included):
acknowledged when any post of it got a 202, unknown when none did but one is ``info``, else
failed (never stored).

Input besides the history: the final reads (workloads/edge_final.py)::

    {"regions": {"r1": {"edge-obs-3": {"total": 1, "x": 3, "event_id": "edge-obs-ev-3"}}},
     "unread": [], "outbox": {"edge-1": {"pending": 0, "forwarded": 12, ...}}}

Violations: ``lost`` (an acknowledged event missing from a region), ``duplicated`` (counted
more than once), ``corrupted`` (another value, or another event's), ``phantom`` (present
though every post of it failed), ``unread`` (a region did not answer).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from ..history import FAIL, INFO, OK, Event, Operation, as_operations
from .result import Result, Violation


def acknowledged(history: Iterable[Event] | Iterable[Operation]) -> dict[str, dict[str, Any]]:
    """event id -> the observation, for each event some edge answered 202 for."""
    return {eid: ev for eid, (ev, status) in _events(as_operations(history)).items() if status == OK}


def _events(ops: list[Operation]) -> dict[str, tuple[dict[str, Any], str]]:
    rank = {OK: 2, INFO: 1, FAIL: 0}
    out: dict[str, tuple[dict[str, Any], str]] = {}
    for op in ops:
        if op.f != "edge-post" or not isinstance(op.value, dict):
            continue
        eid = op.value["id"]
        cur = out.get(eid)
        if cur is None or rank[op.type] > rank[cur[1]]:
            out[eid] = (op.value, op.type)
    return out


def check(history: Iterable[Event] | Iterable[Operation], final: Mapping[str, Any]) -> Result:
    res = Result("edge-delivery")
    events = _events(as_operations(history))
    regions: Mapping[str, Mapping[str, Any]] = final.get("regions") or {}
    for region in final.get("unread") or []:
        res.violations.append(Violation("unread", f"region {region} did not answer the final read", {"region": region}))
    for eid, (ev, status) in sorted(events.items()):
        for region, state in sorted(regions.items()):
            got = state.get(ev["entity"])
            where = {"event": eid, "entity": ev["entity"], "region": region, "status": status}
            if got is None:
                if status == OK:
                    res.violations.append(Violation("lost", f"{region}: acknowledged {eid} ({ev['entity']}) is missing",
                                                    where))
                continue
            if status == FAIL:
                res.violations.append(Violation("phantom", f"{region}: {eid} is present but no post of it was stored",
                                                where))
            if got.get("total") != 1:
                res.violations.append(Violation("duplicated", f"{region}: {eid} counted {got.get('total')} times",
                                                {**where, "total": got.get("total")}))
            if got.get("x") != ev["x"] or got.get("event_id") not in (None, eid):
                res.violations.append(Violation("corrupted", f"{region}: {ev['entity']} holds x={got.get('x')!r} "
                                                f"from {got.get('event_id')!r}, {eid} wrote {ev['x']!r}", where))
    counts = {s: sum(1 for _, st in events.values() if st == s) for s in (OK, INFO, FAIL)}
    res.stats = {"events": len(events), "acknowledged": counts[OK], "unknown": counts[INFO], "failed": counts[FAIL],
                 "regions": sorted(regions), "outbox": final.get("outbox")}
    return res
