"""What the CP store and its watch share: how values are stored in etcd, the
range that covers a prefix, the event a watch yields, and the request metadata
that makes a member without a leader refuse at once."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["REQUIRE_LEADER", "WatchEvent", "decode", "encode", "prefix_end"]

# With this metadata a member without a leader refuses at once ("no leader")
# instead of queueing the request until its deadline: a definite "not applied".
REQUIRE_LEADER = (("hasleader", "true"),)


@dataclass(frozen=True)
class WatchEvent:
    """A change, or (type "progress", asked for by a watcher) etcd's word that every change
    under the watched range up to `mod_revision` has been delivered."""

    type: Literal["put", "delete", "progress"]
    key: str
    value: Any
    mod_revision: int


def encode(value: Any) -> bytes:
    """Compact JSON, refusing NaN and infinities (etcdctl readers expect plain JSON)."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False, sort_keys=True).encode()


def decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")  # written by someone else with etcdctl


def prefix_end(prefix: bytes) -> bytes:
    """The range end that covers every key starting with `prefix` (etcd's WithPrefix)."""
    b = bytearray(prefix)
    while b:
        if b[-1] < 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return b"\0"
