"""AP tier: a write that causally followed another must never lose to it.

Last-writer-wins is ordered by the HLC, and a node's HLC moves past every
stamp it reads. So when a client reads field ``x`` of an entity on a node
(seeing write A), then writes ``x`` on the same node (B), B orders after A,
whatever that node's wall clock says. The observations workload records
this in B's invocation as ``"follows": {"x": [A's event id, A's hlc]}`` and
``"read_on": <region>``.

Violations:

- ``lost-to-predecessor``: a read on B's node after B was acknowledged, or
  the final state of B's region, shows for ``x`` the write B followed, with
  the stamp B saw or an older one. This is what ordering by a skewed wall
  clock instead of the HLC produces. (Only the direct predecessor: a chain
  through a replay accepted on another node promises nothing.)
- ``regressed``: a read on B's node after B was acknowledged shows ``x``
  stamped below B: the node's register went back (or lost B).
- ``stamp-went-back``: a node stamped a post at or below one it had already
  acknowledged before this post was sent. Events on one node are ordered
  (happened-before includes a process's own order), also across a restart
  of that node or a step back of its wall clock; otherwise a client's blind
  second write could lose to its first.

Only posts acknowledged as ``accepted`` on the node of their read count;
a post answered "duplicate" stored nothing new.
"""

from __future__ import annotations

import bisect
from typing import Any, Iterable, Mapping

from ..history import OK, Event, Operation, as_operations
from .result import Result, Violation

MAX_VIOLATIONS = 200
READS_AFTER = 5  # reads checked after each write: the first ones tell, later ones repeat them


def check(history: Iterable[Event] | Iterable[Operation],
          regions: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
          post_f: str = "post", read_f: str = "read-entity") -> Result:
    ops = as_operations(history)
    res = Result("causal")
    reads: dict[tuple[str, str], list[Operation]] = {}
    for op in ops:
        if op.f == read_f and op.type == OK and isinstance(op.output, dict):
            reads.setdefault((op.get("region"), op.key), []).append(op)
    calls: dict[tuple[str, str], list[float]] = {}
    for k, rs in reads.items():
        rs.sort(key=lambda o: o.call)
        calls[k] = [o.call for o in rs]

    writes = [op for op in ops if op.f == post_f and op.type == OK and isinstance(op.output, dict)
              and op.output.get("status") == "accepted" and isinstance(op.value, dict)]
    pairs = checked = 0
    for b in writes:
        ev = b.value
        stamp = (b.output.get("hlc"), b.get("node"))
        names = list(ev.get("fields", {}))
        # Only the node that served the read has seen what was read: a replay of the
        # same event accepted elsewhere carries no ordering promise.
        follows = (ev.get("follows") or {}) if ev.get("read_on") == b.get("region") else {}
        ps = {n: dict([follows[n]]) if n in follows else {} for n in names}
        pairs += sum(1 for n in names if ps[n])
        k = (b.get("region"), ev["entity"])
        rs = reads.get(k, [])
        i = bisect.bisect_right(calls.get(k, []), b.ret)
        for r in rs[i:i + READS_AFTER]:
            checked += 1
            for name in names:
                shown = (r.output.get("fields") or {}).get(name)
                where = f"read by p{r.process} on {r.get('region')}"
                _judge(res, ev, name, shown, ps[name], stamp, where, {"read": r.id, "post": b.id})
        # B's own region surely applied B; elsewhere a missing B is the convergence checker's to report.
        for region, entities in (regions or {}).items():
            if region != b.get("region"):
                continue
            shown = ((entities.get(ev["entity"]) or {}).get("fields") or {})
            for name in names:
                if ps[name]:
                    _judge(res, ev, name, shown.get(name), ps[name], None, f"final state of {region}",
                           {"region": region, "post": b.id})
    _node_order(res, writes)
    res.stats.update(causal_writes=pairs, reads_after_writes=checked, accepted_posts=len(writes))
    if len(res.violations) > MAX_VIOLATIONS:
        res.stats["violations_total"] = len(res.violations)
        del res.violations[MAX_VIOLATIONS:]
    return res


def _node_order(res: Result, writes: list[Operation]) -> None:
    """Per node, sweep posts in invocation order against the highest stamp of
    those acknowledged before each was invoked."""
    by_node: dict[Any, list[Operation]] = {}
    for w in writes:
        if w.output.get("hlc"):
            by_node.setdefault(w.get("node"), []).append(w)
    for node, ws in by_node.items():
        done = sorted(ws, key=lambda o: o.ret)
        j, top = 0, None
        for b in sorted(ws, key=lambda o: o.call):
            while j < len(done) and done[j].ret < b.call:
                if top is None or done[j].output["hlc"] > top.output["hlc"]:
                    top = done[j]
                j += 1
            if top is not None and b.output["hlc"] <= top.output["hlc"]:
                res.violations.append(Violation(
                    "stamp-went-back", f"{node} stamped {b.value['id']} @ {b.output['hlc']}, not above "
                    f"{top.value['id']} @ {top.output['hlc']} which it acknowledged before",
                    {"post": b.id, "earlier": top.id, "node": node}))


def _judge(res: Result, ev: Mapping[str, Any], name: str, shown: Any, preds: dict[str, str],
           stamp: tuple[Any, Any] | None, where: str, details: dict[str, Any]) -> None:
    if not isinstance(shown, Mapping):
        if stamp is not None:
            res.violations.append(Violation(
                "regressed", f"{where}: {ev['entity']!r}.{name} is missing after {ev['id']} was acknowledged",
                {**details, "event": ev["id"]}))
        return
    sid, shlc, snode = shown.get("event_id"), shown.get("hlc"), shown.get("node")
    if sid in preds and shlc is not None and shlc <= preds[sid]:
        res.violations.append(Violation(
            "lost-to-predecessor", f"{where}: {ev['entity']!r}.{name} = {shown.get('value')!r} from {sid} "
            f"@ {shlc}, which {ev['id']} (written after reading it) should have overwritten",
            {**details, "event": ev["id"], "winner": sid}))
    elif stamp is not None and stamp[0] is not None and shlc is not None and (shlc, snode or "") < (
            stamp[0], stamp[1] or ""):
        res.violations.append(Violation(
            "regressed", f"{where}: {ev['entity']!r}.{name} stamped {shlc} ({snode}) is older than "
            f"acknowledged {ev['id']} @ {stamp[0]} ({stamp[1]})", {**details, "event": ev["id"], "winner": sid}))
