"""AP tier: after heal, do all regions agree, and is every acknowledged observation there?

Input, plain JSON-able data (the harness builds it from its final reads and
from the history's ``post`` operations, see `observations_from_history`):

``regions``: ``{region: {entity: state}}``, one final read per region, where
a merged entity state is::

    {"fields":   {"x": {"value": 1.5, "hlc": "...", "node": "n1", "event_id": "e-17"}, ...},
     "counters": {"hits": 3, ...},
     "tags":     ["red", ...]}

A field may be a bare value when the read does not expose its stamp;
``hlc`` is anything that orders (a sortable string, a list), ``node`` the
tie-break; ``node`` and ``event_id`` are optional; so is every part.

``events``: the observations the workload posted, one per attempt::

    {"id": "e-17", "entity": "ball-1", "status": "ok" | "info",
     "fields": {"x": 1.5}, "hlc": "...", "node": "n1",
     "counters": {"hits": 1}, "tags": ["red"]}

(``event_id`` is accepted for ``id``.) ``status`` is ``ok`` when acknowledged and ``info`` when the outcome is
unknown (timeout, connection lost); failed posts are left out. ``hlc`` is
the stamp the acknowledgement reported, when known. Posts are deduplicated
by ``id``: a retried event that was acknowledged once counts once, as ok.

Checks:

- ``diverged``: every region returns the same merged state for every entity.
- ``lost-write``: an acknowledged field write is absent, or the field holds
  a value stamped older than it (HLC, then node), or the same stamp and
  another value. Without stamps only presence can be checked.
- ``phantom``: a field value, or tag, that no observation (ok or info)
  wrote (with ``event_id``: that event did not write that value).
- ``lost-tag``: an acknowledged tag is missing (add-wins: adds only).
- ``counter``: a counter is below the sum of its acknowledged increments or
  beyond what the unknown ones could add (for unit increments the range
  check is exact; for other deltas it is a necessary condition).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from ..history import INFO, OK, Event, Operation, as_operations
from ..models import freeze
from .result import Result, Violation


def observations_from_history(history: Iterable[Event] | Iterable[Operation], f: str = "post") -> list[dict]:
    """Events in the format above from ``post`` operations (value: the observation).

    The entity is the operation's key unless the value names one; an ``hlc``
    in the acknowledgement (completion value or field) is carried over.
    """
    out = []
    for op in as_operations(history):
        if op.f != f or op.type not in (OK, INFO) or not isinstance(op.value, dict):
            continue
        ev = dict(op.value)
        ev.setdefault("entity", op.key)
        ev["status"] = op.type
        hlc = op.output.get("hlc") if op.type == OK and isinstance(op.output, dict) else None
        hlc = hlc if hlc is not None else op.get("hlc")
        if hlc is not None:
            ev["hlc"] = hlc
        out.append(ev)
    return out


def check(regions: Mapping[str, Mapping[str, Mapping[str, Any]]], events: Iterable[Mapping[str, Any]]) -> Result:
    res = Result("convergence")
    obs = _dedup(events)
    by_entity: dict[Any, list[dict]] = {}
    for ev in obs.values():
        by_entity.setdefault(ev["entity"], []).append(ev)
    acked = [e for e in obs.values() if e["status"] == OK]
    res.stats.update(regions=len(regions), acknowledged=len(acked), unknown=len(obs) - len(acked),
                     entities=len({e for r in regions.values() for e in r} | set(by_entity)))

    _check_agreement(regions, res)
    for region, entities in regions.items():
        for entity in set(entities) | set(by_entity):
            state = entities.get(entity)
            evs = by_entity.get(entity, [])
            if state is None:
                if any(e["status"] == OK for e in evs):
                    res.violations.append(Violation(
                        "lost-write", f"{region}: entity {entity!r} missing, {len(evs)} acknowledged observations",
                        {"region": region, "entity": entity}))
                continue
            _check_fields(region, entity, state.get("fields") or {}, evs, res)
            _check_tags(region, entity, state.get("tags") or [], evs, res)
            _check_counters(region, entity, state.get("counters") or {}, evs, res)
    return res


def _dedup(events: Iterable[Mapping[str, Any]]) -> dict[Any, dict]:
    obs: dict[Any, dict] = {}
    for ev in events:
        if ev.get("status", OK) not in (OK, INFO):
            continue
        eid = ev.get("id", ev.get("event_id"))
        cur = obs.get(eid)
        if cur is None:
            obs[eid] = dict(ev, id=eid, status=ev.get("status", OK))
        elif ev.get("status", OK) == OK:
            cur["status"] = OK
    return obs


def _normal(state: Mapping[str, Any]) -> Any:
    fields = {k: _field(v) for k, v in (state.get("fields") or {}).items()}
    counters = {k: v for k, v in (state.get("counters") or {}).items() if v != 0}
    return freeze({"fields": fields, "counters": counters, "tags": sorted(map(str, state.get("tags") or []))})


def _field(v: Any) -> tuple[Any, Any, Any, Any]:
    """(value, hlc, node, event id) from either field shape; unknown parts are None."""
    if isinstance(v, Mapping) and "value" in v:
        return freeze(v["value"]), freeze(v.get("hlc")), v.get("node"), v.get("event_id")
    return freeze(v), None, None, None


def _older(a: tuple[Any, Any], b: tuple[Any, Any]) -> bool | None:
    """Is stamp a = (hlc, node) older than b? None when it cannot be told."""
    if a[0] is None or b[0] is None:
        return None
    if a[0] != b[0]:
        return a[0] < b[0]
    if a[1] is None or b[1] is None or a[1] == b[1]:
        return None
    return a[1] < b[1]


def _check_agreement(regions: Mapping[str, Mapping[str, Mapping]], res: Result) -> None:
    names = sorted(regions)
    for entity in sorted({e for r in regions.values() for e in r}, key=str):
        groups: dict[Any, list[str]] = {}
        for name in names:
            st = regions[name].get(entity)
            groups.setdefault(None if st is None else _normal(st), []).append(name)
        if len(groups) > 1:
            res.violations.append(Violation(
                "diverged", f"entity {entity!r}: regions disagree: {sorted(groups.values())}",
                {"entity": entity, "groups": sorted(groups.values())}))


def _check_fields(region: str, entity: Any, fields: Mapping, evs: list[dict], res: Result) -> None:
    writes: dict[str, list[tuple[Any, tuple[Any, Any], str, Any]]] = {}  # value, stamp, status, id
    for ev in evs:
        for name, value in (ev.get("fields") or {}).items():
            writes.setdefault(name, []).append(
                (freeze(value), (freeze(ev.get("hlc")), ev.get("node")), ev["status"], ev["id"]))
    for name, ws in writes.items():
        got = fields.get(name)
        for value, stamp, status, eid in ws:
            if status != OK:
                continue
            if got is None:
                res.violations.append(Violation(
                    "lost-write", f"{region}: {entity!r}.{name} missing; acknowledged {value!r} ({eid})",
                    {"region": region, "entity": entity, "field": name, "event": eid}))
                break
            cur, hlc, node, cur_id = _field(got)
            # The same stamp names the same write only when the node (or the
            # event id) says so; other nodes may share an HLC.
            same_write = hlc is not None and hlc == stamp[0] and (
                (node is not None and node == stamp[1]) or cur_id == eid)
            if _older((hlc, node), stamp) or (same_write and cur != value):
                res.violations.append(Violation(
                    "lost-write", f"{region}: {entity!r}.{name} = {cur!r} @ {hlc!r} hides acknowledged "
                    f"{value!r} @ {stamp[0]!r} ({eid})", {"region": region, "entity": entity, "field": name,
                                                          "event": eid}))
    for name, got in fields.items():
        cur, hlc, node, cur_id = _field(got)
        ws = writes.get(name, [])
        if cur_id is not None:
            ok = any(eid == cur_id and v == cur for v, _, _, eid in ws)
        else:
            ok = any(v == cur and (st[0] is None or hlc is None or st[0] == hlc) for v, st, _, _ in ws)
        if not ok:
            res.violations.append(Violation(
                "phantom", f"{region}: {entity!r}.{name} = {cur!r} was never written"
                + ("" if cur_id is None else f" by {cur_id!r}"),
                {"region": region, "entity": entity, "field": name}))


def _check_tags(region: str, entity: Any, tags: Iterable, evs: list[dict], res: Result) -> None:
    have = {freeze(t) for t in tags}
    sent: dict[Any, str] = {}
    for ev in evs:
        for t in ev.get("tags") or []:
            if ev["status"] == OK:
                sent[freeze(t)] = OK
            else:
                sent.setdefault(freeze(t), INFO)
    for t, status in sent.items():
        if status == OK and t not in have:
            res.violations.append(Violation("lost-tag", f"{region}: {entity!r} lacks acknowledged tag {t!r}",
                                            {"region": region, "entity": entity, "tag": t}))
    for t in have - set(sent):
        res.violations.append(Violation("phantom", f"{region}: {entity!r} has tag {t!r} nobody added",
                                        {"region": region, "entity": entity, "tag": t}))


def _check_counters(region: str, entity: Any, counters: Mapping, evs: list[dict], res: Result) -> None:
    bounds: dict[str, list[int]] = {}  # name -> [acknowledged sum, min extra, max extra]
    for ev in evs:
        for name, delta in (ev.get("counters") or {}).items():
            b = bounds.setdefault(name, [0, 0, 0])
            if ev["status"] == OK:
                b[0] += delta
            elif delta < 0:
                b[1] += delta
            else:
                b[2] += delta
    for name in set(bounds) | set(counters):
        acked, lo_extra, hi_extra = bounds.get(name, [0, 0, 0])
        got = counters.get(name, 0)
        lo, hi = acked + lo_extra, acked + hi_extra
        if not lo <= got <= hi:
            res.violations.append(Violation(
                "counter", f"{region}: {entity!r}.{name} = {got}, expected {lo}..{hi} "
                f"(acknowledged {acked}, unknown {lo_extra:+}/{hi_extra:+})",
                {"region": region, "entity": entity, "counter": name, "value": got, "min": lo, "max": hi}))
