"""One API node's wiring: the stores it talks to and the operations built on
them, opened and closed with the app.

The routes call the operations (`params`, `worlds`, `observations`,
`subscriptions`, `models`, `queries`) and nothing below them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from consistency import ap_keys as K
from consistency.ap_store import ReplicaStore
from consistency.cp_store import CPStore
from consistency.errors import Unavailable
from consistency.hlc import HybridLogicalClock, wall_clock_ms
from consistency.replication import Replicator
from service import sabotage
from service.config import Settings
from service.keyring import KeyRing
from service.keys import Keys
from service.metrics import Metrics
from service.models import ModelHost
from service.observations import Observations
from service.params import Params
from service.queries import ModelQueries
from service.quotas import Quotas
from service.subscriptions import Subscriptions
from service.worlds import Worlds

log = logging.getLogger("worldstate.node")


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
    subscriptions: Subscriptions = field(init=False)
    models: ModelHost = field(init=False)
    queries: ModelQueries = field(init=False)
    keys: Keys = field(init=False)
    keyring: KeyRing | None = field(init=False)  # None: running without auth (WORLDSTATE_AUTH=off)
    quotas: Quotas = field(init=False)
    metrics: Metrics = field(init=False)  # this node's own Prometheus registry (GET /metrics)

    clock_offset_ms: int = 0  # set only through the fault-injection endpoint

    def __post_init__(self) -> None:
        s = self.settings
        self.metrics = Metrics()
        plan = sabotage.plan(s.sabotage)  # the production classes unless a test planted a bug
        self.cp = plan.cp(s.etcd_endpoints, s.cp_timeout_s, s.etcd_username or None, s.etcd_password or None)
        self.hlc = HybridLogicalClock(s.node_id, now_ms=self.now_ms)
        clock: Any = sabotage.WallClock(self.now_ms) if plan.wall_clock else self.hlc
        # The settings' caps are the replica's; the store's stream and changes caps are per partition.
        self.ap = plan.home(s.redis_url, s.region, s.node_id, clock, dedup_window_s=s.dedup_window_s,
                            dedup_max=s.dedup_max, stream_maxlen=K.share(s.stream_maxlen),
                            changes_maxlen=K.share(s.changes_maxlen),
                            ack_replicas=None if s.ap_ack_replicas < 0 else s.ap_ack_replicas)
        peers = [plan.peer(url, region, s.node_id) for region, url in sorted(s.peers.items())]
        self.replicator = Replicator(self.ap, peers)
        self.params = Params(self.cp)
        self.worlds = Worlds(self.cp, self.ap)
        self.quotas = Quotas(self.ap, self.metrics)
        self.observations = Observations(s, self.ap, self.hlc, self.replicator, self.worlds, self.now_ms,
                                         self.quotas, self.metrics)
        self.subscriptions = Subscriptions(s, self.ap, self.worlds)
        self.models = ModelHost(self.cp, s.checkpoint_dir, s.device, s.predict_max_batch, s.predict_max_wait_ms,
                                s.torch_threads, s.predict_memo)
        self.queries = ModelQueries(self.cp, self.ap, self.models, self.quotas)
        self.keys = Keys(self.cp)
        self.keyring = KeyRing(self.cp) if s.auth == "keys" else None
        self.metrics.count_cp(self.cp)
        self.metrics.follow(self.ap, self.replicator, self.models.status, self.hlc, self.now_ms)

    def now_ms(self) -> int:
        """This node's wall clock, as its HLC reads it (skewed when a nemesis says so)."""
        return wall_clock_ms() + self.clock_offset_ms

    def skew_clock(self, offset_ms: int) -> None:
        """Fault injection: shift this node's wall clock, as its HLC sees it."""
        self.clock_offset_ms = offset_ms

    async def start(self) -> None:
        try:
            await self.ap.check_layout()
        except Unavailable as e:  # checked again before the first write (ReplicaStore.ingest)
            log.warning("the AP replica is not reachable to check its key layout yet: %s", e)
        await self.cp.connect()
        if self.keyring is None:
            log.warning("AUTH IS OFF (WORLDSTATE_AUTH=off): anyone who reaches this node can change physics, "
                        "publish models, write observations and manage keys")
        else:
            await self.keyring.start(wait_s=2 * self.settings.cp_timeout_s)
        self.replicator.start()
        self.models.start()

    async def stop(self) -> None:
        if self.keyring is not None:
            await self.keyring.stop()
        await self.models.stop()
        await self.replicator.stop()
        await self.ap.close()
        await self.cp.close()

    async def readiness(self) -> dict[str, dict[str, object]]:
        """Each tier's state and the model's; the node is ready when both tiers are."""
        ok = await self.ap.ping()
        ap = {"state": "ok" if ok else "unavailable", "replica": self.settings.region,
              "peers": self.replicator.status(), "behind": self.replicator.behind()}
        if (failover := self.replicator.failover_status()) is not None:
            ap["failover"] = failover
        keys = self.keyring.status() if self.keyring is not None else {"state": "off"}
        return {"cp": await self.cp.health(), "ap": ap, "model": self.models.status(), "keys": keys}

    def faults(self) -> dict[str, object]:
        """What the fault-injection endpoint reports: the clock offset and planted bugs."""
        return {"clock_offset_ms": self.clock_offset_ms, "sabotage": sorted(self.settings.sabotage),
                "known_sabotage": sabotage.SABOTAGES, "hlc": self.hlc.last.to_string()}
