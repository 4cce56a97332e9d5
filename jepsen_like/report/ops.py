"""What every report draws, computed once: operations with their drawn ends, fault windows and the time range.

Times here are seconds on the history's clock (the recorder starts it just
before the cluster), so "12 s" is the same instant in the timeline,
latency.png, rate.png and results.json's nemesis windows divided by 1e9.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

from ..history import INVOKE, Event, Operation, pair


@dataclass(frozen=True)
class Drawn:
    """An operation as the reports draw it: from its invocation to its completion.

    An `info` operation ends where the client stopped waiting (a 504, a timeout):
    that is when its completion was recorded, though it may take effect later.
    One never completed ends at the history's end (`completed` False).
    """

    op: Operation
    start_s: float
    end_s: float
    completed: bool

    @property
    def outcome(self) -> str:
        return self.op.type

    @property
    def f(self) -> str:
        return self.op.f

    @property
    def latency_ms(self) -> float:
        return (self.end_s - self.start_s) * 1e3


@dataclass(frozen=True)
class Fault:
    """One fault window: `name` is the family (partition, kill, ...), `detail` what it did (kind, targets)."""

    start_s: float
    end_s: float
    name: str
    detail: str
    number: int      # 1, 2, ... in start order: the label a band and the timeline share


@dataclass(frozen=True)
class TimeRange:
    """The x-axis of every plot and the y-axis of the timeline, in whole seconds around the operations."""

    start_s: float
    end_s: float

    @property
    def seconds(self) -> float:
        return self.end_s - self.start_s


def drawn_ops(events: list[Event]) -> list[Drawn]:
    end = max((e.time for e in events), default=0) / 1e9
    out = []
    for op in pair(events, strict=False):
        done = op.complete
        if done is not None:
            out.append(Drawn(op, op.call / 1e9, max(op.call, done.time) / 1e9, True))
        else:
            out.append(Drawn(op, op.call / 1e9, max(op.call / 1e9, end), False))
    return out


def faults(windows: Iterable[tuple[float, float, str]], events: list[Event]) -> list[Fault]:
    """results.json's nemesis windows, each with what the nemesis said it did when it started."""
    started = [e for e in events if e.process == "nemesis" and e.f == "start" and e.type != INVOKE
               and isinstance(e.value, dict)]
    out = []
    for i, (s, e, name) in enumerate(sorted(windows, key=lambda w: w[0]), 1):
        said = next((ev.value for ev in started if ev.value.get("fault") == name and s <= ev.time <= e), {})
        out.append(Fault(s / 1e9, (e if e != math.inf else s) / 1e9, name, describe_fault(said), i))
    return out


def describe_fault(said: dict[str, Any]) -> str:
    """A nemesis start entry in words: "kind halves; drops n1: n2, n2: n1 n3"."""
    def words(v: Any) -> str:
        if isinstance(v, dict):
            return ", ".join(f"{a}: {words(b)}" for a, b in v.items())
        if isinstance(v, (list, tuple)):
            return " ".join(map(words, v))
        return str(v)

    return "; ".join(f"{k} {words(v)}" for k, v in said.items() if k not in ("fault", "f"))


def time_range(ops: list[Drawn], faults_: list[Fault]) -> TimeRange:
    """From the last whole second before the first operation to the first after the last thing drawn.

    Not from zero: the history's clock starts before the cluster does, and seconds
    of nothing at the top of the timeline are what made it open on a blank screen.
    """
    starts = [d.start_s for d in ops] + [f.start_s for f in faults_]
    ends = [d.end_s for d in ops] + [f.end_s for f in faults_]
    if not starts:
        return TimeRange(0.0, 1.0)
    lo, hi = math.floor(min(starts)), math.ceil(max(ends))
    return TimeRange(float(lo), float(max(hi, lo + 1)))
