"""Iterators over the service's event streams that survive dropped connections.

A connection that fails or ends is opened again after a jittered, growing wait, with
`Last-Event-ID` set to the last event delivered, so the caller sees every event once,
in order. Comments (`: heartbeat`) keep the connection busy and are skipped; a
connection silent for `idle_timeout` seconds (four missed 15 s heartbeats by default)
counts as dropped. What the stream itself reports (`event: error`, compaction, a slow
consumer) is raised, not retried.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import TypeVar

import httpx

from client._sse import Parser, Resumable
from client._transport import backoff, raise_for
from client.errors import RateLimited, Unavailable

T = TypeVar("T")
IDLE_TIMEOUT_S = 60.0
# What a new connection is worth trying after: the network, or a node that is busy or stopping.
_RETRYABLE = (httpx.TransportError, Unavailable, RateLimited)


def _timeout(idle_timeout: float) -> httpx.Timeout:
    return httpx.Timeout(10.0, read=idle_timeout)


def iterate(http: httpx.Client, stream: Resumable[T], idle_timeout: float = IDLE_TIMEOUT_S) -> Iterator[T]:
    """The items of `stream`, reconnecting as needed (see the module's docstring)."""
    while True:
        params, headers = stream.request()
        error: BaseException | None = None
        try:
            with http.stream("GET", stream.path, params=params, headers=headers,
                             timeout=_timeout(idle_timeout)) as r:
                if r.status_code >= 400:
                    r.read()
                    raise_for(r)
                parser = Parser()
                for line in r.iter_lines():
                    item = stream.feed(parser, line)
                    if item is not None:
                        yield item
        except _RETRYABLE as e:
            error = e
        attempt = stream.dropped(error)
        time.sleep(backoff(attempt, getattr(error, "retry_after", None)))


async def aiterate(http: httpx.AsyncClient, stream: Resumable[T],
                   idle_timeout: float = IDLE_TIMEOUT_S) -> AsyncIterator[T]:
    """`iterate`, for the async client."""
    while True:
        params, headers = stream.request()
        error: BaseException | None = None
        try:
            async with http.stream("GET", stream.path, params=params, headers=headers,
                                   timeout=_timeout(idle_timeout)) as r:
                if r.status_code >= 400:
                    await r.aread()
                    raise_for(r)
                parser = Parser()
                async for line in r.aiter_lines():
                    item = stream.feed(parser, line)
                    if item is not None:
                        yield item
        except _RETRYABLE as e:
            error = e
        attempt = stream.dropped(error)
        await asyncio.sleep(backoff(attempt, getattr(error, "retry_after", None)))
