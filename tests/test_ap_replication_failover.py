"""Replication between two clustered regions goes on through a failover to a replica (issue #17):
3 masters and 1 replica each per region, every peer link through its own proxy (the URL remaps the
addresses the cluster advertises), writes going on in both regions while a replica takes over.

Only the cluster layout has replicas to fail over to; the single-Redis layout's restart from AOF
is tests/test_ap_replication.py's. The failover is CLUSTER FAILOVER without FORCE: the replica
takes over once it holds everything its master acknowledged, so nothing acknowledged may be lost.
(A forced or automatic failover can lose the writes the replica had not received: docs/ap-cluster.md §4.)
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import pytest

from consistency.ap_backend import startup_nodes
from consistency.ap_store import ReplicaStore
from consistency.errors import OutcomeUnknown, Unavailable
from deploy.launcher import Deployment, Topology
from jepsen_like.proxy import RESET, Net
from tests.ap_helpers import (SCENARIO_S, cut, eventually, failed_across, heal, ob, peer_url, quiesce, replication,
                              server_of, state)


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with Deployment(Topology(etcd_members=0, regions=2, api=False, ap_shards=3, ap_replicas=1,
                             run_dir=tmp_path_factory.mktemp("failover"))) as d:
        yield d


def proxied_only(store: ReplicaStore) -> bool:
    """Every node the store's client knows is one of its URL's proxies: none dialed where it advertises itself."""
    proxies = {f"{h}:{p}" for h, p in startup_nodes(store.url)}
    return set(store.redis.nodes_manager.nodes_cache) <= proxies


def test_replication_goes_on_through_a_failover_in_either_region(replicated: Deployment) -> None:
    d = replicated
    sources = itertools.cycle(["cam", "lidar"])
    numbers = itertools.count()
    written: dict[str, tuple[str, str]] = {}  # event -> (entity, source), each surely in its region

    async def write(region: str) -> None:
        i = next(numbers)
        entity, source = f"ent{i % 12}", next(sources)
        o = ob(entity, f"{region}-{i}", source, x=float(i), label=region)
        while True:  # mid-failover a write may be refused or unknown: the same event again is safe
            try:
                await home[region].ingest([o])  # accepted, or a duplicate of an earlier unknown attempt
                written[o.event_id] = (entity, source)
                return
            except (OutcomeUnknown, Unavailable):
                await asyncio.sleep(0.05)

    async def keep_writing(stop: asyncio.Event) -> None:
        for i in itertools.count():
            if stop.is_set() and i >= 40:  # at least 40 writes, on both sides, across the swap
                return
            await write("r1" if i % 2 else "r2")

    home: dict[str, ReplicaStore] = {}

    async def scenario() -> None:
        async with replication(d) as reps:
            home.update({r: rep.home for r, rep in reps.items()})
            reader = ReplicaStore(peer_url(d, reader_net, "r1", "r2"), "r2", "reader")  # plain reads of r2, proxied
            for i in range(40):
                await write("r1" if i % 2 else "r2")
            await quiesce(reps)
            assert await reader.get_entity("w", "ent0") is not None  # its slot map predates the failovers
            for region, entity in (("r2", "ent0"), ("r1", "ent1")):  # the peer side, then the home side
                cluster = d.clusters[region]
                old = server_of(d, region, "w", entity)
                stop = asyncio.Event()
                writer = asyncio.create_task(keep_writing(stop))
                await asyncio.to_thread(cluster.failover, cluster.replicas_of(old)[0])
                stop.set()
                await writer
                assert old.role() == "slave" and server_of(d, region, "w", entity) is not old
            await quiesce(reps)
            # Byte for byte the same, and every event counted once wherever it landed.
            assert state(d, "r1") == state(d, "r2")
            for entity in {e for e, _ in written.values()}:
                for region in ("r1", "r2"):
                    got = await reps[region].home.get_entity("w", entity)
                    assert got is not None
                    for source in ("cam", "lidar"):
                        expected = sum(1 for e, s in written.values() if (e, s) == (entity, source))
                        assert got.counters.get(source, 0) == expected, (region, entity, source)
            # The new masters are dialed through their proxies too: a MOVED answer to a plain read is
            # remapped (redis-py 8.1 does not), and a cut after the failover still holds.
            assert (await reader.get_entity("w", "ent0")) == (await reps["r2"].home.get_entity("w", "ent0"))
            assert proxied_only(reader)
            assert all(proxied_only(s.peer) for rep in reps.values() for s in rep.shippers.values())
            cut(reps, "r1", "r2", RESET)
            await reps["r1"].home.ingest([ob("late", "late-1", x=1.0)])
            await failed_across(reps, ("r1", "r2"))
            assert await reps["r2"].home.get_entity("w", "late") is None
            heal(reps)
            await quiesce(reps)
            await eventually(lambda: reps["r2"].home.get_entity("w", "late"), what="the late write after the heal")
            assert state(d, "r1") == state(d, "r2")
            await reader.close()

    reader_net = Net()
    try:
        asyncio.run(asyncio.wait_for(scenario(), SCENARIO_S))
    finally:
        reader_net.close()
