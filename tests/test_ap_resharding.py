"""A partition's slot moved between masters while the store writes to it (docs/ap-cluster.md §11).

The merge scripts touch keys they derive, not only those they declare. While a slot is being
migrated, Redis refuses a script's command on a key the source no longer (or never) held, after
the script's earlier writes: a dedup record written and its entity not would lose the observation
for good (a replay is a duplicate). The scripts therefore probe first and answer TRYAGAIN before
writing, and the store never runs a script on the importing side (no ASKING): a write waits for
the move to end. Real 2-master clusters, the slot moved by hand as `redis-cli --cluster reshard`
moves it (SETSLOT IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import key_slot

from consistency import ap_keys as K
from consistency.ap_store import Observation, ReplicaStore
from consistency.errors import Unavailable
from deploy.redis_cluster import RedisCluster, ShardNode
from tests.ap_helpers import SCENARIO_S

WORLD = "w"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    with RedisCluster("m", tmp_path, masters=2) as c:
        yield c


def obs(entity: str, event: str, x: float) -> Observation:
    return Observation(WORLD, entity, event, "cam", {"x": x})


def owner(c: RedisCluster, slot: int) -> ShardNode:
    with c.nodes[0].admin() as r:
        for lo, hi, master, *_ in r.execute_command("CLUSTER", "SLOTS"):
            if int(lo) <= slot <= int(hi):
                return c.node_on(int(master[1]))
    raise AssertionError(f"slot {slot} has no master")


def migrate(src: ShardNode, dst: ShardNode, keys: list[str]) -> None:
    with src.admin() as r:
        r.execute_command("MIGRATE", dst.host, dst.port, "", 0, 5000, "KEYS", *keys)


def test_a_write_to_a_partition_being_moved_waits_and_is_never_half_applied(cluster: RedisCluster) -> None:
    a = "ball-a"
    p = K.partition(WORLD, a)
    b = next(f"ball-{i}" for i in range(1000) if K.partition(WORLD, f"ball-{i}") == p)  # new, same partition
    slot = key_slot(K.stream(p).encode())
    src = owner(cluster, slot)
    dst = next(m for m in cluster.current_masters() if m.port != src.port)

    async def scenario() -> None:
        store = ReplicaStore(cluster.store_url, "r1", "node-r1")
        try:
            assert (await store.ingest([obs(a, "first", 1.0)])).accepted == [True]
            with dst.admin() as r:
                r.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src.node_id())
            with src.admin() as r:
                r.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst.node_id())
                keys = r.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 10_000)
            # The entity and the partition's stream have moved, its seen ids and the rest not yet: the
            # source answers ASK for the script's declared key, and the target holds half the partition.
            moved = [k for k in keys if k.startswith(f"{K.tag(p)}:e:")] + [K.stream(p)]
            migrate(src, dst, moved)
            write = asyncio.create_task(store.ingest([obs(a, "second", 2.0), obs(b, "new", 3.0)]))
            await asyncio.sleep(0.5)
            # Mid-move: whatever the write's tries met, none of it was applied. Without the scripts'
            # probe, ingest marked "second" seen on the source and then failed at the moved entity.
            with src.admin() as r:
                seen = r.hkeys(K.seen_key_in(p, WORLD, a))
                rest = r.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 10_000)
            assert seen and not any("second" in k for k in seen), seen
            with dst.admin() as r:
                there = r.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 10_000)
            assert sorted(there) == sorted(moved), there  # no script ran on the importing side either
            assert not any(b in k for k in rest), rest  # nor began an entity on the source
            assert not write.done() or isinstance(write.exception(), Unavailable)
            if rest:
                migrate(src, dst, rest)
            for node in cluster.current_masters():
                with node.admin() as r:
                    r.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst.node_id())
            try:
                result = await write
            except Unavailable:  # the move took longer than the store waits: the retry is safe
                result = await store.ingest([obs(a, "second", 2.0), obs(b, "new", 3.0)])
            assert result.accepted == [True, True]
            got_a, got_b = await store.get_entity(WORLD, a), await store.get_entity(WORLD, b)
            assert got_a is not None and got_a.fields["x"].value == 2.0
            assert got_b is not None and got_b.fields["x"].value == 3.0
            again = await store.ingest([obs(a, "second", 2.0), obs(b, "new", 3.0)])
            assert again.accepted == [False, False]  # recorded once, at the new owner
            assert owner(cluster, slot).port == dst.port
        finally:
            await store.close()

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_S))
