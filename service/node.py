"""One API node's wiring: the stores it talks to, opened and closed with the app."""

from __future__ import annotations

from dataclasses import dataclass, field

from consistency.ap_store import ReplicaStore
from consistency.cp_store import CPStore
from consistency.hlc import HybridLogicalClock, wall_clock_ms
from consistency.replication import Replicator
from service import faults
from service.config import Settings
from service.models import ModelHost
from service.worlds import WorldRegistry


@dataclass
class Node:
    settings: Settings
    cp: CPStore = field(init=False)
    hlc: HybridLogicalClock = field(init=False)
    ap: ReplicaStore = field(init=False)
    replicator: Replicator = field(init=False)
    worlds: WorldRegistry = field(init=False)
    models: ModelHost = field(init=False)

    clock_offset_ms: int = 0  # set only through the fault-injection endpoint

    def __post_init__(self) -> None:
        s = self.settings
        bad = s.sabotage
        self.cp = (faults.StaleCacheCPStore if "cp-stale-cache" in bad else CPStore)(s.etcd_endpoints,
                                                                                     s.cp_timeout_s)
        self.hlc = HybridLogicalClock(s.node_id, max_drift_ms=s.max_drift_ms, now_ms=self.now_ms)
        clock = faults.WallClock(self.now_ms) if "wall-clock-lww" in bad else self.hlc
        home = (faults.NoDedupReplicaStore if "no-dedup" in bad else
                faults.FreshClockReplicaStore if "fresh-hlc" in bad else ReplicaStore)
        self.ap = home(s.redis_url, s.region, s.node_id, clock, dedup_window_s=s.dedup_window_s,  # type: ignore[arg-type]
                       dedup_max=s.dedup_max, stream_maxlen=s.stream_maxlen)
        peer = faults.DroppingReplicaStore if "drop-deltas" in bad else ReplicaStore
        peers = [peer(url, region, s.node_id) for region, url in sorted(s.peers.items())]
        self.replicator = Replicator(self.ap, peers)
        self.worlds = WorldRegistry(self.cp, self.ap)
        self.models = ModelHost(self.cp, s.checkpoint_dir, s.device, s.predict_max_batch, s.predict_max_wait_ms)

    def now_ms(self) -> int:
        """This node's wall clock, as its HLC reads it (skewed when a nemesis says so)."""
        return wall_clock_ms() + self.clock_offset_ms

    async def start(self) -> None:
        await self.cp.connect()
        self.replicator.start()
        self.models.start()

    async def stop(self) -> None:
        await self.models.stop()
        await self.replicator.stop()
        await self.ap.close()
        await self.cp.close()

    async def ap_health(self) -> dict[str, object]:
        ok = await self.ap.ping()
        return {"state": "ok" if ok else "unavailable", "replica": self.settings.region,
                "peers": self.replicator.status(), "behind": self.replicator.behind()}

    async def readiness(self) -> dict[str, dict[str, object]]:
        return {"cp": await self.cp.health(), "ap": await self.ap_health(), "model": self.models.status()}
