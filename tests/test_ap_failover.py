"""A clustered home replica losing a master (docs/ap-cluster.md §4, §9): real Redis Clusters, two
regions replicating through a Replicator each, a master SIGKILLed after its replica was stopped
(SIGSTOP), so what it acknowledged and had not passed on is certainly gone; and a partition's slot
moved between masters as `redis-cli --cluster reshard` moves it, while writes and replication run.

Region f1 has a replica per master (failovers happen there); f2 has masters only.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator

import msgpack
import pytest
import redis
from redis.cluster import key_slot

from consistency import ap_keys as K
from consistency.ap_anti_entropy import anti_entropy
from consistency.ap_positions import stream_id
from consistency.ap_store import Observation, ReplicaStore
from consistency.errors import OutcomeUnknown, Unavailable
from consistency.replication import Replicator
from deploy.processes import wait_until
from deploy.redis_cluster import RedisCluster, ShardNode, wait_role
from tests.ap_helpers import SCENARIO_S, ob
from tests.test_ap_cluster import clean, store  # noqa: F401 (clean: a fixture over this module's regions)

DEADLINE_S = 60.0  # bounds a failure only: every wait below ends as soon as its condition holds


@pytest.fixture(scope="module")
def regions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RedisCluster]]:
    run_dir = tmp_path_factory.mktemp("ap-failover")
    with RedisCluster("f1", run_dir, masters=3, replicas=1) as f1, RedisCluster("f2", run_dir, masters=3) as f2:
        yield {"f1": f1, "f2": f2}




def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, SCENARIO_S))  # type: ignore[arg-type]


async def until(pred: Callable[[], Awaitable[bool]], what: str, timeout: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while not await pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.05)


def owner(c: RedisCluster, slot: int) -> ShardNode:
    live = next(n for n in c.nodes if n.running and not n.paused)
    with live.admin() as r:
        for lo, hi, master, *_ in r.execute_command("CLUSTER", "SLOTS"):
            if int(lo) <= slot <= int(hi):
                return c.node_on(int(master[1]))
    raise AssertionError(f"slot {slot} unserved")


def slot_of(p: int) -> int:
    return key_slot(K.stream(p).encode())


def replicated_partition(c: RedisCluster) -> tuple[int, ShardNode, ShardNode]:
    """A partition, its master now, and that master's replica (link up)."""
    for p in range(K.PARTITIONS):
        master = owner(c, slot_of(p))
        for replica in c.replicas_of(master):
            if replica.running:
                wait_role(replica, "slave")
                return p, master, replica
    raise AssertionError("no master has a running replica")


def entities_in(p: int, n: int, prefix: str) -> list[str]:
    found, i = [], 0
    while len(found) < n:
        if K.partition("w", f"{prefix}{i}") == p:
            found.append(f"{prefix}{i}")
        i += 1
    return found


def run_id(node: ShardNode) -> str:
    with node.admin() as r:
        return str(r.info("server")["run_id"])


def caught_up(master: ShardNode) -> bool:
    """Every replica of `master` holds its whole replication stream."""
    with master.admin() as r:
        info = r.info("replication")
    offsets = [int(v["offset"]) for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
    return bool(offsets) and all(o == int(info["master_repl_offset"]) for o in offsets)


def entity_hashes(c: RedisCluster) -> dict[bytes, dict[bytes, bytes]]:
    out: dict[bytes, dict[bytes, bytes]] = {}
    for node in c.current_masters():
        r = redis.Redis(port=node.port)
        out.update({k: r.hgetall(k) for k in r.scan_iter(match="ws:{p*}:e:*", count=1000)})
    return dict(sorted(out.items()))


async def converged(c1: RedisCluster, c2: RedisCluster) -> bool:
    a, b = await asyncio.to_thread(entity_hashes, c1), await asyncio.to_thread(entity_hashes, c2)
    return bool(a) and a == b


async def kill_and_fail_over(c: RedisCluster, master: ShardNode, replica: ShardNode) -> None:
    """SIGKILL the master; a stopped replica is SIGKILLed too and restarted from its AOF (let go on, it
    would first read what the master had already sent into its socket); the replica takes over (FORCE:
    no wait for the node timeout); the old master restarts from its AOF and rejoins as its replica."""
    def blocking() -> None:
        master.kill()
        if replica.paused:
            replica.kill()
            replica.start()
            replica.wait_healthy(30)
        c.failover(replica, force=True)
        master.start()
        master.wait_healthy(30)
        wait_role(master, "slave", 30)
        c.wait_serving(30)
    await asyncio.to_thread(blocking)


def test_the_raise_only_ever_raises_and_covers_our_own_offsets(clean: dict[str, RedisCluster]) -> None:
    async def scenario() -> None:
        s = store(clean["f2"])
        p, q = 3, 4

        async def raise_to(part: int, target: str) -> str:
            (answer,) = await s._call_many("raise_id", [([K.stream(part), K.acked(part), K.consumers(part)], [target])])
            return answer.decode()

        assert await raise_to(p, "0-0") == "0-0" and not await s.redis.exists(K.stream(p))  # nothing to do
        assert await raise_to(p, "500-1") == "500-1"  # a missing stream is made, empty, with that last id
        assert await s.redis.xlen(K.stream(p)) == 0 and await s.last_id(p) == "500-1"
        assert await raise_to(p, "400-0") == "500-1"  # never lowered (XSETID itself would lower it)
        res = await s.ingest([ob(e, f"{e}-1", x=1.0) for e in entities_in(p, 1, "r")])
        assert stream_id(res.last_id) > (500, 1)
        assert await raise_to(p, "600-0") == res.last_id  # below the newest entry: left alone
        await s.redis.hset(K.acked(q), "f1", "900-0")  # an offset written ahead of the stream
        await s.redis.hset(K.consumers(q), "learner", "950-2")
        assert await raise_to(q, "700-0") == "950-2" and await s.last_id(q) == "950-2"
        await s.close()

    run(scenario())


def test_ack_zero_a_failover_is_detected_raised_and_repaired_from_the_peer(clean: dict[str, RedisCluster]) -> None:
    f1, f2 = clean["f1"], clean["f2"]
    p, master, replica = replicated_partition(f1)
    shipped, unshipped = entities_in(p, 4, "s"), entities_in(p, 4, "u")

    async def scenario() -> None:
        a, b = store(f1, ack_replicas=0, changes_maxlen=500), store(f2)
        ra = Replicator(a, [store(f2)], housekeeping_s=3600, failover_check_s=0.1)
        rb = Replicator(b, [store(f1, ack_replicas=0)], housekeeping_s=3600, failover_check_s=0.1)
        ra.start()
        rb.start()
        watch = ra.failovers
        assert watch is not None
        try:
            await a.ingest([ob(f"e{i}", f"a{i}", x=float(i)) for i in range(20)])
            await until(lambda: asyncio.sleep(0, watch.settled()), "the first look marks every partition")
            await until(lambda: asyncio.to_thread(caught_up, master), "the replica holds the first writes")
            replica.pause()  # SIGSTOP: from here the replica applies nothing (kill_and_fail_over)
            first = await a.ingest([ob(e, f"{e}-1", x=1.0) for e in shipped])  # acknowledged: no WAIT
            assert await b.wait_applied("f1", first.positions, DEADLINE_S)  # and they reached the peer
            peer_mark = (await b.applied("f1", [p]))["f1"][p]
            ra.shippers["f2"].pause()  # the link to f2 is cut: the next writes stay on the master
            second = await a.ingest([ob(e, f"{e}-1", x=2.0) for e in unshipped] + [ob(shipped[0], "late", x=2.0)])
            assert second.accepted == [True] * 5
            await kill_and_fail_over(f1, master, replica)
            # The promoted replica never had either batch, and its stream ends below the peer's mark.
            # The watch sees p's new master; with the link cut the raise is done but the repair waits
            # (anti-entropy needs the peer).
            await until(lambda: asyncio.sleep(0, p in watch.status.pending), "the raise ran, the repair waits")
            assert stream_id(await a.last_id(p)) >= stream_id(peer_mark), watch.status
            assert await a.get_entity("w", shipped[1]) is None  # gone from home, for now
            assert (await a.get_entity("w", shipped[0])) is None
            after = await a.ingest([ob(shipped[0], "after", x=3.0)])  # a write to p before the repair
            assert stream_id(after.last_id) > stream_id(peer_mark)  # above the ids the peer took as applied
            ra.shippers["f2"].resume()
            new_run = await asyncio.to_thread(run_id, replica)
            await until(lambda: asyncio.sleep(0, watch.recovered_on(p) == new_run and p not in watch.status.pending),
                        "the watch repairs p once the peer is back")
            assert watch.status.buckets_from_peers > 0
            await until(lambda: converged(f1, f2), "both regions hold the same entities, byte for byte")
            # What the peer had came home: values, seen event ids (replays are duplicates), counts.
            for e in shipped[1:]:
                got = await a.get_entity("w", e)
                assert got is not None and got.fields["x"].value == 1.0 and got.counters == {"cam": 1}
            assert (await a.ingest([ob(e, f"{e}-1", x=1.0) for e in shipped])).accepted == [False] * 4
            # Three writes were acknowledged to shipped[0] (the peer had one, the lost batch one, one came
            # after the failover): the value is the newest, its count is 1 on both sides, not 3. The
            # lost batch's write is gone (1), and the increment made at home from the lost count (0 + 1)
            # is absorbed by the peer's max of the same slot (1): the count one lower that §4 admits.
            e0 = await a.get_entity("w", shipped[0])
            assert e0 is not None and e0.fields["x"].value == 3.0 and e0.counters == {"cam": 1}
            # The lost batch never left the dead master: nowhere, and posting it again applies it anew.
            for e in unshipped:
                assert await a.get_entity("w", e) is None and await b.get_entity("w", e) is None
            assert (await a.ingest([ob(e, f"{e}-1", x=2.0) for e in unshipped])).accepted == [True] * 4
            await until(lambda: converged(f1, f2), "converged again after the retry")
            assert await a.redis.get(K.changes_maxlen(p)) == b"500"  # the cap was set again on the new master
        finally:
            await ra.stop()
            await rb.stop()
            await a.close()
            await b.close()

    run(scenario())


def test_ack_one_a_failover_loses_nothing_acknowledged_without_repair(clean: dict[str, RedisCluster]) -> None:
    f1, f2 = clean["f1"], clean["f2"]
    p, master, replica = replicated_partition(f1)
    kept, unsure = entities_in(p, 6, "k"), entities_in(p, 3, "n")

    async def scenario() -> None:
        a, b = store(f1), store(f2)  # f1's masters have replicas: WAIT 1 after every write
        assert await a._on_cluster.ack_replicas() == 1  # type: ignore[union-attr]
        # No failover watch: whatever converges here converges without anti-entropy.
        ra = Replicator(a, [store(f2)], housekeeping_s=3600, failover_check_s=None)
        rb = Replicator(b, [store(f1)], housekeeping_s=3600, failover_check_s=None)
        ra.start()
        rb.start()
        try:
            acked = await a.ingest([ob(e, f"{e}-1", x=1.0) for e in kept])
            assert acked.accepted == [True] * 6
            assert await b.wait_applied("f1", acked.positions, DEADLINE_S)
            replica.pause()
            with pytest.raises(OutcomeUnknown):  # the replica cannot confirm: not acknowledged
                await a.ingest([ob(e, f"{e}-1", x=2.0) for e in unsure])
            # The shipper, link up, reads that batch but does not ship what no replica confirmed (its
            # fence's WAIT fails too). Shipped, the failover below would drop it at home only, and
            # f2 would keep it (the jepsen_like run in docs/ap-cluster.md §14).
            shipper = ra.shippers["f2"]
            await until(lambda: asyncio.sleep(0, "not shipped to f2" in shipper.status.last_error),
                        "the shipper tried to ship the unconfirmed batch and was refused")
            assert [await b.get_entity("w", e) for e in unsure] == [None] * 3
            await kill_and_fail_over(f1, master, replica)
            for e in kept:  # every acknowledged write is on the promoted replica
                got = await a.get_entity("w", e)
                assert got is not None and got.fields["x"].value == 1.0 and got.counters == {"cam": 1}
            # The unconfirmed batch was on the dead master only; the client's retry (503 says it is safe)
            # applies it once.
            assert [await a.get_entity("w", e) for e in unsure] == [None] * 3
            assert (await a.ingest([ob(e, f"{e}-1", x=2.0) for e in unsure])).accepted == [True] * 3
            await until(lambda: converged(f1, f2), "both regions hold the same entities, byte for byte")
            assert all(s.status.anti_entropy_runs == 0 for s in [*ra.shippers.values(), *rb.shippers.values()])
        finally:
            await ra.stop()
            await rb.stop()
            await a.close()
            await b.close()

    run(scenario())


def test_ack_one_anti_entropy_ships_nothing_no_replica_confirmed(clean: dict[str, RedisCluster]) -> None:
    """Anti-entropy (after a failover, or for a peer trimmed past) ships whole buckets. A write whose WAIT
    failed is in them, on the master alone; shipped, a failover would drop it at home only, leaving the
    peer with what home lost. It is fenced as the shipper's reads are: refused until a replica has it."""
    f1, f2 = clean["f1"], clean["f2"]
    p, _, replica = replicated_partition(f1)
    kept, unsure = entities_in(p, 2, "k"), entities_in(p, 2, "n")

    async def scenario() -> None:
        a, b = store(f1), store(f2)
        try:
            assert (await a.ingest([ob(e, f"{e}-1", x=1.0) for e in kept])).accepted == [True] * 2
            replica.pause()
            try:
                with pytest.raises(OutcomeUnknown):
                    await a.ingest([ob(e, f"{e}-1", x=2.0) for e in unsure])
                with pytest.raises(OutcomeUnknown, match="not shipped to f2"):
                    await anti_entropy(a, b, p)
                assert [await b.get_entity("w", e) for e in kept + unsure] == [None] * 4
            finally:
                replica.resume()
            # Once the replica has caught up, the same run ships both, the unconfirmed write included:
            # it is on a replica now, so no failover can drop it.
            await until(lambda: asyncio.sleep(0, caught_up(owner(f1, slot_of(p)))), "the replica caught up")
            assert await anti_entropy(a, b, p) >= 1
            for e in kept + unsure:
                got = await b.get_entity("w", e)
                assert got is not None and got.counters == {"cam": 1}, (e, got)
        finally:
            await a.close()
            await b.close()

    run(scenario())


def stream_events(c: RedisCluster, p: int) -> list[str]:
    """The event id of every delta in partition p's stream, read from its master now."""
    r = redis.Redis(port=owner(c, slot_of(p)).port)
    return [msgpack.unpackb(f[b"d"], raw=True)[2].decode() for _, f in r.xrange(K.stream(p)) if b"d" in f]


def move_slot(c: RedisCluster, slot: int, target: ShardNode) -> int:
    """Move `slot` to `target` as `redis-cli --cluster reshard` does: IMPORTING, MIGRATING, its keys
    10 at a time (a short pause between, so writes meet the slot half moved), SETSLOT NODE on the
    target, the source, then the other masters. Returns the number of keys moved."""
    source = owner(c, slot)
    with target.admin() as t, source.admin() as s:
        t.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id())
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id())
        moved = 0
        while keys := s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 10):
            s.execute_command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
            time.sleep(0.02)
    ident = target.node_id()
    for node in (target, source, *[m for m in c.current_masters() if m is not target and m is not source]):
        with node.admin() as r:
            r.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ident)
    return moved


def test_moving_a_partitions_slot_while_writing_keeps_every_write_once(clean: dict[str, RedisCluster]) -> None:
    """While its slot moves, a partition's writes wait (ASK, TRYAGAIN) or are refused with nothing
    applied (docs/ap-cluster.md §11); the rest of the region goes on, and replication too."""
    f1, f2 = clean["f1"], clean["f2"]
    p = 5
    slot = slot_of(p)
    hot = entities_in(p, 8, "h")
    target = next(m for m in f1.current_masters() if m is not owner(f1, slot))

    async def scenario() -> None:
        a, b = store(f1), store(f2)
        ra = Replicator(a, [store(f2)], housekeeping_s=3600, failover_check_s=0.2)
        rb = Replicator(b, [store(f1)], housekeeping_s=3600, failover_check_s=0.2)
        ra.start()
        rb.start()
        acknowledged: dict[str, set[str]] = {e: set() for e in hot}  # entity -> its acknowledged event ids
        unknown: list[str] = []
        refused: list[str] = []  # Unavailable: nothing ran
        failed: list[str] = []
        stop = asyncio.Event()

        async def writer() -> None:
            n = 0
            while not stop.is_set():
                batch = [Observation("w", e, f"{e}-{n}", "cam", {"x": float(n)}) for e in hot]
                batch.append(ob(f"other{n % 50}", f"o{n}", x=float(n)))  # other partitions, other masters
                try:
                    res = await a.ingest(batch)
                    for ob_, ok in zip(batch, res.accepted):
                        if ok and ob_.entity in acknowledged:
                            acknowledged[ob_.entity].add(ob_.event_id)
                except OutcomeUnknown:
                    unknown.append(str(n))
                except Unavailable:
                    refused.append(str(n))
                except Exception:  # noqa: BLE001 - any other refusal fails the test below, with its traceback
                    failed.append(traceback.format_exc())
                n += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(writer())
        try:
            await asyncio.sleep(0.5)
            await a.ingest([Observation("w", f"fill{i}", f"fill{i}", "cam", {"x": 0.0})  # enough keys for batches
                            for i in range(2000) if K.partition("w", f"fill{i}") == p])
            assert await asyncio.to_thread(move_slot, f1, slot, target) > 20
            await asyncio.sleep(0.5)
            stop.set()
            await task
            assert failed == [], "\n".join(failed)
            assert owner(f1, slot) is target
            assert all(acknowledged.values())
            events = stream_events(f1, p)
            assert len(events) == len(set(events))  # every write once in the partition's stream
            assert set().union(*acknowledged.values()) <= set(events)  # and every acknowledged one there
            # Every acknowledged write counted once; a batch refused (Unavailable) ran nowhere, one whose
            # WAIT ran out (OutcomeUnknown) may or may not have been applied.
            counts = {}
            for e in hot:
                got = await a.get_entity("w", e)
                assert got is not None
                counts[e] = got.counters["cam"]
                assert len(acknowledged[e]) <= counts[e] <= len(acknowledged[e]) + len(unknown)
            await until(lambda: converged(f1, f2), "both regions hold the same entities, byte for byte")
            for e in hot:
                got = await b.get_entity("w", e)
                assert got is not None and got.counters == {"cam": counts[e]}
            print(f"resharding: {sum(map(len, acknowledged.values())) // len(hot)} batches acknowledged, "
                  f"{len(refused)} refused, {len(unknown)} unknown")
        finally:
            stop.set()
            await asyncio.gather(task, return_exceptions=True)
            await ra.stop()
            await rb.stop()
            await a.close()
            await b.close()

    run(scenario())
