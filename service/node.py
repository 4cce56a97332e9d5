"""One API node's wiring: the stores it talks to, opened and closed with the app."""

from __future__ import annotations

from dataclasses import dataclass, field

from consistency.ap_store import ReplicaStore
from consistency.cp_store import CPStore
from consistency.hlc import HybridLogicalClock
from consistency.replication import Replicator
from service.config import Settings
from service.worlds import WorldRegistry


@dataclass
class Node:
    settings: Settings
    cp: CPStore = field(init=False)
    hlc: HybridLogicalClock = field(init=False)
    ap: ReplicaStore = field(init=False)
    replicator: Replicator = field(init=False)
    worlds: WorldRegistry = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.cp = CPStore(s.etcd_endpoints, s.cp_timeout_s)
        self.hlc = HybridLogicalClock(s.node_id, max_drift_ms=s.max_drift_ms)
        self.ap = ReplicaStore(s.redis_url, s.region, s.node_id, self.hlc, dedup_window_s=s.dedup_window_s,
                               dedup_max=s.dedup_max, stream_maxlen=s.stream_maxlen)
        peers = [ReplicaStore(url, region, s.node_id) for region, url in sorted(s.peers.items())]
        self.replicator = Replicator(self.ap, peers)
        self.worlds = WorldRegistry(self.cp)

    async def start(self) -> None:
        await self.cp.connect()
        self.replicator.start()

    async def stop(self) -> None:
        await self.replicator.stop()
        await self.ap.close()
        await self.cp.close()

    async def ap_health(self) -> dict[str, object]:
        ok = await self.ap.ping()
        return {"state": "ok" if ok else "unavailable", "replica": self.settings.region,
                "peers": self.replicator.status(), "behind": self.replicator.behind()}

    async def readiness(self) -> dict[str, dict[str, object]]:
        return {"cp": await self.cp.health(), "ap": await self.ap_health()}
