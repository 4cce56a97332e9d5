"""Replication: each node ships its home replica's stream to every peer replica.

The acknowledged offset per peer lives in the source replica (ws:acked), so a
restarted node resumes where the peer left off. When the stream has been
trimmed past that offset, the shipper falls back to anti-entropy: it compares
per-bucket digests of the two replicas and ships the divergent buckets whole.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from redis.exceptions import RedisError

from consistency.ap_store import ReplicaStore, stream_id
from consistency.errors import Unavailable

log = logging.getLogger("worldstate.replication")


@dataclass
class PeerStatus:
    peer: str
    reachable: bool = False
    acked: str = "0-0"
    lag_ms: int = 0  # age gap between our newest delta and the newest the peer applied
    behind: bool = False
    anti_entropy_runs: int = 0
    buckets_shipped: int = 0
    last_error: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"peer": self.peer, "reachable": self.reachable, "acked": self.acked, "lag_ms": self.lag_ms,
                "behind": self.behind, "anti_entropy_runs": self.anti_entropy_runs,
                "last_error": self.last_error}


async def anti_entropy(source: ReplicaStore, dest: ReplicaStore) -> int:
    """Ship every bucket whose digest differs from `source` to `dest`; returns how many."""
    ours, theirs = await asyncio.gather(source.digests(), dest.digests())
    shipped = 0
    for bucket, (a, b) in enumerate(zip(ours, theirs)):
        if a and a != b:
            await dest.merge_state(await source.dump_bucket(bucket), source.region)
            shipped += 1
    return shipped


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
        """Ship one batch (or run anti-entropy); returns the number of entries or buckets shipped."""
        acked = await self.home.acked(self.peer.region)
        if stream_id(acked) < stream_id(await self.home.trimmed()):
            # The deltas the peer lacks are gone; everything after `upto` is still in the stream.
            upto = await self.home.last_id()
            shipped = await anti_entropy(self.home, self.peer)
            await self.home.set_acked(self.peer.region, upto)
            self.status.anti_entropy_runs += 1
            self.status.buckets_shipped += shipped
            log.info("anti-entropy %s -> %s: %d buckets", self.home.region, self.peer.region, shipped)
            return shipped
        entries = await self.home.read_after(acked, self.batch, self.block_ms)
        if entries:
            await self.peer.apply_remote(self.home.region, entries)
            acked = entries[-1][0]
            await self.home.set_acked(self.peer.region, acked)
        await self._measure(acked)
        return len(entries)

    async def _measure(self, acked: str) -> None:
        last = await self.home.last_id()
        self.status.acked = acked
        self.status.behind = stream_id(acked) < stream_id(last)
        self.status.lag_ms = max(0, stream_id(last)[0] - stream_id(acked)[0]) if self.status.behind else 0

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
                if not isinstance(e, (Unavailable, RedisError, OSError, RuntimeError)):
                    log.exception("shipper %s -> %s failed", self.home.region, self.peer.region)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)


class Replicator:
    """All of a node's shippers plus the housekeeping of its home replica."""

    def __init__(self, home: ReplicaStore, peers: list[ReplicaStore], housekeeping_s: float = 5.0) -> None:
        self.home = home
        self.shippers = {p.region: Shipper(home, p) for p in peers}
        self.housekeeping_s = housekeeping_s
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def start(self) -> None:
        self._tasks = [asyncio.create_task(s.run(), name=f"ship-{r}") for r, s in self.shippers.items()]
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="ap-housekeeping"))

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

    async def housekeep(self) -> None:
        """Trim what every peer has applied (and anything over the cap); forget old event ids.
        Never past a registered consumer's offset either (ws:consumers, a learner): trim.lua
        lowers the peers' floor to the slowest consumer atomically with the trim."""
        acked = await self.home.all_acked()
        peers = list(self.shippers)
        floor = min((acked[p] for p in peers), key=stream_id) if peers and all(p in acked for p in peers) else ""
        await self.home.trim(acked_by_all=floor)
        await self.home.expire_dedup()

    def status(self) -> dict[str, dict[str, object]]:
        return {r: s.status.as_dict() for r, s in self.shippers.items()}

    def behind(self) -> list[str]:
        return sorted(r for r, s in self.shippers.items() if s.status.behind or not s.status.reachable)

