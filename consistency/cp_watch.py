"""A resuming etcd watch over one gRPC stream at a time.

aetcd's watcher hands a broken stream's error to the caller; a world-state
watcher wants the opposite: keep going from the last revision it delivered,
and stop only on compaction, which it cannot paper over.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Protocol

from aetcd import rpc

from consistency.cp_codec import WatchEvent, decode, prefix_end
from consistency.errors import Compacted

# etcd revisions are int64: a larger one cannot even be put in a request (protobuf refuses it).
MAX_REVISION = 2**63 - 1


class Channelled(Protocol):
    """A connected store (CPStore): read anew at each reopening, as a reconnect replaces it."""

    @property
    def channel(self) -> Any: ...

    def metadata(self, require_leader: bool) -> Any: ...

    async def renew_token(self, refusal: str) -> None: ...


async def _requests(create: Any, done: asyncio.Event, progress_s: float | None) -> AsyncIterator[Any]:
    yield create
    while progress_s is not None and not done.is_set():
        try:
            await asyncio.wait_for(done.wait(), progress_s)
        except asyncio.TimeoutError:
            # etcd answers once every watcher of the stream has been sent all it has up to its
            # current revision, with that revision: the watcher knows it missed nothing up to it.
            yield rpc.WatchRequest(progress_request=rpc.WatchProgressRequest())
    await done.wait()  # keep the request side open: a half-closed stream may be dropped


async def watch_prefix(store: Channelled, prefix: str, start_revision: int,
                       max_backoff_s: float = 1.0, progress_s: float | None = None) -> AsyncIterator[WatchEvent]:
    """Changes under `prefix` from `start_revision`; with `progress_s`, also a "progress" event
    about that often (etcd's progress notification) saying up to which revision nothing was missed."""
    if not 0 <= start_revision <= MAX_REVISION:
        raise ValueError(f"start revision {start_revision} outside 0..{MAX_REVISION}")
    key = prefix.encode()
    next_revision = start_revision
    delay = 0.05
    while True:
        done = asyncio.Event()
        create = rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
            key=key, range_end=prefix_end(key), start_revision=next_revision))
        stub = rpc.WatchStub(store.channel)
        call = stub.Watch(_requests(create, done, progress_s), metadata=store.metadata(require_leader=True))
        try:
            async for resp in call:
                if resp.compact_revision:
                    raise Compacted(resp.compact_revision)
                if resp.canceled:
                    # e.g. the member lost its leader: reopen elsewhere. etcd refuses a stale auth
                    # token by cancelling the watch, so renew the token before reopening.
                    await store.renew_token(resp.cancel_reason)
                    break
                delay = 0.05
                if progress_s is not None and not resp.events and not resp.created and resp.header.revision:
                    # Nothing under the range up to it is left unsent: a reopening may start after it.
                    next_revision = max(next_revision, resp.header.revision + 1)
                    yield WatchEvent("progress", "", None, resp.header.revision)
                    continue
                for ev in resp.events:
                    kind = "delete" if ev.type == rpc.Event.DELETE else "put"
                    value = None if kind == "delete" else decode(ev.kv.value)
                    next_revision = ev.kv.mod_revision + 1
                    yield WatchEvent(kind, ev.kv.key.decode(), value, ev.kv.mod_revision)
        except rpc.AioRpcError:
            pass
        finally:
            done.set()
            call.cancel()
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_backoff_s)
