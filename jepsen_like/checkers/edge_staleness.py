"""Edge answers: none older than the staleness it declared.

An edge labels each answer with ``stale_ms`` = s: the answer reflects every write the core
acknowledged before (now - s), measured on the edge's clock (edge/freshness.py). The edge
makes its answer at some moment after the read was invoked, so every write whose
acknowledgement the harness had received before ``call - s`` (harness clock; edges and
harness share one machine, so both clocks advance together) must be reflected.

Writes are monotonic registers, so "reflected" is a comparison:

- ``edge-read`` of an entity: field ``n`` read (absent: 0) must be at least every ``n`` that
  a ``core-write`` to the region the edge follows acknowledged before ``call - s``;
- ``edge-read-param``: the revision read (absent: 0) must be at least every revision a
  ``core-put`` of that key acknowledged before ``call - s`` (CP revisions are global).

Per read, ``behind_ms`` is how long before the read's invocation the first acknowledged
write it does not reflect completed (0 when it reflects them all): the read breaks its
label exactly when ``behind_ms > stale_ms``, a ``stale-answer`` naming the read, that write
and the times. A read without a label (a 404 carries none) is counted, not judged.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any, Iterable

from ..history import OK, Event, Operation, as_operations
from .result import Result, Violation


@dataclass(frozen=True)
class _Write:
    ret: int | float
    level: int   # n, or the revision
    op: int


def _writes(ops: list[Operation]) -> dict[tuple[str, Any, Any], list[_Write]]:
    """(kind, key, region or None) -> acknowledged writes by level."""
    out: dict[tuple[str, Any, Any], list[_Write]] = {}
    for op in ops:
        if op.type != OK:
            continue
        if op.f == "core-write":
            out.setdefault(("entity", op.key, op.get("region")), []).append(_Write(op.ret, int(op.value), op.id))
        elif op.f == "core-put" and op.revision is not None:
            out.setdefault(("param", op.key, None), []).append(_Write(op.ret, int(op.revision), op.id))
    for ws in out.values():
        ws.sort(key=lambda w: w.level)
    return out


def check(history: Iterable[Event] | Iterable[Operation]) -> Result:
    ops = as_operations(history)
    res = Result("edge-staleness")
    writes = _writes(ops)
    judged: list[dict[str, Any]] = []
    unlabelled = 0
    for op in ops:
        if op.type != OK or op.f not in ("edge-read", "edge-read-param") or not isinstance(op.output, dict):
            continue
        stale_ms = op.output.get("stale_ms")
        if stale_ms is None:
            unlabelled += 1
            continue
        if op.f == "edge-read":
            kind, got = ("entity", op.key, op.get("follows")), op.output.get("n")
        else:
            kind, got = ("param", op.key, None), op.output.get("revision")
        ws = writes.get(kind, [])
        newer = ws[bisect.bisect_right([w.level for w in ws], int(got or 0)):]  # writes the read does not reflect
        first = min(newer, key=lambda w: w.ret, default=None)
        behind_ms = max(0.0, (op.call - first.ret) / 1e6) if first is not None else 0.0
        entry = {"op": op.id, "edge": op.get("edge"), "key": op.key, "read": got, "stale_ms": stale_ms,
                 "behind_ms": round(behind_ms, 3)}
        judged.append(entry)
        if first is not None and behind_ms > stale_ms:
            res.violations.append(Violation(
                "stale-answer", f"{op.get('edge')} read of {op.key!r} invoked at {op.call / 1e9:.3f}s declared "
                f"stale_ms={stale_ms} and returned {got!r}, but {first.level} (op {first.op}) was acknowledged "
                f"at {first.ret / 1e9:.3f}s, {behind_ms - stale_ms:.1f} ms before the declared bound",
                {**entry, "read_call_ns": op.call, "write_op": first.op, "write_ret_ns": first.ret,
                 "write": first.level}))
    res.stats = {"reads": len(judged), "unlabelled": unlabelled,
                 "stale_ms": _summary([e["stale_ms"] for e in judged]),
                 "behind_ms": _summary([e["behind_ms"] for e in judged]),
                 "least_margin_ms": min((e["stale_ms"] - e["behind_ms"] for e in judged), default=None)}
    return res


def _summary(xs: list[float]) -> dict[str, float] | None:
    if not xs:
        return None
    xs = sorted(xs)
    return {"max": xs[-1], "p50": xs[len(xs) // 2], "p99": xs[min(len(xs) - 1, int(len(xs) * 0.99))]}
