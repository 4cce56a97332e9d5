"""One API node's wiring: the stores it talks to and the operations built on
them, opened and closed with the app.

The routes call the operations (`params`, `worlds`, `observations`,
`models`, `queries`) and nothing below them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from consistency.ap_store import ReplicaStore
from consistency.cp_store import CPStore
from consistency.hlc import HybridLogicalClock, wall_clock_ms
from consistency.replication import Replicator
from service import sabotage
from service.config import Settings
from service.models import ModelHost
from service.observations import Observations
from service.params import Params
from service.queries import ModelQueries
from service.worlds import Worlds


@dataclass
class Node:
    settings: Settings
    cp: CPStore = field(init=False)
    hlc: HybridLogicalClock = field(init=False)
    ap: ReplicaStore = field(init=False)
    replicator: Replicator = field(init=False)
    params: Params = field(init=False)
    worlds: Worlds = field(init=False)
    observations: Observations = field(init=False)
    models: ModelHost = field(init=False)
    queries: ModelQueries = field(init=False)

    clock_offset_ms: int = 0  # set only through the fault-injection endpoint

    def __post_init__(self) -> None:
        s = self.settings
        plan = sabotage.plan(s.sabotage)  # the production classes unless a test planted a bug
        self.cp = plan.cp(s.etcd_endpoints, s.cp_timeout_s)
        self.hlc = HybridLogicalClock(s.node_id, now_ms=self.now_ms)
        clock: Any = sabotage.WallClock(self.now_ms) if plan.wall_clock else self.hlc
        self.ap = plan.home(s.redis_url, s.region, s.node_id, clock, dedup_window_s=s.dedup_window_s,
                            dedup_max=s.dedup_max, stream_maxlen=s.stream_maxlen)
        peers = [plan.peer(url, region, s.node_id) for region, url in sorted(s.peers.items())]
        self.replicator = Replicator(self.ap, peers)
        self.params = Params(self.cp)
        self.worlds = Worlds(self.cp, self.ap)
        self.observations = Observations(s, self.ap, self.hlc, self.replicator, self.worlds, self.now_ms)
        self.models = ModelHost(self.cp, s.checkpoint_dir, s.device, s.predict_max_batch, s.predict_max_wait_ms,
                                s.torch_threads)
        self.queries = ModelQueries(self.cp, self.ap, self.models)

    def now_ms(self) -> int:
        """This node's wall clock, as its HLC reads it (skewed when a nemesis says so)."""
        return wall_clock_ms() + self.clock_offset_ms

    def skew_clock(self, offset_ms: int) -> None:
        """Fault injection: shift this node's wall clock, as its HLC sees it."""
        self.clock_offset_ms = offset_ms

    async def start(self) -> None:
        await self.cp.connect()
        self.replicator.start()
        self.models.start()

    async def stop(self) -> None:
        await self.models.stop()
        await self.replicator.stop()
        await self.ap.close()
        await self.cp.close()

    async def readiness(self) -> dict[str, dict[str, object]]:
        """Each tier's state and the model's; the node is ready when both tiers are."""
        ok = await self.ap.ping()
        ap = {"state": "ok" if ok else "unavailable", "replica": self.settings.region,
              "peers": self.replicator.status(), "behind": self.replicator.behind()}
        return {"cp": await self.cp.health(), "ap": ap, "model": self.models.status()}

    def faults(self) -> dict[str, object]:
        """What the fault-injection endpoint reports: the clock offset and planted bugs."""
        return {"clock_offset_ms": self.clock_offset_ms, "sabotage": sorted(self.settings.sabotage),
                "known_sabotage": sabotage.SABOTAGES, "hlc": self.hlc.last.to_string()}
