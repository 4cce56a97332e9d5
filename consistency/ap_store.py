"""The AP tier: one writable Redis per region, merged with CRDTs inside Redis.

Every write goes through a Lua script that, atomically, refuses an event id
it has seen, merges the fields as last-writer-wins registers ordered by
(HLC, node), counts the event in its source's counter slot, and appends the
delta to this replica's stream. Peers apply those deltas with the same merge
rules (see consistency/lua/), so any delivery order, with duplicates,
converges to the same state. consistency/crdt is the same rules as a pure
model, which tests/test_crdt_lua.py holds the scripts to.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from importlib import resources
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, TypeVar

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from consistency import ap_keys as K
from consistency.ap_changes import LoggedChange, LogState, parse_read
from consistency.ap_entity import DELETED, TOMBSTONE_SOURCE, EntityState, FieldState, Scalar
from consistency.errors import OutcomeUnknown, ReplicaFull, Unavailable
from consistency.hlc import HLCTimestamp, HybridLogicalClock, LogicalOverflowError, wall_clock_ms

__all__ = ["CHUNK", "DELETED", "EntityState", "FieldState", "IngestResult", "LoggedChange", "LogState",
           "Observation", "ReplicaStore", "Scalar", "StreamEntry", "TOMBSTONE_SOURCE", "pack_observation",
           "stream_id", "tombstone"]
T = TypeVar("T")
StreamEntry = tuple[str, dict[str, bytes]]
# A Redis killed mid-command surfaces, under uvloop, as a RuntimeError about a closed transport.
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError, RuntimeError)


def _never_sent(e: BaseException) -> bool:
    """Errors that prove the command never reached Redis: no connection, or a closed one."""
    text = str(e)
    return isinstance(e, RuntimeError) or any(
        m in text for m in ("Error 111", "Connect call failed", "Connection refused", "connecting to",
                            "No connection available"))


# Entries per script call: bounds how long one call holds Redis's single thread.
CHUNK = 1000


def stream_id(raw: str) -> tuple[int, int]:
    ms, _, seq = raw.partition("-")
    return int(ms), int(seq or 0)


def _s(b: bytes | str) -> str:
    return b.decode() if isinstance(b, bytes) else b


class Observation(NamedTuple):  # a NamedTuple: tens of thousands are built a second
    world: str
    entity: str
    event_id: str
    source: str
    fields: dict[str, Scalar]
    observed_at_ms: int | None = None


@dataclass(frozen=True)
class IngestResult:
    accepted: list[bool]
    last_id: str  # this replica's stream id of the last accepted observation ('' if none)
    stamp: str  # the HLC stamp given to the batch's last observation


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


def _load(name: str) -> str:
    lua = resources.files("consistency") / "lua"
    return (lua / "common.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


class ReplicaStore:
    def __init__(self, url: str, region: str, node_id: str, hlc: HybridLogicalClock | None = None, *,
                 dedup_window_s: float = 24 * 3600, dedup_max: int = 1_000_000,
                 stream_maxlen: int = 1_000_000, changes_maxlen: int | None = None, timeout_s: float = 2.0,
                 max_connections: int = 256) -> None:
        self.url = url
        self.region = K.check(K.REGION_RE, "region", region)
        self.node_id = node_id
        self.hlc = hlc or HybridLogicalClock(node_id)
        self._clock_seeded = False
        self.dedup_window_s = dedup_window_s
        self.dedup_max = dedup_max
        self.stream_maxlen = stream_maxlen
        # The changes log's cap, for the home replica's node to set (None: leave it, as a peer's store does).
        self.changes_maxlen = changes_maxlen
        self._changes_configured = changes_maxlen is None
        # A connection idle for a second is PINGed before use, so a Redis restart is
        # noticed before a write is sent on a dead socket (whose outcome would be unknown).
        # A blocking pool: past `max_connections` a command waits up to `timeout_s` for a free
        # connection. redis-py's default pool refuses at once past 100, which at 128 concurrent
        # HTTP requests failed about one in five with "Too many connections".
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout_s, socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s, health_check_interval=1)
        self.redis = aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes it
        self._scripts = {n: self.redis.register_script(_load(n))
                         for n in ("ingest", "apply", "merge_state", "digests", "trim", "expire_dedup", "quota",
                                   "changes")}

    async def close(self) -> None:
        await self.redis.aclose()

    async def _call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self._scripts[name](keys=keys, args=args)
        except OutOfMemoryError as e:  # Redis's "-OOM ..." answer
            # Over maxmemory (noeviction), Redis refuses a script's write only while the script
            # has written nothing yet (script.c, scriptVerifyOOM): once one write succeeded, the
            # rest run even past the limit, so a script is refused whole or runs whole. None of
            # ours catches errors with pcall: an OOM answer means the call changed nothing.
            # tests/test_limits.py checks both halves against a real Redis.
            raise ReplicaFull(f"redis {self.region} is at maxmemory and refused the write: {e}") from e
        except _UNREACHABLE as e:
            if _never_sent(e):
                raise Unavailable(f"redis {self.region} unreachable: {e}") from e
            # Sent, then no answer: a paused Redis runs the script when it wakes up, so
            # "nothing changed" would be a lie. Replaying the same event ids is safe.
            raise OutcomeUnknown(f"redis {self.region} did not answer: {e}") from e

    # -- writes ----------------------------------------------------------------

    async def charge(self, bucket: str, rate: float, burst: float, cost: float) -> float:
        """Take `cost` from a rate quota (`rate` per second, `burst` at once) kept in this
        replica: 0.0 when taken, else the seconds until it would be."""
        wait_us = await self._call("quota", [K.quota_key(bucket)], [rate, burst, cost])
        return int(wait_us) / 1e6

    async def ingest(self, observations: list[Observation]) -> IngestResult:
        """Merge a batch of observations; each is acknowledged only once Redis applied it."""
        if not observations:
            return IngestResult([], "", "")
        if not self._clock_seeded:
            await self.seed_clock()
            self._clock_seeded = True
        await self.configure_changes()
        try:
            # Every stamp of the batch before any chunk is sent: a refusal here changes nothing.
            first = self.hlc.reserve(len(observations))
        except LogicalOverflowError as e:
            # The HLC runs ahead of this node's wall clock (it followed a faster clock) and has
            # used up that millisecond's logical counter: stamps come back once time reaches it.
            raise Unavailable(f"this node's clock has no timestamps left before {e.wall_ms} ms",
                              retry_after_s=max(1.0, (e.wall_ms - wall_clock_ms()) / 1000)) from e
        accepted: list[bool] = []
        last_id, stamp = "", ""
        for start in range(0, len(observations), CHUNK):
            chunk = observations[start:start + CHUNK]
            args: list[Any] = [self.region, wall_clock_ms()]
            for i, ob in enumerate(chunk, start):
                stamp = f"{first.wall_ms:012x}-{first.logical + i:04x}"  # HLCTimestamp.to_string, inlined
                args.append(pack_observation(ob, f"{stamp}|{self.node_id}"))
            try:
                statuses, lid = await self._call("ingest", [K.STREAM], args)
            except ReplicaFull as e:
                if accepted:  # earlier chunks are applied; their event ids come back as duplicates
                    raise ReplicaFull(f"{e}; the first {len(accepted)} observations of the batch were applied, "
                                      "posting the batch again is safe") from e
                raise
            accepted += [bool(x) for x in statuses]
            last_id = _s(lid) or last_id
        return IngestResult(accepted, last_id, stamp)

    async def apply_remote(self, origin: str, entries: list[StreamEntry]) -> None:
        """Apply deltas read from `origin`'s stream, in order."""
        for start in range(0, len(entries), CHUNK):
            chunk = entries[start:start + CHUNK]
            args: list[Any] = [self.region, wall_clock_ms(), origin, chunk[-1][0]]
            for _, f in chunk:
                args += ("d", f["d"], f["p"]) if "d" in f else ("c", f["c"], f["n"])
            await self._call("apply", [K.STREAM, K.APPLIED], args)

    async def seed_clock(self) -> None:
        """Move this node's HLC past every stamp the replica holds; `ingest` calls it
        before the first stamp. A fresh clock after a restart, or a wall clock stepped
        back, would otherwise stamp the next write lower than the last, and
        last-writer-wins would drop it."""
        seen = await self._read(lambda: self.redis.get(K.CLOCK))
        if seen:
            self._observe_remote(seen)

    def _observe_remote(self, order_key: bytes) -> None:
        self.hlc.update(HLCTimestamp.parse(_s(order_key).partition("|")[0]))

    async def merge_state(self, dumps: list[tuple[str, str, dict[bytes, bytes], dict[bytes, bytes]]],
                          peer: str) -> None:
        """Anti-entropy: merge whole entities (state and seen events) shipped from region `peer`."""
        for start in range(0, len(dumps), CHUNK // 10):
            args: list[Any] = [self.region, wall_clock_ms(), peer]
            for world, entity, state, seen in dumps[start:start + CHUNK // 10]:
                args += [world, entity, len(state)]
                for k, v in state.items():
                    args += [k, v]
                args.append(len(seen))
                for k, v in seen.items():
                    args += [k, v]
            await self._call("merge_state", [K.STREAM], args)

    # -- reads -----------------------------------------------------------------

    async def _read(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Reads are idempotent: one retry on a fresh connection, then Unavailable."""
        for attempt in (1, 2):
            try:
                return await fn()
            except _UNREACHABLE as e:
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
            ids = [_s(x) for x in await self.redis.zrangebylex(K.world_index(world), start, "+", 0, n + 1)]
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
        return bool(await self._read(lambda: self.redis.sismember(K.WORLDS, world)))

    # -- the changes log -------------------------------------------------------------

    async def configure_changes(self) -> None:
        """Set the changes log's cap for this replica's scripts, once (a store built with one)."""
        if not self._changes_configured:
            await self._read(lambda: self.redis.set(K.CHANGES_MAXLEN, str(self.changes_maxlen)))
            self._changes_configured = True

    async def changes_after(self, after: str, count: int) -> tuple[LogState, list[LoggedChange]]:
        """Up to `count` entries of the changes log after `after`, and the log's state, in one step."""
        state, entries = parse_read(await self._read(lambda: self._scripts["changes"](args=[after, count, "read"])))
        assert isinstance(entries, list)
        return state, entries

    async def changes_count(self, after: str, cap: int) -> tuple[LogState, int]:
        """How many entries of the changes log follow `after` (counting stops past `cap`), and its state."""
        state, n = parse_read(await self._read(lambda: self._scripts["changes"](args=[after, cap + 1, "count"])))
        return state, n if isinstance(n, int) else 0

    async def wait_changes(self, after: str, block_ms: int) -> str | None:
        """Block until the changes log has an entry after `after` (its id) or `block_ms` passed (None)."""
        resp = await self.redis.xread({K.CHANGES: after}, count=1, block=block_ms)
        return _s(resp[0][1][0][0]) if resp else None

    # -- replication bookkeeping ---------------------------------------------------

    async def last_id(self) -> str:
        """The newest id this replica's stream ever issued (still known after trimming)."""
        try:
            info = await self._read(lambda: self.redis.xinfo_stream(K.STREAM))
        except ResponseError:
            return "0-0"  # no stream yet
        return _s(info["last-generated-id"])

    async def lengths(self) -> tuple[int, int]:
        """Entries held now in this replica's delta stream and in its changes log."""
        n = await self._read(lambda: self.redis.pipeline(transaction=False).xlen(K.STREAM).xlen(K.CHANGES).execute())
        return int(n[0]), int(n[1])

    async def read_after(self, after: str, count: int, block_ms: int | None = None) -> list[StreamEntry]:
        resp = await self.redis.xread({K.STREAM: after}, count=count, block=block_ms)
        if not resp:
            return []
        return [(_s(i), {_s(k): v for k, v in f.items()}) for i, f in resp[0][1]]

    async def acked(self, peer: str) -> str:
        return _s(await self.redis.hget(K.ACKED, peer) or b"0-0")

    async def set_acked(self, peer: str, sid: str) -> None:
        await self.redis.hset(K.ACKED, peer, sid)

    async def all_acked(self) -> dict[str, str]:
        return {_s(k): _s(v) for k, v in (await self.redis.hgetall(K.ACKED)).items()}

    async def watermark(self) -> dict[str, str]:
        """What this replica reflects: the last stream id applied from each region, its own included."""
        applied = await self.applied()
        applied[self.region] = await self.last_id()
        return dict(sorted(applied.items()))

    async def applied(self) -> dict[str, str]:
        return {_s(k): _s(v) for k, v in (await self._read(lambda: self.redis.hgetall(K.APPLIED))).items()}

    async def trimmed(self) -> str:
        return _s(await self.redis.get(K.TRIMMED) or b"0-0")

    async def trim(self, maxlen: int | None = None, acked_by_all: str = "") -> str:
        maxlen = self.stream_maxlen if maxlen is None else maxlen
        # K.CONSUMERS: registered consumers hold the floor down too (consistency/ap_consumers.py)
        return _s(await self._call("trim", [K.STREAM, K.TRIMMED, K.CONSUMERS], [maxlen, acked_by_all]))

    async def expire_dedup(self) -> int:
        """Forget event ids older than the window (whole minutes) or beyond the cap; a bounded step."""
        oldest_minute = (wall_clock_ms() - int(self.dedup_window_s * 1000)) // 60000
        return int(await self._call("expire_dedup", [], [oldest_minute, self.dedup_max]))

    async def digests(self) -> list[str]:
        return [_s(d) for d in await self._call("digests", [], [K.BUCKETS])]

    async def dump_bucket(self, bucket: int) -> list[tuple[str, str, dict[bytes, bytes], dict[bytes, bytes]]]:
        members = sorted(_s(m) for m in await self.redis.smembers(K.bucket_key(bucket)))
        async with self.redis.pipeline(transaction=False) as pipe:
            for ekey in members:
                world, entity = K.parse_entity_key(ekey)
                pipe.hgetall(ekey)
                pipe.hgetall(K.seen_key(world, entity))
            raws = await pipe.execute()
        out = []
        for i, ekey in enumerate(members):
            world, entity = K.parse_entity_key(ekey)
            out.append((world, entity, raws[2 * i], raws[2 * i + 1]))
        return out

    async def wait_applied(self, origin: str, sid: str, timeout_s: float) -> bool:
        """Wait until this replica has applied `origin`'s stream up to `sid`."""
        deadline = time.monotonic() + timeout_s
        target = stream_id(sid)
        while True:
            if origin == self.region:
                current = await self.last_id()
            else:
                current = _s(await self.redis.hget(K.APPLIED, origin) or b"0-0")
            if stream_id(current) >= target:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except _UNREACHABLE:
            return False

