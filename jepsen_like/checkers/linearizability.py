"""Linearizability by Wing-Gong-Lowe search, as Porcupine does it.

Each operation becomes a call entry and a return entry in one list sorted
by time (calls before returns at equal times, so touching intervals count
as concurrent); `wgl.search` decides each sub-history (the model's
partition, e.g. one key) from that list.

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
from .result import Verdict, worst
from .wgl import CALL, RETURN, Order, search

Timeline = list[tuple[float, int, int]]  # (time, CALL or RETURN, op index), sorted


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
    verdict: Verdict
    ops: int
    seconds: float
    anomaly: Anomaly | None = None


@dataclass
class LinearizabilityResult:
    verdict: Verdict              # the worst of the partitions' (UNKNOWN: the time limit ran out)
    ops: int
    seconds: float
    partitions: list[PartitionResult] = field(default_factory=list)

    @property
    def valid(self) -> bool | None:
        return self.verdict.valid

    @property
    def anomalies(self) -> list[Anomaly]:
        return [p.anomaly for p in self.partitions if p.anomaly is not None]

    def describe(self) -> str:
        bad = [p for p in self.partitions if p.verdict == Verdict.ILLEGAL]
        unk = [p for p in self.partitions if p.verdict == Verdict.UNKNOWN]
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
    verdict = worst(r.verdict for r in results)
    return LinearizabilityResult(verdict, sum(len(p) for p in parts), time.monotonic() - t0, results)


def _check_partition(model: Model, ops: list[Operation], deadline: float | None,
                     explain: bool) -> tuple[Verdict, Anomaly | None]:
    io = [model.io(op) for op in ops]
    inputs = [i for i, _ in io]
    outputs = [o for _, o in io]
    # (time, kind, index); CALL < RETURN, so calls sort first at equal times; +inf returns sort last.
    events = sorted([(op.call, CALL, i) for i, op in enumerate(ops)]
                    + [(op.ret, RETURN, i) for i, op in enumerate(ops)])
    order = [(kind, i) for _, kind, i in events]
    verdict, _, frontier = search(model, inputs, outputs, order, deadline, False)
    if verdict != Verdict.ILLEGAL or not explain:
        return verdict, None
    return Verdict.ILLEGAL, _explain(model, ops, inputs, outputs, events, frontier, deadline)


def _prefix(events: Timeline, outputs: list[Any], cut: int) -> tuple[Order, list[Any]]:
    """Entries up to sorted position `cut`; operations still open there become pending."""
    order: Order = []
    outs, closed = list(outputs), set()
    for _, kind, i in events[: cut + 1]:
        order.append((kind, i))
        if kind == RETURN:
            closed.add(i)
    for kind, i in list(order):
        if kind == CALL and i not in closed:
            order.append((RETURN, i))
            outs[i] = UNKNOWN
    return order, outs


def _explain(model: Model, ops: list[Operation], inputs: list[Any], outputs: list[Any],
             events: Timeline, frontier: int, deadline: float | None) -> Anomaly:
    rets = [pos for pos, (t, kind, _) in enumerate(events) if kind == RETURN and t != math.inf]
    # The failed search once had every op returning before its frontier
    # linearized; cut there, the history is linearizable (the ops that
    # returned form a prefix of that linearization). So the answer lies just
    # past it: gallop forward from there, then bisect.
    lo, hi, minimal = bisect.bisect_left(rets, frontier - 1), len(rets), True
    step, galloping = 1, True
    while hi - lo > 1:
        mid = min(lo + step, hi - 1) if galloping else (lo + hi) // 2
        order, outs = _prefix(events, outputs, rets[mid - 1])
        verdict, _, _ = search(model, inputs, outs, order, deadline, False)
        if verdict == Verdict.UNKNOWN:
            minimal = False
            break
        if verdict == Verdict.ILLEGAL:
            hi, galloping = mid, False
        else:
            lo, step = mid, step * 2
    cut = rets[hi - 1]
    b = events[cut][2]
    bad = ops[b]
    order, outs = _prefix(events, outputs, cut)
    _, longest, _ = search(model, inputs, outs, order, deadline, True)
    in_prefix = sorted({i for _, i in order}, key=lambda i: ops[i].call)
    closed = {i for _, kind, i in events[: cut + 1] if kind == RETURN}
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

