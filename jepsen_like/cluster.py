"""The system under test: the project's own launcher, with every link through our proxies
(proxy mode) or every host in a network namespace of its own (netns mode, netns.py).

The deployment is modelled as hosts, as docker-compose would place it: host
``n1`` runs ``etcd1``, ``redis-r1`` and ``api-r1``, and so on. Partitions
cut hosts apart (every link between processes on different hosts); the
link between an API node and its home Redis is on one host and is only
touched by the ``net`` nemesis. The harness's clients talk to the API nodes
directly, like Jepsen's control node, and are never partitioned.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from deploy.launcher import Deployment, Topology, wait_until
from deploy.processes import ManagedProcess
from edge.sabotage import SABOTAGES as EDGE_SABOTAGES

from . import netns
from .edges import Edges
from .hosts import Links, host_of
from .proxy import Net

__all__ = ["Cluster", "CLUSTERED_NETNS", "FAULTS_ENV", "host_of"]  # host_of re-exported: tests and callers name hosts through here

FAULTS_ENV = {"WORLDSTATE_FAULTS": "1"}
# A cluster node advertises its own address to clients and to the other nodes; in a namespace that
# address must be the namespace's, which the launcher does not plan yet (docs/ap-cluster.md §8).
CLUSTERED_NETNS = "clustered regions (--ap-shards > 1 or --ap-replicas > 0) run in proxy mode only (--net proxy)"


class Cluster:
    """3 etcd members and N regions (Redis + API node each), started and stopped as one.

    A region's Redis is a Redis Cluster of `ap_shards` masters with `ap_replicas` each when either
    is past 1/0 (proxy mode only); its nodes are ``redis-rN-i``, on the region's host, each dialed
    by other regions' API nodes through a proxy of its own. `ap_ack_replicas` becomes the API
    nodes' WORLDSTATE_AP_ACK_REPLICAS (None: theirs, automatic)."""

    def __init__(self, run_dir: Path, *, etcd_members: int = 3, regions: int = 3, cp_timeout_s: float = 3.0,
                 sabotage: tuple[str, ...] = (), seed: int = 0, mode: str = "proxy", edges: int = 0,
                 world: str = "jepsen", ap_shards: int = 1, ap_replicas: int = 0,
                 ap_ack_replicas: int | None = None) -> None:
        if mode == "netns" and (ap_shards > 1 or ap_replicas > 0):  # before any namespace exists
            raise netns.Unavailable(CLUSTERED_NETNS)
        env = dict(FAULTS_ENV)
        if ap_ack_replicas is not None:  # None: the node's automatic choice (1 when the cluster has replicas)
            env["WORLDSTATE_AP_ACK_REPLICAS"] = str(ap_ack_replicas)
        core_sabotage = [s for s in sabotage if s not in EDGE_SABOTAGES]  # the rest is the edges'
        if core_sabotage:
            env["WORLDSTATE_SABOTAGE"] = ",".join(core_sabotage)
        self.sabotage = tuple(sabotage)
        self.hosts = [f"n{i + 1}" for i in range(max(etcd_members, regions))]
        placement: dict[str, Any] = {}
        self.net: Links
        if mode == "proxy":
            proxies = Net(seed)

            def link(src: str, dst: str, port: int) -> int:
                # etcd members share one advertised peer URL per member: the proxy learns who dials.
                return proxies.listen(None if src == "etcd-peers" else src, dst, port)

            self.net = proxies
            placement["link"] = link
        elif mode == "netns":
            namespaces = self._netns()
            self.net = namespaces
            placement.update(host=namespaces.host, wrap=namespaces.wrap)
        else:
            raise ValueError(f"network mode {mode!r} is proxy or netns")
        try:
            self.topology = Topology(etcd_members=etcd_members, regions=regions, run_dir=run_dir,
                                     cp_timeout_s=cp_timeout_s, api_env=env, ap_shards=ap_shards,
                                     ap_replicas=ap_replicas, **placement)
            self.deployment = Deployment(self.topology)
        except BaseException:
            self.net.close()  # namespaces and a bridge already exist in netns mode
            raise
        self.regions = self.topology.region_names()
        self.edges: Edges | None = None
        if edges:
            if not isinstance(self.net, Net):
                raise ValueError("edge nodes need --net proxy: their links to the core are proxied")
            self.edges = Edges(run_dir, edges, self.regions, {r: a.port for r, a in self.deployment.api.items()},
                               self.net, world, tuple(s for s in sabotage if s in EDGE_SABOTAGES))

    def _netns(self) -> netns.NetnsNet:
        why = netns.available()
        if why:
            raise netns.Unavailable(f"netns mode unavailable: {why}")
        net = netns.NetnsNet(self.hosts)
        net.setup()  # removes what it made if it fails
        return net

    # -- lifecycle ------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> None:
        self.deployment.start(timeout)
        for m in self.deployment.etcd:
            member_id = m.status()["header"]["member_id"]
            self.net.alias(format(int(member_id), "x"), m.name)
        if self.edges is not None:
            self.edges.start(self.deployment.admin_key)

    def stop(self) -> None:
        try:
            if self.edges is not None:
                self.edges.stop()
            self.deployment.stop()
        finally:
            self.net.close()

    # -- what the nemesis needs ---------------------------------------------------------

    def processes(self) -> list[ManagedProcess]:
        """The deployment's processes, then the edges' (kill, pause and heal reach both)."""
        return [*self.deployment.processes(), *(self.edges.processes if self.edges else [])]

    def process(self, name: str) -> ManagedProcess:
        for p in self.edges.processes if self.edges else []:
            if p.name == name:
                return p
        return self.deployment.process(name)

    def edge_names(self) -> list[str]:
        return [s.name for s in self.edges.specs] if self.edges else []

    def redis_names(self, region: str) -> list[str]:
        """The process names of a region's AP store: its one Redis, or every node of its cluster."""
        c = self.deployment.clusters.get(region)
        return [n.name for n in c.nodes] if c else [f"redis-{region}"]

    def clustered_regions(self) -> list[str]:
        return list(self.deployment.clusters)

    def clusters_serving(self) -> bool:
        """Every running node of every region's cluster sees every slot on a live master."""
        for c in self.deployment.clusters.values():
            try:
                if not all(n.serving() for n in c.nodes if n.running and not n.paused) or not c.slots_covered():
                    return False
            except (OSError, RedisError):  # a node between restart and its first answer
                return False
        return True

    def on_host(self, host: str) -> list[str]:
        return [p.name for p in self.deployment.processes() if host_of(p.name) == host]

    def api_url(self, region: str) -> str:
        return self.deployment.api[region].url

    def grpc_target(self, region: str) -> str:
        return self.deployment.api[region].grpc

    def auth_headers(self) -> dict[str, str]:
        """The Authorization header of the admin key the deployment made at its start."""
        key = self.deployment.admin_key
        return {"Authorization": f"Bearer {key}"} if key else {}

    def etcd_members(self) -> list[str]:
        return [m.name for m in self.deployment.etcd]

    def etcd_leader(self) -> str | None:
        """The etcd leader's process name, or None while there is none (or no member answers)."""
        leader = self.deployment.etcd_leader()
        return leader.name if leader else None

    def leader_host(self) -> str | None:
        leader = self.etcd_leader()
        return host_of(leader) if leader else None

    def healthy(self) -> bool:
        """Every process up and unpaused, etcd has a leader, and every API node is ready."""
        if any(not p.running or p.paused for p in self.deployment.processes()):
            return False
        if self.deployment.etcd and self.deployment.etcd_leader() is None:
            return False
        if not self.clusters_serving():
            return False
        for api in self.deployment.api.values():
            try:
                with urllib.request.urlopen(f"{api.url}/readyz", timeout=2) as r:
                    if json.loads(r.read()).get("status") != "ready":
                        return False
            except OSError:
                return False
        return True

    def wait_healthy(self, timeout: float = 60.0) -> bool:
        return wait_until(self.healthy, timeout, 0.25)

