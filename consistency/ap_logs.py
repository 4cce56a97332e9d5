"""A replica's per-partition logs: its delta streams, their offsets, and its changes logs.

Each of the P partitions (consistency/ap_keys.py) has its own delta stream (T:stream), the
offsets peers acknowledged of it (T:acked), those it applied of each peer's same partition
(T:applied), a trimmed marker, and a changes log (T:changes). ReplicaStore inherits these
reads and bookkeeping steps; positions over all partitions are vectors (ap_positions.py).

On one Redis a read of every partition is one pipeline, and the blocking reads (`read_partitions`,
`wait_changes`) name all P streams in one XREAD. On a Redis Cluster (`cluster`) XREAD cannot span
slots: those become non-blocking reads of each partition, in one pipeline per master (redis-py's
cluster pipeline), and a wait is a sleep between such rounds (docs/ap-cluster.md §3).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ClusterDownError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from consistency import ap_keys as K
from consistency.ap_changes import LoggedChange, LogState, parse_read
from consistency.ap_positions import ZERO, Vector, stream_id
from consistency.errors import OutcomeUnknown
from consistency.hlc import wall_clock_ms

__all__ = ["ALL", "PartitionLogs", "StreamEntry"]
T = TypeVar("T")
StreamEntry = tuple[str, dict[str, bytes]]
ALL = range(K.PARTITIONS)
# How often a cluster's changes watcher looks at every partition while waiting (§6: the idle cost).
_POLL_S = 0.05


def _s(b: bytes | str) -> str:
    return b.decode() if isinstance(b, bytes) else b


def _entries(raw: list[Any]) -> list[StreamEntry]:
    return [(_s(i), {_s(k): v for k, v in f.items()}) for i, f in raw]


class PartitionLogs:
    """The logs half of ReplicaStore (which provides these attributes and the two helpers)."""

    redis: aioredis.Redis
    region: str
    stream_maxlen: int
    dedup_window_s: float
    dedup_max: int
    changes_maxlen: int | None
    partitions_per_call: int
    cluster: bool
    _changes_configured: bool
    _on_cluster: Any  # ap_backend.ClusterScripts on a cluster, else None

    async def _read(self, fn: Callable[[], Awaitable[T]]) -> T:
        raise NotImplementedError

    async def _call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        raise NotImplementedError

    async def _call_many(self, name: str, calls: list[tuple[list[str], list[Any]]], *, read: bool = False) -> list[Any]:
        raise NotImplementedError

    async def _each(self, command: Callable[[Any, int], object], parts: Iterable[int] = ALL) -> dict[int, Any]:
        """One command per partition in one pipeline; a reply error comes back as a value, a lost node raises."""
        parts = list(parts)

        async def run() -> list[Any]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for p in parts:
                    command(pipe, p)
                values = list(await pipe.execute(raise_on_error=False))
            # One Redis raises a lost connection for the whole pipeline; a cluster pipeline puts it (or
            # CLUSTERDOWN, while a failover is under way) in the places of the node it could not reach,
            # where a caller would take it for a reply (found by jepsen_like's shard nemesis: a 500 on
            # GET entity). Raised, as on one Redis: `_read` retries, then answers Unavailable.
            for v in values:
                if isinstance(v, (RedisConnectionError, RedisTimeoutError, ClusterDownError)):
                    raise v
            return values

        return dict(zip(parts, await self._read(run)))

    async def _across(self, op: str, keys: list[str], field: str = "", values: list[str] | None = None) -> list[Any]:
        """keys.lua's `op` on each key: one call for all of them on one Redis (a few hundred commands in a
        pipeline cost a shipper's step ~10 ms of client CPU), one a key on a cluster."""
        extra = [field] if field else []
        if self.partitions_per_call > 1:
            calls = [(keys, [op, *extra, *(values or [])])]
        else:
            calls = [([k], [op, *extra, *([values[i]] if values else [])]) for i, k in enumerate(keys)]
        answers = await self._call_many("keys", calls, read=op != "hset")
        for a in answers:
            if isinstance(a, Exception):
                raise a
        return [v for a in answers for v in a]

    # -- the changes logs ----------------------------------------------------------------

    async def configure_changes(self) -> None:
        """Set every partition's changes log cap for this replica's scripts, once (a store built with one).
        The cap is per partition: a world's changes spread over all of them."""
        if not self._changes_configured:
            await self._each(lambda pipe, p: pipe.set(K.changes_maxlen(p), str(self.changes_maxlen)))
            self._changes_configured = True

    async def _changes(self, after: Vector, count: int, mode: str) -> dict[int, tuple[LogState, Any]]:
        parts = sorted(after)
        out = await self._call_many("changes", [([K.changes(p)], [after[p], count, mode]) for p in parts], read=True)
        return {p: parse_read(v) for p, v in zip(parts, out)}

    async def changes_after(self, after: Vector, count: int) -> dict[int, tuple[LogState, list[LoggedChange]]]:
        """For each partition named in `after`: up to `count` entries of its changes log after its
        position, and the log's state, each in one step (all in one round trip)."""
        return await self._changes(after, count, "read")

    async def changes_count(self, after: Vector, cap: int) -> dict[int, tuple[LogState, int]]:
        """For each partition named in `after`: how many entries of its changes log follow its position
        (counting stops past `cap`), and the log's state."""
        out = await self._changes(after, cap + 1, "count")
        return {p: (state, n if isinstance(n, int) else 0) for p, (state, n) in out.items()}

    async def changes_heads(self, parts: Iterable[int] = ALL) -> dict[int, LogState]:
        """Each partition's changes log state (its last id, entries added, held, oldest)."""
        return {p: state for p, (state, _) in (await self._changes(dict.fromkeys(parts, ZERO), 0, "read")).items()}

    async def wait_changes(self, after: Vector, block_ms: int) -> bool:
        """Block until some partition's changes log has an entry past `after` or `block_ms` passed."""
        if self.cluster:
            deadline = time.monotonic() + block_ms / 1000
            while True:
                found = await self._each(lambda pipe, p: pipe.xread({K.changes(p): after.get(p, ZERO)}, count=1))
                if any(v and not isinstance(v, Exception) for v in found.values()):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                await asyncio.sleep(min(left, _POLL_S))
        resp = await self.redis.xread({K.changes(p): after.get(p, ZERO) for p in ALL}, count=1, block=block_ms)
        return bool(resp)

    # -- the delta streams -----------------------------------------------------------------

    async def last_id(self, p: int) -> str:
        """The newest id partition p's stream ever issued (still known after trimming)."""
        try:
            info = await self._read(lambda: self.redis.xinfo_stream(K.stream(p)))
        except ResponseError:
            return ZERO  # no stream yet
        return _s(info["last-generated-id"])

    async def last_ids(self, parts: Iterable[int] = ALL) -> Vector:
        """The newest id of each partition's stream (0-0 where it has none)."""
        out = await self._each(lambda pipe, p: pipe.xinfo_stream(K.stream(p)), parts)
        return {p: ZERO if isinstance(v, Exception) else _s(v["last-generated-id"]) for p, v in out.items()}

    async def lengths(self) -> tuple[int, int, int, int]:
        """Entries held now in this replica's delta streams and changes logs, in all partitions and
        in the largest one of each: (streams, changes, largest stream, largest changes log)."""
        streams = await self._each(lambda pipe, p: pipe.xlen(K.stream(p)))
        logs = await self._each(lambda pipe, p: pipe.xlen(K.changes(p)))
        s, c = [int(v) for v in streams.values()], [int(v) for v in logs.values()]
        return sum(s), sum(c), max(s), max(c)

    async def read_after(self, p: int, after: str, count: int) -> list[StreamEntry]:
        """Up to `count` entries of partition p's stream after `after`."""
        return _entries(await self.redis.xrange(K.stream(p), f"({after}", "+", count=count))

    async def read_partitions(self, after: Vector, count: int, block_ms: int | None = None) -> dict[int, list[StreamEntry]]:
        """Up to `count` entries of each partition's stream after `after` (0-0 where absent), only the
        partitions that have some; with `block_ms`, waiting that long for any when none has."""
        if self.cluster:
            found = await self._read_each(after, count)
            if not found and block_ms is not None:  # every partition empty: one idle tick, then look again
                await asyncio.sleep(block_ms / 1000)
                found = await self._read_each(after, count)
            return found
        streams = {K.stream(p): after.get(p, ZERO) for p in ALL}
        resp = await self.redis.xread(streams, count=count)
        # A blocked XREAD is answered with the one stream that woke it, though the script that woke it
        # wrote to many: so block only to wait, then read them all.
        if not resp and block_ms is not None and await self.redis.xread(streams, count=1, block=block_ms):
            resp = await self.redis.xread(streams, count=count)
        tags = {K.stream(p): p for p in ALL}
        return {tags[_s(name)]: _entries(entries) for name, entries in resp or [] if entries}

    async def _read_each(self, after: Vector, count: int) -> dict[int, list[StreamEntry]]:
        out = await self._each(lambda pipe, p: pipe.xread({K.stream(p): after.get(p, ZERO)}, count=count))
        found: dict[int, list[StreamEntry]] = {}
        for p, resp in out.items():
            if isinstance(resp, Exception):
                raise resp
            for _, entries in (resp.items() if isinstance(resp, dict) else resp or []):
                if entries:
                    found[p] = _entries(entries)
        return found

    async def acked(self, peer: str) -> Vector:
        """What `peer` acknowledged of each partition's stream (0-0 where nothing)."""
        out = await self._across("hget", [K.acked(p) for p in ALL], peer)
        return {p: _s(v) if isinstance(v, bytes) else ZERO for p, v in zip(ALL, out)}

    async def fence(self, peer: str, read: Vector) -> None:
        """On a cluster whose writes wait for a replica: one write to each partition read, after the read,
        waited for like every write (WAIT on its connection), so every entry read is on a replica too.
        The shipper calls it before it ships: without it, a write whose WAIT failed (answered 504, on
        the master alone) reached peers, the failover then dropped it at home only, and a write
        after the failover counted from the lower value, which the peers' max absorbed: an
        acknowledged write lost (docs/ap-cluster.md §14). Raises OutcomeUnknown while no replica
        confirms. One Redis, or no replicas: nothing to wait for, nothing sent."""
        if self._on_cluster is None or not read or not await self._on_cluster.ack_replicas():
            return
        parts = list(read)
        try:
            await self._across("hset", [K.fence(p) for p in parts], peer, [read[p] for p in parts])
        except OutcomeUnknown as e:
            raise OutcomeUnknown(f"not shipped to {peer}: no replica confirmed what was read ({e})") from e

    async def set_acked(self, peer: str, offsets: Vector) -> None:
        parts = list(offsets)
        await self._across("hset", [K.acked(p) for p in parts], peer, [offsets[p] for p in parts])

    async def all_acked(self) -> dict[int, dict[str, str]]:
        """Per partition, peer -> the offset it acknowledged."""
        out = await self._each(lambda pipe, p: pipe.hgetall(K.acked(p)))
        return {p: {_s(k): _s(v) for k, v in h.items()} for p, h in out.items()}

    async def trimmed(self) -> Vector:
        """The newest id trimmed from each partition's stream (0-0 where none)."""
        out = await self._across("get", [K.trimmed(p) for p in ALL])
        return {p: _s(v) if isinstance(v, bytes) else ZERO for p, v in zip(ALL, out)}

    async def applied(self, origin: str | None = None, parts: Iterable[int] = ALL) -> dict[str, Vector]:
        """Origin region -> how far this replica applied each partition (of `parts`) of its streams."""
        if origin is not None:  # one field of each hash, not all of it
            parts = list(parts)
            one = await self._across("hget", [K.applied(p) for p in parts], origin)
            found = {p: _s(v) for p, v in zip(parts, one) if isinstance(v, bytes)}
            return {origin: found} if found else {}
        out = await self._each(lambda pipe, p: pipe.hgetall(K.applied(p)), parts)
        regions: dict[str, Vector] = {}
        for p, h in out.items():
            for k, v in h.items():
                if origin is None or _s(k) == origin:
                    regions.setdefault(_s(k), {})[p] = _s(v)
        return regions

    async def watermark(self) -> dict[str, str]:
        """What this replica reflects, per region, its own included: the *smallest* id over all partitions
        of that region's streams it applied (a lower bound: every partition is at least that far)."""
        marks = {r: min((v.get(p, ZERO) for p in ALL), key=stream_id) for r, v in (await self.applied()).items()}
        marks[self.region] = min((await self.last_ids()).values(), key=stream_id)
        return dict(sorted(marks.items()))

    async def wait_applied(self, origin: str, target: Vector, timeout_s: float) -> bool:
        """Wait until this replica has applied `origin`'s streams up to `target`, partition by partition."""
        deadline = time.monotonic() + timeout_s
        while True:
            if origin == self.region:
                current = await self.last_ids(target)
            else:
                current = (await self.applied(origin, target)).get(origin, {})
            if all(stream_id(current.get(p, ZERO)) >= stream_id(sid) for p, sid in target.items()):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)

    # -- housekeeping and anti-entropy, one partition at a time -------------------------------

    async def trim(self, p: int, maxlen: int | None = None, acked_by_all: str = "") -> str:
        """Trim partition p's stream up to `acked_by_all` (never past a registered consumer) and to its cap."""
        maxlen = self.stream_maxlen if maxlen is None else maxlen
        # K.consumers: registered consumers hold the floor down too (consistency/ap_consumers.py)
        return _s(await self._call("trim", [K.stream(p), K.trimmed(p), K.consumers(p)], [maxlen, acked_by_all]))

    async def expire_dedup(self, p: int) -> int:
        """Forget partition p's event ids older than the window (whole minutes) or beyond its share of
        the cap (dedup_max split P ways); a bounded step."""
        oldest_minute = (wall_clock_ms() - int(self.dedup_window_s * 1000)) // 60000
        share = K.share(self.dedup_max)
        return int(await self._call("expire_dedup", [K.dedup_minutes(p)], [oldest_minute, share]))

    async def digests(self, p: int) -> list[str]:
        return [_s(d) for d in await self._call("digests", [K.stream(p)], [K.BUCKETS_PER_PARTITION])]

    async def dump_bucket(self, p: int, bucket: int) -> list[tuple[str, str, dict[bytes, bytes], dict[bytes, bytes]]]:
        members = sorted(_s(m) for m in await self.redis.smembers(K.bucket_key_in(p, bucket)))
        async with self.redis.pipeline(transaction=False) as pipe:
            for ekey in members:
                world, entity = K.parse_entity_key(ekey)
                pipe.hgetall(ekey)
                pipe.hgetall(K.seen_key_in(p, world, entity))
            raws = await pipe.execute()
        out = []
        for i, ekey in enumerate(members):
            world, entity = K.parse_entity_key(ekey)
            out.append((world, entity, raws[2 * i], raws[2 * i + 1]))
        return out
