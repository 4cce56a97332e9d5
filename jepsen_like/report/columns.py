"""Which timeline column an operation goes in, and what the column is called.

Process ids are not names a reader can use: a client slot's process is
replaced after every `info` (slot + k × the number of slots: 16 is slot 1's
second process when there are 15 slots), and final reads run as processes
1000000 and up. So, as Jepsen labels a process by its number mod the
concurrency, a column here is a client slot ("client 1", with the processes
it ran as: "p1 → p16"), grouped under the region whose API node it talks to
most; the final reads (every region's) share a few packed lanes at the end.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from ..history import INFO
from .ops import Drawn

# Context.final_process numbers final reads from here; they also carry `final: true`.
FINAL_PROCESS_BASE = 1_000_000
FINAL_GROUP = "after heal"
TIER_WORDS = {"cp": "CP", "ap": "AP", "watch": "watch"}


@dataclass
class Column:
    group: str                  # the region (r1), or "other"
    label: str                  # "client 3", "final reads"
    detail: str = ""            # "CP · p3 → p18"
    processes: list[int] = field(default_factory=list)


@dataclass
class Layout:
    columns: list[Column]
    column_of: dict[int, int]   # Drawn.op.id -> index in columns
    slots: int | None           # the number of client slots, when the history shows it


def client_slots(ops: list[Drawn]) -> int | None:
    """The number of client slots, read from the history: the processes that invoked before any `info` came back.

    Every client starts at once, and a replacement process exists only after an
    info, so those are exactly the first processes. None when they are not
    0..n-1 (a history made some other way): then each process is its own column.
    """
    clients = [d for d in ops if not _is_final(d)]
    first_info = min((d.end_s for d in clients if d.outcome == INFO), default=math.inf)
    first = {d.op.process for d in clients if d.start_s < first_info}
    if not first or any(not isinstance(p, int) for p in first) or first != set(range(len(first))):
        return None
    return len(first)


def layout(ops: list[Drawn]) -> Layout:
    slots = client_slots(ops)
    by_key: dict[tuple[str, int], list[Drawn]] = {}
    finals: list[Drawn] = []
    for d in ops:
        p = d.op.process
        if _is_final(d):
            finals.append(d)
        else:
            slot = p % slots if slots and isinstance(p, int) else p
            by_key.setdefault(("slot", slot), []).append(d)  # type: ignore[arg-type]
    columns: list[tuple[tuple, Column, list[Drawn]]] = []
    for (_, slot), ds in by_key.items():
        group = _home(ds)
        procs = sorted({d.op.process for d in ds})  # type: ignore[type-var]
        tier = Counter(str(d.op.get("tier") or "") for d in ds).most_common(1)[0][0]
        via = Counter(str(d.op.get("via") or "") for d in ds).most_common(1)[0][0]
        kind = " ".join(x for x in (TIER_WORDS.get(tier, tier), via) if x)
        shown = "→".join(f"p{p}" for p in procs[:3]) + (f" (+{len(procs) - 3})" if len(procs) > 3 else "")
        label = f"client {slot}" if slots else f"process {slot}"
        columns.append(((group, 0, slot), Column(group, label, f"{kind} · {shown}" if kind else shown, procs), ds))
    lanes = _pack(finals)
    for i, lane in enumerate(lanes):
        procs = sorted({d.op.process for d in lane})  # type: ignore[type-var]
        regions = sorted({str(d.op.get("region")) for d in lane if d.op.get("region")})
        label = "final reads" + (f" {i + 1}" if len(lanes) > 1 else "")
        columns.append(((FINAL_GROUP, 1, i), Column(FINAL_GROUP, label, ", ".join(regions), procs), lane))
    order = {"other": 2, FINAL_GROUP: 3}
    columns.sort(key=lambda c: (order.get(c[0][0], 0), c[0][0], c[0][1], c[0][2]))
    column_of = {d.op.id: i for i, (_, _, ds) in enumerate(columns) for d in ds}
    return Layout([c for _, c, _ in columns], column_of, slots)


def _is_final(d: Drawn) -> bool:
    p = d.op.process
    return bool(d.op.get("final")) or (isinstance(p, int) and p >= FINAL_PROCESS_BASE)


def _home(ds: list[Drawn]) -> str:
    """The region a client talks to most (an observations client posts to another now and then)."""
    regions = Counter(str(d.op.get("region")) for d in ds if d.op.get("region"))
    return regions.most_common(1)[0][0] if regions else "other"


def _pack(ds: list[Drawn]) -> list[list[Drawn]]:
    """Overlapping final reads into as few lanes as keep them apart (first fit, by start)."""
    lanes: list[list[Drawn]] = []
    for d in sorted(ds, key=lambda d: d.start_s):
        for lane in lanes:
            if lane[-1].end_s <= d.start_s:
                lane.append(d)
                break
        else:
            lanes.append([d])
    return lanes
