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
    """Ship every bucket of partition `p` whose digest differs from `source` to `dest`; returns how many."""
    ours, theirs = await asyncio.gather(source.digests(p), dest.digests(p))
    shipped = 0
    for bucket, (a, b) in enumerate(zip(ours, theirs)):
        if a and a != b:
            await dest.merge_state(await source.dump_bucket(p, bucket), source.region)
            shipped += 1
    return shipped
