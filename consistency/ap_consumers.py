"""Registered consumers of a replica's delta streams: readers with a durable offset of their own.

A replica has one stream per partition (consistency/ap_keys.py), so a consumer (a learner,
learn/log.py) has one offset per partition: the last id of that partition's stream it consumed,
kept in the replica itself (T:consumers, name -> id). It resumes where it left off after a
restart, and housekeeping knows how far it got: trim.lua never trims a partition below its
slowest registered consumer, whatever the peers acknowledged. The stream's cap (stream_maxlen)
still trims regardless; a consumer whose offset is older than T:stream:trimmed has lost entries
it never read, and `read` says so by returning the marker with the entries, taken in one
transaction so no trim falls in between. Unregistering releases the floor in every partition.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

from consistency import ap_keys as K
from consistency.ap_positions import ZERO, Vector, stream_id
from consistency.ap_store import ALL, StreamEntry
from consistency.errors import Unavailable

__all__ = ["StreamConsumers", "check_offset"]


def _s(b: bytes | str) -> str:
    return b.decode() if isinstance(b, bytes) else b


def check_offset(sid: str) -> str:
    """A stream id `<ms>-<seq>` (InvalidKey otherwise): an offset to consume after."""
    return K.check(K.STREAM_ID_RE, "stream offset", sid)


class StreamConsumers:
    """The consumer registry of one replica, over its Redis connection (ReplicaStore.redis)."""

    def __init__(self, redis: aioredis.Redis, region: str) -> None:
        self.redis = redis
        self.region = region

    async def _do(self, fn: Any) -> Any:
        try:
            return await fn()
        except (RedisConnectionError, RedisTimeoutError, OSError) as e:
            raise Unavailable(f"redis {self.region} unreachable: {e}") from e

    async def register(self, name: str, start: Vector | None = None) -> Vector:
        """Register `name` (or move it) and return its offsets: `start` when given (a replay from there;
        a partition it leaves out starts from the beginning), else the offsets it already has, else
        each partition's newest trimmed id: a new consumer begins at the oldest entry still retained
        and has missed nothing it could have read."""
        K.check(K.CONSUMER_RE, "consumer", name)
        if start is not None:
            offsets = {p: check_offset(start.get(p, ZERO)) for p in ALL}
            await self.commit(name, offsets)
            return offsets
        out: Vector = {}
        for p in ALL:
            out[p] = await self._do(lambda: self._first_time(name, p))
        return out

    async def _first_time(self, name: str, p: int) -> str:
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    # Watched: a trim between reading the marker and registering would leave
                    # the new consumer behind it, reported as a gap it never had.
                    await pipe.watch(K.trimmed(p), K.consumers(p))
                    have = await pipe.hget(K.consumers(p), name)
                    if have is not None:
                        return _s(have)
                    at = _s(await pipe.get(K.trimmed(p)) or b"0-0")
                    pipe.multi()
                    pipe.hset(K.consumers(p), name, at)
                    await pipe.execute()
                    return at
                except WatchError:
                    continue

    async def offsets(self, name: str) -> Vector | None:
        """The consumer's offset in every partition; None if it is not registered."""
        async def get() -> list[Any]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for p in ALL:
                    pipe.hget(K.consumers(p), name)
                return list(await pipe.execute())

        raw = await self._do(get)
        if all(v is None for v in raw):
            return None
        return {p: ZERO if v is None else _s(v) for p, v in zip(ALL, raw)}

    async def commit(self, name: str, offsets: Vector) -> None:
        """Record that `name` consumed everything up to `offsets` in the partitions named: trimming may now pass it."""
        async def put() -> None:
            async with self.redis.pipeline(transaction=False) as pipe:
                for p, sid in offsets.items():
                    pipe.hset(K.consumers(p), name, sid)
                await pipe.execute()

        await self._do(put)

    async def unregister(self, name: str) -> bool:
        """Forget `name`, releasing the floor it held; whether it was registered."""
        async def forget() -> list[Any]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for p in ALL:
                    pipe.hdel(K.consumers(p), name)
                return list(await pipe.execute())

        return any(await self._do(forget))

    async def all(self) -> dict[str, Vector]:
        """Every registered consumer's offsets."""
        async def get() -> list[Any]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for p in ALL:
                    pipe.hgetall(K.consumers(p))
                return list(await pipe.execute())

        out: dict[str, Vector] = {}
        for p, h in zip(ALL, await self._do(get)):
            for k, v in h.items():
                out.setdefault(_s(k), {})[p] = _s(v)
        return out

    async def read(self, p: int, after: str, count: int) -> tuple[str, list[StreamEntry]]:
        """Up to `count` entries of partition p's stream after `after` and its newest trimmed id, in one
        transaction: if that id is past `after`, entries after `after` up to it were trimmed unread."""
        async def both() -> list[Any]:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.get(K.trimmed(p))
                pipe.xrange(K.stream(p), f"({after}", "+", count=count)
                return list(await pipe.execute())

        trimmed, entries = await self._do(both)
        return (_s(trimmed or b"0-0"),
                [(_s(i), {_s(k): v for k, v in f.items()}) for i, f in entries])

    @staticmethod
    def lost(after: str, trimmed: str) -> bool:
        """Whether entries after `after` were trimmed unread (see `read`)."""
        return stream_id(after) < stream_id(trimmed)
