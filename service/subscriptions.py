"""Entity subscriptions: the merged changes of a world at this replica, as they happen.

Each partition of a replica has a changes log (consistency/ap_changes.py) listing every merge
that changed what readers see, local writes and those applied from peers alike. A subscriber's
position is a vector (consistency/ap_positions.py): how far it read each partition's log, written
`v2.<p>-<ms>-<seq>...`. A subscription to one entity reads its one partition and its positions
name only that one; a world (or prefix) subscription reads all of them and its positions name
every partition that has moved. It resumes after a position on the same replica with no gap and
no duplicate. Positions are the replica's own: another region's mean nothing here.

Order: one entity's changes come in the order its partition's log took them; changes of
different entities (of different partitions) have no order between them.

A subscriber reads the logs in bounded batches. One task per node blocks on the logs and
wakes the subscribers waiting for news, so a waiting subscriber holds no Redis connection. A
subscriber whose position falls more than `subscribe_max_lag` entries (of every world, summed
over the partitions it reads) behind the logs' heads, or behind what a log's cap trimmed, gets
SlowConsumer and its subscription ends: nothing is buffered for it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from consistency import ap_keys
from consistency.ap_positions import ZERO, Vector, format_vector, parse_vector, stream_id
from consistency.ap_store import ALL, LoggedChange, ReplicaStore, Scalar
from service.config import Settings
from service.errors import ChangesTrimmed, InvalidInput, SlowConsumer
from service.worlds import Worlds

__all__ = ["BATCH", "EntityChange", "Progress", "Subscriptions"]

# entries a subscriber reads per round, shared by the partitions it reads (rounded up): bounds each
# read's time in Redis, and how far one read can catch up before the lag is measured
BATCH = 100
WAIT_S = 1.0  # longest a subscriber waits for the tail's news before reading anyway
# A tail whose last look is older than this is not trusted to have seen everything: subscribers read.
TRUST_S = 1.5
_OLD_POSITION = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
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
    id: str  # the subscription's position once this change is read: resume after it

    @classmethod
    def of(cls, c: LoggedChange, position: str) -> "EntityChange":
        hlc, _, node = c.order_key.partition("|")
        return cls(c.world, c.entity, c.fields, c.deleted, hlc, node, c.origin, position)


@dataclass(frozen=True)
class Progress:
    """Every change of the subscription up to position `id` has been delivered (asked for by
    a subscriber that must know how current it is: an edge node)."""

    id: str


def _invalid(where: str, msg: str) -> InvalidInput:
    return InvalidInput(f"{where} {msg}", [{"loc": [where], "msg": msg, "type": "value_error"}])


def check_position(after: str) -> Vector:
    """A subscription position: a vector `v2.<partition>-<ms>-<seq>...` (consistency/ap_positions.py)."""
    if _OLD_POSITION.fullmatch(after):
        raise _invalid("after", "is a position of the unpartitioned changes log of an older version; positions are "
                                "now v2.<partition>-<ms>-<seq>...: read the entities again and subscribe from now")
    try:
        return parse_vector(after)
    except ValueError as e:
        raise _invalid("after", f"must be a position this replica sent as an event id, like "
                                f"v2.7-1732170000000-0 ({e})") from e


def _not_past(after: Vector, heads: Vector) -> None:
    for p, sid in after.items():
        if stream_id(sid) > stream_id(heads.get(p, ZERO)):
            raise _invalid("after", f"is past the newest position of this replica's changes log in partition {p} "
                                    f"({heads.get(p, ZERO)}): positions are per replica, resume on the region that "
                                    "sent it")


def _moved(head: Vector, after: Vector) -> bool:
    return any(stream_id(head.get(p, ZERO)) > stream_id(sid) for p, sid in after.items())


class _Tail:
    """One blocking read of the changes logs per node, waking every subscriber that waits for news.

    Waiters wait on an Event that each look replaces, not on a Condition: a stream closed by its client is
    cancelled more than once (anyio re-delivers a cancellation until the task leaves its scope), and a
    Condition waiter cancelled again while re-taking its lock could leave the lock taken for good, which
    stalled every subscription of the node (seen: tests/test_entity_stream.py, 2 runs in 20)."""

    def __init__(self, ap: ReplicaStore) -> None:
        self.ap = ap
        self.head: Vector = {}  # the newest position of each log the tail has seen
        self.looked = 0.0  # monotonic time the tail last began blocking on the logs past `head` (0: not running)
        self._news = asyncio.Event()  # set, and replaced, at each look
        self._waiting = 0
        self._task: asyncio.Task[None] | None = None

    async def wait(self, after: Vector, timeout_s: float) -> bool:
        """Return once a log holds an entry past `after` (in a partition it names): True; or after
        `timeout_s`: False."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="changes-tail")
        deadline = time.monotonic() + timeout_s
        self._waiting += 1
        try:
            while not _moved(self.head, after):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                news = self._news
                try:
                    async with asyncio.timeout(left):
                        await news.wait()
                except TimeoutError:
                    return _moved(self.head, after)
            return True
        finally:
            self._waiting -= 1

    def quiet(self, after: Vector) -> bool:
        """Whether a read after `after` now would find nothing the tail has not been blocking on: its
        last look is recent and saw no log past `after`. An idle subscriber then skips its read (each
        is a script call per partition, 64 for a world, every `progress_s`), and the tail still wakes
        it for whatever comes next."""
        return (self._task is not None and time.monotonic() - self.looked < TRUST_S
                and not _moved(self.head, after))

    async def _heads(self) -> Vector:
        return {p: state.last_id for p, state in (await self.ap.changes_heads()).items()}

    def _publish(self, head: Vector) -> None:
        self.head, self.looked = head, time.monotonic()
        news, self._news = self._news, asyncio.Event()
        news.set()

    async def _run(self) -> None:
        try:
            head = await self._heads()
            while self._waiting > 0:
                self._publish(head)
                # Below the store's 2 s socket timeout: a longer block would read as a dead connection.
                if await self.ap.wait_changes(head, block_ms=500):
                    head = await self._heads()
        except Exception:  # noqa: BLE001 - subscribers fall back to reading every WAIT_S
            self.looked = 0.0
            await asyncio.sleep(WAIT_S)
        finally:
            self.looked = 0.0
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
        vector = check_position(after) if after is not None else None
        await self.worlds.require(world)
        if vector is not None:
            heads = await self.ap.changes_heads(vector)
            _not_past(vector, {p: state.last_id for p, state in heads.items()})

    async def head(self) -> str:
        """This replica's newest changes log positions: `changes(after=head())` is "from now", with a
        position the caller knows before it reads (an HTTP stream says it in its first line)."""
        await self.ap.configure_changes()
        return format_vector({p: state.last_id for p, state in (await self.ap.changes_heads()).items()})

    async def changes(self, world: str, *, entity: str | None, prefix: str | None,
                      after: str | None, progress_s: float | None = None) -> AsyncIterator[EntityChange | Progress]:
        """Changes of `world` (only `entity`, or entities starting with `prefix`, if given) merged
        at this replica after position `after` (None: from now), until the caller stops.
        With `progress_s`, a Progress too whenever the logs were read to their end or past entries of
        other entities (at least every `progress_s` while nothing happens).

        Raises ChangesTrimmed if a log no longer holds every entry after `after`, SlowConsumer
        when the caller falls more than `subscribe_max_lag` entries behind, InvalidInput (422)
        for a malformed argument or a position this replica never issued."""
        await self.check(world, entity=entity, prefix=prefix, after=after)
        await self.ap.configure_changes()
        max_lag = self.settings.subscribe_max_lag
        # one entity lives in one partition: its subscription reads that log alone
        scope = [ap_keys.partition(world, entity)] if entity is not None else list(ALL)
        position, index = await self._start(scope, None if after is None else check_position(after), max_lag)
        wait_s = WAIT_S if progress_s is None else min(WAIT_S, progress_s)
        share = -(-BATCH // len(scope))  # the partitions read share BATCH: 2 each for a world's 64
        while True:
            reads = await self.ap.changes_after(position, share)
            lag = 0
            for p, (log, batch) in reads.items():
                if index[p] < log.removed:
                    # The cap trimmed entries this subscriber had not read: it fell a whole log behind.
                    raise SlowConsumer(format_vector(position), log.added - index[p], max_lag)
                lag += log.added - (index[p] + len(batch))
            if lag > max_lag:
                raise SlowConsumer(format_vector(position), lag + sum(len(b) for _, b in reads.values()), max_lag)
            if not any(batch for _, batch in reads.values()):
                while True:
                    if progress_s is not None:
                        yield Progress(format_vector(position))
                    if await self._tail.wait(position, wait_s) or not self._tail.quiet(position):
                        break
                continue
            delivered = False
            # The round's entries of all partitions in id order: ids come from one Redis clock, so
            # this is about the order they were merged in (per entity, exactly: one partition).
            for p, c in sorted(((p, c) for p, (_, batch) in reads.items() for c in batch),
                               key=lambda pc: stream_id(pc[1].id)):
                index[p] += 1
                position[p] = c.id
                if c.world == world and (entity is None or c.entity == entity) \
                        and (prefix is None or c.entity.startswith(prefix)):
                    delivered = True
                    yield EntityChange.of(c, format_vector(position))
            if progress_s is not None and not delivered:
                yield Progress(format_vector(position))

    async def _start(self, scope: list[int], after: Vector | None, max_lag: int) -> tuple[Vector, dict[int, int]]:
        """The position to read after in each partition of `scope`, and how many entries each log had
        taken up to it."""
        if after is None:
            heads = await self.ap.changes_heads(scope)
            return {p: heads[p].last_id for p in scope}, {p: heads[p].added for p in scope}
        start = {p: after.get(p, ZERO) for p in scope}
        counts = await self.ap.changes_count(start, max_lag)
        _not_past(start, {p: log.last_id for p, (log, _) in counts.items()})
        for p, (log, _) in counts.items():
            # Trimming takes the oldest entries: if any went, and the position is older than the oldest
            # left, entries after it may be gone. (Also said when exactly the position was the newest
            # one trimmed and nothing after it went: the log cannot tell the two apart.)
            if log.removed and stream_id(start[p]) < stream_id(log.first_id):
                raise ChangesTrimmed(format_vector(after), format_vector({p: log.first_id}))
        following = sum(n for _, n in counts.values())
        if following > max_lag:
            raise SlowConsumer(format_vector(start), following, max_lag)
        return start, {p: log.added - n for p, (log, n) in counts.items()}
