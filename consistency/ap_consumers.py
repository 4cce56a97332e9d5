"""Registered consumers of a replica's delta stream: readers with a durable offset of their own.

A consumer (a learner, learn/log.py) keeps the last stream id it consumed in the replica itself
(ws:consumers, name -> id), so it resumes where it left off after a restart and housekeeping
knows how far it got: trim.lua never trims below the slowest registered consumer, whatever the
peers acknowledged. The stream's cap (stream_maxlen) still trims regardless; a consumer whose
offset is older than ws:stream:trimmed has lost entries it never read, and `read` says so by
returning the marker with the entries, taken in one transaction so no trim falls in between.
Unregistering releases the floor.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

from consistency import ap_keys as K
from consistency.ap_store import StreamEntry, stream_id
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

    async def register(self, name: str, start: str | None = None) -> str:
        """Register `name` (or move it) and return its offset: `start` when given (a replay from
        there), else the offset it already has, else the newest trimmed id: a new consumer begins
        at the oldest entry still retained and has missed nothing it could have read."""
        K.check(K.CONSUMER_RE, "consumer", name)
        if start is not None:
            await self.commit(name, check_offset(start))
            return start

        async def first_time() -> str:
            async with self.redis.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        # Watched: a trim between reading the marker and registering would leave
                        # the new consumer behind it, reported as a gap it never had.
                        await pipe.watch(K.TRIMMED, K.CONSUMERS)
                        have = await pipe.hget(K.CONSUMERS, name)
                        if have is not None:
                            return _s(have)
                        at = _s(await pipe.get(K.TRIMMED) or b"0-0")
                        pipe.multi()
                        pipe.hset(K.CONSUMERS, name, at)
                        await pipe.execute()
                        return at
                    except WatchError:
                        continue

        return str(await self._do(first_time))

    async def offset(self, name: str) -> str | None:
        raw = await self._do(lambda: self.redis.hget(K.CONSUMERS, name))
        return None if raw is None else _s(raw)

    async def commit(self, name: str, sid: str) -> None:
        """Record that `name` consumed everything up to `sid`: trimming may now pass it."""
        await self._do(lambda: self.redis.hset(K.CONSUMERS, name, sid))

    async def unregister(self, name: str) -> bool:
        """Forget `name`, releasing the floor it held; whether it was registered."""
        return bool(await self._do(lambda: self.redis.hdel(K.CONSUMERS, name)))

    async def all(self) -> dict[str, str]:
        return {_s(k): _s(v) for k, v in (await self._do(lambda: self.redis.hgetall(K.CONSUMERS))).items()}

    async def read(self, after: str, count: int) -> tuple[str, list[StreamEntry]]:
        """Up to `count` entries after `after` and the newest trimmed id, in one transaction: if
        that id is past `after`, entries after `after` up to it were trimmed unread."""
        async def both() -> list[Any]:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.get(K.TRIMMED)
                pipe.xrange(K.STREAM, f"({after}", "+", count=count)
                return list(await pipe.execute())

        trimmed, entries = await self._do(both)
        return (_s(trimmed or b"0-0"),
                [(_s(i), {_s(k): v for k, v in f.items()}) for i, f in entries])

    @staticmethod
    def lost(after: str, trimmed: str) -> bool:
        """Whether entries after `after` were trimmed unread (see `read`)."""
        return stream_id(after) < stream_id(trimmed)
