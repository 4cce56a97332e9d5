"""An entity as readers see it: its merged hash, less what a delete hides.

A delete is an ordinary last-writer-wins register, `~deleted` (a name no observation
can use: field names match ap_keys.FIELD_RE, which has no '~'), written with the
deleting node's HLC stamp by the same scripts as any observation, so it dedups,
replicates and converges like one. Reading applies one rule, here and nowhere else:
a field is visible only if its order key is greater (as bytes) than the tombstone's.
An entity with a tombstone and no visible field is deleted. A write stamped after the
delete brings back only the fields it writes.

Counters are not reset by a delete: they count every observation ever merged per
source (a PN-counter has no order to compare with a tombstone's). The delete itself is
counted under a reserved source (TOMBSTONE_SOURCE), which readers leave out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgpack

Scalar = float | int | str | bool | None

DELETED = "~deleted"  # the tombstone's register name
TOMBSTONE_SOURCE = "~delete"  # the source a delete is recorded under (SOURCE_RE has no '~' either)
_TOMB_KEY = f"t:{DELETED}".encode()


@dataclass(frozen=True)
class FieldState:
    value: Scalar
    hlc: str
    node: str
    source: str
    event_id: str
    observed_at_ms: int | None


@dataclass
class EntityState:
    world: str
    entity: str
    fields: dict[str, FieldState] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)  # observations per source
    tombstone: FieldState | None = None  # the newest delete merged here, whatever it hides

    @property
    def deleted(self) -> bool:
        """Deleted: a tombstone, and no field written after it."""
        return self.tombstone is not None and not self.fields

    @classmethod
    def from_hash(cls, world: str, entity: str, raw: dict[bytes, bytes]) -> "EntityState":
        state = cls(world, entity)
        tomb = raw.get(_TOMB_KEY, b"")  # b"" sorts before every order key: nothing hidden
        slots: dict[str, int] = {}
        for k, v in raw.items():
            key = k.decode()
            kind, name = key[:2], key[2:]
            if kind == "f:":
                order = raw[f"t:{name}".encode()]
                if order <= tomb and name != DELETED:
                    continue
                value, source, event_id, observed_at = msgpack.unpackb(v)
                hlc, _, node = order.decode().partition("|")
                fs = FieldState(value, hlc, node, source, event_id, observed_at)
                if name == DELETED:
                    state.tombstone = fs
                else:
                    state.fields[name] = fs
            elif kind in ("p:", "n:"):
                source = name.rpartition("@")[0]
                if source != TOMBSTONE_SOURCE:
                    slots[source] = slots.get(source, 0) + (int(v) if kind == "p:" else -int(v))
        state.counters = dict(sorted(slots.items()))
        state.fields = dict(sorted(state.fields.items()))
        return state
