"""Staleness of reads: how far behind the latest completed write a read answered.

A read is behind when some acknowledged write to its key had completed
before the read was invoked and is newer than what the read returned.
Reads whose consistency level is in `allowed` (by default "serializable",
etcd's name for a local, possibly stale read) are measured, not judged;
a stale read at any other level (e.g. "linearizable", the default) is a
``stale-read`` violation: an answer that is silently stale.

"Newer" uses revisions when the read and the writes carry them (a write's
acknowledged revision above the revision the read reflects), else values
(written values should be unique): a write is newer than the read's value
when it was invoked after the write of that value returned; when several
writes wrote the value, the most favourable to the read is taken, so this
is a lower bound.

Per read (``stats["stale_reads"]``): ``writes_behind`` (newer completed
writes), ``revisions_behind`` (latest completed revision minus the read's,
when known), ``time_behind_ns`` (read invocation minus the return of the
first newer write: how long the answer had already been outdated).
Summaries per consistency level are in ``stats["levels"]``.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any, Iterable

from ..history import INFO, OK, Event, Operation, as_operations
from ..models import cas_succeeded, freeze

from .result import Result, Violation

DEFAULT_LEVEL = "linearizable"


@dataclass(frozen=True)
class _W:
    call: float
    ret: float
    revision: int | None
    value: Any


def _written(op: Operation) -> Any:
    if op.f == "delete":
        return None
    return freeze(op.value[1] if op.f == "cas" else op.value)


def check(history: Iterable[Event] | Iterable[Operation], allowed: Iterable[str] = ("serializable",),
          read_f: str = "read") -> Result:
    allowed = set(allowed)
    ops = as_operations(history)
    res = Result("staleness")
    done: dict[Any, list[_W]] = {}     # acknowledged writes by key, by return time
    by_value: dict[Any, dict[Any, list[_W]]] = {}  # key -> value -> writes (ok or info)
    for op in ops:
        if op.f not in ("write", "cas", "delete") or op.type not in (OK, INFO):
            continue
        if op.f == "cas" and op.type == OK and not cas_succeeded(op.output):
            continue
        w = _W(op.call, op.ret, op.revision, _written(op))
        k = freeze(op.key)
        by_value.setdefault(k, {}).setdefault(w.value, []).append(w)
        if op.type == OK:
            done.setdefault(k, []).append(w)
    index = {}
    for k, ws in done.items():
        ws.sort(key=lambda w: w.ret)
        revs = [w.revision for w in ws]
        prefix_max, best = [], -math.inf
        for r in revs:
            best = max(best, r) if r is not None and best is not None else None
            prefix_max.append(best)
        index[k] = ([w.ret for w in ws], prefix_max)

    levels: dict[str, list[dict]] = {}
    for op in ops:
        if op.f != read_f or op.type != OK:
            continue
        level = op.consistency or DEFAULT_LEVEL
        k = freeze(op.key)
        rets, prefix_max = index.get(k, ([], []))
        n = bisect.bisect_left(rets, op.call)  # writes completed before the read began
        entry = {"op": op.id, "process": op.process, "key": op.key, "call": op.call, "level": level,
                 "writes_behind": 0, "revisions_behind": 0 if op.revision is not None else None,
                 "time_behind_ns": 0}
        levels.setdefault(level, []).append(entry)
        if n == 0:
            continue
        before = done[k][:n]
        latest = prefix_max[n - 1]
        if op.revision is not None and latest is not None:
            if latest <= op.revision:
                continue
            newer = [w for w in before if w.revision > op.revision]  # type: ignore[operator]
            entry["revisions_behind"] = latest - op.revision
        else:
            entry["revisions_behind"] = None
            value = freeze(op.output)
            sources = [w.ret for w in by_value.get(k, {}).get(value, []) if w.call < op.ret]
            if value is None:
                sources.append(-math.inf)  # the initial, absent value
            if not sources:
                entry["unexplained"] = True
                continue
            newer = [w for w in before if w.call > max(sources)]
        if not newer:
            continue
        entry["writes_behind"] = len(newer)
        entry["time_behind_ns"] = op.call - min(w.ret for w in newer)
        res.stats.setdefault("stale_reads", []).append(entry)
        if level not in allowed:
            res.violations.append(Violation(
                "stale-read", f"p{op.process} {level} read of {op.key!r} at {op.call} returned "
                f"{op.output!r}, {len(newer)} acknowledged write(s) behind", entry))
    res.stats["levels"] = {lv: _summary(es) for lv, es in sorted(levels.items())}
    res.stats.setdefault("stale_reads", [])
    return res


def _summary(entries: list[dict]) -> dict[str, Any]:
    stale = [e for e in entries if e["writes_behind"]]
    out: dict[str, Any] = {"reads": len(entries), "stale": len(stale),
                           "stale_fraction": len(stale) / len(entries) if entries else 0.0}
    for name in ("writes_behind", "revisions_behind", "time_behind_ns"):
        xs = sorted(e[name] for e in entries if e[name] is not None)
        if xs:
            out[name] = {"max": xs[-1], "mean": sum(xs) / len(xs),
                         "p50": xs[len(xs) // 2], "p99": xs[min(len(xs) - 1, int(len(xs) * 0.99))]}
    return out
