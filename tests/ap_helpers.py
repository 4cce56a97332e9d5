"""Helpers for AP-tier tests: replicas started by the launcher, shippers run in the test's loop,
and the network between them cut for real.

Each region's shippers dial the peer replicas through TCP proxies the test
controls (`jepsen_like.proxy.Net`, the harness's non-root proxy), as each
region's API node would dial them across a network. A partition is a
blackhole on those links: bytes and connection ends are held, nobody is told,
the shippers' commands time out and they retry until the link heals. The
link from a node to its home Redis is on one host and is never cut.
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
from consistency.ap_positions import at_least
from consistency.ap_store import ALL, Observation, ReplicaStore
from consistency.replication import Replicator
from deploy.launcher import Deployment, Topology
from jepsen_like.proxy import BLACKHOLE, Net, Rule

# Deadlines, not expectations: on a quiet machine replication settles in well under a
# second, and a blackholed command costs one ReplicaStore timeout (2 s) plus backoff (<= 2 s).
# They only bound how long a broken run takes to fail on a loaded 2-core machine.
SETTLE_S = 60.0
SCENARIO_S = 180.0


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Three regions' Redis (AOF on), no etcd and no API: the AP tier alone."""
    with Deployment(Topology(etcd_members=0, regions=3, api=False,
                             run_dir=tmp_path_factory.mktemp("replicas"))) as d:
        yield d


@pytest.fixture
def fresh(replicas: Deployment) -> Deployment:
    for node in replicas.redis.values():
        if not node.running:
            node.start()
            node.wait_healthy(30)
    flush(replicas)
    return replicas


def flush(d: Deployment) -> None:
    for node in d.redis.values():
        if node.running:
            redis.Redis(port=node.port).flushall()


def state(d: Deployment, region: str) -> dict[bytes, dict[bytes, bytes]]:
    """Every merged entity of one replica, exactly as stored."""
    r = redis.Redis(port=d.redis[region].port)
    return {k: r.hgetall(k) for k in sorted(r.scan_iter(match=ENTITY_KEYS, count=1000))}


ENTITY_KEYS = "ws:{p*}:e:*"  # every partition's entity hashes (consistency/ap_keys.py)
SEEN_KEYS = "ws:{p*}:s:*"


def stream_len(d: Deployment, region: str) -> int:
    """Entries held in all of the replica's partition streams."""
    r = redis.Redis(port=d.redis[region].port)
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
    regions = regions or sorted(d.redis)
    reps = Replicas(Net())
    try:
        for r in regions:
            home = ReplicaStore(d.redis[r].url, r, node(r), **home_options)
            peers = [ReplicaStore(f"redis://127.0.0.1:{reps.net.listen(node(r), f'redis-{p}', d.redis[p].port)}/0",
                                  p, node(r)) for p in regions if p != r]
            reps[r] = Replicator(home, peers, housekeeping_s=3600)
            reps[r].start()
        yield reps
    finally:
        reps.net.heal()  # a failed test may leave a cut: nothing must hang on it while stopping
        for rep in reps.values():
            await rep.stop()
            await rep.home.close()
        reps.net.close()


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
