"""CP documents as the service hands them out: a value with the revisions it
reflects, and the precondition a write is made under.

Every CP document (a param, the physics, a world's metadata, the model
manifest) is read and written through these two functions, so each answer
carries its etcd revision and every conditional write is one compare-and-swap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args

from consistency import cp_keys
from consistency.cp_store import MAX_REVISION, Consistency, CPStore, encode
from consistency.errors import NotFound
from service.errors import InvalidInput, ValueTooDeep, ValueTooLarge
from service.keys import acting

CONSISTENCIES: tuple[str, ...] = get_args(Consistency)
# Bounds on every stored value, checked before it is written: a value nested ~950 deep was
# stored, then every read that rendered it (the params listing: everyone's) hit Python's
# recursion limit. 32 levels is far more than any document here uses (a manifest: 4).
MAX_DEPTH = 32
# Compact JSON as stored; etcd refuses requests over 1.5 MiB, and a 1 MiB body of non-ASCII
# text is up to 6 times longer once escaped.
MAX_VALUE_BYTES = 1 << 20

__all__ = ["CONSISTENCIES", "MAX_DEPTH", "MAX_REVISION", "MAX_VALUE_BYTES", "Consistency", "Precondition",
           "Versioned", "Written", "check_revision", "check_value", "read", "write", "writer", "writer_record"]


@dataclass(frozen=True)
class Precondition:
    """What a write requires of the key: its revision, its absence, or its presence."""

    if_revision: int | None = None
    create_only: bool = False
    must_exist: bool = False


@dataclass(frozen=True)
class Versioned:
    """A CP value as read: `revision` is the key's mod revision (its ETag)."""

    value: Any
    revision: int
    create_revision: int
    version: int
    store_revision: int  # the store revision the answer reflects
    consistency: Consistency


@dataclass(frozen=True)
class Written:
    revision: int
    created: bool  # made under a create-only precondition


def check_revision(revision: int, name: str) -> int:
    """A revision a caller asks for, refused (InvalidInput) past etcd's int64 range."""
    if not 0 <= revision <= MAX_REVISION:
        msg = f"a revision is at most {MAX_REVISION} (etcd revisions are 64-bit)"
        raise InvalidInput(f"{name}: {msg}", [{"loc": [name], "msg": msg, "type": "less_than_equal"}])
    return revision


def _depth_within(value: Any, limit: int) -> bool:
    """Whether `value` nests at most `limit` arrays and objects (a scalar: 0, `[]`: 1, `[[]]`: 2).
    Level by level, as a recursive walk is what fails on the values this refuses."""
    level = [value] if isinstance(value, (dict, list)) else []
    for _ in range(limit):
        level = [c for v in level for c in (v.values() if isinstance(v, dict) else v) if isinstance(c, (dict, list))]
        if not level:
            return True
    return not level


def check_value(value: Any) -> bytes:
    """`value` as stored (compact JSON), or ValueTooDeep / ValueTooLarge."""
    if not _depth_within(value, MAX_DEPTH):
        raise ValueTooDeep(MAX_DEPTH)
    raw = encode(value)
    if len(raw) > MAX_VALUE_BYTES:
        raise ValueTooLarge(len(raw), MAX_VALUE_BYTES)
    return raw


async def read(cp: CPStore, path: str, consistency: Consistency = "linearizable") -> Versioned:
    entry = await cp.get(path, consistency)
    return Versioned(entry.value, entry.mod_revision, entry.create_revision, entry.version, entry.revision,
                     entry.consistency)


async def write(cp: CPStore, path: str, value: Any, pre: Precondition) -> Written:
    check_value(value)
    if pre.if_revision is not None:
        check_revision(pre.if_revision, "If-Match")
    result = await cp.put(path, value, if_revision=pre.if_revision, create_only=pre.create_only,
                          must_exist=pre.must_exist, also=writer_record(path, "put"))
    return Written(result.revision, pre.create_only)


def _writer_path(path: str) -> str:
    # A tree of its own: a listing or watch of params never meets these records.
    return f"{cp_keys.ROOT}/writers{path[len(cp_keys.ROOT):]}"


def writer_record(path: str, op: str) -> list[tuple[str, Any]]:
    """The record of which key made a CP write, put in the write's own transaction (so at
    its revision); nothing when the node runs without auth."""
    key = acting.get()
    return [] if key is None else [(_writer_path(path), {"key_id": key.id, "name": key.name, "op": op})]


async def writer(cp: CPStore, path: str, revision: int) -> dict[str, Any] | None:
    """Who made the write at `revision` to `path`: the record made with it, or None when the
    record is of another revision (the write was made without auth, or by etcdctl)."""
    try:
        entry = await cp.get(_writer_path(path))
    except NotFound:
        return None
    return entry.value if entry.mod_revision == revision and isinstance(entry.value, dict) else None
