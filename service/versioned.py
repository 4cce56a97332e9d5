"""CP documents as the service hands them out: a value with the revisions it
reflects, and the precondition a write is made under.

Every CP document (a param, the physics, a world's metadata, the model
manifest) is read and written through these two functions, so each answer
carries its etcd revision and every conditional write is one compare-and-swap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args

from consistency.cp_store import Consistency, CPStore

CONSISTENCIES: tuple[str, ...] = get_args(Consistency)

__all__ = ["CONSISTENCIES", "Consistency", "Precondition", "Versioned", "Written", "read", "write"]


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


async def read(cp: CPStore, path: str, consistency: Consistency = "linearizable") -> Versioned:
    entry = await cp.get(path, consistency)
    return Versioned(entry.value, entry.mod_revision, entry.create_revision, entry.version, entry.revision,
                     entry.consistency)


async def write(cp: CPStore, path: str, value: Any, pre: Precondition) -> Written:
    result = await cp.put(path, value, if_revision=pre.if_revision, create_only=pre.create_only,
                          must_exist=pre.must_exist)
    return Written(result.revision, pre.create_only)
