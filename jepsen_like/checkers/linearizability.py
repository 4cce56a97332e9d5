"""Linearizability by Wing-Gong-Lowe search, as Porcupine does it.

Each operation becomes a call entry and a return entry in one list sorted
by time (calls before returns at equal times, so touching intervals count
as concurrent). The search walks the list: a call entry whose operation the
model accepts in the current state is linearized ("lifted" out of the list
with its return); reaching a return entry means the operation that returns
there was never linearized, so the last choice is undone ("unlifted") and
the next candidate tried. Lowe's refinement memoises (linearized set,
state): reaching the same set of linearized operations with the same state
again cannot succeed where it failed before (extended here with two
dominance rules, see `_search`). Sets are Python ints used as
bitsets; the list is a circular doubly linked list in two int arrays, so
lift/unlift are four stores and nothing recurses.

Operations with outcome `info` return at +infinity: they may linearize at
any point after their call, or effectively never (at the end). `fail`
operations are dropped.

For an invalid sub-history the report names the smallest failing prefix:
cut the history right after its k-th completion (operations still running
at the cut become pending, outcome unknown) and find the least k that is
already non-linearizable. Linearizability is prefix-closed, so k is found by
search (galloping from where the failed search got furthest, then
bisection), and the k-th completion is the one that made it impossible.
"""

from __future__ import annotations

import bisect
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..history import FAIL, UNKNOWN, Event, Operation, as_operations
from ..models import KV, Model

VALID, INVALID, UNKNOWN_VERDICT = "valid", "invalid", "unknown"
_CHECK_EVERY = 1023  # iterations between clock reads (mask)


@dataclass
class Anomaly:
    """The first completion no linearization can explain, and its context."""

    key: Any
    op: Operation                 # the operation whose completion broke it
    prefix_ops: int               # operations in the smallest failing prefix
    minimal: bool                 # False when the time limit cut the narrowing short
    concurrent: list[Operation]   # operations overlapping `op`
    preceding: list[Operation]    # the last operations completed before `op` began
    linearized: list[tuple[Operation, str]]  # tail of the longest partial linearization, with states
    text: str = ""

    def describe(self) -> str:
        return self.text


@dataclass
class PartitionResult:
    key: Any
    verdict: str
    ops: int
    seconds: float
    anomaly: Anomaly | None = None


@dataclass
class LinearizabilityResult:
    verdict: str
    ops: int
    seconds: float
    partitions: list[PartitionResult] = field(default_factory=list)

    @property
    def valid(self) -> bool | None:
        return {VALID: True, INVALID: False}.get(self.verdict)

    @property
    def anomalies(self) -> list[Anomaly]:
        return [p.anomaly for p in self.partitions if p.anomaly is not None]

    def describe(self) -> str:
        bad = [p for p in self.partitions if p.verdict == INVALID]
        unk = [p for p in self.partitions if p.verdict == UNKNOWN_VERDICT]
        lines = [f"linearizability: {self.verdict} ({self.ops} ops, {len(self.partitions)} partitions, "
                 f"{self.seconds:.2f}s)"]
        if unk:
            lines.append(f"  unknown (time limit) for keys: {[p.key for p in unk]}")
        for p in bad:
            lines.append(p.anomaly.describe() if p.anomaly else f"  key {p.key!r}: invalid")
        return "\n".join(lines)


def check(history: Iterable[Event] | Iterable[Operation], model: Model | None = None,
          time_limit: float | None = None, explain: bool = True) -> LinearizabilityResult:
    """Check a history (events or paired operations) against `model` (default: KV registers).

    `time_limit` (seconds) bounds the whole check; sub-histories not decided
    in time are `unknown`, and the verdict is unknown unless some other
    sub-history is already invalid.
    """
    model = model or KV()
    t0 = time.monotonic()
    deadline = None if time_limit is None else t0 + time_limit
    ops = [op for op in as_operations(history) if op.type != FAIL]
    parts = [p for p in model.partition(ops) if p]
    results = []
    for part in parts:
        s = time.monotonic()
        verdict, anomaly = _check_partition(model, part, deadline, explain)
        results.append(PartitionResult(model.partition_key(part), verdict, len(part),
                                       time.monotonic() - s, anomaly))
    verdicts = {r.verdict for r in results}
    verdict = INVALID if INVALID in verdicts else UNKNOWN_VERDICT if UNKNOWN_VERDICT in verdicts else VALID
    return LinearizabilityResult(verdict, sum(len(p) for p in parts), time.monotonic() - t0, results)


def _check_partition(model: Model, ops: list[Operation], deadline: float | None,
                     explain: bool) -> tuple[str, Anomaly | None]:
    io = [model.io(op) for op in ops]
    inputs = [i for i, _ in io]
    outputs = [o for _, o in io]
    # (time, kind, index): kind 0 = call, 1 = return; +inf returns sort last.
    events = sorted([(op.call, 0, i) for i, op in enumerate(ops)]
                    + [(op.ret, 1, i) for i, op in enumerate(ops)])
    order = [(kind, i) for _, kind, i in events]
    verdict, _, frontier = _search(model, inputs, outputs, order, deadline, False)
    if verdict != INVALID or not explain:
        return verdict, None
    return INVALID, _explain(model, ops, inputs, outputs, events, frontier, deadline)


def _prefix(events: list[tuple[Any, int, int]], outputs: list[Any], cut: int) -> tuple[list, list]:
    """Entries up to sorted position `cut`; operations still open there become pending."""
    order, outs, closed = [], list(outputs), set()
    for _, kind, i in events[: cut + 1]:
        order.append((kind, i))
        if kind:
            closed.add(i)
    for kind, i in list(order):
        if not kind and i not in closed:
            order.append((1, i))
            outs[i] = UNKNOWN
    return order, outs


def _explain(model: Model, ops: list[Operation], inputs: list, outputs: list,
             events: list, frontier: int, deadline: float | None) -> Anomaly:
    rets = [pos for pos, (t, kind, _) in enumerate(events) if kind and t != math.inf]
    # The failed search once had every op returning before its frontier
    # linearized; cut there, the history is linearizable (the ops that
    # returned form a prefix of that linearization). So the answer lies just
    # past it: gallop forward from there, then bisect.
    lo, hi, minimal = bisect.bisect_left(rets, frontier - 1), len(rets), True
    step, galloping = 1, True
    while hi - lo > 1:
        mid = min(lo + step, hi - 1) if galloping else (lo + hi) // 2
        order, outs = _prefix(events, outputs, rets[mid - 1])
        verdict, _, _ = _search(model, inputs, outs, order, deadline, False)
        if verdict == UNKNOWN_VERDICT:
            minimal = False
            break
        if verdict == INVALID:
            hi, galloping = mid, False
        else:
            lo, step = mid, step * 2
    cut = rets[hi - 1]
    b = events[cut][2]
    bad = ops[b]
    order, outs = _prefix(events, outputs, cut)
    _, longest, _ = _search(model, inputs, outs, order, deadline, True)
    in_prefix = sorted({i for _, i in order}, key=lambda i: ops[i].call)
    closed = {i for _, kind, i in events[: cut + 1] if kind}
    concurrent = [i for i in in_prefix if i != b and ops[i].call < bad.ret
                  and (ops[i].ret if i in closed else math.inf) > bad.call]
    # The last ops done before it began, always with the last state changes.
    done = sorted((i for i in in_prefix if i in closed and ops[i].ret < bad.call), key=lambda i: ops[i].ret)
    changes = [i for i in done if not model.read_only(inputs[i], outs[i])]
    preceding = sorted(set(done[-2:] + changes[-2:]), key=lambda i: ops[i].ret)
    tail: list[tuple[int, str]] = []
    state = model.init()
    for i in longest or []:
        _, state = model.step(state, inputs[i], outs[i])
        tail.append((i, model.describe_state(state)))

    def line(i: int) -> str:
        ret = str(ops[i].ret) if i in closed else "..."
        return f"p{ops[i].process} {model.describe_op(inputs[i], outs[i])}  [{ops[i].call} .. {ret}]"

    key = model.partition_key(ops)
    where = "history" if key is None else f"key {key!r}"
    text = [f"  {where}: not linearizable; smallest failing prefix has {len(in_prefix)} ops"
            + ("" if minimal else " (not minimal: time limit)"),
            f"    {'cannot linearize' if minimal else 'failing prefix ends at'}: {line(b)}"]
    if preceding:
        text += ["    completed before it began:"] + [f"      {line(i)}" for i in preceding]
    if concurrent:
        text += ["    concurrent with it:"] + [f"      {line(i)}" for i in concurrent]
    if tail:
        text += [f"    longest linearizable prefix ({len(tail)} ops) ends:"]
        text += [f"      {line(i)}  => {st}" for i, st in tail[-5:]]
    return Anomaly(key, bad, len(in_prefix), minimal, [ops[i] for i in concurrent],
                   [ops[i] for i in preceding], [(ops[i], st) for i, st in tail[-5:]], "\n".join(text))


def _search(model: Model, inputs: list, outputs: list, order: list[tuple[int, int]],
            deadline: float | None, track: bool) -> tuple[str, list[int] | None, int]:
    """WGL over entries in `order` ((kind, op index) pairs).

    Returns the verdict, the longest partial linearization (op indices, when
    `track`), and the frontier: the furthest position of a first remaining
    return entry, i.e. every op returning before it was linearized at once.

    Besides Lowe's memo of (linearized set, state), two dominance rules prune
    configurations that cannot succeed where an explored one did not:

    - floating ops (unknown outcome, returning after every call) can always
      be linearized last, since the model accepts an unknown output in any
      state. So the search is done once all other ops are linearized, and
      having linearized fewer floating ops is never worse.
    - read-only ops (model.read_only) leave the state alone, so having
      linearized more of them is never worse.

    A configuration (W, R, F, state) is skipped when one with the same W and
    state and R' >= R, F' <= F was seen. Without this each timed-out
    operation doubles the search, and exhausting a failing single-key
    history explores every order of concurrent reads. Candidates are tried
    read-only first and floating last, so the dominating configuration of a
    pair is usually met first. Floating ops live outside the linked list
    (they would otherwise sit at its head for the rest of the history): one
    is a candidate when its call precedes the list's first return entry.
    """
    last_call = 0
    ret_pos: dict[int, int] = {}
    call_pos: dict[int, int] = {}
    for pos, (kind, i) in enumerate(order, 1):
        if kind:
            ret_pos[i] = pos
        else:
            call_pos[i] = pos
            last_call = pos
    # 0 = state-changing, 1 = read-only, 2 = floating; a floating read-only
    # op constrains nothing at all and is left out.
    cls: dict[int, int] = {}
    bits: dict[int, int] = {}
    counters = [0, 0, 0]
    read_only = model.read_only
    for i, pos in ret_pos.items():
        floating = pos > last_call and outputs[i] is UNKNOWN
        ro = read_only(inputs[i], outputs[i])
        if floating and ro:
            continue
        c = 2 if floating else 1 if ro else 0
        cls[i] = c
        bits[i] = 1 << counters[c]
        counters[c] += 1
    todo = counters[0] + counters[1]  # non-floating ops still to linearize
    if todo == 0:
        return VALID, ([] if track else None), 0
    floats = sorted((call_pos[i], i) for i, c in cls.items() if c == 2)
    fdone = [False] * len(floats)

    # Circular doubly linked list of the other entries; node id = position
    # in `order`, node 0 is the head sentinel.
    n = len(order)
    nxt, prv, opn, match = [0] * (n + 1), [0] * (n + 1), [0] * (n + 1), [0] * (n + 1)
    last = 0
    for pos, (kind, i) in enumerate(order, 1):
        if cls.get(i, 2) == 2:
            continue
        nxt[last], prv[pos], opn[pos] = pos, last, i
        if not kind:
            match[pos] = ret_pos[i]   # call -> its return; 0 on returns
        last = pos
    nxt[last], prv[0] = 0, last

    step = model.step
    fast = type(model).equal is Model.equal
    equal = model.equal
    cache: dict[Any, list] = {}
    state = model.init()
    w = r = f = 0
    calls: list[tuple[int, Any, int, int, int, int]] = []  # (node or -1-float, state, w, r, f, boundary)
    best: list[int] | None = [] if track else None
    clock = time.monotonic
    it = 0
    phase, want, entry, boundary, fi, m, frontier = 0, 1, nxt[0], 0, 0, 0, 0
    while True:
        it += 1
        if not it & _CHECK_EVERY and deadline is not None and clock() > deadline:
            return UNKNOWN_VERDICT, best, frontier
        if phase < 2:
            m = match[entry]
            if not m:  # first return entry: this phase has seen every candidate
                boundary = entry
                if entry > frontier:
                    frontier = entry
                if phase == 0:
                    phase, want, entry = 1, 0, nxt[0]
                else:
                    phase, fi = 2, 0
                continue
            i = opn[entry]
            c = cls[i]
            if c != want:
                entry = nxt[entry]
                continue
        elif fi < len(floats) and floats[fi][0] < boundary:
            if fdone[fi]:
                fi += 1
                continue
            i, c = floats[fi][1], 2
        else:  # no candidate left: undo the last choice
            if track and len(calls) > len(best):  # type: ignore[arg-type]
                best = [opn[x[0]] if x[0] > 0 else floats[-1 - x[0]][1] for x in calls]
            if not calls:
                return INVALID, best, frontier
            e, state, w, r, f, boundary = calls.pop()
            if e < 0:
                fi = -1 - e
                fdone[fi] = False
                fi += 1
            else:
                want = cls[opn[e]]
                phase = 0 if want == 1 else 1
                todo += 1
                m = match[e]
                nxt[prv[m]] = m
                prv[nxt[m]] = m
                nxt[prv[e]] = e
                prv[nxt[e]] = e
                entry = nxt[e]
            continue

        ok, new_state = step(state, inputs[i], outputs[i])
        if ok and c == 2 and calls and calls[-1][0] < 0:
            # Right after another floating op G: if this op ends in the same
            # state without G, G could have gone last instead, and that
            # sibling configuration (fewer floating ops) is explored anyway.
            ok2, alt = step(calls[-1][1], inputs[i], outputs[i])
            ok = not (ok2 and equal(alt, new_state))
        if ok:
            b = bits[i]
            nw, nr, nf = (w | b, r, f) if c == 0 else (w, r | b, f) if c == 1 else (w, r, f | b)
            if fast:
                seen = cache.get((nw, new_state))
                if seen is None:
                    cache[(nw, new_state)] = [(nr, nf)]
                    fresh = True
                else:
                    fresh = not any(sr & nr == nr and sf & nf == sf for sr, sf in seen)
                    if fresh:
                        seen.append((nr, nf))
            else:
                seen = cache.setdefault(nw, [])
                fresh = not any(sr & nr == nr and sf & nf == sf and equal(new_state, st) for st, sr, sf in seen)
                if fresh:
                    seen.append((new_state, nr, nf))
            if fresh:
                if c == 2:
                    calls.append((-1 - fi, state, w, r, f, boundary))
                    fdone[fi] = True
                else:
                    calls.append((entry, state, w, r, f, boundary))
                    p, q = prv[entry], nxt[entry]
                    nxt[p] = q
                    prv[q] = p
                    p, q = prv[m], nxt[m]
                    nxt[p] = q
                    prv[q] = p
                    todo -= 1
                    if not todo:
                        break
                state, w, r, f = new_state, nw, nr, nf
                phase, want, entry = 0, 1, nxt[0]
                continue
        if phase < 2:
            entry = nxt[entry]
        else:
            fi += 1
    return VALID, ([opn[x[0]] if x[0] > 0 else floats[-1 - x[0]][1] for x in calls] if track else None), n
