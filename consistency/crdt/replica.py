"""The reference model: what the scripts in consistency/lua/ do to one replica.

Pure (no I/O). It keeps the state the scripts keep per entity (`T:e` and
`T:s`, see consistency/ap_keys.py) and has their operations, step for step:

- `ingest` (ingest.lua): refuse an event id the entity has seen; otherwise
  merge each field as a last-writer-wins register, add one to the slot
  `p:<source>@<this region>`, append an `Observed` delta to the log.
- `apply` (apply.lua): merge a peer's deltas: the registers, then the slot
  total the delta carries (the greater wins: a slot has one writer, its origin).
  When this replica had itself accepted the same event from a client and the
  delta comes from a region that sorts first, the count is taken back: one more
  on `n:<source>@<this region>`, shipped as a `Compensated` delta.
- `merge_state` (merge_state.lua), driven by `anti_entropy` (digests.lua and
  replication.anti_entropy): the same merges from a peer's whole entity, its
  seen events included, for every key bucket whose digest differs.

Left out, as bookkeeping rather than merged state: the dedup window's expiry
(expire_dedup.lua), stream trimming, T:clock, the applied/acked offsets.

tests/test_crdt_lua.py runs the same random operations through this model and
through the scripts on real Redis replicas and compares the states.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, Union

from consistency.ap_keys import entity_key, parse_entity_key, partition

Scalar = Union[None, bool, int, float, str]
Slot = tuple[str, str, str]  # ("p" or "n", source, region): the hash field "p:<source>@<region>"


def byte_lt(a: str, b: str) -> bool:
    """The one string order of every merge: UTF-8 bytes (bytes_lt in lua/common.lua).

    Not Lua's `<`: Redis sets LC_COLLATE from its environment and Lua's `<`
    calls strcoll, so under en_US.UTF-8 'nodea' sorts before 'node-b', under C
    after it, and two replicas started differently would pick different winners.
    """
    return a.encode() < b.encode()


class Register(NamedTuple):
    """One field's write. Registers with equal order keys are the same write: a
    node's HLC stamps each observation once, and the key ends with the node id."""

    order_key: str  # "<hlc>|<node>": fixed-width hex HLC, so byte order is (HLC, node) order
    value: Scalar
    source: str
    event_id: str
    observed_at_ms: int | None


class Observed(NamedTuple):
    """A stream entry `d` (with its `p`): an observation accepted at its origin."""

    world: str
    entity: str
    event_id: str
    source: str
    registers: tuple[tuple[str, Register], ...]
    count: int  # the origin's p-slot total for the source after this observation


class Compensated(NamedTuple):
    """A stream entry `c` (with its `n`): a duplicate's count taken back."""

    world: str
    entity: str
    source: str
    count: int  # the origin's n-slot total for the source


Delta = Union[Observed, Compensated]


@dataclass
class EntityModel:
    registers: dict[str, Register] = field(default_factory=dict)
    slots: dict[Slot, int] = field(default_factory=dict)
    # event id -> "<region that accepted it>|<source>", "!" appended once compensated
    seen: dict[str, str] = field(default_factory=dict)

    def counters(self) -> dict[str, int]:
        """Observations per source, as EntityState.from_hash sums the slots."""
        out: dict[str, int] = {}
        for (kind, source, _), total in self.slots.items():
            out[source] = out.get(source, 0) + (total if kind == "p" else -total)
        return dict(sorted(out.items()))

    def digest(self) -> tuple[object, ...]:
        """What digests.lua hashes (the entity hash, not the seen events); one
        order key is one write, so the keys stand for the registers."""
        return (sorted((n, r.order_key) for n, r in self.registers.items()), sorted(self.slots.items()))


class ReplicaModel:
    """One region's Redis as the scripts see it."""

    def __init__(self, region: str) -> None:
        self.region = region
        self.entities: dict[tuple[str, str], EntityModel] = {}
        self.log: list[Delta] = []  # every partition's T:stream, merged in the order written

    def _entity(self, world: str, entity: str) -> EntityModel:
        return self.entities.setdefault((world, entity), EntityModel())

    def ingest(self, world: str, entity: str, event_id: str, source: str, fields: Mapping[str, Scalar],
               order_key: str, observed_at_ms: int | None = None) -> bool:
        """One observation posted here, stamped `order_key`; False if its event id was seen."""
        known = self.entities.get((world, entity))
        if known is not None and event_id in known.seen:
            return False
        ent = self._entity(world, entity)
        ent.seen[event_id] = f"{self.region}|{source}"
        registers = tuple((n, Register(order_key, v, source, event_id, observed_at_ms)) for n, v in fields.items())
        for name, reg in registers:
            _merge_register(ent, name, reg)
        slot = ("p", source, self.region)
        ent.slots[slot] = ent.slots.get(slot, 0) + 1
        self.log.append(Observed(world, entity, event_id, source, registers, ent.slots[slot]))
        return True

    def apply(self, origin: str, deltas: Iterable[Delta]) -> None:
        """Deltas from `origin`'s log, in any order and with any duplicates."""
        for d in deltas:
            ent = self._entity(d.world, d.entity)
            if isinstance(d, Observed):
                for name, reg in d.registers:
                    _merge_register(ent, name, reg)
                _merge_slot(ent, ("p", d.source, origin), d.count)
                self._note_event(ent, d.world, d.entity, d.event_id, origin, d.source)
            else:
                _merge_slot(ent, ("n", d.source, origin), d.count)

    def merge_state(self, world: str, entity: str, peer: EntityModel) -> None:
        """A peer's whole entity (anti-entropy)."""
        ent = self._entity(world, entity)
        for slot, total in peer.slots.items():
            _merge_slot(ent, slot, total)
        for name, reg in peer.registers.items():
            _merge_register(ent, name, reg)
        for event_id, record in list(peer.seen.items()):
            origin, _, source = record.partition("|")
            self._note_event(ent, world, entity, event_id, origin, source.removesuffix("!"))

    def _note_event(self, ent: EntityModel, world: str, entity: str, event_id: str, origin: str, source: str) -> None:
        """`event_id` was accepted at `origin`. If this replica accepted it too, the
        region that sorts first keeps the count and this one takes its own back."""
        record = ent.seen.get(event_id)
        if record is None:
            ent.seen[event_id] = f"{origin}|{source}"
        elif record == f"{self.region}|{source}" and origin != self.region and byte_lt(origin, self.region):
            ent.seen[event_id] = record + "!"
            slot = ("n", source, self.region)
            ent.slots[slot] = ent.slots.get(slot, 0) + 1
            self.log.append(Compensated(world, entity, source, ent.slots[slot]))


def _merge_register(ent: EntityModel, name: str, reg: Register) -> None:
    cur = ent.registers.get(name)
    if cur is None or byte_lt(cur.order_key, reg.order_key):
        ent.registers[name] = reg


def _merge_slot(ent: EntityModel, slot: Slot, total: int) -> None:
    if ent.slots.get(slot, 0) < total:
        ent.slots[slot] = total


def bucket(world: str, entity: str) -> tuple[int, int]:
    """The entity's anti-entropy bucket: its partition, and the first hex digit of sha1 of its key
    (index_entity in common.lua)."""
    return partition(world, entity), int(hashlib.sha1(entity_key(world, entity).encode()).hexdigest()[:1], 16)


def anti_entropy(source: ReplicaModel, dest: ReplicaModel) -> int:
    """replication.anti_entropy: ship each of `source`'s buckets whose digest differs, whole."""
    def buckets(r: ReplicaModel) -> dict[tuple[int, int], dict[str, tuple[object, ...]]]:
        out: dict[tuple[int, int], dict[str, tuple[object, ...]]] = {}
        for (world, entity), ent in r.entities.items():
            out.setdefault(bucket(world, entity), {})[entity_key(world, entity)] = ent.digest()
        return out

    ours, theirs = buckets(source), buckets(dest)
    shipped = 0
    for b in sorted(ours):
        if ours[b] != theirs.get(b):
            for key in sorted(ours[b]):  # dump_bucket's order
                world, entity = parse_entity_key(key)
                dest.merge_state(world, entity, source.entities[(world, entity)])
            shipped += 1
    return shipped
