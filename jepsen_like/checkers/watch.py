"""Watches: ordered, unique, gap-free, and agreeing with each other and with the writes.

A watcher is one operation in the history::

    {"type": "invoke", "process": 7, "f": "watch", "key": "manifest", "value": {"from_revision": 12}, ...}
    {"type": "ok",     "process": 7, "f": "watch", "key": "manifest",
     "value": [[13, {"hash": "ab"}], [15, {"hash": "cd"}]], ...}

The invocation value is None (watch from now), the bare start revision,
or ``{"from_revision": r, "prefix": true}`` (``prefix``: every key that
starts with the op's key, like the API's watch of a world's params). The
completion (``ok`` when the client closed it, ``info`` when the watcher
died; its events are used either way) lists the events in delivery order,
each ``[revision, value]`` or ``{"key": k, "revision": r, "value": v,
"type": "put" | "delete"}`` (a deletion's value is None; ``key`` defaults
to the op's). Revisions are modification revisions, the ones the writes'
acknowledgements report; in one stream they never go back, and per key
they strictly increase.

Per key, the revisions seen by any watcher plus those of acknowledged
writes make one sequence. Violations:

- ``order``: a watcher's revisions step back, or repeat for one key.
- ``conflict``: two watchers report different values at one revision.
- ``mismatch``: a watcher's value at a revision differs from the value the
  acknowledged write at that revision wrote.
- ``gap``: a watcher skipped a revision of the sequence inside the span it
  covers (from its start revision, or first event, to its last event), so
  each watcher sees a contiguous run of the one sequence, and watchers that
  start together see prefixes of each other.
- ``phantom``: a value no write in the history (ok or info) wrote.
"""

from __future__ import annotations

from typing import Any, Iterable

from ..history import INFO, OK, Event, Operation, as_operations
from ..models import cas_succeeded, freeze
from .result import Result, Violation

WRITES = ("write", "cas", "delete")


def _events(op: Operation) -> list[tuple[Any, int, Any]]:
    """(key, revision, value) in delivery order."""
    raw = op.complete.value  # type: ignore[union-attr]
    out: list[tuple[Any, int, Any]] = []
    if not isinstance(raw, list):  # e.g. an info completion that echoes the invocation
        return out
    for e in raw:
        if isinstance(e, dict):
            value = None if e.get("type") == "delete" else e.get("value")
            out.append((freeze(e.get("key", op.key)), e.get("revision"), freeze(value)))
        else:
            out.append((freeze(op.key), e[0], freeze(e[1])))
    return out


def _start(value: Any) -> int | None:
    if isinstance(value, dict):
        return value.get("from_revision")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _watches(op: Operation, key: Any) -> bool:
    if isinstance(op.value, dict) and op.value.get("prefix"):
        return isinstance(key, str) and isinstance(op.key, str) and key.startswith(op.key)
    return key == freeze(op.key)


def _written(op: Operation) -> Any:
    if op.f == "delete":
        return None
    if op.f == "cas":
        return freeze(op.value[1])
    return freeze(op.value)


def check(history: Iterable[Event] | Iterable[Operation], f: str = "watch") -> Result:
    ops = as_operations(history)
    res = Result("watch")
    known: dict[Any, dict[int, Any]] = {}       # key -> revision -> value, acknowledged writes
    possible: dict[Any, set] = {}               # key -> any value written (ok or info)
    for op in ops:
        if op.f not in WRITES or op.type not in (OK, INFO):
            continue
        if op.f == "cas" and op.type == OK and not cas_succeeded(op.output):
            continue
        k = freeze(op.key)
        possible.setdefault(k, set()).add(_written(op))
        if op.type == OK and op.revision is not None:
            known.setdefault(k, {})[op.revision] = _written(op)

    watchers = [(w, _events(w)) for w in ops if w.f == f and w.complete is not None and w.type in (OK, INFO)]
    seen: dict[Any, dict[int, tuple[Any, Operation]]] = {}  # key -> revision -> (value, first watcher)
    for w, evs in watchers:
        last: dict[Any, int] = {}
        prev = None
        for k, rev, value in evs:
            if (prev is not None and rev < prev) or (k in last and rev <= last[k]):
                res.violations.append(Violation(
                    "order", f"watcher p{w.process}: {k!r}@{rev} after {k!r}@{last.get(k, prev)}",
                    {"watcher": w.id, "key": k, "revision": rev}))
            prev, last[k] = rev, rev
            prior = seen.setdefault(k, {}).get(rev)
            if prior is not None and prior[0] != value:
                res.violations.append(Violation(
                    "conflict", f"{k!r}@{rev}: watcher p{w.process} saw {value!r}, "
                    f"watcher p{prior[1].process} saw {prior[0]!r}",
                    {"key": k, "revision": rev, "watchers": (prior[1].id, w.id)}))
            seen[k].setdefault(rev, (value, w))
            want = known.get(k, {}).get(rev, value)
            if want != value:
                res.violations.append(Violation(
                    "mismatch", f"{k!r}@{rev}: watcher p{w.process} saw {value!r}, the write there wrote {want!r}",
                    {"key": k, "revision": rev, "watcher": w.id}))
            if k in possible and value not in possible[k]:
                res.violations.append(Violation(
                    "phantom", f"{k!r}@{rev}: watcher p{w.process} saw {value!r}, which nobody wrote",
                    {"key": k, "revision": rev, "watcher": w.id}))

    for w, evs in watchers:
        if not evs:
            continue
        start = _start(w.value)
        lo, hi = (evs[0][1] if start is None else start), evs[-1][1]
        got = {(k, rev) for k, rev, _ in evs}
        for k in set(seen) | set(known):
            if not _watches(w, k):
                continue
            missing = sorted(r for r in set(seen.get(k, {})) | set(known.get(k, {}))
                             if lo <= r <= hi and (k, r) not in got)
            if missing:
                res.violations.append(Violation(
                    "gap", f"watcher p{w.process} skipped {k!r} revisions {missing[:10]}"
                    + (" ..." if len(missing) > 10 else ""), {"watcher": w.id, "key": k, "missing": missing}))
    res.stats.update(watchers=len(watchers), events=sum(len(e) for _, e in watchers),
                     acknowledged_writes_with_revision=sum(len(v) for v in known.values()))
    return res
