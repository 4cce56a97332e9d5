"""Entity subscriptions: the merged changes of a world at this replica, as they happen.

Each replica's changes log (consistency/ap_changes.py) lists every merge that changed
what readers see, local writes and those applied from peers alike, with a position
(its stream id) a subscriber resumes after on the same replica, with no gap and no
duplicate. Positions are the replica's own: another region's mean nothing here.

A subscriber reads the log in bounded batches. One task per node blocks on the log
and wakes the subscribers waiting for news, so a waiting subscriber holds no Redis
connection. A subscriber whose position falls more than `subscribe_max_lag` entries
(of every world) behind the log's head, or behind what the log's cap trimmed, gets
SlowConsumer and its subscription ends: nothing is buffered for it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from consistency import ap_keys
from consistency.ap_store import LoggedChange, ReplicaStore, Scalar, stream_id
from service.config import Settings
from service.errors import ChangesTrimmed, InvalidInput, SlowConsumer
from service.worlds import Worlds

__all__ = ["BATCH", "EntityChange", "Progress", "Subscriptions"]

BATCH = 100  # entries a subscriber reads per script call: bounds each read's time in Redis
WAIT_S = 1.0  # longest a subscriber waits for the tail's news before reading anyway
_POSITION = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_PREFIX = re.compile(r"[A-Za-z0-9._-]{0,128}")


@dataclass(frozen=True)
class EntityChange:
    """One merge that changed an entity as readers see it. `deleted`: a tombstone, hiding every
    field written before (hlc, node); fields with a later stamp stay, whatever order they came in."""

    world: str
    entity: str
    fields: dict[str, Scalar]  # the fields this write made visible, name -> value
    deleted: bool
    hlc: str
    node: str
    origin: str  # the region the write came from (the peer that shipped it, for anti-entropy)
    id: str  # its position in this replica's changes log: resume after it

    @classmethod
    def of(cls, c: LoggedChange) -> "EntityChange":
        hlc, _, node = c.order_key.partition("|")
        return cls(c.world, c.entity, c.fields, c.deleted, hlc, node, c.origin, c.id)


@dataclass(frozen=True)
class Progress:
    """Every change of the subscription up to position `id` has been delivered (asked for by
    a subscriber that must know how current it is: an edge node)."""

    id: str


def _invalid(where: str, msg: str) -> InvalidInput:
    return InvalidInput(f"{where} {msg}", [{"loc": [where], "msg": msg, "type": "value_error"}])


def check_position(after: str) -> str:
    """A changes log position: a stream id "<ms>-<seq>", each part below 2^64."""
    m = _POSITION.fullmatch(after)
    if not m or any(int(part) >= 2**64 for part in m.groups()):
        raise _invalid("after", "must be a position this replica sent as an event id, like 1732170000000-0")
    return after


def _not_past(after: str, last_id: str) -> None:
    if stream_id(after) > stream_id(last_id):
        raise _invalid("after", f"is past the newest position of this replica's changes log ({last_id}): "
                                "positions are per replica, resume on the region that sent it")


class _Tail:
    """One blocking read of the changes log per node, waking every subscriber that waits for news."""

    def __init__(self, ap: ReplicaStore) -> None:
        self.ap = ap
        self.head = "0-0"  # the newest position the tail has seen
        self._news = asyncio.Condition()
        self._waiting = 0
        self._task: asyncio.Task[None] | None = None

    async def wait(self, after: str, timeout_s: float) -> None:
        """Return once the log holds an entry after `after`, or after `timeout_s`."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="changes-tail")
        async with self._news:
            self._waiting += 1
            try:
                await asyncio.wait_for(self._news.wait_for(lambda: stream_id(self.head) > stream_id(after)),
                                       timeout_s)
            except asyncio.TimeoutError:
                pass
            finally:
                self._waiting -= 1

    async def _run(self) -> None:
        try:
            state, _ = await self.ap.changes_after("0-0", 0)
            head = state.last_id
            while self._waiting > 0:
                # Below the store's 2 s socket timeout: a longer block would read as a dead connection.
                if await self.ap.wait_changes(head, block_ms=500) is not None:
                    state, _ = await self.ap.changes_after("0-0", 0)
                    head = state.last_id
                    async with self._news:
                        self.head = head
                        self._news.notify_all()
        except Exception:  # noqa: BLE001 - subscribers fall back to reading every WAIT_S
            await asyncio.sleep(WAIT_S)
        finally:
            self._task = None  # the next waiter starts a fresh one


class Subscriptions:
    def __init__(self, settings: Settings, ap: ReplicaStore, worlds: Worlds) -> None:
        self.settings = settings
        self.ap = ap
        self.worlds = worlds
        self._tail = _Tail(ap)

    async def check(self, world: str, *, entity: str | None, prefix: str | None, after: str | None) -> None:
        """Raise what `changes` would raise on its arguments, before any change is read."""
        Worlds.check(world)
        if entity is not None:
            ap_keys.check(ap_keys.ENTITY_RE, "entity", entity)
        if prefix is not None and not _PREFIX.fullmatch(prefix):
            raise _invalid("prefix", f"must match {_PREFIX.pattern}")
        if after is not None:
            check_position(after)
        await self.worlds.require(world)
        if after is not None:
            log, _ = await self.ap.changes_after("0-0", 0)
            _not_past(after, log.last_id)

    async def head(self) -> str:
        """This replica's newest changes log position: `changes(after=head())` is "from now", with a
        position the caller knows before it reads (an HTTP stream says it in its first line)."""
        await self.ap.configure_changes()
        log, _ = await self.ap.changes_after("0-0", 0)
        return log.last_id

    async def changes(self, world: str, *, entity: str | None, prefix: str | None,
                      after: str | None, progress_s: float | None = None) -> AsyncIterator[EntityChange | Progress]:
        """Changes of `world` (only `entity`, or entities starting with `prefix`, if given) merged
        at this replica after position `after` (None: from now), until the caller stops.
        With `progress_s`, a Progress too whenever the log was read to its end or past entries of
        other entities (at least every `progress_s` while nothing happens).

        Raises ChangesTrimmed if the log no longer holds every entry after `after`, SlowConsumer
        when the caller falls more than `subscribe_max_lag` entries behind, InvalidInput (422)
        for a malformed argument or a position this replica never issued."""
        await self.check(world, entity=entity, prefix=prefix, after=after)
        await self.ap.configure_changes()
        max_lag = self.settings.subscribe_max_lag
        position, index = await self._start(after, max_lag)
        wait_s = WAIT_S if progress_s is None else min(WAIT_S, progress_s)
        while True:
            log, batch = await self.ap.changes_after(position, BATCH)
            if index < log.removed:
                # The cap trimmed entries this subscriber had not read: it fell a whole log behind.
                raise SlowConsumer(position, log.added - index, max_lag)
            if log.added - (index + len(batch)) > max_lag:
                raise SlowConsumer(position, log.added - index, max_lag)
            if not batch:
                if progress_s is not None:
                    yield Progress(position)
                await self._tail.wait(position, wait_s)
                continue
            delivered = False
            for c in batch:
                index += 1
                position = c.id
                if c.world == world and (entity is None or c.entity == entity) \
                        and (prefix is None or c.entity.startswith(prefix)):
                    delivered = True
                    yield EntityChange.of(c)
            if progress_s is not None and not delivered:
                yield Progress(position)

    async def _start(self, after: str | None, max_lag: int) -> tuple[str, int]:
        """The position to read after, and how many entries the log had taken up to it."""
        if after is None:
            log, _ = await self.ap.changes_after("0-0", 0)
            return log.last_id, log.added
        log, following = await self.ap.changes_count(after, max_lag)
        _not_past(after, log.last_id)
        # Trimming takes the oldest entries: if any went, and `after` is older than the oldest
        # left, entries after it may be gone. (Also said when exactly `after` was the newest one
        # trimmed and nothing after it went: the log cannot tell the two apart.)
        if log.removed and stream_id(after) < stream_id(log.first_id):
            raise ChangesTrimmed(after, log.first_id)
        if following > max_lag:
            raise SlowConsumer(after, following, max_lag)
        return after, log.added - following
