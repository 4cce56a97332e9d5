"""Anti-entropy of one partition between two replicas: compare per-bucket digests, ship what differs whole.

The shipper (consistency/replication.py) falls back to it when a stream was trimmed past a peer's
offset; the failover watch (consistency/ap_failover.py) runs it both ways after a partition's
master changed. A bucket is shipped as whole entities (state and seen events) and merged with the
ordinary merge rules (lua/merge_state.lua), so shipping one that already matches changes nothing.
"""

from __future__ import annotations

import asyncio

from consistency.ap_store import ReplicaStore

__all__ = ["anti_entropy"]


async def anti_entropy(source: ReplicaStore, dest: ReplicaStore, p: int) -> int:
    """Ship every bucket of partition `p` whose digest differs from `source` to `dest`; returns how many.

    What was dumped is fenced first (ap_logs.fence), as the shipper fences what it read: at ack >= 1 a
    write whose WAIT failed sits on `source`'s master alone, and shipped, a failover there would drop
    it at home only. Raises OutcomeUnknown, having shipped nothing, while no replica confirms."""
    ours, theirs = await asyncio.gather(source.digests(p), dest.digests(p))
    dumps = [await source.dump_bucket(p, bucket) for bucket, (a, b) in enumerate(zip(ours, theirs)) if a and a != b]
    if not dumps:
        return 0
    await source.fence(dest.region, {p: await source.last_id(p)})
    for dump in dumps:
        await dest.merge_state(dump, source.region)
    return len(dumps)
