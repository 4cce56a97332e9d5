"""Histories in the Jepsen shape: one record per invocation or completion.

A history is a list of `Event`s, the order they were recorded in. Each is
one JSON object per line in ``history.jsonl``::

    {"type": "invoke", "process": 3, "f": "cas", "key": "g", "value": [1, 2],
     "time": 81234567, "consistency": "linearizable"}
    {"type": "ok", "process": 3, "f": "cas", "key": "g", "value": {"cas_ok": false},
     "time": 81299000, "revision": 41}

- ``type``: ``invoke``; then exactly one completion from the same process:
  ``ok`` (it happened, ``value`` is its result), ``fail`` (it definitely did
  not happen) or ``info`` (unknown: it may or may not have happened, at any
  time after its invocation, even after the end of the test).
- ``process``: an int for a client. A process that got ``info`` is never
  reused (Jepsen's rule: its operation may still be in flight, so a new
  operation on it would make the process concurrent with itself). Non-int
  processes (``"nemesis"``) record faults; they are not paired.
- ``f``/``key``/``value``: what was asked and, on ``ok``, what came back:
  ``read`` completes with the value read (None: absent); ``write`` invokes
  with the value; ``cas`` invokes with ``[expected, new]`` and completes
  ``ok`` with ``{"cas_ok": false}`` when the precondition failed (the
  operation happened and answered "no"; that is not a ``fail``).
- ``time``: monotonic nanoseconds, one clock for the whole history.
- optional: ``consistency`` (e.g. "linearizable", "serializable"),
  ``revision`` (what the answer reflects), ``error``; any other field is
  kept in ``extra`` and written back flat.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

INVOKE, OK, FAIL, INFO = "invoke", "ok", "fail", "info"
TYPES = frozenset((INVOKE, OK, FAIL, INFO))
_FIELDS = ("type", "process", "f", "key", "value", "time", "consistency", "revision", "error")


class _Unknown:
    """Output of an operation whose completion is unknown (info or pending)."""

    _instance: "_Unknown | None" = None

    def __new__(cls) -> "_Unknown":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "?"

    def __reduce__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()


class HistoryError(ValueError):
    """The history breaks the recording rules (pairing, process reuse)."""


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    process: int | str
    f: str
    key: Any = None
    value: Any = None
    time: int = 0
    consistency: str | None = None
    revision: int | None = None
    error: Any = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def get(self, name: str, default: Any = None) -> Any:
        """A named field, whether first-class or in `extra`."""
        if name in _FIELDS:
            v = getattr(self, name)
            return default if v is None else v
        return self.extra.get(name, default)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "type": self.type, "process": self.process, "f": self.f,
            "key": self.key, "value": self.value, "time": self.time,
        }
        for name in ("consistency", "revision", "error"):
            v = getattr(self, name)
            if v is not None:
                d[name] = v
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Event":
        missing = [k for k in ("type", "process", "f", "time") if k not in d]
        if missing:
            raise HistoryError(f"event {dict(d)!r} lacks {missing}")
        if d["type"] not in TYPES:
            raise HistoryError(f"event type {d['type']!r} is not one of {sorted(TYPES)}")
        extra = {k: v for k, v in d.items() if k not in _FIELDS}
        return cls(
            type=d["type"], process=d["process"], f=d["f"], key=d.get("key"),
            value=d.get("value"), time=int(d["time"]),
            consistency=d.get("consistency"), revision=d.get("revision"),
            error=d.get("error"), extra=extra,
        )


@dataclass(frozen=True, slots=True)
class Operation:
    """An invocation paired with its completion.

    `ret` is +inf for `info` (and never-completed) operations: they may take
    effect at any point after `call`. `output` is the completion value, or
    UNKNOWN when there is none to trust.
    """

    process: int | str
    f: str
    key: Any
    value: Any
    call: int | float
    ret: int | float
    output: Any = None
    type: str = OK
    id: int = 0
    invoke: Event | None = None
    complete: Event | None = None

    @property
    def input(self) -> tuple[str, Any, Any]:
        return (self.f, self.key, self.value)

    @property
    def revision(self) -> int | None:
        return self.complete.revision if self.complete is not None else None

    @property
    def consistency(self) -> str | None:
        for e in (self.invoke, self.complete):
            if e is not None and e.consistency is not None:
                return e.consistency
        return None

    def get(self, name: str, default: Any = None) -> Any:
        """A field of the completion, else of the invocation."""
        for e in (self.complete, self.invoke):
            if e is not None:
                v = e.get(name)
                if v is not None:
                    return v
        return default

    def __str__(self) -> str:
        out = "?" if self.output is UNKNOWN else repr(self.output)
        ret = "inf" if self.ret == math.inf else str(self.ret)
        key = "" if self.key is None else f" {self.key!r}"
        return f"p{self.process} {self.f}{key} {self.value!r} -> {out} ({self.type}) [{self.call}, {ret}]"


def pair(events: Iterable[Event], *, strict: bool = True) -> list[Operation]:
    """Match each invocation with its process's next completion.

    Returns ok, fail and info operations in invocation order (fail ones are
    kept for availability; the linearizability checker drops them).
    Invocations never completed become info. With `strict`, broken
    recording raises HistoryError: a completion with no invocation, a
    process invoking twice at once, a completion for a different `f`, or a
    process reused after `info`, a completion timed before its invocation.
    """
    pending: dict[Any, tuple[int, Event]] = {}
    crashed: set[Any] = set()
    slots: list[Operation | None] = []
    for i, ev in enumerate(events):
        p = ev.process
        if not isinstance(p, int) or isinstance(p, bool):
            continue  # nemesis and other observers: not client operations
        if ev.type == INVOKE:
            if strict and p in crashed:
                raise HistoryError(f"event {i}: process {p} reused after an info completion")
            if p in pending:
                if strict:
                    raise HistoryError(f"event {i}: process {p} invoked while its event {pending[p][0]} is pending")
                _close(slots, pending.pop(p), None)
            pending[p] = (len(slots), ev)
            slots.append(None)
            continue
        if p not in pending:
            if strict:
                raise HistoryError(f"event {i}: {ev.type} for process {p} with no pending invocation")
            continue
        slot, inv = pending[p]
        if strict and ev.f != inv.f:
            raise HistoryError(f"event {i}: {ev.type} {ev.f!r} completes invocation of {inv.f!r} by process {p}")
        if strict and ev.time < inv.time:
            raise HistoryError(f"event {i}: process {p} completes at {ev.time}, before its invocation at {inv.time}")
        del pending[p]
        _close(slots, (slot, inv), ev)
        if ev.type == INFO:
            crashed.add(p)
    for p, item in pending.items():
        _close(slots, item, None)
    ops = [op for op in slots if op is not None]
    return [_renumber(op, i) for i, op in enumerate(ops)]


def _close(slots: list[Operation | None], item: tuple[int, Event], done: Event | None) -> None:
    slot, inv = item
    if done is None or done.type == INFO:
        slots[slot] = Operation(inv.process, inv.f, inv.key, inv.value, inv.time, math.inf,
                                UNKNOWN, INFO, 0, inv, done)
    else:
        out = done.value if done.type == OK else None
        slots[slot] = Operation(inv.process, inv.f, inv.key, inv.value, inv.time, done.time,
                                out, done.type, 0, inv, done)


def _renumber(op: Operation, i: int) -> Operation:
    return Operation(op.process, op.f, op.key, op.value, op.call, op.ret, op.output,
                     op.type, i, op.invoke, op.complete)


def as_operations(history: Iterable[Event] | Iterable[Operation]) -> list[Operation]:
    """Accept either raw events or already-paired operations."""
    items = list(history)
    if items and isinstance(items[0], Event):
        return pair(items)  # type: ignore[arg-type]
    return items  # type: ignore[return-value]


def dumps(events: Iterable[Event]) -> str:
    return "".join(json.dumps(e.to_dict(), separators=(",", ":")) + "\n" for e in events)


def loads(text: str) -> list[Event]:
    return list(_parse_lines(text.splitlines()))


def write_jsonl(path: str, events: Iterable[Event]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(dumps(events))


def read_jsonl(path: str) -> list[Event]:
    with open(path, encoding="utf-8") as fh:
        return list(_parse_lines(fh))


def _parse_lines(lines: Iterable[str]) -> Iterator[Event]:
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as exc:
            raise HistoryError(f"line {n}: not JSON: {exc}") from None
        if not isinstance(d, dict):
            raise HistoryError(f"line {n}: expected a JSON object")
        yield Event.from_dict(d)


def nemesis_intervals(events: Iterable[Event], start: str = "start", stop: str = "stop") -> list[tuple[int, float]]:
    """[(start, end)] from non-client processes' start/stop events.

    Jepsen's nemesis logs an invoke and an info for each start and stop; the
    first start opens a fault window and the first stop after it closes it.
    A window still open at the end closes at +inf.
    """
    out: list[tuple[int, float]] = []
    opened: int | None = None
    for ev in events:
        if isinstance(ev.process, int) and not isinstance(ev.process, bool):
            continue
        if ev.f == start and opened is None:
            opened = ev.time
        elif ev.f == stop and opened is not None:
            out.append((opened, ev.time))
            opened = None
    if opened is not None:
        out.append((opened, math.inf))
    return out
