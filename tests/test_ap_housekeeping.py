"""Housekeeping of a replica (`Replicator.housekeep`) on real Redis: each partition's stream is
trimmed of what every peer applied, and capped regardless (a peer whose offset was trimmed away is
repaired by anti-entropy); event ids older than the dedup window, or beyond its cap (each partition
keeps its share of dedup_max), are forgotten.

Event ids are remembered in one list per wall-clock minute (consistency/lua/common.lua),
so the window acts in whole minutes. Rather than wait minutes, these tests drive the clock
the store stamps those lists with and expires them by (`wall_clock_ms` of consistency.ap_store
and consistency.ap_logs, through the `dedup_clock` fixture): it starts 10 s into the current minute and only
moves when a test says so. Node HLCs keep the real clock; only the dedup minutes move.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

import consistency.ap_logs as ap_logs
import consistency.ap_store as ap_store
from consistency import ap_keys as K
from consistency.ap_positions import ZERO, Vector, merged, stream_id
from consistency.ap_store import ALL
from consistency.hlc import wall_clock_ms
from deploy.launcher import Deployment
from jepsen_like.proxy import RESET
from tests.ap_helpers import (SCENARIO_S, cut, eventually, failed_across, fresh, heal, ob, quiesce, replicas,  # noqa: F401 (fixtures)
                              replication, shipped, state, stream_len)
from tests.ap_helpers import SEEN_KEYS, masters, raw

MINUTE_MS = 60_000


class DedupClock:
    """The clock of the dedup lists, moved by hand: `now` in ms."""

    def __init__(self, start_ms: int) -> None:
        self.now = start_ms

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1000)

    @property
    def minute(self) -> int:
        return self.now // MINUTE_MS


@pytest.fixture
def dedup_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[DedupClock]:
    clock = DedupClock((wall_clock_ms() // MINUTE_MS) * MINUTE_MS + 10_000)  # 10 s into this minute
    monkeypatch.setattr(ap_store, "wall_clock_ms", clock)
    monkeypatch.setattr(ap_logs, "wall_clock_ms", clock)
    yield clock


def _remembered(d: Deployment, region: str) -> set[str]:
    """Every event id the replica's dedup records hold, over all entities (and masters)."""
    return {ev for r in masters(d, region, decode_responses=True)
            for k in r.scan_iter(match=SEEN_KEYS, count=1000) for ev in r.hkeys(k)}


def _dedup_minutes(d: Deployment, region: str) -> list[int]:
    r = raw(d, region, decode_responses=True)
    return sorted({int(m) for p in ALL for m in r.zrange(K.dedup_minutes(p), 0, -1)})


def _moved(v: Vector) -> Vector:
    return {p: sid for p, sid in v.items() if sid != ZERO}


# -- the stream ------------------------------------------------------------------------


def test_housekeeping_trims_what_every_peer_applied_and_not_before(fresh: Deployment) -> None:
    async def scenario() -> None:
        async with replication(fresh) as reps:
            r1 = reps["r1"]
            cut(reps, "r1", "r3")
            a: Vector = {}  # per partition, the last `a` delta
            for i in range(20):
                a = merged(a, (await r1.home.ingest([ob(f"a{i}", f"a{i}", x=i)])).positions)
            await eventually(lambda: shipped(r1, ["r2"]), what="r1 -> r2")
            await r1.housekeep()  # r3 has acknowledged nothing: nothing may go
            assert stream_len(fresh, "r1") == 20 and _moved(await r1.home.trimmed()) == {}

            heal(reps)
            await quiesce(reps)
            cut(reps, "r1", "r3")
            b: list[Vector] = [(await r1.home.ingest([ob(f"b{i}", f"b{i}", x=i)])).positions for i in range(15)]
            await eventually(lambda: shipped(r1, ["r2"]), what="r1 -> r2")
            assert _moved(await r1.home.acked("r3")) == a
            await r1.housekeep()  # r2 applied everything, r3 only `a`: exactly `a` goes, partition by partition
            assert stream_len(fresh, "r1") == 15
            assert _moved(await r1.home.trimmed()) == a
            left = await r1.home.read_partitions({}, 100)
            assert {(p, i) for p, listed in left.items() for i, _ in listed} == {(p, i) for v in b for p, i in v.items()}

            heal(reps)
            await quiesce(reps)
            await r1.housekeep()  # everyone has everything
            last_b: Vector = {}
            for v in b:
                last_b = merged(last_b, v)
            assert stream_len(fresh, "r1") == 0 and _moved(await r1.home.trimmed()) == merged(a, last_b)
            # r3 caught up from the stream alone: what it lacked had not been trimmed
            assert all(s.status.anti_entropy_runs == 0 for rep in reps.values() for s in rep.shippers.values())
            assert state(fresh, "r1") == state(fresh, "r2") == state(fresh, "r3")
            assert len(state(fresh, "r3")) == 35

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_S))


def test_the_stream_cap_trims_regardless_and_anti_entropy_repairs_the_peer(fresh: Deployment) -> None:
    """stream_maxlen (the store's cap per partition; a node gives it its share of
    WORLDSTATE_STREAM_MAXLEN) trims even what a cut-off peer never applied; that peer's offset is
    then gone from the partition's stream and the shipper repairs the partition with anti-entropy.
    The peer that kept up needs no repair. One entity, so every write lands in one partition and
    its cap."""
    cap = 10
    part = K.partition("w", "e")

    async def scenario() -> None:
        async with replication(fresh, stream_maxlen=cap) as reps:
            r1 = reps["r1"]
            ids = [(await r1.home.ingest([ob("e", f"ev{i}", x=i)])).last_id for i in range(5)]
            await quiesce(reps)
            # RESET, not a blackhole: commands held by a blackhole are delivered after the heal
            # and could carry the trimmed deltas to r2, so the repair would not be anti-entropy's.
            cut(reps, "r1", "r2", RESET)
            ids += [(await r1.home.ingest([ob("e", f"ev{i}", x=i)])).last_id for i in range(5, 30)]
            await eventually(lambda: shipped(r1, ["r3"]), what="r1 -> r3")
            assert (await r1.home.acked("r2"))[part] == ids[4]
            await r1.housekeep()
            assert stream_len(fresh, "r1") == cap  # not 25: the cap trims past r2's offset
            assert (await r1.home.trimmed())[part] == ids[-cap - 1]
            assert stream_id((await r1.home.acked("r2"))[part]) < stream_id((await r1.home.trimmed())[part])
            seen = await reps["r2"].home.get_entity("w", "e")
            assert seen is not None and seen.counters == {"cam": 5}  # nothing crossed the cut
            await failed_across(reps, ("r1", "r2"))  # and nothing shipped in it arrives after it
            heal(reps)
            await quiesce(reps)
            to_r2, to_r3 = r1.shippers["r2"].status, r1.shippers["r3"].status
            # counted just after the acknowledgement quiesce waits for
            await eventually(lambda: to_r2.anti_entropy_runs >= 1, what="anti-entropy r1 -> r2")
            assert to_r2.buckets_shipped == 1  # the one bucket of the one entity
            assert to_r3.anti_entropy_runs == 0
            assert state(fresh, "r1") == state(fresh, "r2") == state(fresh, "r3")
            e = await reps["r2"].home.get_entity("w", "e")  # no acknowledged write lost, none counted twice
            assert e is not None and e.counters == {"cam": 30} and e.fields["x"].value == 29
            # and the stream carries what comes next, from the offset anti-entropy left
            late = await r1.home.ingest([ob("e", "late-1", x=-1)])
            await quiesce(reps)
            e = await reps["r2"].home.get_entity("w", "e")
            assert e is not None and e.fields["x"].value == -1
            assert (await r1.home.acked("r2"))[part] == late.last_id

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_S))


# -- the dedup window --------------------------------------------------------------------


def test_event_ids_older_than_the_window_are_forgotten(fresh: Deployment, dedup_clock: DedupClock) -> None:
    """A window of 2 minutes: an id is a duplicate, on every region, while younger than the
    window; once its minute is older than the window, housekeeping forgets it on every
    region and a replay is accepted (and counted) again."""
    window_s = 120

    async def scenario() -> None:
        async with replication(fresh, ["r1", "r2"], dedup_window_s=window_s) as reps:
            r1 = reps["r1"].home
            first_minute = dedup_clock.minute
            assert (await r1.ingest([ob("a", "old", v=1)])).accepted == [True]
            await quiesce(reps)  # r2 remembers it too, from the delta
            dedup_clock.advance(80)  # 'old' is 80 s old
            assert (await r1.ingest([ob("a", "mid", v=2)])).accepted == [True]
            await quiesce(reps)
            for rep in reps.values():
                await rep.housekeep()
            for region in ("r1", "r2"):
                assert _remembered(fresh, region) == {"old", "mid"}  # both within the window
            for region in ("r1", "r2"):  # a replay anywhere is a duplicate
                assert (await reps[region].home.ingest([ob("a", "old", v=9)])).accepted == [False]

            dedup_clock.advance(100)  # 'old' is 180 s old (window + a whole minute), 'mid' 100 s
            for rep in reps.values():
                await rep.housekeep()
            for region in ("r1", "r2"):
                assert _remembered(fresh, region) == {"mid"}
                assert first_minute not in _dedup_minutes(fresh, region)
            assert (await reps["r2"].home.ingest([ob("a", "mid", v=9)])).accepted == [False]
            assert (await r1.ingest([ob("a", "old", v=3)])).accepted == [True]  # counted again, as documented
            await quiesce(reps)
            for region in ("r1", "r2"):
                e = await reps[region].home.get_entity("w", "a")
                assert e is not None and e.counters == {"cam": 3} and e.fields["v"].value == 3

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_S))


def test_the_dedup_cap_forgets_the_oldest_minutes_first(fresh: Deployment, dedup_clock: DedupClock) -> None:
    """dedup_max 5 per partition (5 x 64 in all) and a day's window: 9 ids of one entity (one
    partition) over three minutes are over its share, so housekeeping forgets whole minutes,
    oldest first, until at most 5 remain."""
    async def scenario() -> None:
        async with replication(fresh, ["r1"], dedup_window_s=86400, dedup_max=5 * K.PARTITIONS) as reps:
            r1 = reps["r1"].home
            minutes: list[list[str]] = []
            for m in range(3):
                events = [f"m{m}-{i}" for i in range(3)]
                assert (await r1.ingest([ob("e", ev, v=m) for ev in events])).accepted == [True] * 3
                minutes.append(events)
                dedup_clock.advance(60)
            last_minute = dedup_clock.minute - 1
            await reps["r1"].housekeep()
            remembered = _remembered(fresh, "r1")
            assert len(remembered) <= 5  # the cap holds
            assert remembered == set(minutes[2]) and _dedup_minutes(fresh, "r1") == [last_minute]
            assert (await r1.ingest([ob("e", ev, v=0) for ev in minutes[2]])).accepted == [False] * 3
            assert (await r1.ingest([ob("e", ev, v=0) for ev in minutes[0] + minutes[1]])).accepted == [True] * 6

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_S))
