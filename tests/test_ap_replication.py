"""The AP tier on real Redis replicas: merge, dedup, replication, anti-entropy, durability."""

from __future__ import annotations

import asyncio
import random

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from consistency.ap_positions import at_least
from consistency.ap_store import ALL, CHUNK, ReplicaStore, StreamEntry
from consistency.errors import Unavailable
from consistency.hlc import MAX_LOGICAL, HLCTimestamp, HybridLogicalClock, wall_clock_ms
from deploy.launcher import Deployment
from jepsen_like.proxy import RESET
from service.metrics import Metrics
from tests.ap_helpers import (SCENARIO_S, back, cut, eventually, failed_across, fresh, heal, ob, quiesce,  # noqa: F401 (fixtures)
                              replicas, replication, server_of, shipped, state, stream_len, url)


def test_dedup_in_batch_and_on_replay(fresh: Deployment) -> None:
    async def scenario() -> None:
        store = ReplicaStore(url(fresh, "r1"), "r1", "node-r1")
        res = await store.ingest([ob("ball", "e1", x=1.0), ob("ball", "e1", x=2.0), ob("ball", "e2", x=3.0)])
        assert res.accepted == [True, False, True]
        before = state(fresh, "r1")
        replay = await store.ingest([ob("ball", "e1", x=99.0), ob("ball", "e2", x=99.0)])
        assert replay.accepted == [False, False]
        assert state(fresh, "r1") == before  # a replayed event changes nothing
        e = await store.get_entity("w", "ball")
        assert e is not None
        assert e.fields["x"].value == 3.0 and e.counters == {"cam": 2}
        await store.close()

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_S))


def test_partitioned_concurrent_writes_converge(fresh: Deployment) -> None:
    """r1 cut off by a blackhole (bytes held, no reset) while all three regions take writes:
    the shippers on both sides keep retrying, nothing crosses the cut, the side that still
    talks keeps replicating, and after the heal all three converge with no acknowledged write lost."""
    rng = random.Random(7)

    async def scenario() -> None:
        async with replication(fresh) as reps:
            cut(reps, "r1", "r2")
            cut(reps, "r1", "r3")  # r1 alone on one side; r2 and r3 still talk
            acked: dict[str, list] = {r: [] for r in reps}
            for i in range(300):
                region = rng.choice(sorted(reps))
                entity = f"ent{rng.randrange(5)}"
                source = rng.choice(["cam", "lidar"])
                o = ob(entity, f"ev{i}", source, x=rng.random(), y=i, label=region)
                res = await reps[region].home.ingest([o])
                if res.accepted[0]:
                    acked[region].append(o)
            # The cut is visible to the shippers that try to cross it ...
            for a, b in (("r1", "r2"), ("r1", "r3"), ("r2", "r1"), ("r3", "r1")):
                await eventually(lambda: b in reps[a].behind() and reps[a].shippers[b].status.last_error,
                                 what=f"{a}'s shipper to {b} seeing the cut")
            # ... while r2 and r3 still replicate to each other,
            await eventually(lambda: shipped(reps["r2"], ["r3"]), what="r2 -> r3 across the healthy link")
            await eventually(lambda: shipped(reps["r3"], ["r2"]), what="r3 -> r2 across the healthy link")
            # and not one delta crossed the cut (a blackhole holds; it never loses or lets through).
            assert set(await reps["r1"].home.applied()) == set()
            assert set(await reps["r2"].home.applied()) == {"r3"}
            assert set(await reps["r3"].home.applied()) == {"r2"}
            heal(reps)
            await quiesce(reps)
            await eventually(lambda: all(rep.behind() == [] for rep in reps.values()),
                             what="every shipper reachable and caught up")
            states = [state(fresh, r) for r in sorted(reps)]
            assert states[0] == states[1] == states[2]  # byte-identical merged state
            everything = [o for obs in acked.values() for o in obs]
            assert len(everything) == 300
            for region in reps:
                for entity in {o.entity for o in everything}:
                    e = await reps[region].home.get_entity("w", entity)
                    assert e is not None
                    mine = [o for o in everything if o.entity == entity]
                    # every acknowledged observation is counted, exactly once
                    for source in ("cam", "lidar"):
                        assert e.counters.get(source, 0) == sum(o.source == source for o in mine)
                    # and each field holds one of the acknowledged writes
                    assert e.fields["y"].event_id in {o.event_id for o in mine}

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_S))


def test_same_event_posted_to_two_replicas_is_counted_once(fresh: Deployment) -> None:
    async def scenario() -> None:
        async with replication(fresh) as reps:
            cut(reps, "r1", "r2")
            cut(reps, "r2", "r3")
            cut(reps, "r1", "r3")
            # The same event reaches three regions before any of them hears of the others.
            for region in ("r1", "r2", "r3"):
                res = await reps[region].home.ingest([ob("robot", "dup-1", "arm", z=1.5)])
                assert res.accepted == [True]
            heal(reps)
            await quiesce(reps)
            await quiesce(reps)  # the compensations are deltas too
            states = [state(fresh, r) for r in ("r1", "r2", "r3")]
            assert states[0] == states[1] == states[2]
            for region in reps:
                e = await reps[region].home.get_entity("w", "robot")
                assert e is not None and e.counters == {"arm": 1}
                # replayed to any region afterwards, it is a duplicate
                res = await reps[region].home.ingest([ob("robot", "dup-1", "arm", z=9.0)])
                assert res.accepted == [False]

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_S))


def test_replay_after_redis_restart_is_a_duplicate_and_aof_keeps_acknowledged(fresh: Deployment) -> None:
    async def write() -> list[str]:
        store = ReplicaStore(url(fresh, "r1"), "r1", "node-r1")
        events = [f"k{i}" for i in range(200)]
        res = await store.ingest([ob(f"e{i % 10}", ev, i=i) for i, ev in enumerate(events)])
        assert all(res.accepted)
        await store.close()
        return events

    events = asyncio.run(write())
    server = server_of(fresh, "r1", "w", "e0")  # the Redis, or the cluster master holding e0
    server.kill()  # kill -9 right after the acknowledgements
    server.start()  # from its AOF (appendfsync always on both layouts)
    back(fresh, "r1")

    async def check() -> None:
        store = ReplicaStore(url(fresh, "r1"), "r1", "node-r1")
        total = 0
        for i in range(10):
            e = await store.get_entity("w", f"e{i}")
            assert e is not None
            total += e.counters["cam"]
        assert total == len(events)  # every acknowledged observation survived kill -9
        replay = await store.ingest([ob(f"e{i % 10}", ev, i=-1) for i, ev in enumerate(events)])
        assert not any(replay.accepted)
        await store.close()

    asyncio.run(check())


@pytest.mark.parametrize("ahead", ["own", "peer"])
def test_a_restarted_node_orders_its_next_write_after_what_its_replica_holds(fresh: Deployment,
                                                                             ahead: str) -> None:
    """A node restarts with a fresh HLC on a wall clock a minute behind the stamps
    its replica holds: stamps it issued itself before the restart while its clock ran
    ahead, or stamps a peer with a fast clock shipped. Its next write must still win."""
    def fast_clock(node: str) -> HybridLogicalClock:
        return HybridLogicalClock(node, now_ms=lambda: wall_clock_ms() + 60_000)

    async def scenario() -> None:
        writer = "r1" if ahead == "own" else "r2"
        before = ReplicaStore(url(fresh, writer), writer, f"node-{writer}", fast_clock(f"node-{writer}"))
        first = await before.ingest([ob("ball", "e1", x=1)])
        await before.close()
        if ahead == "peer":
            async with replication(fresh, ["r1", "r2"]) as reps:
                await quiesce(reps)
        restarted = ReplicaStore(url(fresh, "r1"), "r1", "node-r1")  # a fresh HLC, true clock
        second = await restarted.ingest([ob("ball", "e2", x=2)])
        assert second.stamp > first.stamp
        ball = await restarted.get_entity("w", "ball")
        assert ball is not None and ball.fields["x"].value == 2
        await restarted.close()

    asyncio.run(scenario())


def test_a_clock_out_of_timestamps_refuses_the_whole_batch_and_writes_nothing(fresh: Deployment) -> None:
    # An HLC a minute ahead of the wall clock (it followed a fast peer) with 6 stamps left in its millisecond.
    stamps_until_ms = wall_clock_ms() + 60_000
    ahead = HybridLogicalClock("node-r1", last=HLCTimestamp(stamps_until_ms, MAX_LOGICAL - 6))

    async def scenario() -> None:
        store = ReplicaStore(url(fresh, "r1"), "r1", "node-r1", ahead)
        batch = [ob(f"e{i}", f"ev{i}", x=i) for i in range(2 * CHUNK)]  # two chunks: neither may be sent
        before_ms = wall_clock_ms()
        with pytest.raises(Unavailable) as refused:
            await store.ingest(batch)
        after_ms = wall_clock_ms()
        # Retry when the wall clock reaches the HLC's millisecond: bracketed by the clock read
        # before and after the call, so no bound depends on how fast this machine is.
        assert (stamps_until_ms - after_ms) / 1000 <= refused.value.retry_after_s <= (stamps_until_ms - before_ms) / 1000
        assert await store.get_entity("w", "e0") is None and set((await store.last_ids()).values()) == {"0-0"}
        assert (await store.ingest(batch[:6])).accepted == [True] * 6  # what is left still serves
        await store.close()

    asyncio.run(scenario())


def test_anti_entropy_after_hard_trim(fresh: Deployment) -> None:
    async def scenario() -> None:
        async with replication(fresh, ["r1", "r2"]) as reps:
            # RESET, not a blackhole: held commands would reach r2 after the heal and could
            # carry the very deltas the trim removed, so anti-entropy would not be needed.
            cut(reps, "r1", "r2", RESET)
            r1 = reps["r1"].home
            for i in range(50):
                await r1.ingest([ob(f"ent{i}", f"a{i}", x=float(i))])
            await reps["r2"].home.ingest([ob("ent0", "b0", "lidar", x=-1.0)])
            assert [await r1.trim(p, maxlen=0) for p in ALL] != [""] * len(ALL)  # the deltas r2 never got are gone
            assert stream_len(fresh, "r1") == 0
            metrics = Metrics()  # as a node's GET /metrics reports the same replicator
            metrics.follow(r1, reps["r1"], lambda: {"state": "none"}, HybridLogicalClock("n1"), wall_clock_ms)
            await failed_across(reps, ("r1", "r2"))  # nothing shipped in the cut arrives after it
            heal(reps)
            await quiesce(reps)
            to_r2 = reps["r1"].shippers["r2"].status  # counted just after the acknowledgement quiesce waits for
            await eventually(lambda: to_r2.anti_entropy_runs >= 1, what="anti-entropy r1 -> r2")
            assert to_r2.buckets_shipped >= 1  # it carried the state of the trimmed deltas
            await metrics.refresh()
            scraped = {(s.name, tuple(s.labels.values())): s.value
                       for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())
                       for s in f.samples}
            assert scraped[("worldstate_anti_entropy_runs_total", ("r2",))] == to_r2.anti_entropy_runs
            assert scraped[("worldstate_anti_entropy_buckets_shipped_total", ("r2",))] == to_r2.buckets_shipped
            assert scraped[("worldstate_replica_stream_entries", ())] == 0  # trimmed, nothing written since
            assert state(fresh, "r1") == state(fresh, "r2")
            e = await reps["r2"].home.get_entity("w", "ent0")
            assert e is not None and e.counters == {"cam": 1, "lidar": 1}
            # writes after anti-entropy still flow through the stream
            await r1.ingest([ob("late", "c1", x=1.0)])
            await quiesce(reps)
            assert await reps["r2"].home.get_entity("w", "late") is not None

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_S))


def test_replication_survives_a_peer_redis_restart(fresh: Deployment) -> None:
    async def scenario() -> None:
        async with replication(fresh, ["r1", "r2"]) as reps:
            await reps["r1"].home.ingest([ob("a", "x1", v=1)])
            await quiesce(reps)
            server = server_of(fresh, "r2", "w", "a")  # the Redis, or the cluster master holding `a`
            await asyncio.to_thread(server.stop)
            for i in range(20):
                await reps["r1"].home.ingest([ob("a", f"y{i}", v=i)])
            # the lag becomes visible while the peer is away (polled: noticing takes a failed ship)
            await eventually(lambda: "r2" in reps["r1"].behind(), what="r1 reporting r2 behind")
            assert not at_least(await reps["r1"].home.acked("r2"), await reps["r1"].home.last_ids())
            await asyncio.to_thread(server.start)
            await asyncio.to_thread(back, fresh, "r2")
            await quiesce(reps)
            assert state(fresh, "r1") == state(fresh, "r2")
            # the status is refreshed just after the acknowledgement quiesce waits for
            await eventually(lambda: reps["r1"].behind() == [], what="r1 reporting nobody behind")

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_S))


def test_any_delivery_order_with_duplicates_converges(fresh: Deployment) -> None:
    """Deltas delivered shuffled and repeated, straight through the apply script, converge exactly."""
    rng = random.Random(11)

    async def scenario() -> None:
        stores = {r: ReplicaStore(url(fresh, r), r, f"node-{r}") for r in ("r1", "r2", "r3")}
        events: dict[str, str] = {}  # event id -> source
        for i in range(60):
            # a quarter of the events are posted to two regions, as a retrying client might
            event = f"ev{i}"
            source = rng.choice(["cam", "imu"])
            events[event] = source
            for region in rng.sample(sorted(stores), 2 if i % 4 == 0 else 1):
                o = ob(f"ent{rng.randrange(4)}" if i % 4 else "shared", event, source, v=rng.random(), i=i)
                await stores[region].ingest([o])
        delivered = {r: 0 for r in stores}
        while True:  # compensations are new deltas: deliver until no stream grows
            lengths = {r: stream_len(fresh, r) for r in stores}
            if lengths == delivered:
                break
            delivered = lengths
            for origin in stores:
                streams = await stores[origin].read_partitions({}, 100_000)
                entries = [(p, e) for p, listed in sorted(streams.items()) for e in listed]
                for target in stores:
                    if target == origin:
                        continue
                    shuffled = entries + rng.sample(entries, len(entries) // 2)  # with duplicates
                    rng.shuffle(shuffled)
                    for k in range(0, len(shuffled), 7):
                        grouped: dict[int, list[StreamEntry]] = {}
                        for p, e in shuffled[k:k + 7]:
                            grouped.setdefault(p, []).append(e)
                        await stores[target].apply_remote(origin, grouped)
        states = [state(fresh, r) for r in sorted(stores)]
        assert states[0] == states[1] == states[2]
        for entity in {k.decode().split(":")[-1] for k in states[0]}:
            e = await stores["r1"].get_entity("w", entity)
            assert e is not None
        totals: dict[str, int] = {}
        for k in states[0]:
            e = await stores["r1"].get_entity("w", k.decode().split(":")[-1])
            assert e is not None
            for source, n in e.counters.items():
                totals[source] = totals.get(source, 0) + n
        expected = {s: sum(1 for v in events.values() if v == s) for s in set(events.values())}
        assert totals == expected  # each distinct event counted once, wherever it was posted
        for s in stores.values():
            await s.close()

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_S))
