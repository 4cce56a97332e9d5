"""The AP store on a Redis Cluster per region (docs/ap-cluster.md step 4): real 3-master clusters
from deploy/redis_cluster.py, a ReplicaStore on a `redis+cluster://` URL, no mocks.

Each behaviour the single-Redis suite proves of the store is checked here on the cluster layout:
ingest, dedup and reads; replication between two clustered regions; anti-entropy after a trimmed
stream; the read-your-writes wait; the changes logs a subscription reads; a learner's offsets;
and WAIT after writes when masters have replicas.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError

from consistency import ap_keys as K
from consistency.ap_consumers import StreamConsumers
from consistency.ap_backend import transport_race
from consistency.ap_positions import ZERO, stream_id
from consistency.ap_store import ALL, Observation, ReplicaStore
from consistency.errors import OutcomeUnknown, Unavailable
from consistency.replication import Shipper
from deploy import binaries
from deploy.launcher import redis_args
from deploy.nodes import RedisNode
from deploy.processes import free_port
from deploy.redis_cluster import RedisCluster
from tests.ap_helpers import SCENARIO_S, ob

ENTITIES = 40  # spread over enough partitions that every master holds some


@pytest.fixture(scope="module")
def regions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RedisCluster]]:
    run_dir = tmp_path_factory.mktemp("ap-cluster")
    with RedisCluster("c1", run_dir, masters=3) as c1, RedisCluster("c2", run_dir, masters=3) as c2:
        yield {"c1": c1, "c2": c2}


@pytest.fixture
def clean(regions: dict[str, RedisCluster]) -> dict[str, RedisCluster]:
    for c in regions.values():
        for node in c.current_masters():
            with node.admin() as r:
                r.flushall()
    return regions


def store(c: RedisCluster, **kwargs: object) -> ReplicaStore:
    return ReplicaStore(c.store_url, c.region, f"node-{c.region}", **kwargs)  # type: ignore[arg-type]


def run(coro: object) -> None:
    asyncio.run(asyncio.wait_for(coro, SCENARIO_S))  # type: ignore[arg-type]


def entity_hashes(c: RedisCluster) -> dict[bytes, dict[bytes, bytes]]:
    """Every merged entity of a clustered replica, exactly as stored, gathered from its masters."""
    out: dict[bytes, dict[bytes, bytes]] = {}
    for node in c.current_masters():
        r = redis.Redis(port=node.port)
        out.update({k: r.hgetall(k) for k in r.scan_iter(match="ws:{p*}:e:*", count=1000)})
    return dict(sorted(out.items()))


async def ship_until_quiet(home: ReplicaStore, peer: ReplicaStore) -> Shipper:
    """Step a shipper until a step ships nothing (no timing: each step is read, apply, ack)."""
    shipper = Shipper(home, peer, batch=50, block_ms=1)
    while await shipper.step():
        pass
    return shipper


def test_a_cluster_url_picks_the_cluster_client_with_one_partition_a_call(regions: dict[str, RedisCluster]) -> None:
    async def scenario() -> None:
        on_cluster = store(regions["c1"])
        assert on_cluster.cluster and on_cluster.partitions_per_call == 1
        single = ReplicaStore("redis://127.0.0.1:1/0", "r1", "n")  # never connected
        assert not single.cluster and single.partitions_per_call == K.PARTITIONS
        await on_cluster.close()
        await single.close()

    run(scenario())


def test_ingest_dedups_and_reads_across_every_master(clean: dict[str, RedisCluster]) -> None:
    c1 = clean["c1"]

    async def scenario() -> None:
        s = store(c1)
        batch = [ob(f"e{i}", f"ev{i}", x=float(i)) for i in range(ENTITIES)]
        res = await s.ingest(batch + [ob("e0", "ev0", x=99.0)])  # the last repeats an event id of the batch
        assert res.accepted == [True] * ENTITIES + [False]
        assert set(res.positions) == {K.partition("w", f"e{i}") for i in range(ENTITIES)}
        replay = await s.ingest(batch[:5])
        assert replay.accepted == [False] * 5
        e = await s.get_entity("w", "e7")
        assert e is not None and e.fields["x"].value == 7.0 and e.counters == {"cam": 1}
        listed, more = await s.list_entities("w", None, 100)
        assert sorted(x.entity for x in listed) == sorted(f"e{i}" for i in range(ENTITIES)) and not more
        assert await s.has_world("w") and not await s.has_world("nope")
        # each partition's keys live on its slot's master: all three masters hold some
        holding = [n for n in c1.current_masters() if redis.Redis(port=n.port).dbsize() > 0]
        assert len(holding) == 3
        streams, _, _, _ = await s.lengths()
        assert streams == ENTITIES
        await s.close()

    run(scenario())


def test_two_clustered_regions_replicate_and_converge(clean: dict[str, RedisCluster]) -> None:
    async def scenario() -> None:
        a, b = store(clean["c1"]), store(clean["c2"])
        await a.ingest([ob(f"e{i}", f"a{i}", "cam", x=float(i)) for i in range(ENTITIES)])
        await b.ingest([ob(f"e{i}", f"b{i}", "lidar", y=float(i)) for i in range(0, ENTITIES, 2)])
        a_to_b, b_to_a = await ship_until_quiet(a, b), await ship_until_quiet(b, a)
        assert entity_hashes(clean["c1"]) == entity_hashes(clean["c2"])
        e = await b.get_entity("w", "e4")
        assert e is not None and e.counters == {"cam": 1, "lidar": 1}
        assert not a_to_b.status.behind and not b_to_a.status.behind
        acked = await a.acked("c2")
        assert all(stream_id(acked[p]) >= stream_id(v) for p, v in (await a.last_ids()).items())
        await a.close()
        await b.close()

    run(scenario())


def test_anti_entropy_after_a_trimmed_stream(clean: dict[str, RedisCluster]) -> None:
    async def scenario() -> None:
        a, b = store(clean["c1"]), store(clean["c2"])
        await a.ingest([ob(f"e{i}", f"a{i}", x=float(i)) for i in range(ENTITIES)])
        for p in ALL:  # the peer never saw these deltas, and they are gone from the streams
            await a.trim(p, maxlen=0)
        assert (await a.lengths())[0] == 0
        shipper = Shipper(a, b, batch=50, block_ms=1)
        assert await shipper.step() > 0  # buckets shipped whole
        assert shipper.status.anti_entropy_runs == 1
        while await shipper.step():
            pass
        assert entity_hashes(clean["c1"]) == entity_hashes(clean["c2"])
        await a.close()
        await b.close()

    run(scenario())


def test_read_your_writes_waits_for_the_token_partitions(clean: dict[str, RedisCluster]) -> None:
    async def scenario() -> None:
        a, b = store(clean["c1"]), store(clean["c2"])
        res = await a.ingest([ob("e1", "t1", x=1.0), ob("e2", "t2", x=2.0)])
        assert await a.wait_applied("c1", res.positions, 0.0)  # the writer's own replica has it
        assert not await b.wait_applied("c1", res.positions, 0.0)  # not shipped yet: not reflected
        await ship_until_quiet(a, b)
        assert await b.wait_applied("c1", res.positions, 0.0)
        assert (await b.watermark())["c1"] == ZERO  # a lower bound over all 64 partitions, most unwritten
        await a.close()
        await b.close()

    run(scenario())


def test_changes_logs_read_and_wait_per_partition(clean: dict[str, RedisCluster]) -> None:
    async def scenario() -> None:
        s = store(clean["c1"], changes_maxlen=1000)
        heads = await s.changes_heads()
        start = {p: st.last_id for p, st in heads.items()}
        assert not await s.wait_changes(start, 20)  # nothing written: the wait runs out
        await s.ingest([ob(f"e{i}", f"c{i}", x=float(i)) for i in range(10)])
        assert await s.wait_changes(start, 1000)
        got = await s.changes_after(start, 100)
        changed = {(c.entity, c.fields["x"]) for _, listed in got.values() for c in listed}
        assert changed == {(f"e{i}", float(i)) for i in range(10)}
        counts = await s.changes_count(start, 100)
        assert sum(n for _, n in counts.values()) == 10
        await s.close()

    run(scenario())


def test_a_learner_keeps_offsets_per_partition_and_holds_trimming(clean: dict[str, RedisCluster]) -> None:
    async def scenario() -> None:
        s = store(clean["c1"])
        res = await s.ingest([ob(f"e{i}", f"l{i}", x=float(i)) for i in range(ENTITIES)])
        consumers = StreamConsumers(s.redis, "c1")
        offsets = await consumers.register("learner")
        assert set(offsets) == set(ALL) and set(offsets.values()) == {ZERO}
        p = next(iter(res.positions))
        trimmed, entries = await consumers.read(p, ZERO, 100)
        assert trimmed == ZERO and entries and entries[-1][0] == res.positions[p]
        await consumers.commit("learner", {p: entries[-1][0]})
        assert (await consumers.offsets("learner") or {})[p] == res.positions[p]
        # the trim stops at the learner's offset: partitions it has not consumed keep every entry
        await s.trim(p, maxlen=1_000, acked_by_all=res.positions[p])
        other = next(q for q in res.positions if q != p)
        await s.trim(other, maxlen=1_000, acked_by_all=res.positions[other])
        assert (await consumers.read(other, ZERO, 100))[0] == ZERO
        assert await consumers.unregister("learner")
        assert await consumers.offsets("learner") is None
        await s.close()

    run(scenario())


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[RedisCluster]:
    with RedisCluster("c3", tmp_path, masters=3, replicas=1) as c:
        yield c


def test_writes_wait_for_a_replica_and_are_unknown_when_too_few_acknowledge(replicated: RedisCluster) -> None:
    async def scenario() -> None:
        s = store(replicated)  # masters with a replica: WAIT 1 by default
        assert await s._on_cluster.ack_replicas() == 1  # type: ignore[union-attr]
        assert (await s.ingest([ob(f"e{i}", f"w{i}", x=1.0) for i in range(10)])).accepted == [True] * 10
        greedy = store(replicated, ack_replicas=2)  # more replicas than any master has
        with pytest.raises(OutcomeUnknown):
            await greedy.ingest([Observation("w", "e1", "w-late", "cam", {"x": 2.0})])
        # applied on the master all the same: posting it again is a duplicate, never a second count
        assert (await s.ingest([Observation("w", "e1", "w-late", "cam", {"x": 2.0})])).accepted == [False]
        e = await s.get_entity("w", "e1")
        assert e is not None and e.counters == {"cam": 2}
        await s.close()
        await greedy.close()

    run(scenario())


def test_a_failover_moves_a_slot_and_the_store_follows(replicated: RedisCluster) -> None:
    """The store's slot map goes stale when a replica takes over: its next calls meet MOVED, ask the
    cluster again and land on the new master."""
    async def scenario() -> None:
        s = store(replicated)
        await s.ingest([ob(f"e{i}", f"f{i}", x=1.0) for i in range(ENTITIES)])
        old = replicated.current_masters()[0]
        replicated.failover(replicated.replicas_of(old)[0])  # manual: waits for the replica to catch up
        res = await s.ingest([ob(f"e{i}", f"g{i}", x=2.0) for i in range(ENTITIES)])
        assert res.accepted == [True] * ENTITIES
        listed, _ = await s.list_entities("w", None, 100)
        assert len(listed) == ENTITIES and {e.fields["x"].value for e in listed} == {2.0}
        assert {e.counters["cam"] for e in listed} == {2}  # nothing lost by the swap, nothing counted twice
        await s.close()

    run(scenario())


def test_reads_across_partitions_with_a_master_down_are_unavailable_not_a_crash(tmp_path: Path) -> None:
    """A cluster pipeline answers a dead master's commands with ConnectionError *values*; the
    per-partition reads (the watermark every GET entity reports) must raise Unavailable (503), not
    take the error for a reply (a 500, seen under jepsen_like's shard nemesis)."""
    async def scenario(c: RedisCluster) -> None:
        s = store(c)
        await s.ingest([ob(f"e{i}", f"d{i}", x=1.0) for i in range(ENTITIES)])
        assert c.region in await s.watermark()
        c.current_masters()[1].kill()  # no replica: its slots stay down
        for read in (s.watermark, s.all_acked, s.applied):
            with pytest.raises(Unavailable):
                await read()
        await s.close()

    with RedisCluster("c5", tmp_path, masters=2) as c:
        run(scenario(c))


def test_only_redis_own_transport_errors_pass_for_a_lost_connection() -> None:
    try:
        {}.get("x").items()  # type: ignore[union-attr]  # our own bug: must stay a 500, never a retried 503
    except AttributeError as e:
        assert not transport_race(e)
    assert not transport_race(RedisConnectionError("down"))  # already a connection error, handled as one


def test_a_master_that_forgot_the_scripts_gets_them_again(clean: dict[str, RedisCluster]) -> None:
    async def scenario() -> None:
        s = store(clean["c1"])
        await s.ingest([ob("e0", "s0", x=1.0)])
        for node in clean["c1"].current_masters():  # as after a restart: scripts live in memory only
            with node.admin() as r:
                r.script_flush()
        res = await s.ingest([ob(f"e{i}", f"s{i}", x=2.0) for i in range(ENTITIES)])
        assert res.accepted == [False] + [True] * (ENTITIES - 1)
        await s.close()

    run(scenario())


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisNode]:
    run_dir = tmp_path_factory.mktemp("ap-single")
    port = free_port()
    node = RedisNode("s1", port, [binaries.find("redis-server").path, *redis_args(port, str(run_dir))],
                     run_dir / "redis.log")
    node.start()
    try:
        node.wait_healthy(30)
        yield node
    finally:
        node.stop()


def test_a_single_redis_region_and_a_clustered_one_replicate_partition_to_partition(
        clean: dict[str, RedisCluster], single: RedisNode) -> None:
    """P is the same in both layouts, so partition p ships into partition p whatever holds it."""
    redis.Redis(port=single.port).flushall()

    async def scenario() -> None:
        one, many = ReplicaStore(single.url, "s1", "node-s1"), store(clean["c1"])
        await one.ingest([ob(f"e{i}", f"s{i}", "cam", x=float(i)) for i in range(ENTITIES)])
        await many.ingest([ob(f"e{i}", f"c{i}", "lidar", y=float(i)) for i in range(ENTITIES)])
        await ship_until_quiet(one, many)
        await ship_until_quiet(many, one)
        r = redis.Redis(port=single.port)
        assert {k: r.hgetall(k) for k in sorted(r.scan_iter(match="ws:{p*}:e:*"))} == entity_hashes(clean["c1"])
        e = await one.get_entity("w", "e3")
        assert e is not None and e.counters == {"cam": 1, "lidar": 1}
        await one.close()
        await many.close()

    run(scenario())
