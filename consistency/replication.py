"""Replication: each node ships its home replica's streams to every peer replica.

A replica has one stream per partition (consistency/ap_keys.py), and partition p of one region
ships into partition p of every other. The acknowledged offset per (peer, partition) lives in
the source replica (T:acked), so a restarted node resumes where the peer left off. When a
partition's stream has been trimmed past that offset, the shipper falls back to anti-entropy
for that partition: it compares per-bucket digests of the two replicas' partition and ships the
divergent buckets whole.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from consistency.ap_anti_entropy import anti_entropy
from consistency.ap_failover import FailoverWatch
from consistency.ap_positions import ZERO, Vector, stream_id
from consistency.ap_store import ALL, ReplicaStore
from consistency.errors import OutcomeUnknown, Unavailable

__all__ = ["PeerStatus", "Replicator", "Shipper", "anti_entropy"]
log = logging.getLogger("worldstate.replication")


@dataclass
class PeerStatus:
    peer: str
    reachable: bool = False
    acked: str = "0-0"  # the oldest offset of a partition the peer is behind in (else the newest acknowledged)
    lag_ms: int = 0  # the largest age gap, over partitions, between our newest delta and the newest the peer applied
    behind: bool = False
    partitions_behind: int = 0
    anti_entropy_runs: int = 0
    buckets_shipped: int = 0
    last_error: str = ""
    offsets: Vector = field(default_factory=dict)  # partition -> what the peer acknowledged, at the last look

    def as_dict(self) -> dict[str, object]:
        return {"peer": self.peer, "reachable": self.reachable, "acked": self.acked, "lag_ms": self.lag_ms,
                "behind": self.behind, "partitions_behind": self.partitions_behind,
                "anti_entropy_runs": self.anti_entropy_runs,
                "last_error": self.last_error}


class Shipper:
    """Ships `home`'s stream to one peer, forever, with backoff while it is unreachable."""

    def __init__(self, home: ReplicaStore, peer: ReplicaStore, batch: int = 1000,
                 block_ms: int = 100, max_backoff_s: float = 2.0) -> None:
        self.home = home
        self.peer = peer
        self.batch = batch
        self.block_ms = block_ms
        self.max_backoff_s = max_backoff_s
        self.status = PeerStatus(peer.region)
        self._paused = asyncio.Event()
        # Checked every loop as well as cancelling the task: redis-py can swallow a
        # CancelledError that lands mid-command, and the loop would go on forever.
        self.stopping = False

    def pause(self) -> None:
        """Stop shipping (the replication link is cut) until resume()."""
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    async def step(self) -> int:
        """Ship one batch of every partition that has one (or run anti-entropy for those trimmed past
        the peer's offset); returns the number of entries or buckets shipped. Only when no partition
        had anything does the read block, up to `block_ms`."""
        acked, trimmed = await asyncio.gather(self.home.acked(self.peer.region), self.home.trimmed())
        lost = [p for p in ALL if stream_id(acked[p]) < stream_id(trimmed[p])]
        if lost:
            # The deltas the peer lacks are gone; everything after `upto` is still in the streams.
            upto = await self.home.last_ids(lost)
            shipped = 0
            for p in lost:
                shipped += await anti_entropy(self.home, self.peer, p)
            await self.home.set_acked(self.peer.region, upto)
            self.status.anti_entropy_runs += 1
            self.status.buckets_shipped += shipped
            log.info("anti-entropy %s -> %s: %d partitions, %d buckets", self.home.region, self.peer.region,
                     len(lost), shipped)
            return shipped
        entries = await self.home.read_partitions(acked, self.batch, self.block_ms)
        if entries:
            shipped_to = {p: listed[-1][0] for p, listed in entries.items()}
            await self.home.fence(self.peer.region, shipped_to)  # nothing ships that a failover could drop
            await self.peer.apply_remote(self.home.region, entries)
            await self.home.set_acked(self.peer.region, shipped_to)
            acked.update(shipped_to)
        # The read said how far behind the peer is, as of the read: a partition that had fewer than
        # `batch` entries after its offset was shipped to its end, and one not in the answer had none.
        await self._measure(acked, [p for p, listed in entries.items() if len(listed) >= self.batch])
        return sum(len(listed) for listed in entries.values())

    async def _measure(self, acked: Vector, full: list[int]) -> None:
        last = await self.home.last_ids(full) if full else {}
        behind = {p: acked.get(p, ZERO) for p in full if stream_id(acked.get(p, ZERO)) < stream_id(last[p])}
        self.status.offsets = acked
        self.status.partitions_behind = len(behind)
        self.status.behind = bool(behind)
        if behind:
            self.status.acked = min(behind.values(), key=stream_id)
            self.status.lag_ms = max(max(0, stream_id(last[p])[0] - stream_id(a)[0]) for p, a in behind.items())
        else:
            self.status.acked = max(acked.values(), key=stream_id, default=ZERO)
            self.status.lag_ms = 0

    async def run(self) -> None:
        backoff = 0.05
        while not self.stopping:
            if self._paused.is_set():
                self.status.reachable = False
                await asyncio.sleep(0.05)
                continue
            try:
                await self.step()
                self.status.reachable = True
                self.status.last_error = ""
                backoff = 0.05
            except Exception as e:  # noqa: BLE001 - a shipper must outlive any failure of either Redis
                self.status.reachable = False
                self.status.last_error = f"{type(e).__name__}: {e}"
                self.status.behind = True
                # OutcomeUnknown: a master died under a write (its WAIT unanswered); the step is resent
                if not isinstance(e, (Unavailable, OutcomeUnknown, RedisError, OSError, RuntimeError)):
                    log.exception("shipper %s -> %s failed", self.home.region, self.peer.region)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)


class Replicator:
    """All of a node's shippers plus the housekeeping of its home replica; on a Redis Cluster, also
    the watch that recovers a partition whose master changed (consistency/ap_failover.py), every
    `failover_check_s` (None: no watch)."""

    def __init__(self, home: ReplicaStore, peers: list[ReplicaStore], housekeeping_s: float = 5.0,
                 failover_check_s: float | None = 1.0) -> None:
        self.home = home
        self.shippers = {p.region: Shipper(home, p) for p in peers}
        self.housekeeping_s = housekeeping_s
        self.failover_check_s = failover_check_s
        self.failovers = (FailoverWatch(home, peers, blocked=lambda r: self.shippers[r].paused)
                          if home.cluster and failover_check_s else None)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def start(self) -> None:
        self._tasks = [asyncio.create_task(s.run(), name=f"ship-{r}") for r, s in self.shippers.items()]
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="ap-housekeeping"))
        if self.failovers is not None:
            self._tasks.append(asyncio.create_task(self._watch_failovers(), name="ap-failovers"))

    async def stop(self) -> None:
        self._stopping = True
        for s in self.shippers.values():
            s.stopping = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for s in self.shippers.values():
            await s.peer.close()

    async def _housekeeping(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.housekeeping_s)
            try:
                await self.housekeep()
            except (Unavailable, RedisError, OSError, RuntimeError) as e:
                log.warning("housekeeping of %s failed: %s", self.home.region, e)

    async def _watch_failovers(self) -> None:
        assert self.failovers is not None and self.failover_check_s
        while not self._stopping:
            try:
                await self.failovers.check()
            except Exception as e:  # noqa: BLE001 - the watch must outlive any failure; the next look starts over
                self.failovers.status.last_error = f"{type(e).__name__}: {e}"
                if isinstance(e, (Unavailable, OutcomeUnknown, RedisError, OSError, RuntimeError)):
                    log.warning("failover watch of %s failed: %s", self.home.region, e)
                else:
                    log.exception("failover watch of %s failed", self.home.region)
            await asyncio.sleep(self.failover_check_s)

    async def housekeep(self) -> None:
        """Per partition: trim what every peer has applied (and anything over the cap); forget old
        event ids. Never past a registered consumer's offset either (T:consumers, a learner):
        trim.lua lowers the peers' floor to the slowest consumer atomically with the trim."""
        acked = await self.home.all_acked()
        peers = list(self.shippers)
        for p in ALL:
            mine = acked.get(p, {})
            floor = min((mine[q] for q in peers), key=stream_id) if peers and all(q in mine for q in peers) else ""
            await self.home.trim(p, acked_by_all=floor)
            await self.home.expire_dedup(p)

    def status(self) -> dict[str, dict[str, object]]:
        return {r: s.status.as_dict() for r, s in self.shippers.items()}

    def failover_status(self) -> dict[str, object] | None:
        """The failover watch's counters (None: the home replica is not a cluster, or no watch runs)."""
        return self.failovers.status.as_dict() if self.failovers is not None else None

    def behind(self) -> list[str]:
        return sorted(r for r, s in self.shippers.items() if s.status.behind or not s.status.reachable)

