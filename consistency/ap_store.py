"""The AP tier: one writable Redis per region, merged with CRDTs inside Redis.

The replica is cut into ap_keys.PARTITIONS partitions (docs/ap-cluster.md §2): every key of
one lives under its tag, and a batch is grouped by partition: a script works in one partition
at a time, and consistency/ap_calls.py decides how many one call carries. consistency/ap_logs.py
holds the per-partition logs and offsets.

Every write goes through a Lua script that, atomically, refuses an event id
it has seen, merges the fields as last-writer-wins registers ordered by
(HLC, node), counts the event in its source's counter slot, and appends the
delta to this replica's stream. Peers apply those deltas with the same merge
rules (see consistency/lua/), so any delivery order, with duplicates,
converges to the same state. consistency/crdt is the same rules as a pure
model, which tests/test_crdt_lua.py holds the scripts to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.exceptions import ClusterDownError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ExecAbortError, NoScriptError, OutOfMemoryError, RedisClusterException
from redis.exceptions import TimeoutError as RedisTimeoutError

from consistency import ap_keys as K
from consistency.ap_backend import ClusterScripts, cluster_client, is_cluster_url, single_client, transport_race
from consistency.ap_calls import CHUNK, apply_calls, ingest_calls
from consistency.ap_changes import LoggedChange, LogState
from consistency.ap_entity import DELETED, TOMBSTONE_SOURCE, EntityState, FieldState, Scalar
from consistency.ap_logs import ALL, PartitionLogs, StreamEntry
from consistency.ap_observation import Observation, pack_observation, tombstone
from consistency.ap_positions import Vector, stream_id
from consistency.errors import LayoutMismatch, OutcomeUnknown, ReplicaFull, Unavailable
from consistency.hlc import HLCTimestamp, HybridLogicalClock, LogicalOverflowError, wall_clock_ms

__all__ = ["CHUNK", "DELETED", "EntityState", "FieldState", "IngestResult", "LoggedChange", "LogState",
           "Observation", "ReplicaStore", "Scalar", "StreamEntry", "TOMBSTONE_SOURCE", "Vector", "pack_observation",
           "stream_id", "tombstone"]
T = TypeVar("T")
# What the old, unpartitioned layout left in a Redis: a node refuses to start against it.
_OLD_LAYOUT = ("ws:stream", "ws:clock", "ws:worlds")
_READS = ("changes", "digests")  # scripts that write nothing: no WAIT after them on a cluster
# A Redis killed mid-command surfaces, under uvloop, as a RuntimeError about a closed transport.
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError, RuntimeError)


def _never_sent(e: BaseException) -> bool:
    """Errors that prove the command never reached Redis: no connection, or a closed one."""
    text = str(e)
    return isinstance(e, RuntimeError) or any(
        m in text for m in ("Error 111", "Connect call failed", "Connection refused", "connecting to",
                            "No connection available"))


def _s(b: bytes | str) -> str:
    return b.decode() if isinstance(b, bytes) else b


@dataclass(frozen=True)
class IngestResult:
    accepted: list[bool]
    # every partition the batch touched -> this replica's stream id at or past each of its observations
    # there (the last accepted one's, or the stream's newest when all of them were duplicates)
    positions: Vector
    stamp: str  # the HLC stamp given to the batch's last observation

    @property
    def last_id(self) -> str:
        """The stream id of a batch that touched one partition (a single observation's)."""
        if len(self.positions) != 1:
            raise ValueError(f"the batch touched {len(self.positions)} partitions")
        return next(iter(self.positions.values()))


def _load(name: str) -> str:
    lua = resources.files("consistency") / "lua"
    return (lua / "common.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


class ReplicaStore(PartitionLogs):
    def __init__(self, url: str, region: str, node_id: str, hlc: HybridLogicalClock | None = None, *,
                 dedup_window_s: float = 24 * 3600, dedup_max: int = 1_000_000,
                 stream_maxlen: int = 1_000_000, changes_maxlen: int | None = None, timeout_s: float = 2.0,
                 max_connections: int = 256, cluster: bool | None = None, ack_replicas: int | None = None) -> None:
        self.url = url
        self.region = K.check(K.REGION_RE, "region", region)
        self.node_id = node_id
        self.hlc = hlc or HybridLogicalClock(node_id)
        self._clock_seeded = False
        self._layout_checked = False
        self.dedup_window_s = dedup_window_s
        self.dedup_max = dedup_max  # over all partitions: each keeps its share (ap_logs.expire_dedup)
        self.stream_maxlen = stream_maxlen  # per partition's stream
        # The changes logs' cap (per partition), for the home replica's node to set (None: leave it, as a
        # peer's store does).
        self.changes_maxlen = changes_maxlen
        self._changes_configured = changes_maxlen is None
        # One Redis holds every partition, so a script call may carry several (ingest_calls); a cluster's
        # script call carries one partition, since its keys must share a slot (consistency/ap_backend.py).
        self.cluster = is_cluster_url(url) if cluster is None else cluster
        # redis.asyncio.Redis or RedisCluster: both give the commands and pipelines the reads use
        self.redis: Any = (cluster_client if self.cluster else single_client)(url, timeout_s, max_connections)
        self.partitions_per_call = 1 if self.cluster else K.PARTITIONS
        # WAIT after a write: a bounded part of the command timeout, so the WAIT answers before the socket gives up.
        self._on_cluster = ClusterScripts(self.redis, self.region, ack_replicas, int(timeout_s * 500)) if self.cluster else None
        self._scripts = {n: self.redis.register_script(_load(n))
                         for n in ("ingest", "apply", "keys", "merge_state", "digests", "trim", "expire_dedup", "quota",
                                   "changes", "raise_id")}

    async def close(self) -> None:
        await self.redis.aclose()

    def _refused(self, e: BaseException) -> Exception:
        """What a failed script call means to the caller."""
        if isinstance(e, OutOfMemoryError):  # Redis's "-OOM ..." answer
            # Over maxmemory (noeviction), Redis refuses a script's write only while the script
            # has written nothing yet (script.c, scriptVerifyOOM): once one write succeeded, the
            # rest run even past the limit, so a script is refused whole or runs whole. None of
            # ours catches errors with pcall: an OOM answer means the call changed nothing.
            # tests/test_limits.py checks both halves against a real Redis.
            return ReplicaFull(f"redis {self.region} is at maxmemory and refused the write: {e}")
        if isinstance(e, RedisClusterException):  # no node of the cluster answered its slot map
            return Unavailable(f"redis {self.region} unreachable: {e}")
        if isinstance(e, _UNREACHABLE):
            if _never_sent(e):
                return Unavailable(f"redis {self.region} unreachable: {e}")
            # Sent, then no answer: a paused Redis runs the script when it wakes up, so
            # "nothing changed" would be a lie. Replaying the same event ids is safe.
            return OutcomeUnknown(f"redis {self.region} did not answer: {e}")
        return e if isinstance(e, Exception) else RuntimeError(str(e))

    async def _call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        if self._on_cluster is not None:
            return (await self._call_many(name, [(keys, args)], read=name in _READS, one=True))[0]
        try:
            return await self._scripts[name](keys=keys, args=args)
        except (OutOfMemoryError, *_UNREACHABLE) as e:
            raise self._refused(e) from e

    async def _call_many(self, name: str, calls: list[tuple[list[str], list[Any]]], *, read: bool = False,
                         one: bool = False) -> list[Any]:
        """Script calls (keys, args) in one round trip, answered in order; a refused call comes back as its
        exception (ReplicaFull for OOM) unless `read`, where it is raised. Writes go in MULTI/EXEC, run in
        one event-loop turn: without it Redis ran calls per 16 kB read and `appendfsync always` fsynced
        after each, ~13 fsyncs for 1000 observations instead of one (docs/ap-cluster.md §7). On a cluster
        (`one`: raise any refusal, as `_call` does) a pipeline per master, no MULTI: a transaction cannot
        span slots."""
        if self._on_cluster is not None:
            return await self._cluster_calls(name, calls, read=read or one)
        if len(calls) == 1 and not read:
            try:
                return [await self._call(name, *calls[0])]
            except ReplicaFull as e:
                return [e]
        script, todo, out = self._scripts[name], list(range(len(calls))), [None] * len(calls)
        for attempt in (1, 2, 3):
            try:
                async with self.redis.pipeline(transaction=not read) as pipe:
                    for j in todo:
                        keys, args = calls[j]
                        pipe.evalsha(script.sha, len(keys), *keys, *args)
                    answers = await pipe.execute(raise_on_error=False)
            except (ExecAbortError, OutOfMemoryError) as e:  # refused while queued (OOM): none of it ran
                raise (ReplicaFull(f"redis {self.region} is at maxmemory and refused the write: {e}")
                       if "OOM" in str(e) else e) from e
            except _UNREACHABLE as e:
                if read and attempt == 1:
                    continue  # reads are idempotent: one retry on a fresh connection
                raise (Unavailable(f"redis {self.region} unreachable: {e}") if read else self._refused(e)) from e
            missing = [j for j, a in zip(todo, answers) if isinstance(a, NoScriptError)]
            for j, a in zip(todo, answers):
                out[j] = self._refused(a) if isinstance(a, Exception) else a
            if not missing:
                break
            # A restarted Redis forgot the script: nothing ran for these calls, so sending them again is safe.
            await self.redis.script_load(script.script)
            todo = missing
        if read:
            for a in out:
                if isinstance(a, Exception):
                    raise a
        return out

    async def _cluster_calls(self, name: str, calls: list[tuple[list[str], list[Any]]], *, read: bool) -> list[Any]:
        assert self._on_cluster is not None
        script, write = self._scripts[name], name not in _READS and not (name == "keys" and calls[0][1][0] != "hset")
        for attempt in (1, 2):
            try:
                answers = await self._on_cluster.run(script.sha, script.script, calls, write=write)
            except (OutOfMemoryError, RedisClusterException, *_UNREACHABLE) as e:
                answers = [e] * len(calls)
            out = [self._refused(a) if isinstance(a, BaseException) else a for a in answers]
            if read and not write and attempt == 1 and any(isinstance(a, Unavailable | OutcomeUnknown) for a in out):
                continue  # reads are idempotent: one retry, after the slot map was asked again
            break
        if read:
            for a in out:
                if isinstance(a, Exception):
                    raise a
        return out

    async def check_layout(self) -> None:
        """Refuse (LayoutMismatch) a Redis holding another layout: the unpartitioned one (`ws:stream`,
        no `ws:layout`) or another number of partitions. A fresh one is marked as ours."""
        mine = {"partitions": K.PARTITIONS, "version": K.LAYOUT_VERSION}
        raw = await self._read(lambda: self.redis.get(K.LAYOUT))
        if raw is None:
            old = await self._read(lambda: self.redis.exists(*_OLD_LAYOUT))
            if old:
                raise LayoutMismatch(
                    f"redis {self.region} at {self.url} holds the unpartitioned AP layout of an older worldstate "
                    f"(ws:stream, no {K.LAYOUT}); this version keeps {K.PARTITIONS} partitions and has no migration: "
                    "start it on an empty Redis (a run directory is disposable: remove it)")
            try:
                await self._read(lambda: self.redis.set(K.LAYOUT, json.dumps(mine), nx=True))
            except OutOfMemoryError as e:
                raise self._refused(e) from e
            raw = await self._read(lambda: self.redis.get(K.LAYOUT))
        if json.loads(raw or b"{}") != mine:
            raise LayoutMismatch(f"redis {self.region} at {self.url} holds the AP layout {_s(raw or b'')}, "
                                 f"this node writes {json.dumps(mine)}")
        self._layout_checked = True

    # -- writes ----------------------------------------------------------------

    async def charge(self, bucket: str, rate: float, burst: float, cost: float) -> float:
        """Take `cost` from a rate quota (`rate` per second, `burst` at once) kept in this
        replica: 0.0 when taken, else the seconds until it would be."""
        wait_us = await self._call("quota", [K.quota_key(bucket)], [rate, burst, cost])
        return int(wait_us) / 1e6

    async def ingest(self, observations: list[Observation]) -> IngestResult:
        """Merge a batch of observations; each is acknowledged only once Redis applied it."""
        if not observations:
            return IngestResult([], {}, "")
        if not self._layout_checked:
            await self.check_layout()
        if not self._clock_seeded:
            await self.seed_clock()
            self._clock_seeded = True
        await self.configure_changes()
        try:
            # Every stamp of the batch before any call is sent: a refusal here changes nothing.
            first = self.hlc.reserve(len(observations))
        except LogicalOverflowError as e:
            # The HLC runs ahead of this node's wall clock (it followed a faster clock) and has
            # used up that millisecond's logical counter: stamps come back once time reaches it.
            raise Unavailable(f"this node's clock has no timestamps left before {e.wall_ms} ms",
                              retry_after_s=max(1.0, (e.wall_ms - wall_clock_ms()) / 1000)) from e
        by_partition: dict[int, list[int]] = {}
        for i, ob in enumerate(observations):
            by_partition.setdefault(K.partition(ob.world, ob.entity), []).append(i)
        now, node = wall_clock_ms(), self.node_id
        packed: dict[int, list[bytes]] = {}
        for p, positions in by_partition.items():
            packed[p] = [pack_observation(observations[i],  # each keeps the stamp of its place in the batch
                                          f"{first.wall_ms:012x}-{first.logical + i:04x}|{node}")  # to_string, inlined
                         for i in positions]
        calls = ingest_calls(packed, self.region, now, self.partitions_per_call)
        answers = await self._call_many("ingest", [(keys, args) for _, keys, args in calls])
        accepted = [False] * len(observations)
        positions_of: Vector = {}
        refused = [a for a in answers if isinstance(a, Exception)]
        for (segments, _, _), answer in zip(calls, answers):
            if isinstance(answer, Exception):
                continue
            for (p, start, end), (statuses, lid) in zip(segments, answer):
                for i, x in zip(by_partition[p][start:end], statuses):
                    accepted[i] = bool(x)
                if _s(lid):
                    positions_of[p] = _s(lid)
        if refused:
            e = refused[0]
            if len(refused) < len(calls) and isinstance(e, ReplicaFull):
                raise ReplicaFull(f"{e}; {sum(accepted)} observations of the batch were applied, posting the batch "
                                  "again is safe") from e
            raise e
        stale = [p for p in by_partition if p not in positions_of]
        if stale:  # only duplicates there: the stream's newest id covers them
            positions_of.update(await self.last_ids(stale))
        return IngestResult(accepted, dict(sorted(positions_of.items())),
                            f"{first.wall_ms:012x}-{first.logical + len(observations) - 1:04x}")

    async def apply_remote(self, origin: str, entries: dict[int, list[StreamEntry]]) -> None:
        """Apply deltas read from `origin`'s streams, each partition's in order, into the same partitions."""
        calls = apply_calls(entries, self.region, wall_clock_ms(), origin, self.partitions_per_call)
        for answer in await self._call_many("apply", [(keys, args) for _, keys, args in calls]):
            if isinstance(answer, Exception):
                raise answer

    async def seed_clock(self) -> None:
        """Move this node's HLC past every stamp the replica holds (every partition's T:clock); `ingest`
        calls it before the first stamp. A fresh clock after a restart, or a wall clock stepped
        back, would otherwise stamp the next write lower than the last, and
        last-writer-wins would drop it."""
        seen = [v for v in (await self._each(lambda pipe, p: pipe.get(K.clock(p)))).values() if isinstance(v, bytes)]
        if seen:
            self._observe_remote(max(seen))

    def _observe_remote(self, order_key: bytes) -> None:
        self.hlc.update(HLCTimestamp.parse(_s(order_key).partition("|")[0]))

    async def merge_state(self, dumps: list[tuple[str, str, dict[bytes, bytes], dict[bytes, bytes]]],
                          peer: str) -> None:
        """Anti-entropy: merge whole entities (state and seen events) shipped from region `peer`."""
        by_partition: dict[int, list[tuple[str, str, dict[bytes, bytes], dict[bytes, bytes]]]] = {}
        for d in dumps:
            by_partition.setdefault(K.partition(d[0], d[1]), []).append(d)
        for p, listed in by_partition.items():
            for start in range(0, len(listed), CHUNK // 10):
                args: list[Any] = [self.region, wall_clock_ms(), peer]
                for world, entity, state, seen in listed[start:start + CHUNK // 10]:
                    args += [world, entity, len(state)]
                    for k, v in state.items():
                        args += [k, v]
                    args.append(len(seen))
                    for k, v in seen.items():
                        args += [k, v]
                await self._call("merge_state", [K.stream(p)], args)

    # -- reads -----------------------------------------------------------------

    async def _read(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Reads are idempotent: one retry on a fresh connection, then Unavailable (a cluster: also
        while a slot has no master, CLUSTERDOWN, or no node answers its slot map)."""
        for attempt in (1, 2):
            try:
                return await fn()
            except Exception as e:
                if not (isinstance(e, (*_UNREACHABLE, ClusterDownError, RedisClusterException)) or transport_race(e)):
                    raise
                if attempt == 2:
                    raise Unavailable(f"redis {self.region} unreachable: {e}") from e
        raise AssertionError("unreachable")

    async def get_entity(self, world: str, entity: str, *, deleted: bool = False) -> EntityState | None:
        """The entity as readers see it (consistency/ap_entity.py); None if never observed here, or
        deleted, unless `deleted` asks for its tombstone's state."""
        raw = await self._read(lambda: self.redis.hgetall(K.entity_key(world, entity)))
        if not raw:
            return None
        self._observe(raw)
        state = EntityState.from_hash(world, entity, raw)
        return None if state.deleted and not deleted else state

    def _observe(self, raw: dict[bytes, bytes]) -> None:
        """Move our clock past every stamp we read, so a write made after a read orders after it."""
        stamps = [v for k, v in raw.items() if k.startswith(b"t:")]
        if stamps:
            self._observe_remote(max(stamps))

    async def list_entities(self, world: str, after: str | None, limit: int) -> tuple[list[EntityState], bool]:
        """Up to `limit` entities that are not deleted, in id order after `after`, and whether more
        ids follow. Reads past every deleted entity in its way, however many."""
        states, cursor = await self.entity_page(world, after, limit, scan_max=None)
        return states, cursor is not None

    async def entity_page(self, world: str, after: str | None, limit: int,
                          scan_max: int | None) -> tuple[list[EntityState], str | None]:
        """Up to `limit` entities that are not deleted, in id order after `after`, reading at most
        about `scan_max` ids (None: no bound); and the id to continue after (None: no more)."""
        states: list[EntityState] = []
        cursor, scanned = after, 0

        async def page(start: str, n: int) -> tuple[list[str], list[dict[bytes, bytes]]]:
            # each partition lists its own entities of the world: the page is the first n + 1 of their union
            async with self.redis.pipeline(transaction=False) as pipe:
                for p in ALL:
                    pipe.zrangebylex(K.world_index_in(p, world), start, "+", 0, n + 1)
                pages = await pipe.execute()
            ids = sorted(_s(x) for listed in pages for x in listed)[:n + 1]
            async with self.redis.pipeline(transaction=False) as pipe:
                for e in ids[:n]:
                    pipe.hgetall(K.entity_key(world, e))
                return ids, await pipe.execute()

        while True:
            n = limit - len(states)
            start = f"({cursor}" if cursor else "-"
            ids, raws = await self._read(lambda: page(start, n))
            more = len(ids) > n
            ids = ids[:n]
            for e, r in zip(ids, raws):
                if r:
                    self._observe(r)
                    state = EntityState.from_hash(world, e, r)
                    if not state.deleted:
                        states.append(state)
            scanned += len(ids)
            cursor = ids[-1] if ids else cursor
            if not more:
                return states, None
            if len(states) >= limit or (scan_max is not None and scanned >= scan_max):
                return states, cursor

    async def has_world(self, world: str) -> bool:
        return any(v == 1 for v in (await self._each(lambda pipe, p: pipe.sismember(K.worlds(p), world))).values())

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except _UNREACHABLE:
            return False
