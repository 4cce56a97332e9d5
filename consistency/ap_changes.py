"""A replica's changes log (ws:changes): what its merges changed, in the order they did.

ingest.lua, apply.lua and merge_state.lua append an entry whenever a merge changed
what a reader of the entity sees (note_change in lua/common.lua): the winning fields
a reader can see, or the tombstone. The log is local to the replica, never shipped,
and capped (XADD MAXLEN ~ ws:changes:maxlen); its stream ids are positions a
subscriber resumes from on the same replica.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from consistency.ap_entity import DELETED, Scalar

_DELETED_FIELD = f"f:{DELETED}"


def _s(b: bytes | str) -> str:
    return b.decode() if isinstance(b, bytes) else b


@dataclass(frozen=True)
class LoggedChange:
    id: str  # the entry's id in the changes log
    world: str
    entity: str
    order_key: str  # "<hlc>|<node>" of the write
    origin: str  # the region the write came from (for anti-entropy: the peer that shipped it)
    fields: dict[str, Scalar]  # the winning fields readers see, by name
    deleted: bool  # the entry is a tombstone: every field written before `order_key` is gone

    @classmethod
    def parse(cls, entry_id: bytes | str, flat: list[bytes]) -> "LoggedChange":
        head: dict[str, str] = {}
        fields: dict[str, Scalar] = {}
        deleted = False
        for i in range(0, len(flat), 2):
            name = _s(flat[i])
            if name.startswith("f:"):
                if name == _DELETED_FIELD:
                    deleted = True
                else:
                    fields[name[2:]] = msgpack.unpackb(flat[i + 1])[0]
            else:
                head[name] = _s(flat[i + 1])
        return cls(_s(entry_id), head["w"], head["e"], head["k"], head["o"], fields, deleted)


@dataclass(frozen=True)
class LogState:
    """Where the log stands: its newest id, how many entries it ever took and holds, its oldest id."""

    last_id: str
    added: int
    length: int
    first_id: str  # the oldest entry held; last_id when it holds none

    @property
    def removed(self) -> int:
        """Entries trimmed away, always the oldest: those numbered 1..removed in the order added."""
        return self.added - self.length


def parse_read(raw: list[Any]) -> tuple[LogState, list[LoggedChange] | int]:
    """changes.lua's answer: the log's state, and the entries read (or their count)."""
    state = LogState(_s(raw[0]), int(raw[1]), int(raw[2]), _s(raw[3]))
    body = raw[4]
    if isinstance(body, int):
        return state, body
    return state, [LoggedChange.parse(i, f) for i, f in body]

