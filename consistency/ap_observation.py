"""An observation as the AP tier's scripts take it: a NamedTuple, packed once for ingest.lua."""

from __future__ import annotations

from typing import Any, NamedTuple

import msgpack

from consistency.ap_entity import DELETED, TOMBSTONE_SOURCE, Scalar

__all__ = ["Observation", "pack_observation", "tombstone"]


class Observation(NamedTuple):  # a NamedTuple: tens of thousands are built a second
    world: str
    entity: str
    event_id: str
    source: str
    fields: dict[str, Scalar]
    observed_at_ms: int | None = None


# Redis's cmsgpack predates msgpack's bin type: bytes sent to Lua travel as raw strings.
_lua_pack = msgpack.Packer(use_bin_type=False).pack
_pack = msgpack.Packer().pack


def pack_observation(ob: Observation, order_key: str) -> bytes:
    """One ingest.lua argument, and the stream entry's `d`:
    [world, entity, event_id, source, field, order_key, register, field, ...]."""
    # Each register is msgpack [value, source, event_id, observed_at_ms]: a fixarray
    # header (0x94), the value, then the same three packed once per observation.
    meta = _pack(ob.source) + _pack(ob.event_id) + _pack(ob.observed_at_ms)
    flat: list[Any] = [ob.world, ob.entity, ob.event_id, ob.source]
    for name, value in ob.fields.items():
        flat += (name, order_key, b"\x94" + _pack(value) + meta)
    return _lua_pack(flat)


def tombstone(world: str, entity: str, event_id: str, at_ms: int | None = None) -> Observation:
    """A delete of an entity, written as an observation of its tombstone register (ap_entity.py)."""
    return Observation(world, entity, event_id, TOMBSTONE_SOURCE, {DELETED: True}, at_ms)
