"""Script calls of a batch grouped by partition: which keys and arguments each call carries.

On one Redis a call may carry many partitions, each under its own key (the scripts `enter` each
in turn); on a Redis Cluster a call carries one, since a script's keys must share a slot.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from consistency import ap_keys as K
from consistency.ap_logs import StreamEntry

__all__ = ["CHUNK", "Call", "Segment", "apply_calls", "ingest_calls", "pack_calls"]

# Entries per script call: bounds how long one call holds Redis's single thread.
CHUNK = 1000

Segment = tuple[int, int, int]  # (partition, start, end): a slice of that partition's items
Call = tuple[list[Segment], list[str], list[Any]]  # its segments, KEYS and ARGV


def pack_calls(groups: dict[int, list[Any]], head: list[Any], partitions_per_call: int,
               keys_of: Callable[[int], list[str]], segment: Callable[[int, list[Any]], list[Any]]) -> list[Call]:
    """Script calls for items grouped by partition, in order: each carries at most CHUNK items and
    `partitions_per_call` partitions (1 on a Redis Cluster, where a call's keys share a slot). A call's
    ARGV is `head`, then for each of its segments `segment(p, items)` (the segment's header and items);
    its KEYS are `keys_of(p)` for each. One call for many partitions keeps a batch's cost on one Redis
    near the unpartitioned layout's: a call per partition cost ~60 calls for a batch of 100."""
    calls: list[Call] = []
    segments: list[Segment] = []
    keys: list[str] = []
    args: list[Any] = []
    room = 0
    for p, items in groups.items():
        start = 0
        while start < len(items):
            if room == 0 or len(segments) == partitions_per_call:
                segments, keys, args, room = [], [], list(head), CHUNK
                calls.append((segments, keys, args))
            end = min(len(items), start + room)
            segments.append((p, start, end))
            keys += keys_of(p)
            args += segment(p, items[start:end])
            room -= end - start
            start = end
    return calls


def ingest_calls(packed: dict[int, list[bytes]], region: str, now_ms: int, partitions_per_call: int) -> list[Call]:
    """ingest.lua calls for packed observations grouped by partition (see pack_calls)."""
    return pack_calls(packed, [region, now_ms], partitions_per_call, lambda p: [K.stream(p)],
                      lambda p, obs: [len(obs), *obs])


def apply_calls(entries: dict[int, list[StreamEntry]], region: str, now_ms: int, origin: str,
                partitions_per_call: int) -> list[Call]:
    """apply.lua calls for `origin`'s stream entries grouped by partition (see pack_calls)."""
    def segment(p: int, chunk: list[StreamEntry]) -> list[Any]:
        args: list[Any] = [chunk[-1][0], len(chunk)]
        for _, f in chunk:
            args += ("d", f["d"], f["p"]) if "d" in f else ("c", f["c"], f["n"])
        return args

    return pack_calls(entries, [region, now_ms, origin], partitions_per_call,
                      lambda p: [K.stream(p), K.applied(p)], segment)
