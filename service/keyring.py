"""Each node's copy of the API keys, kept current by a watch on the CP tier.

A request is checked against this copy, not etcd: a round trip per request
would cost every request a quorum read, and an AP write must keep working
on a node cut off from etcd. A revoked key stops working here as soon as the
watch delivers the delete (milliseconds); streams opened with it are told
through `revoked(id)`. A node cut off from etcd keeps the keys it last knew,
revocations included, and catches up from the revision after the last event
it saw once it reconnects.
"""

from __future__ import annotations

import asyncio
import logging

from consistency.cp_store import CPStore
from consistency.errors import Compacted, StoreError
from service.keys import KEYS_PREFIX, MAX_KEYS, Key, key_of, parse_token

log = logging.getLogger("worldstate.keys")


class KeyRing:
    def __init__(self, cp: CPStore) -> None:
        self.cp = cp
        self._keys: dict[str, Key] = {}
        self._revoked: dict[str, asyncio.Event] = {}
        self._gone: set[str] = set()  # ids whose delete the watch delivered (revocations are rare)
        self.loaded = asyncio.Event()
        self.revision = 0  # the store revision the keys reflect
        self._task: asyncio.Task[None] | None = None

    async def start(self, wait_s: float) -> None:
        """Follow the keys; wait up to `wait_s` for the first load (requests answer 503 until it)."""
        self._task = asyncio.create_task(self._follow(), name="keyring")
        try:
            await asyncio.wait_for(asyncio.shield(self.loaded.wait()), wait_s)
        except asyncio.TimeoutError:
            log.warning("API keys not loaded from etcd after %.1f s; requests answer 503 until they are", wait_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def authenticate(self, token: str) -> Key | None:
        """The live key a bearer token stands for, or None.

        A key this copy does not hold yet is read from etcd (linearizable): one made a moment
        ago on any node works at once here, before the watch delivers it. What is read is used
        for this request only; the watch alone changes the copy, so a revocation it delivered
        is never undone by a read that raced it."""
        parsed = parse_token(token)
        if parsed is None:
            return None
        key = self._keys.get(parsed[0])
        if key is None:
            try:
                key = key_of((await self.cp.get(KEYS_PREFIX + parsed[0])).value)
            except StoreError:  # absent, or etcd unreachable: not a key this node can vouch for
                return None
        return key if key is not None and key.matches(parsed[1]) else None

    def revoked(self, key_id: str) -> asyncio.Event:
        """An event set when the key is revoked (at once if it already was). A key read from
        etcd before the watch delivered it is not revoked: its delete, when it comes, sets this."""
        ev = self._revoked.get(key_id)
        if ev is None:
            ev = self._revoked[key_id] = asyncio.Event()
            if key_id in self._gone:
                ev.set()
        return ev

    def status(self) -> dict[str, object]:
        return {"state": "ok" if self.loaded.is_set() else "loading", "keys": len(self._keys),
                "revision": self.revision}

    def _drop(self, key_id: str) -> None:
        self._keys.pop(key_id, None)
        self._gone.add(key_id)
        ev = self._revoked.pop(key_id, None)
        if ev is not None:
            ev.set()

    async def _follow(self) -> None:
        delay = 0.05
        while True:
            try:
                listing = await self.cp.list(KEYS_PREFIX, limit=MAX_KEYS)
                fresh = {k.id: k for k in (key_of(e.value) for e in listing.entries) if k is not None}
                for gone in set(self._keys) - set(fresh):
                    self._drop(gone)
                self._keys.update(fresh)
                self.revision = listing.revision
                self.loaded.set()
                delay = 0.05
                async for ev in self.cp.watch(KEYS_PREFIX, listing.revision + 1):
                    key_id = ev.key[len(KEYS_PREFIX):]
                    key = key_of(ev.value) if ev.type == "put" else None
                    if key is None:
                        self._drop(key_id)
                    else:
                        self._keys[key_id] = key
                    self.revision = ev.mod_revision
            except asyncio.CancelledError:
                raise
            except Compacted:
                continue  # history gone past our revision: load whole again
            except StoreError as e:
                log.info("following API keys: %s; retrying", e)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
