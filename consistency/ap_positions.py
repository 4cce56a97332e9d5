"""Positions in a partitioned replica: one stream id per partition (docs/ap-cluster.md §3).

A replica has one delta stream and one changes log per partition (consistency/ap_keys.py), so
"how far" is a vector: partition -> stream id, a partition left out standing at 0-0. Written
out, for a read-your-writes token (after `REGION:`) and for a subscription's position, it is

    v2[.<p>-<ms>-<seq>]...      e.g. v2.7-1732170000000-0.33-1732170000123-4

with partitions in increasing order, each at most once. The "v2" keeps the old single-id form
(`<ms>-<seq>`, which had no dot) from ever parsing as one.
"""

from __future__ import annotations

import re

from consistency.ap_keys import PARTITIONS

__all__ = ["Vector", "ZERO", "at_least", "format_vector", "merged", "parse_vector", "stream_id"]

Vector = dict[int, str]
ZERO = "0-0"
_PART = re.compile(r"([0-9]{1,3})-([0-9]{1,20})-([0-9]{1,20})")


def stream_id(raw: str) -> tuple[int, int]:
    ms, _, seq = raw.partition("-")
    return int(ms), int(seq or 0)


def format_vector(v: Vector) -> str:
    """The written form; partitions at 0-0 are left out (a fresh replica is `v2`)."""
    return "v2" + "".join(f".{p}-{sid}" for p, sid in sorted(v.items()) if sid != ZERO)


def parse_vector(text: str) -> Vector:
    """The vector `text` writes out; ValueError, saying what is wrong, for anything else."""
    if not isinstance(text, str) or not (text == "v2" or text.startswith("v2.")):
        raise ValueError("must start with v2 (the partitioned layout's positions)")
    out: Vector = {}
    for part in text.split(".")[1:]:
        m = _PART.fullmatch(part)
        if not m:
            raise ValueError(f"{part!r} is not <partition>-<ms>-<seq>")
        p, ms, seq = (int(x) for x in m.groups())
        if p >= PARTITIONS or p in out or ms >= 2**64 or seq >= 2**64:
            raise ValueError(f"{part!r}: partition below {PARTITIONS}, each once, ids below 2^64")
        if out and p < max(out):
            raise ValueError("partitions must come in increasing order")
        out[p] = f"{ms}-{seq}"
    return out


def at_least(a: Vector, b: Vector) -> bool:
    """Whether `a` is at or past `b` in every partition (the partial order of positions)."""
    return all(stream_id(a.get(p, ZERO)) >= stream_id(sid) for p, sid in b.items())


def merged(a: Vector, b: Vector) -> Vector:
    """The partition-wise maximum of two vectors."""
    out = dict(a)
    for p, sid in b.items():
        if stream_id(sid) > stream_id(out.get(p, ZERO)):
            out[p] = sid
    return out
