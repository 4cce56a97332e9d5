"""The AP tier's merge rules as a pure reference model (no I/O): see `replica`.

What the Lua scripts implement, and so all this models: per entity,
last-writer-wins field registers ordered by the order key "<hlc>|<node>"
compared as bytes, PN-counter slots per source@region (with compensation for
an event accepted at two regions), and dedup by event id. The AP tier has no
add-wins set (no tags): nothing stores or merges one, so none is modelled.
"""

from consistency.crdt.replica import (
    Compensated,
    Delta,
    EntityModel,
    Observed,
    Register,
    ReplicaModel,
    Scalar,
    anti_entropy,
    bucket,
    byte_lt,
)

__all__ = ["Compensated", "Delta", "EntityModel", "Observed", "Register", "ReplicaModel", "Scalar",
           "anti_entropy", "bucket", "byte_lt"]
