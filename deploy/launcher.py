"""The local deployment behind `worldstate up`, the tests and jepsen_like.

One topology: an etcd cluster, one Redis per region (AOF on) and one API node
per region, each a child process on free loopback ports with its data under a
run directory. docker-compose.yml describes the same topology; the argument
builders here are what tests compare it against.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consistency import ap_backend
from consistency.cp_store import CPStore
from deploy import backend_auth, binaries, first_start
from service.config import Settings
from deploy.nodes import ApiNode, EdgeNode, EtcdMember, LearnRole, RedisNode
from deploy.redis_args import REDIS_MAXMEMORY, redis_args
from deploy.redis_cluster import RedisCluster
from deploy.roles import DEFAULT_EVERY_S, aggregator_argv, learner_argv
from deploy.processes import ManagedProcess, ProcessFailed, free_port, wait_until

ETCD_CLUSTER_TOKEN = "worldstate"
# etcd keeps every revision of every key until it is compacted, and each counts whole against
# its backend quota: 30 writes of 1 MiB to one key grew the database by 40 MB. Past the quota
# etcd raises a cluster-wide NOSPACE alarm and refuses every write until an operator clears it.
# Compaction is periodic, keeping 5 minutes of history: a watch (or an SSE client sending
# Last-Event-ID) that lost its stream for less than that always resumes where it stopped, however
# many writes came in between; older than that it gets 410 and re-reads. A revision count would
# make that window shrink with the write rate, and etcd 3.4 only applies it every 5 minutes
# anyway. Time does not bound space, so the quota is stated too, and a write past it answers 507.
ETCD_COMPACTION_RETENTION = "5m"
ETCD_QUOTA_BYTES = 256 << 20
ETCD_AUTH_TOKEN_TTL_S = 300  # etcd's default, stated: a node renews an expired token (consistency/cp_auth.py)


@dataclass
class Topology:
    etcd_members: int = 3
    regions: int = 2
    api: bool = True
    run_dir: Path | None = None
    cp_timeout_s: float = 2.0
    heartbeat_ms: int = 100
    election_ms: int = 1000
    # "always": Redis writes and fsyncs the AOF before it answers, so an acknowledged observation
    # survives a kill -9 of its Redis. With "everysec", Redis 7 answers while a slow background
    # fsync holds its AOF write back (up to 2 s), and a kill -9 then loses acknowledged writes
    # (measured: 5 of 200 in 2 of 6 kills; none of 8 with "always"; docs/ap-cluster.md).
    appendfsync: str = "always"
    # Each region's AP replica as a Redis Cluster of ap_shards masters with ap_replicas replicas each
    # (docs/ap-cluster.md); 1 and 0, the defaults, keep one plain Redis per region. A clustered
    # region's writes WAIT for one replica when there are replicas (consistency/ap_backend.py).
    ap_shards: int = 1
    ap_replicas: int = 0
    etcd_quota_bytes: int = ETCD_QUOTA_BYTES
    etcd_compaction_retention: str = ETCD_COMPACTION_RETENTION
    redis_maxmemory: str = REDIS_MAXMEMORY
    # etcd with auth on and Redis with an ACL user, passwords generated at first start into the
    # run directory (deploy/backend_auth.py); an idle etcd token expires after the TTL.
    backend_auth: bool = False
    etcd_auth_token_ttl_s: int = ETCD_AUTH_TOKEN_TTL_S
    api_env: dict[str, str] = field(default_factory=dict)
    # Edge nodes (edge/), each following one region's API node (round robin), all for one world.
    edges: int = 0
    edge_world: str = "lab"
    # The learning roles (learn/loop.py): a learner per region and one aggregator, for one world,
    # a round every learn_every_s; *_args are appended to their command lines (e.g. a tiny fine-tune).
    learn: bool = False
    learn_world: str = "lab"
    learn_every_s: float = DEFAULT_EVERY_S
    learner_args: list[str] = field(default_factory=list)
    aggregator_args: list[str] = field(default_factory=list)
    # link(from, to, port) -> the port `from` must dial to reach `to` on `port`.
    # jepsen_like returns the port of a TCP proxy it controls, so it can cut,
    # delay or blackhole that one link. `from` is a process name ("api-r1"), or
    # "etcd-peers" for the peer URL every etcd member advertises.
    link: Callable[[str, str, int], int] | None = None
    # host(name) -> the address process `name` binds, advertises and is dialed at
    # (default 127.0.0.1 for all). jepsen_like's netns mode gives each host's
    # processes the address of that host's network namespace, so cuts between
    # hosts are packet filters on real addresses. A port `link` returns is
    # dialed at host(to) as well.
    host: Callable[[str], str] | None = None
    # wrap(name, argv) -> the command line that actually runs (default: argv).
    # netns mode prefixes `ip netns exec <ns>`. The prefix must exec the command,
    # not fork it: kill -9, SIGSTOP and the parent-death signal act on the pid
    # the launcher started.
    wrap: Callable[[str, list[str]], list[str]] | None = None

    def region_names(self) -> list[str]:
        return [f"r{i + 1}" for i in range(self.regions)]

    @property
    def clustered(self) -> bool:
        return self.ap_shards > 1 or self.ap_replicas > 0


def etcd_args(name: str, host: str, client_port: int, peer_port: int, initial_cluster: str,
              data_dir: str, heartbeat_ms: int = 100, election_ms: int = 1000,
              quota_bytes: int = ETCD_QUOTA_BYTES, compaction_retention: str = ETCD_COMPACTION_RETENTION,
              auth_token_ttl_s: int = ETCD_AUTH_TOKEN_TTL_S) -> list[str]:
    """etcd flags for one member (the binary path is prepended by the caller)."""
    return [
        "--name", name,
        "--data-dir", data_dir,
        "--listen-client-urls", f"http://{host}:{client_port}",
        "--advertise-client-urls", f"http://{host}:{client_port}",
        "--listen-peer-urls", f"http://{host}:{peer_port}",
        "--initial-advertise-peer-urls", f"http://{host}:{peer_port}",
        "--initial-cluster", initial_cluster,
        "--initial-cluster-state", "new",
        "--initial-cluster-token", ETCD_CLUSTER_TOKEN,
        "--heartbeat-interval", str(heartbeat_ms),
        "--election-timeout", str(election_ms),
        # Clients ping every 2 s to notice a member that stopped answering (SIGSTOP,
        # partition) quickly; etcd's default refuses pings more often than every 5 s.
        "--grpc-keepalive-min-time", "1s",
        "--quota-backend-bytes", str(quota_bytes),
        "--auto-compaction-mode", "periodic",
        "--auto-compaction-retention", compaction_retention,
        "--auth-token-ttl", str(auth_token_ttl_s),
        "--logger", "zap",
        "--log-level", "warn",
    ]


def api_args(host: str, port: int) -> list[str]:
    return ["serve", "--host", host, "--port", str(port)]


class Deployment:
    """A whole local deployment; also a context manager that always cleans up."""

    def __init__(self, topology: Topology) -> None:
        if topology.etcd_members not in (0, 1, 3, 5):  # 0: Redis only, for AP-tier tests
            raise ValueError("--etcd-members must be 1, 3 or 5")
        if topology.edges < 0:
            raise ValueError("--edges must be 0 or more")
        if topology.regions < 1:
            raise ValueError("--regions must be at least 1")
        if not topology.learn_every_s > 0:  # also NaN
            raise ValueError("--learn-every must be a number of seconds > 0")
        if topology.ap_shards < 1 or topology.ap_replicas < 0:
            raise ValueError("--ap-shards must be at least 1 and --ap-replicas 0 or more")
        if topology.clustered and (topology.backend_auth or topology.learn or topology.host):
            # Not yet: cluster nodes have no ACL user, the learners' federated keys use a plain client, and
            # netns hosts would need each node to listen, and advertise itself, on its namespace's address.
            # (`link` works: each node's port is proxied and the URL remaps its address, ap_backend.py.)
            raise ValueError("--ap-shards/--ap-replicas do not combine with --backend-auth, --learn or a netns network yet")
        self.topology = topology
        self.run_dir = Path(topology.run_dir or tempfile.mkdtemp(prefix="worldstate-"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.etcd: list[EtcdMember] = []
        self.redis: dict[str, RedisNode] = {}  # the regions with one plain Redis
        self.clusters: dict[str, RedisCluster] = {}  # the regions with a Redis Cluster (Topology.ap_shards)
        self.api: dict[str, ApiNode] = {}
        self.edges: list[EdgeNode] = []
        self.learners: list[LearnRole] = []  # the learners, then the aggregator (worldstate up --learn)
        self.admin_key: str | None = None  # the bearer token of the admin key made at first start
        self._plan()

    def _plan(self) -> None:
        t, logs = self.topology, self.run_dir / "logs"
        self.credentials = backend_auth.load_or_create(self.run_dir) if t.backend_auth else None
        creds = self.credentials
        redis_user = (creds.redis_user, creds.redis_password) if creds else None
        link = t.link or (lambda src, dst, port: port)
        addr = t.host or (lambda name: "127.0.0.1")
        wrap = t.wrap or (lambda name, argv: argv)
        etcd = binaries.find("etcd").path if t.etcd_members else ""
        ports = [(free_port(), free_port()) for _ in range(t.etcd_members)]
        names = [f"etcd{i + 1}" for i in range(t.etcd_members)]
        advertised = {n: link("etcd-peers", n, pp) for n, (_, pp) in zip(names, ports)}
        cluster = ",".join(f"{n}=http://{addr(n)}:{advertised[n]}" for n in names)
        for name, (cp, pp) in zip(names, ports):
            argv = [etcd, *etcd_args(name, addr(name), cp, pp, cluster, str(self.run_dir / name),
                                     t.heartbeat_ms, t.election_ms, t.etcd_quota_bytes, t.etcd_compaction_retention,
                                     t.etcd_auth_token_ttl_s)]
            if advertised[name] != pp:  # listen on the real port, advertise the proxy's
                i = argv.index("--initial-advertise-peer-urls")
                argv[i + 1] = f"http://{addr(name)}:{advertised[name]}"
            self.etcd.append(EtcdMember(name, cp, pp, wrap(name, argv), logs / f"{name}.log", addr(name)))
        redis = binaries.find("redis-server").path
        for region in t.region_names():
            if t.clustered:
                self.clusters[region] = RedisCluster(region, self.run_dir, t.ap_shards, t.ap_replicas,
                                                     appendfsync=t.appendfsync, maxmemory=t.redis_maxmemory)
                continue
            port, data, me = free_port(), self.run_dir / f"redis-{region}", f"redis-{region}"
            data.mkdir(parents=True, exist_ok=True)
            argv = [redis, *redis_args(port, str(data), t.appendfsync, addr(me), t.redis_maxmemory, redis_user)]
            self.redis[region] = RedisNode(region, port, wrap(me, argv), logs / f"{me}.log", addr(me), redis_user)
        if not t.api:
            return
        def ap_url(me: str, region: str) -> str:
            if region in self.clusters:
                if t.link is None:
                    return self.clusters[region].store_url
                # Every node through its own proxy: the cluster names its nodes by their real ports.
                return ap_backend.cluster_url({(n.host, n.port): (n.host, link(me, n.name, n.port))
                                               for n in self.clusters[region].nodes})
            node = self.redis[region]
            return backend_auth.redis_url(addr(node.name), link(me, node.name, node.port), *(redis_user or ()))

        for region in t.region_names():
            port, grpc_port, me = free_port(), free_port(), f"api-{region}"
            settings = Settings(
                region=region,
                node_id=me,
                etcd_endpoints=[f"{addr(m.name)}:{link(me, m.name, m.client_port)}" for m in self.etcd],
                cp_timeout_s=t.cp_timeout_s,
                etcd_username=creds.etcd_user if creds else "",
                etcd_password=creds.etcd_password if creds else "",
                redis_url=ap_url(me, region),
                peers={r: ap_url(me, r) for r in t.region_names() if r != region},
                checkpoint_dir=str(self.run_dir / "checkpoints"),  # shared by every node, as a volume is
                grpc_port=grpc_port,
                grpc_host=addr(me),
            )
            argv = [sys.executable, "-m", "deploy", *api_args(addr(me), port)]
            env = {**settings.to_env(), **t.api_env}
            grpc_port = int(env["WORLDSTATE_GRPC_PORT"])  # api_env may move it (0: no gRPC)
            self.api[region] = ApiNode(region, port, wrap(me, argv), logs / f"{me}.log", env, addr(me), grpc_port)
        regions = t.region_names()
        for i in range(t.edges):
            me, region, port = f"edge{i + 1}", regions[i % len(regions)], free_port()
            api = self.api[region]
            argv = [sys.executable, "-m", "deploy", "edge", "--core", f"http://{api.host}:{link(me, api.name, api.port)}",
                    "--world", t.edge_world, "--data-dir", str(self.run_dir / me), "--host", addr(me),
                    "--port", str(port), "--name", me, "--key-file", str(self.run_dir / "admin.key")]
            self.edges.append(EdgeNode(me, region, t.edge_world, port, wrap(me, argv), logs / f"{me}.log", addr(me)))
        if t.learn:
            self._plan_learning(logs, link, wrap)

    def _plan_learning(self, logs: Path, link: Callable[[str, str, int], int],
                       wrap: Callable[[str, list[str]], list[str]]) -> None:
        t = self.topology

        def api_url(me: str, region: str) -> str:
            api = self.api[region]
            return f"http://{api.host}:{link(me, api.name, api.port)}"

        def redis_url(me: str, region: str) -> str:
            node = self.redis[region]
            return backend_auth.redis_url(node.host, link(me, node.name, node.port), *(node.user or ()))

        for region in t.region_names():
            me = f"learner-{region}"
            argv = learner_argv(world=t.learn_world, region=region, api=api_url(me, region),
                                redis_url=redis_url(me, region), run_dir=self.run_dir, every=t.learn_every_s,
                                extra=t.learner_args)
            self.learners.append(LearnRole(me, region, t.learn_world, wrap(me, argv), logs / f"{me}.log"))
        me, first = "aggregator", t.region_names()[0]
        argv = aggregator_argv(world=t.learn_world, api=api_url(me, first), run_dir=self.run_dir,
                               redis_urls={r: redis_url(me, r) for r in t.region_names()}, every=t.learn_every_s,
                               extra=t.aggregator_args)
        self.learners.append(LearnRole(me, None, t.learn_world, wrap(me, argv), logs / f"{me}.log"))

    @property
    def etcd_endpoints(self) -> list[str]:
        return [m.endpoint for m in self.etcd]

    def cp_store(self) -> CPStore:
        """A client of this deployment's etcd (not yet connected), as an operator's tool uses it."""
        creds = self.credentials
        return CPStore(self.etcd_endpoints, self.topology.cp_timeout_s,
                       creds.etcd_user if creds else None, creds.etcd_password if creds else None)

    def etcd_leader(self) -> EtcdMember | None:
        """The member every reachable member agrees is leader, if any."""
        for m in self.etcd:
            if not m.running or m.paused:
                continue
            try:
                st = m.status()
            except OSError:
                continue
            if st.get("leader") and st["leader"] == st["header"]["member_id"]:
                return m
        return None

    def processes(self) -> list[ManagedProcess]:
        shards = [n for c in self.clusters.values() for n in c.nodes]
        return [*self.etcd, *self.redis.values(), *shards, *self.api.values(), *self.edges, *self.learners]

    def process(self, name: str) -> ManagedProcess:
        for p in self.processes():
            if p.name == name:
                return p
        raise KeyError(name)

    def start(self, timeout: float = 60.0) -> None:
        try:
            # etcd members must all be started before any can reach quorum.
            for p in [*self.etcd, *self.redis.values()]:
                p.start()
            for p in [*self.etcd, *self.redis.values()]:
                p.wait_healthy(timeout)
            for c in self.clusters.values():  # forms it at first start, else waits until it serves
                c.start(timeout)
            self._enable_backend_auth(timeout)
            if self.api and self.etcd:
                self.admin_key = self._admin_key(timeout)
            for p in self.api.values():
                p.start()
            for p in self.api.values():
                p.wait_healthy(timeout)
            for p in self.edges:  # each follows its API node from the admin key's file
                p.start()
            for p in self.edges:
                p.wait_healthy(timeout)
            for p in self.learners:  # loops that wait, round after round, for what they need
                p.start()
        except BaseException:
            self.stop()
            raise
        self.write_state()

    def _enable_backend_auth(self, timeout: float) -> None:
        """etcd auth on, for the run directory's root user (Redis took its ACL user at start)."""
        if self.credentials is not None and self.etcd:
            creds = self.credentials
            backend_auth.enable_etcd_auth_blocking(self.etcd_endpoints, creds.etcd_user, creds.etcd_password, timeout)

    def _admin_key(self, timeout: float) -> str | None:
        return first_start.admin_key(self.cp_store, self.run_dir / "admin.key", timeout)

    def stop(self) -> None:
        # API nodes first so they never see their backends vanish mid-request.
        for p in [*self.learners, *self.edges, *self.api.values(), *self.redis.values(), *reversed(self.etcd)]:
            p.stop()
        for c in self.clusters.values():
            c.stop()

    def publish_default_model(self, timeout: float = 120.0) -> tuple[str, dict[str, Any]]:
        """Publish the packaged model unless a manifest exists (`worldstate up` does this;
        a programmatic Deployment starts with none, as the tests need)."""
        nodes = [n.url for n in self.api.values()]
        return first_start.publish_default_model(nodes, self.run_dir / "checkpoints", timeout, self.admin_key)

    def describe(self) -> dict[str, object]:
        return {
            "run_dir": str(self.run_dir),
            "etcd": {m.name: m.client_url for m in self.etcd},
            "redis": {r: self.redis[r].url if r in self.redis else self.clusters[r].store_url
                      for r in self.topology.region_names()},
            "redis_clusters": {r: c.describe() for r, c in self.clusters.items()},
            "api": {r: n.url for r, n in self.api.items()},
            "grpc": {r: n.grpc for r, n in self.api.items() if n.grpc_port},
            "edges": {e.name: {"url": e.url, "region": e.region, "world": e.world} for e in self.edges},
            "learn": {p.name: {"region": p.region, "world": p.world, "every_s": self.topology.learn_every_s,
                               "log": str(p.log_path)} for p in self.learners},
            "pids": {p.name: p.pid for p in self.processes()},
            # Where the passwords are, never the passwords: this goes to deployment.json and stdout.
            "backend_auth": {"etcd_user": self.credentials.etcd_user, "redis_user": self.credentials.redis_user,
                             "credentials": str(self.run_dir / backend_auth.CREDENTIALS_FILE)}
            if self.credentials else None,
        }

    def write_state(self) -> Path:
        path = self.run_dir / "deployment.json"
        path.write_text(json.dumps(self.describe(), indent=2))
        return path

    def __enter__(self) -> "Deployment":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["Deployment", "Topology", "EtcdMember", "RedisNode", "ApiNode", "EdgeNode", "LearnRole", "ProcessFailed",
           "etcd_args", "redis_args", "api_args", "wait_until"]
