"""Server-sent event streams: heartbeats, so a proxy or a load balancer that closes
idle connections (nginx's default is 60 s) does not cut a quiet stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

HEARTBEAT = b": heartbeat\n\n"  # an SSE comment: clients ignore it, connections see traffic


async def with_heartbeats(source: AsyncIterator[bytes], every_s: float) -> AsyncIterator[bytes]:
    """`source`'s chunks, with a heartbeat whenever none came for `every_s` seconds.

    `source` runs in a task of its own feeding a small queue, so waiting for it can time
    out without cancelling it mid-step (an async generator cancelled inside an await is
    closed for good). The queue is bounded: a client that reads slowly holds `source` back
    rather than letting it buffer without bound."""
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=64)

    async def pump() -> None:
        try:
            async for chunk in source:
                await queue.put(chunk)
        except Exception as e:  # handed to the reader, raised there
            await queue.put(e)
            return
        await queue.put(None)

    task = asyncio.create_task(pump())
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), every_s)
            except asyncio.TimeoutError:
                yield HEARTBEAT
                continue
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
