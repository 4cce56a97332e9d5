"""Helpers for AP-tier tests: replicas started by the launcher, shippers run in the test's loop,
and the network between them cut for real.

Each region's shippers dial the peer replicas through TCP proxies the test
controls (`jepsen_like.proxy.Net`, the harness's non-root proxy), as each
region's API node would dial them across a network. A partition is a
blackhole on those links: bytes and connection ends are held, nobody is told,
the shippers' commands time out and they retry until the link heals. The
link from a node to its home Redis is on one host and is never cut.

Every test taking `replicas` (or `fresh`) runs on both layouts of a region's replica: `single`
(one Redis) and `cluster` (a Redis Cluster of 3 masters, docs/ap-cluster.md). A peer cluster's
nodes are each dialed through their own proxy, all named `redis-<region>` so one cut covers the
region, with the URL remapping the addresses the cluster advertises (consistency/ap_backend.py).
The raw helpers below read a cluster master by master.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis
from redis.exceptions import RedisError

from consistency import ap_keys
from consistency.ap_backend import cluster_url
from consistency.ap_positions import at_least
from consistency.ap_store import ALL, Observation, ReplicaStore
from consistency.replication import Replicator
from deploy.launcher import Deployment, Topology
from deploy.nodes import RedisNode
from jepsen_like.proxy import BLACKHOLE, Net, Rule

# Deadlines, not expectations: on a quiet machine replication settles in well under a
# second, and a blackholed command costs one ReplicaStore timeout (2 s) plus backoff (<= 2 s).
# They only bound how long a broken run takes to fail on a loaded 2-core machine.
SETTLE_S = 60.0
SCENARIO_S = 180.0


LAYOUTS = ("single", "cluster")
SHARDS = 3  # masters per region in the cluster layout: each holds about a third of the 64 partitions


@pytest.fixture(scope="module", params=LAYOUTS)
def replicas(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Three regions' AP replicas (AOF on, appendfsync always), no etcd and no API: the AP tier alone,
    one Redis a region or a 3-master Redis Cluster a region. Started once per module and layout."""
    shards = SHARDS if request.param == "cluster" else 1
    with Deployment(Topology(etcd_members=0, regions=3, api=False, ap_shards=shards,
                             run_dir=tmp_path_factory.mktemp(f"replicas-{request.param}"))) as d:
        yield d


@pytest.fixture
def fresh(replicas: Deployment) -> Deployment:
    for server in servers(replicas):
        if not server.running:
            server.start()
    for region in replicas.topology.region_names():
        back(replicas, region)
    flush(replicas)
    return replicas


def layout(d: Deployment) -> str:
    return "cluster" if d.clusters else "single"


def servers(d: Deployment) -> list[RedisNode]:
    """Every redis-server of the deployment (a cluster's ShardNode is a RedisNode)."""
    return [*d.redis.values(), *(n for c in d.clusters.values() for n in c.nodes)]


def url(d: Deployment, region: str) -> str:
    """The URL a region's own node gives its ReplicaStore: `redis://` or `redis+cluster://`."""
    return d.clusters[region].store_url if region in d.clusters else d.redis[region].url


def client_url(d: Deployment, region: str) -> str:
    """`url` with the ACL user when the servers require one: what a region's learner is given
    (learn/log.py, learn/updates.py), `redis://user:pw@h:p/0` or `redis+cluster://user:pw@h:p,...`."""
    return d.clusters[region].client_store_url if region in d.clusters else d.redis[region].client_url


def server_of(d: Deployment, region: str, world: str = "w", entity: str = "e0") -> RedisNode:
    """The process holding an entity's partition: the region's Redis, or the master serving its slot."""
    if region not in d.clusters:
        return d.redis[region]
    c = d.clusters[region]
    with c.client() as rc:
        holder = rc.get_node_from_key(ap_keys.stream(ap_keys.partition(world, entity)))
    return c.node_on(holder.port)


def back(d: Deployment, region: str, timeout: float = 30.0) -> None:
    """Until a region's replica serves again after a restart: its Redis answers, or every node of
    its cluster answers and the cluster covers every slot again."""
    for server in servers(d):
        if server.region == region and server.running:
            server.wait_healthy(timeout)
    if region in d.clusters:
        d.clusters[region].wait_serving(timeout)


def masters(d: Deployment, region: str, **options: Any) -> list[redis.Redis]:
    """Plain clients of the servers that hold a region's keys, for what a cluster client cannot do
    on one node (SCAN, KEYS, FLUSHALL): its one Redis, or each master of its cluster now."""
    if region in d.clusters:
        return [redis.Redis(port=n.port, **options) for n in d.clusters[region].current_masters()]
    return [redis.Redis(port=d.redis[region].port, **options)]


def raw(d: Deployment, region: str, **options: Any) -> Any:
    """A client for commands on named keys: redis.Redis, or a redis.cluster.RedisCluster routing each key."""
    if region in d.clusters:
        return d.clusters[region].client(**options)
    return redis.Redis(port=d.redis[region].port, **options)


def keys(d: Deployment, region: str) -> list[bytes]:
    """Every key of a region's replica, sorted."""
    return sorted(k for m in masters(d, region) for k in m.keys("*"))


def flush(d: Deployment) -> None:
    for region in d.topology.region_names():
        if region in d.clusters or d.redis[region].running:
            for m in masters(d, region):
                m.flushall()  # a master's replicas follow


def state(d: Deployment, region: str) -> dict[bytes, dict[bytes, bytes]]:
    """Every merged entity of one replica, exactly as stored."""
    held = {k: m.hgetall(k) for m in masters(d, region) for k in m.scan_iter(match=ENTITY_KEYS, count=1000)}
    return dict(sorted(held.items()))


ENTITY_KEYS = "ws:{p*}:e:*"  # every partition's entity hashes (consistency/ap_keys.py)
SEEN_KEYS = "ws:{p*}:s:*"


def stream_len(d: Deployment, region: str) -> int:
    """Entries held in all of the replica's partition streams."""
    r = raw(d, region)
    return sum(r.xlen(ap_keys.stream(p)) for p in ALL)


class Replicas(dict[str, Replicator]):
    """Each region's replicator, by region, and the proxied network its peer links cross."""

    def __init__(self, net: Net) -> None:
        super().__init__()
        self.net = net


def node(region: str) -> str:
    return f"node-{region}"


@asynccontextmanager
async def replication(d: Deployment, regions: list[str] | None = None,
                      **home_options: Any) -> AsyncIterator[Replicas]:
    """One home store and a replicator per region, as each region's API node would run them;
    every peer link through a proxy of `reps.net`. Housekeeping runs only when a test calls it."""
    regions = regions or d.topology.region_names()
    reps = Replicas(Net())
    try:
        for r in regions:
            home = ReplicaStore(url(d, r), r, node(r), **home_options)
            peers = [ReplicaStore(peer_url(d, reps.net, r, p), p, node(r)) for p in regions if p != r]
            # No failover watch: its first look runs anti-entropy with every peer, and a region relaying
            # another's state that way would cross the cuts these tests make (tests/test_ap_failover.py
            # tests the watch).
            reps[r] = Replicator(home, peers, housekeeping_s=3600, failover_check_s=None)
            reps[r].start()
        yield reps
    finally:
        reps.net.heal()  # a failed test may leave a cut: nothing must hang on it while stopping
        for rep in reps.values():
            await rep.stop()
            await rep.home.close()
        reps.net.close()


def peer_url(d: Deployment, net: Net, me: str, peer: str) -> str:
    """The URL region `me`'s node dials `peer`'s replica at: through a proxy per server, each
    linked as `redis-<peer>`; a cluster's URL remaps every node's own address to its proxy."""
    if peer in d.clusters:
        return cluster_url({(n.host, n.port): ("127.0.0.1", net.listen(node(me), f"redis-{peer}", n.port))
                            for n in d.clusters[peer].nodes})
    return f"redis://127.0.0.1:{net.listen(node(me), f'redis-{peer}', d.redis[peer].port)}/0"


def _link_pairs(a: str, b: str) -> list[tuple[str, str]]:
    """Both directions of both links between regions a and b (a's node to b's Redis, and back)."""
    return [(node(a), f"redis-{b}"), (f"redis-{b}", node(a)), (node(b), f"redis-{a}"), (f"redis-{a}", node(b))]


def cut(reps: Replicas, a: str, b: str, mode: str = BLACKHOLE) -> None:
    """Partition regions a and b, either way, until heal().

    BLACKHOLE (the realistic partition) holds every byte and connection end; on heal
    the held commands of connections the shippers gave up on are still delivered, as
    TCP would retransmit them. RESET refuses and resets instead, so nothing sent
    during the cut ever arrives: for tests that must know no delta crossed by any path."""
    reps.net.set(_link_pairs(a, b), Rule(mode))


async def failed_across(reps: Replicas, *links: tuple[str, str]) -> None:
    """Wait until the shipper of each (from, to) link has failed a step begun after this call.

    For a RESET cut whose point is that nothing sent during it ever arrives: call this before
    heal(), for links whose shipper has something to ship. On a starved machine the proxy may
    take up a command sent during the cut only after the heal, and forward it; a delta shipped
    that way is acknowledged, and a test of the repair path (anti-entropy) would see none. A
    shipper steps one at a time, so once it has failed a step begun here, nothing it sent
    earlier is still waiting for an answer."""
    shippers = [(f"{r} -> {p}", reps[r].shippers[p]) for r, p in links]
    for _, sh in shippers:
        sh.status.last_error = ""
    for link, sh in shippers:
        await eventually(lambda: sh.status.last_error != "", what=f"shipper {link} failing across the cut")


def heal(reps: Replicas) -> None:
    reps.net.heal()


async def eventually(predicate: Callable[[], Awaitable[object] | object], timeout: float = SETTLE_S,
                     what: str = "condition") -> None:
    """Poll `predicate` (sync or async) in the running loop until it is truthy; fail after `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            result = predicate()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
        except RedisError:
            pass  # a pooled connection to a restarted Redis; the next try reconnects
        if loop.time() >= deadline:
            raise AssertionError(f"{what} not reached within {timeout:.0f} s")
        await asyncio.sleep(0.05)


async def shipped(rep: Replicator, peers: list[str] | None = None) -> bool:
    """Whether `rep`'s shippers (to `peers`, default all) have shipped everything its replica holds."""
    last = await rep.home.last_ids()
    for region in peers if peers is not None else rep.shippers:
        if not at_least(await rep.home.acked(region), last):
            return False
    return True


async def quiesce(reps: dict[str, Replicator], timeout: float = SETTLE_S) -> None:
    """Wait until every shipper has shipped everything its home replica holds."""
    async def done() -> bool:
        for rep in reps.values():
            if not await shipped(rep):
                return False
        return True

    await eventually(done, timeout, "replication quiescence")


def ob(entity: str, event: str, source: str = "cam", **fields: object) -> Observation:
    return Observation("w", entity, event, source, dict(fields))  # type: ignore[arg-type]
