"""Synthetic histories from a simulated linearizable store, for tests and benchmarks.

`generate` runs an event-driven simulation of clients against an ideal
etcd-like key-value store: each operation takes effect at one instant
inside its [call, return] interval (so the history is linearizable by
construction), latencies are random, a few operations fail (no effect) or
time out (`info`: they took effect or not, by coin toss; the process is
then retired, as Jepsen does). Written values are unique, and every
completion carries the etcd-style revision it reflects.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import replace

from .history import FAIL, INFO, INVOKE, OK, Event


def generate(n_ops: int = 10_000, keys: int = 10, processes: int = 10, seed: int = 0,
             info_rate: float = 0.002, fail_rate: float = 0.005,
             mix: tuple[float, float, float] = (0.5, 0.3, 0.2),
             latency_ms: float = 2.0, think_ms: float = 0.5) -> list[Event]:
    """A linearizable read/write/cas history of `n_ops` operations."""
    rng = random.Random(seed)
    names = [f"k{i}" for i in range(keys)]
    store: dict[str, tuple[int | None, int]] = {k: (None, 0) for k in names}  # value, mod revision
    revision = 0
    next_value = 0
    events: list[Event] = []
    seen: list[dict[str, int | None]] = [{} for _ in range(processes)]  # what each slot last read
    pids = list(range(processes))
    heap: list[tuple[int, int, str, object]] = []
    seq = 0

    def push(t: int, action: str, data: object) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(heap, (t, seq, action, data))

    for slot in range(processes):
        push(int(rng.expovariate(1 / (think_ms * 1e6))), "call", slot)
    invoked = 0
    while heap:
        t, _, action, data = heapq.heappop(heap)
        if action == "call":
            if invoked >= n_ops:
                continue
            invoked += 1
            slot = data  # type: ignore[assignment]
            key = rng.choice(names)
            r = rng.random()
            if r < mix[0]:
                f, value = "read", None
            elif r < mix[0] + mix[1]:
                next_value += 1
                f, value = "write", next_value
            else:
                next_value += 1
                f, value = "cas", [seen[slot].get(key), next_value]
            op = {"slot": slot, "pid": pids[slot], "f": f, "key": key, "value": value, "out": None, "rev": None}
            events.append(Event(INVOKE, pids[slot], f, key, value, t, "linearizable"))
            lat = max(1, int(rng.lognormvariate(math.log(latency_ms * 1e6), 0.7)))
            fate = rng.random()
            op["fate"] = FAIL if fate < fail_rate else INFO if fate < fail_rate + info_rate else OK
            if op["fate"] == OK or (op["fate"] == INFO and rng.random() < 0.5):
                push(t + int(rng.random() * lat), "apply", op)
            push(t + lat, "complete", op)
        elif action == "apply":
            op = data  # type: ignore[assignment]
            cur, mod = store[op["key"]]
            if op["f"] == "read":
                op["out"], op["rev"] = cur, mod
            elif op["f"] == "write":
                revision += 1
                store[op["key"]] = (op["value"], revision)
                op["rev"] = revision
            else:
                expected, new = op["value"]
                if cur == expected:
                    revision += 1
                    store[op["key"]] = (new, revision)
                    op["out"], op["rev"] = None, revision
                else:
                    op["out"], op["rev"] = {"cas_ok": False}, mod
        else:
            op = data  # type: ignore[assignment]
            slot, fate = op["slot"], op["fate"]
            if fate == OK:
                out = op["out"] if op["f"] != "write" else None
                events.append(Event(OK, op["pid"], op["f"], op["key"], out, t, revision=op["rev"]))
                if op["f"] == "read":
                    seen[slot][op["key"]] = op["out"]
                elif op["f"] == "write":
                    seen[slot][op["key"]] = op["value"]
            else:
                events.append(Event(fate, op["pid"], op["f"], op["key"], op["value"], t, error="timeout"))
                if fate == INFO:
                    pids[slot] += processes
            push(t + int(rng.expovariate(1 / (think_ms * 1e6))), "call", slot)
    return events


def make_stale_read(events: list[Event], seed: int = 0) -> tuple[list[Event], str]:
    """Copy of `events` with one read (near the middle) answering a definitely overwritten value.

    The chosen old write returned before the newer write was invoked, and the
    newer one returned before the read was invoked, so no linearization can
    order them otherwise: the result is non-linearizable.
    """
    rng = random.Random(seed)
    open_: dict[int | str, tuple[int, Event]] = {}
    done: list[tuple[Event, Event, int]] = []  # (invoke, completion, index of completion)
    for i, ev in enumerate(events):
        if ev.type == INVOKE:
            open_[ev.process] = (i, ev)
        elif ev.process in open_:
            _, inv = open_.pop(ev.process)
            if ev.type == OK:
                done.append((inv, ev, i))
    writes = [(inv, c) for inv, c, _ in done if inv.f == "write"]
    reads = [(inv, c, i) for inv, c, i in done if inv.f == "read"]
    start = len(reads) // 2
    candidates = reads[start:] + reads[:start]
    head = candidates[: max(1, len(candidates) // 4)]  # somewhere in the middle, chosen by seed
    rng.shuffle(head)
    candidates[: len(head)] = head
    for inv, comp, i in candidates:
        ws = [(w, c) for w, c in writes if w.key == inv.key and c.time < inv.time]
        for old, old_c in reversed(ws):
            if any(new.time > old_c.time and new_c.time < inv.time for new, new_c in ws):
                out = list(events)
                out[i] = replace(comp, value=old.value)
                return out, f"p{inv.process} read {inv.key!r} at {inv.time} answers overwritten {old.value!r}"
    raise ValueError("no read can be made definitely stale")
