"""A learner's reading of its region's delta streams (T:stream, one per partition): the log as training data.

`consume` reads the observations the region's replica accepted, from a durable offset of the
learner's own, turns one world's into per-entity trajectories at the world's time step
(learn/trajectories.py) and writes the samples as content-addressed shards (learn/shards.py).

The offset is a registered consumer of the replica (T:consumers, consistency/ap_consumers.py), one
stream id per partition, written out as a vector (consistency/ap_positions.py, `v2.<p>-<ms>-<seq>...`):
it survives restarts, and housekeeping never trims a stream past it, whatever the peers
acknowledged. The stream's cap (stream_maxlen) trims regardless: a consumer that finds a
partition's stream trimmed past its offset lost entries it never read, and says so in its stats
(`gaps`, each the partition and the (after, through] range lost) rather than skipping them
silently, then goes on from the oldest entry retained. `start` replays from any offset (a vector,
or one stream id for every partition: ids are wall-clock milliseconds, so that is "everything
after that time"; a gap too if it is no longer retained); `unregister` releases the floor.
Partitions are read one after the other: an entity's observations stay in their order, which is
all the trajectories need (they are per entity).

Each batch commits in this order: the shard, then the index with the learner state (one
rename), then the consumer's offset in Redis. A learner that dies in between reads the batch
again on restart; the state's frontiers make that, or any replay, add no sample twice.

One consumer name follows one world: entries of other worlds are read past (counted in
`other_worlds`). A shard folder serves one region's learner per world.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import msgpack

from consistency import cp_keys
from consistency.ap_consumers import StreamConsumers
from consistency.ap_positions import Vector, format_vector, parse_vector, stream_id
from consistency.ap_store import ALL, ReplicaStore, StreamEntry
from consistency.cp_store import CPStore
from learn.shards import Index, ShardDir
from learn.trajectories import Grid, Observed, Trajectories
from world_model.config import Physics

__all__ = ["ConsumeStats", "consume", "consume_async", "decode", "read_physics", "register", "unregister"]


@dataclass
class ConsumeStats:
    consumer: str
    region: str
    world: str
    after: str  # the offsets this run started after (a vector, consistency/ap_positions.py)
    through: str = ""  # the offsets after the last entry consumed ('' if none)
    entries: int = 0  # stream entries read, of every world
    observations: int = 0  # observations of the world read
    other_worlds: int = 0  # entries of other worlds (and compensations) read past
    samples: int = 0  # samples added to the shards
    shards: list[str] = field(default_factory=list)  # hashes of the shards written
    gaps: list[dict[str, Any]] = field(default_factory=list)  # {"partition", "after", "through"}: trimmed unread
    time_step: float = 0.0
    state_discarded: bool = False  # the grid changed (time_step): open trajectories were dropped

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decode(world: str, entry: StreamEntry) -> Observed | None:
    """The observation of `world` a stream entry carries (the layout in consistency/ap_keys.py), else None."""
    sid, f = entry
    if "d" not in f:
        return None  # a compensation: a counter correction, no state
    # registers are msgpack inside the entry, sent to Lua as raw strings
    flat = msgpack.unpackb(f["d"], raw=True)
    if flat[0].decode() != world:
        return None
    fields: dict[str, Any] = {}
    at_ms: int | None = None
    for i in range(4, len(flat), 3):
        value, _source, _event, observed_at = msgpack.unpackb(flat[i + 2])
        fields[flat[i].decode()] = value
        at_ms = observed_at if observed_at is not None else at_ms
    position = stream_id(sid)
    return Observed(flat[1].decode(), flat[2].decode(), position[0] if at_ms is None else int(at_ms),
                    fields, position)


async def read_physics(etcd_endpoints: Sequence[str], world: str, username: str | None = None,
                       password: str | None = None) -> Physics:
    """The world's physics/constants from the CP tier (NotFound if it has none)."""
    cp = CPStore(etcd_endpoints, username=username, password=password)
    await cp.connect()
    try:
        entry = await cp.get(cp_keys.param_path(world, cp_keys.PHYSICS_KEY))
    finally:
        await cp.close()
    return Physics.from_dict(entry.value)


async def consume_async(replica_url: str, region: str, world: str, shard_dir: str, consumer_name: str, *,
                        physics: Physics | None = None, etcd_endpoints: Sequence[str] = (),
                        start: str | None = None, frames: int = 16, stride: int | None = None,
                        max_gap: int = 2, batch: int = 5000, max_entries: int | None = None) -> ConsumeStats:
    """Consume `region`'s stream as `consumer_name` up to its end (or `max_entries`): see the module.

    `physics`: the world's constants, else read from etcd at `etcd_endpoints`. `start`: replay
    after this offset instead of the consumer's own. `frames`, `stride` (default `frames`),
    `max_gap`: the samples' shape (learn/trajectories.py)."""
    if physics is None:
        if not etcd_endpoints:
            raise ValueError("give the world's physics or the etcd endpoints to read it from")
        physics = await read_physics(etcd_endpoints, world)
    grid = Grid(physics.time_step, frames, stride or frames, max_gap)
    out = ShardDir(shard_dir, world)
    store = ReplicaStore(replica_url, region, f"learner-{consumer_name}")
    consumers = StreamConsumers(store.redis, region)
    try:
        with out.locked():
            index = out.index(frames)
            if index.frames != frames:
                raise ValueError(f"the shards of {world} in {shard_dir} have {index.frames} frames a sample, "
                                 f"not {frames}")
            offsets = await consumers.register(consumer_name, _start(start))
            trajectories = Trajectories(grid, out.state(index))
            stats = ConsumeStats(consumer_name, region, world, format_vector(offsets), time_step=physics.time_step,
                                 state_discarded=trajectories.discarded)
            until = await store.last_ids()  # entries arriving meanwhile wait for the next run
            pending = [p for p in ALL if stream_id(offsets[p]) < stream_id(until[p])]
            while pending and (max_entries is None or stats.entries < max_entries):
                room = batch if max_entries is None else min(batch, max_entries - stats.entries)
                after, taken, moved = format_vector(offsets), [], {}
                for p in list(pending):
                    if len(taken) >= room:
                        break
                    entries = await _read(p, offsets, until[p], room - len(taken), consumers, stats)
                    if not entries:
                        pending.remove(p)
                        continue
                    taken += entries
                    offsets[p] = moved[p] = entries[-1][0]
                if taken:  # one batch, one shard, whatever partitions it came from
                    _take(taken, index, trajectories, out, physics, stats, after, format_vector(offsets))
                    await consumers.commit(consumer_name, moved)
                    stats.through = format_vector(offsets)
    finally:
        await store.close()
    return stats


def _start(start: str | None) -> Vector | None:
    """A replay's offsets: a vector, or one stream id for every partition."""
    if start is None:
        return None
    if start.startswith("v2"):
        return parse_vector(start)
    return dict.fromkeys(ALL, start)


async def _read(p: int, offsets: Vector, until: str, count: int, consumers: StreamConsumers,
                stats: ConsumeStats) -> list[StreamEntry]:
    """Up to `count` entries of partition p's stream after offsets[p], none past `until`; a trim
    past the offset is reported as a gap (once: the offset moves past it at once)."""
    while True:
        trimmed, entries = await consumers.read(p, offsets[p], count)
        if not StreamConsumers.lost(offsets[p], trimmed):
            return [e for e in entries if stream_id(e[0]) <= stream_id(until)]
        stats.gaps.append({"partition": p, "after": offsets[p], "through": trimmed})
        offsets[p] = trimmed
        stats.through = format_vector(offsets)
        await consumers.commit(stats.consumer, {p: trimmed})  # a gap is reported once
        # read again after the marker: no entry in between is left


def _take(entries: list[StreamEntry], index: Index, trajectories: Trajectories, out: ShardDir,
                physics: Physics, stats: ConsumeStats, after: str, through: str) -> None:
    """One batch: its samples into a shard, then the index and state that name it (one commit)."""
    observed = []
    for entry in entries:
        ob = decode(stats.world, entry)
        if ob is None:
            stats.other_worlds += 1
        else:
            observed.append(ob)
    stats.entries += len(entries)
    stats.observations += len(observed)
    samples = trajectories.add(observed)
    if samples:
        provenance = {"world": stats.world, "region": stats.region, "consumer": stats.consumer,
                      "after": after, "through": through}
        digest = out.put_shard(samples, physics, provenance)
        index.shards.append({**provenance, "hash": digest, "samples": len(samples),
                             "time_step": physics.time_step})
        stats.shards.append(digest)
        stats.samples += len(samples)
    index.offsets[f"{stats.region}/{stats.consumer}"] = through
    out.commit(index, trajectories.state())


def consume(replica_url: str, region: str, world: str, shard_dir: str, consumer_name: str,
            **options: Any) -> ConsumeStats:
    """`consume_async` from synchronous code (a CLI)."""
    return asyncio.run(consume_async(replica_url, region, world, shard_dir, consumer_name, **options))


def register(replica_url: str, region: str, consumer_name: str) -> Vector:
    """Register the consumer (or keep its offset) before anything else can fail: a learner started
    before its world has physics then holds the trim floor from its first round, and reads every
    observation posted since (registering later would begin after what housekeeping trimmed)."""

    async def run() -> Vector:
        store = ReplicaStore(replica_url, region, f"learner-{consumer_name}")
        try:
            return await StreamConsumers(store.redis, region).register(consumer_name)
        finally:
            await store.close()

    return asyncio.run(run())


async def unregister(replica_url: str, region: str, consumer_name: str) -> bool:
    """Forget the consumer's offset, releasing the floor it held on housekeeping; whether it was registered."""
    store = ReplicaStore(replica_url, region, f"learner-{consumer_name}")
    try:
        return await StreamConsumers(store.redis, region).unregister(consumer_name)
    finally:
        await store.close()
