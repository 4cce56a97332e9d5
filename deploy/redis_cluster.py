"""One region's AP store as a Redis Cluster: N masters, R replicas per master, AOF on every node.

The first step of issue #17 (docs/ap-cluster.md is the plan): the launcher starts and
bootstraps a real cluster from the system's redis-server; nothing in `worldstate up`
uses it yet. Slots are assigned by the launcher itself (ADDSLOTSRANGE, SET-CONFIG-EPOCH,
MEET, REPLICATE) rather than `redis-cli --cluster create`, so it needs no redis-cli, and
a restart from the same run directory finds the cluster already formed (nodes.conf) and
only waits for it.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import redis.asyncio.cluster
import redis.cluster

from deploy import binaries
from deploy.redis_args import REDIS_MAXMEMORY, redis_args
from deploy.nodes import RedisNode
from deploy.processes import ProcessFailed, free_port, wait_until

SLOTS = 16384
# Failure detection: a master unreachable this long is PFAIL, then FAIL once a majority of
# masters agrees, and its replica starts an election. Redis's default (15 s) would make a
# failover test take most of a minute; 2 s still tolerates a busy 2-core machine.
NODE_TIMEOUT_MS = 2000


@dataclass(frozen=True)
class NodeView:
    """One line of CLUSTER NODES as another node sees it."""

    node_id: str
    port: int
    role: str  # "master" or "slave"
    master_id: str | None  # for a replica, the master it follows
    failed: bool  # flagged fail or fail? (PFAIL) by the node asked
    handshake: bool  # met but not yet introduced: its id is a placeholder
    slots: int  # how many slots it serves


def cluster_args(port: int, bus_port: int, data_dir: str, node_timeout_ms: int = NODE_TIMEOUT_MS,
                 appendfsync: str = "always", maxmemory: str = REDIS_MAXMEMORY,
                 user: tuple[str, str] | None = None) -> list[str]:
    """The single-Redis flags (AOF, no RDB, noeviction, the ACL user) plus cluster mode.

    The bus port is chosen, not port+10000: that would land in the kernel's ephemeral
    range, where an outgoing connection can hold it first (deploy.processes.free_port).
    With `user` (name, password), a replica logs in to its master as that user: every node
    gets the flags, since any master may become a replica after a failover. The cluster bus
    itself carries no authentication in Redis: it must listen on private addresses only."""
    auth = ["--masteruser", user[0], "--masterauth", user[1]] if user is not None else []
    return [
        *redis_args(port, data_dir, appendfsync, maxmemory=maxmemory, user=user),
        *auth,
        "--cluster-enabled", "yes",
        "--cluster-config-file", "nodes.conf",  # under --dir, beside the AOF
        "--cluster-port", str(bus_port),
        "--cluster-node-timeout", str(node_timeout_ms),
        # A master losing its last replica keeps it: no replica wanders off to another master
        # while a test is counting them.
        "--cluster-allow-replica-migration", "no",
    ]


def parse_nodes(text: str) -> list[NodeView]:
    """CLUSTER NODES output: `<id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slot>...`."""
    views = []
    for line in text.strip().splitlines():
        parts = line.split()
        flags = set(parts[2].split(","))
        slots = 0
        for spec in parts[8:]:
            if spec.startswith("["):  # a slot being migrated or imported
                continue
            lo, _, hi = spec.partition("-")
            slots += int(hi or lo) - int(lo) + 1
        views.append(NodeView(
            node_id=parts[0],
            port=int(parts[1].split("@")[0].rsplit(":", 1)[1]),
            role="master" if "master" in flags else "slave",
            master_id=None if parts[3] == "-" else parts[3],
            failed=bool(flags & {"fail", "fail?"}),
            handshake="handshake" in flags,
            slots=slots,
        ))
    return views


class ShardNode(RedisNode):
    """One redis-server of a cluster; `index` < masters means it was started as a master."""

    def __init__(self, region: str, index: int, port: int, bus_port: int, argv: list[str], log: Path,
                 user: tuple[str, str] | None = None) -> None:
        super().__init__(region, port, argv, log, user=user)
        self.name = f"redis-{region}-{index}"
        self.index = index
        self.bus_port = bus_port

    def admin(self) -> redis.Redis:
        """The launcher's own connection (forming, failover, health), as the ACL user when there is one."""
        name, password = self.user or (None, None)
        return redis.Redis(host=self.host, port=self.port, username=name, password=password,
                           decode_responses=True, socket_timeout=2.0)

    def info(self) -> dict[str, str]:
        """CLUSTER INFO as a dict of strings."""
        with self.admin() as r:
            text = r.execute_command("CLUSTER", "INFO")
        return dict(line.split(":", 1) for line in text.strip().splitlines() if ":" in line)

    def nodes(self) -> list[NodeView]:
        with self.admin() as r:
            return parse_nodes(r.execute_command("CLUSTER", "NODES"))

    def node_id(self) -> str:
        with self.admin() as r:
            return str(r.execute_command("CLUSTER", "MYID"))

    def role(self) -> str:
        """"master" or "slave", as this node itself says (ROLE)."""
        with self.admin() as r:
            return str(r.execute_command("ROLE")[0])

    def serving(self) -> bool:
        """This node sees the cluster whole: state ok and every slot on a live master."""
        info = self.info()
        return info.get("cluster_state") == "ok" and info.get("cluster_slots_ok") == str(SLOTS)


class RedisCluster:
    """A region's Redis Cluster under `run_dir`; ports are kept in cluster.json so a second
    RedisCluster on the same directory restarts the same nodes (their nodes.conf names them)."""

    def __init__(self, region: str, run_dir: Path, masters: int = 3, replicas: int = 0,
                 node_timeout_ms: int = NODE_TIMEOUT_MS, appendfsync: str = "always",
                 maxmemory: str = REDIS_MAXMEMORY, user: tuple[str, str] | None = None) -> None:
        if masters < 1 or replicas < 0:
            raise ValueError("a cluster needs at least one master and a non-negative replica count")
        self.region = region
        self.run_dir = Path(run_dir)
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.user = user  # (name, password) of the ACL user every node requires, else None
        layout = self.run_dir / f"redis-{region}-cluster.json"
        if layout.exists():
            saved = json.loads(layout.read_text())
            if (saved["masters"], saved["replicas"]) != (masters, replicas):
                raise ValueError(f"{layout} holds a cluster of {saved['masters']} masters and "
                                 f"{saved['replicas']} replicas each, not {masters} and {replicas}")
            ports = [tuple(p) for p in saved["ports"]]
        else:
            ports = [(free_port(), free_port()) for _ in range(masters * (1 + replicas))]
            self.run_dir.mkdir(parents=True, exist_ok=True)
            layout.write_text(json.dumps({"masters": masters, "replicas": replicas, "ports": ports}))
        server = binaries.find("redis-server").path
        self.nodes: list[ShardNode] = []
        for index, (port, bus) in enumerate(ports):
            data = self.run_dir / f"redis-{region}-{index}"
            data.mkdir(parents=True, exist_ok=True)
            argv = [server, *cluster_args(port, bus, str(data), node_timeout_ms, appendfsync, maxmemory, user)]
            self.nodes.append(ShardNode(region, index, port, bus, argv,
                                        self.run_dir / "logs" / f"redis-{region}-{index}.log", user))

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Start every node; form the cluster if it was never formed; wait until it serves."""
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.wait_healthy(timeout)
        if self.nodes[0].info().get("cluster_slots_assigned") == "0":
            self._form(timeout)
        self.wait_serving(timeout)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()

    def __enter__(self) -> RedisCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _form(self, timeout: float) -> None:
        masters = self.nodes[: self.masters]
        for i, node in enumerate(masters):
            lo, hi = i * SLOTS // self.masters, (i + 1) * SLOTS // self.masters - 1
            with node.admin() as r:
                r.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
                # Distinct epochs up front, as redis-cli --cluster create does: otherwise every
                # master starts at 0 and the cluster spends a while resolving the collisions.
                r.execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
        with self.nodes[0].admin() as r:
            for node in self.nodes[1:]:
                r.execute_command("CLUSTER", "MEET", node.host, node.port, node.bus_port)
        everyone = len(self.nodes)
        def met(node: ShardNode) -> bool:
            views = node.nodes()
            return len(views) == everyone and not any(v.handshake for v in views)
        if not wait_until(lambda: all(met(n) for n in self.nodes), timeout):
            raise ProcessFailed(f"redis-{self.region} cluster: nodes did not meet within {timeout}s")
        ids = [m.node_id() for m in masters]
        for k, node in enumerate(self.nodes[self.masters:]):
            with node.admin() as r:
                r.execute_command("CLUSTER", "REPLICATE", ids[k // self.replicas])
        for node in self.nodes[self.masters:]:
            wait_role(node, "slave", timeout)

    def wait_serving(self, timeout: float = 30.0) -> None:
        """Until every running node reports cluster_state:ok with all 16384 slots on live masters."""
        def whole() -> bool:
            live = [n for n in self.nodes if n.running and not n.paused]
            return bool(live) and all(n.serving() for n in live) and self.slots_covered()
        if not wait_until(whole, timeout, 0.1):
            tails = "\n".join(f"-- {n.name}: {n.info() if n.running else 'down'}" for n in self.nodes[:1])
            raise ProcessFailed(f"redis-{self.region} cluster not serving after {timeout}s\n{tails}")

    def slots_covered(self) -> bool:
        """CLUSTER SLOTS, asked of a live node, names a master for every slot."""
        node = next(n for n in self.nodes if n.running and not n.paused)
        with node.admin() as r:
            ranges = r.execute_command("CLUSTER", "SLOTS")
        covered = sorted((int(s[0]), int(s[1])) for s in ranges)
        nxt = 0
        for lo, hi in covered:
            if lo != nxt:
                return False
            nxt = hi + 1
        return nxt == SLOTS

    # -- faults ------------------------------------------------------------------------------

    def node_on(self, port: int) -> ShardNode:
        return next(n for n in self.nodes if n.port == port)

    def current_masters(self) -> list[ShardNode]:
        """The nodes that serve slots now, as a live node sees it (after failovers, not `index`)."""
        node = next(n for n in self.nodes if n.running and not n.paused)
        return [self.node_on(v.port) for v in node.nodes() if v.role == "master" and v.slots and not v.failed]

    def replicas_of(self, master: ShardNode) -> list[ShardNode]:
        ident = master.node_id()
        node = next(n for n in self.nodes if n.running and not n.paused)
        return [self.node_on(v.port) for v in node.nodes() if v.master_id == ident]

    def failover(self, replica: ShardNode, timeout: float = 30.0, force: bool = False) -> None:
        """CLUSTER FAILOVER on a replica: with its master alive it waits until it has caught up
        (no acknowledged write lost); `force` takes over without the master's agreement.

        Asked again while the replica is still one: Redis abandons a manual failover that has not
        finished in 5 s (CLUSTER_MF_TIMEOUT), which a busy 2-core machine can exceed."""
        deadline = time.monotonic() + timeout
        while True:
            with replica.admin() as r:
                r.execute_command("CLUSTER", "FAILOVER", *(["FORCE"] if force else []))
            if wait_until(lambda: replica.role() == "master", min(10.0, max(0.0, deadline - time.monotonic())), 0.1):
                break
            if time.monotonic() >= deadline:
                raise ProcessFailed(f"{replica.name} did not become master within {timeout}s:\n{replica.log_tail(10)}")
        self.wait_serving(max(1.0, deadline - time.monotonic()))

    # -- clients -----------------------------------------------------------------------------

    def startup_nodes(self) -> list[tuple[str, int]]:
        return [(n.host, n.port) for n in self.nodes]

    @property
    def url(self) -> str:
        """redis-py's RedisCluster.from_url takes one node and discovers the rest."""
        return self.nodes[0].url

    @property
    def store_url(self) -> str:
        """The URL a ReplicaStore takes for this cluster: every node a startup node (consistency/ap_backend.py).
        Without credentials, as describe() shows it; `client_store_url` carries them."""
        return "redis+cluster://" + ",".join(f"{h}:{p}" for h, p in self.startup_nodes())

    @property
    def client_store_url(self) -> str:
        """store_url with the ACL user, `redis+cluster://user:password@h:p,...`, when the nodes require one."""
        if self.user is None:
            return self.store_url
        name, password = (urllib.parse.quote(v, safe="") for v in self.user)
        return self.store_url.replace("://", f"://{name}:{password}@", 1)

    def _credentials(self) -> dict[str, str]:
        return {"username": self.user[0], "password": self.user[1]} if self.user else {}

    def client(self, **kwargs: Any) -> redis.cluster.RedisCluster:
        return redis.cluster.RedisCluster(
            startup_nodes=[redis.cluster.ClusterNode(h, p) for h, p in self.startup_nodes()],
            **{**self._credentials(), **kwargs})

    def async_client(self, **kwargs: Any) -> redis.asyncio.cluster.RedisCluster:
        return redis.asyncio.cluster.RedisCluster(
            startup_nodes=[redis.asyncio.cluster.ClusterNode(h, p) for h, p in self.startup_nodes()],
            **{**self._credentials(), **kwargs})

    def describe(self) -> dict[str, Any]:
        node = next((n for n in self.nodes if n.running), None)
        views = {v.port: v for v in node.nodes()} if node else {}
        return {"region": self.region, "url": self.url, "nodes": [
            {"name": n.name, "port": n.port, "bus_port": n.bus_port, "running": n.running,
             "role": views[n.port].role if n.port in views else None,
             "slots": views[n.port].slots if n.port in views else None} for n in self.nodes]}


def wait_role(node: ShardNode, role: str, timeout: float = 30.0) -> None:
    """Until `node` says it is `role` ("master"/"slave") and its replication link is up."""
    def there() -> bool:
        if node.role() != role:
            return False
        if role == "slave":
            with node.admin() as r:
                return bool(r.info("replication").get("master_link_status") == "up")
        return True
    if not wait_until(there, timeout, 0.1):
        raise ProcessFailed(f"{node.name} is not {role} after {timeout}s:\n{node.log_tail(10)}")


__all__ = ["RedisCluster", "ShardNode", "NodeView", "cluster_args", "parse_nodes", "wait_role", "SLOTS",
           "NODE_TIMEOUT_MS"]
