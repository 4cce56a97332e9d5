"""Entity subscriptions over SSE, on a two-region deployment of their own (a short heartbeat,
a small changes log and a small allowed lag, so trimming and slow consumers happen at test
sizes): local and peer changes, filters, resume without gap or duplicate, trimmed and slow
subscribers told so, bad positions refused, heartbeats, a revoked key cutting the stream."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from consistency import ap_keys as K
from consistency.ap_positions import parse_vector
from consistency.ap_store import ReplicaStore
from deploy.launcher import Deployment, Topology
from service.subscriptions import _Tail
from tests.ap_helpers import SETTLE_S
from tests.conftest import auth_headers

MAX_LAG = 200
# Each partition's changes log keeps at least this many (XADD MAXLEN ~, trimmed in whole nodes of 100
# entries); WORLDSTATE_CHANGES_MAXLEN is the replica's cap, shared by the partitions.
CHANGES_MAXLEN = 2000


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    env = {"WORLDSTATE_SSE_HEARTBEAT_S": "0.3", "WORLDSTATE_SUBSCRIBE_MAX_LAG": str(MAX_LAG),
           "WORLDSTATE_CHANGES_MAXLEN": str(CHANGES_MAXLEN * K.PARTITIONS), "WORLDSTATE_DEVICE": "cpu"}
    with Deployment(Topology(etcd_members=1, regions=2, run_dir=tmp_path_factory.mktemp("stream"),
                             api_env=env)) as dep:
        yield dep


@pytest.fixture
def c1(d: Deployment) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=d.api["r1"].url, headers=auth_headers(d), timeout=30) as c:
        yield c


@pytest.fixture
def c2(d: Deployment) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=d.api["r2"].url, headers=auth_headers(d), timeout=30) as c:
        yield c


@pytest.fixture
def w(c1: httpx.Client, world: str) -> str:
    assert c1.put(f"/v1/worlds/{world}", json={}).status_code in (200, 201)
    return world


class Sse:
    """An open event stream, read as events ({"id", "event", "data"}), comments kept apart."""

    def __init__(self, response: httpx.Response) -> None:
        assert response.status_code == 200, response.read()
        self.lines = response.iter_lines()
        self.comments: list[str] = []
        self.ended = False

    def next(self, timeout: float = SETTLE_S) -> dict[str, Any] | None:
        """The next event, or None when the stream ended; heartbeats keep the lines coming, so
        the deadline is checked even on a quiet stream."""
        deadline = time.monotonic() + timeout
        event: dict[str, Any] = {}
        for line in self.lines:
            if line.startswith(":"):
                self.comments.append(line)
            elif line.startswith("id: "):
                event["id"] = line[4:]
            elif line.startswith("event: "):
                event["event"] = line[7:]
            elif line.startswith("data: "):
                event["data"] = json.loads(line[6:])
            elif line == "" and event:
                return event
            assert time.monotonic() < deadline, f"no event within {timeout} s; so far {event} {self.comments[-3:]}"
        self.ended = True
        return None

    def take(self, n: int) -> list[dict[str, Any]]:
        out = [self.next() for _ in range(n)]
        assert all(e is not None and e["event"] == "change" for e in out), out
        return out  # type: ignore[return-value]

    def subscribed(self) -> str:
        """The position the stream started after (its first line)."""
        first = next(self.lines)
        assert first.startswith(": subscribed after "), first
        return first.removeprefix(": subscribed after ")


def _stream(c: httpx.Client, world: str, **kw: Any):  # type: ignore[no-untyped-def]
    return c.stream("GET", f"/v1/worlds/{world}/entities/stream", **kw)


def _post(c: httpx.Client, world: str, entity: str, event: str, **fields: object) -> None:
    r = c.post(f"/v1/worlds/{world}/observations",
               json={"event_id": event, "entity": entity, "source": "cam", "fields": fields})
    assert r.status_code == 202 and r.json()["accepted"] == 1, r.text


def test_local_and_peer_changes_arrive_filtered(c1: httpx.Client, c2: httpx.Client, w: str) -> None:
    with _stream(c1, w, params={"prefix": "bot-"}) as r, _stream(c1, w, params={"entity": "bot-2"}) as r2:
        by_prefix, by_entity = Sse(r), Sse(r2)
        by_prefix.subscribed(), by_entity.subscribed()
        _post(c1, w, "bot-1", "e1", x=1.0)
        _post(c1, w, "other", "e2", x=1.0)  # matches neither filter
        _post(c2, w, "bot-2", "e3", z=2.5)  # written on the peer region, applied here by replication
        got = by_prefix.take(2)
        assert c1.delete(f"/v1/worlds/{w}/entities/bot-1").status_code == 202
        got += by_prefix.take(1)
        assert [(e["data"]["entity"], e["data"]["fields"], e["data"]["origin"]) for e in got[:2]] in (
            [("bot-1", {"x": 1.0}, "r1"), ("bot-2", {"z": 2.5}, "r2")],
            [("bot-2", {"z": 2.5}, "r2"), ("bot-1", {"x": 1.0}, "r1")])
        assert all(e["data"]["deleted"] is False for e in got[:2])
        assert (got[2]["data"]["entity"], got[2]["data"]["fields"], got[2]["data"]["deleted"]) == ("bot-1", {}, True)
        only = by_entity.take(1)
        # an entity's subscription reads its partition alone: its position is the world's in that partition
        part = K.partition(w, "bot-2")
        in_world = parse_vector(got[[e["data"]["entity"] for e in got].index("bot-2")]["id"])
        assert only[0]["data"]["entity"] == "bot-2" and parse_vector(only[0]["id"]) == {part: in_world[part]}
        _post(c1, w, "bot-2", "e4", z=3.0)  # the entity stream's next event is this, nothing from bot-1
        assert by_entity.take(1)[0]["data"]["fields"] == {"z": 3.0}


def test_resume_with_last_event_id_has_no_gap_and_no_duplicate(c1: httpx.Client, c2: httpx.Client, w: str) -> None:
    with _stream(c1, w) as full_r, _stream(c1, w) as part_r:
        full, part = Sse(full_r), Sse(part_r)
        full.subscribed(), part.subscribed()
        for i in range(12):
            _post(c1 if i % 3 else c2, w, f"e{i % 4}", f"ev{i}", i=i)
        everything = full.take(12)
        first = part.take(5)
    with _stream(c1, w, headers={"Last-Event-ID": first[-1]["id"]}) as r:
        rest = Sse(r)
        assert rest.subscribed() == first[-1]["id"]
        after = rest.take(7)
        # The same events and data; each entity's in the same order. Entities of different partitions
        # have no order between them (nor the same ids: a position names every partition).
        def by_entity(events: list[dict[str, Any]]) -> dict[str, list[Any]]:
            out: dict[str, list[Any]] = {}
            for e in events:
                out.setdefault(e["data"]["entity"], []).append(e["data"])
            return out

        assert by_entity(first + after) == by_entity(everything)
        _post(c1, w, "sentinel", "ev-last", s=1)
        nxt = rest.next()
        assert nxt is not None and nxt["data"]["entity"] == "sentinel"  # nothing between: no duplicate


def test_resume_after_a_trimmed_position_ends_with_an_error_event(c1: httpx.Client, w: str) -> None:
    with _stream(c1, w) as r:
        s = Sse(r)
        s.subscribed()
        _post(c1, w, "a", "e1", x=1.0)
        seen = s.take(1)[0]["id"]
    for n in range(3):  # more than the log keeps after `seen`
        # all on `a`: its partition's log is the one that must be trimmed past `seen`
        batch = [{"event_id": f"b{n}-{i}", "entity": "a", "source": "cam", "fields": {"x": i}} for i in range(1000)]
        assert c1.post(f"/v1/worlds/{w}/observations", json=batch).status_code == 202
    with _stream(c1, w, params={"after": seen}) as r:
        s = Sse(r)
        s.subscribed()
        err = s.next()
        assert err is not None and err["event"] == "error", err
        assert err["data"]["type"] == "/problems/changes-trimmed" and err["data"]["after"] == seen
        assert s.next() is None  # and the stream ends


def test_a_subscriber_too_far_behind_is_told_and_closed(c1: httpx.Client, w: str) -> None:
    with _stream(c1, w) as r:
        s = Sse(r)
        position = s.subscribed()
        # One script call appends 1000 changes at once (one entity: one partition, one call): the
        # subscriber's next read is 2 of them (a world's 64 partitions share 100 a round), leaving it
        # 998 behind, more than MAX_LAG (and none trimmed: the log keeps 2000). On a busy machine the
        # batch can land before the server's first read of the logs: the subscription then starts that
        # far behind, and its count of how far stops at MAX_LAG + 1.
        batch = [{"event_id": f"b{i}", "entity": "b", "source": "cam", "fields": {"x": float(i)}} for i in range(1000)]
        assert c1.post(f"/v1/worlds/{w}/observations", json=batch).status_code == 202
        slow = s.next()
        assert slow is not None and slow["event"] == "slow-consumer", slow
        assert slow["data"]["type"] == "/problems/slow-consumer" and slow["data"]["max_lag"] == MAX_LAG
        assert slow["data"]["lag"] in (1000, MAX_LAG + 1) and slow["data"]["position"] == position
        assert s.next() is None


def test_bad_subscriptions_are_refused(c1: httpx.Client, w: str) -> None:
    for position in ("nonsense", "1-2-3", "-1-0", "99999999999999999999-0", "18446744073709551616-0",
                     "9999999999999-0",  # the unpartitioned form of older versions
                     "v2.64-1-0", "v2.3-1-0.2-1-0", "v2.0-18446744073709551616-0",
                     "v2.0-9999999999999-0"):  # the last: well formed, but past anything this replica issued
        with _stream(c1, w, headers={"Last-Event-ID": position}) as r:
            r.read()
            assert r.status_code == 422, (position, r.text)
            assert r.json()["type"] == "/problems/validation-error"
    for params, status, kind in (({"entity": "b@d"}, 400, "invalid-key"), ({"prefix": "a b"}, 422, "validation-error")):
        with _stream(c1, w, params=params) as r:
            r.read()
            assert (r.status_code, r.json()["type"]) == (status, f"/problems/{kind}"), r.text
    with _stream(c1, "no-such-world-13") as r:
        r.read()
        assert r.status_code == 404 and r.json()["type"] == "/problems/unknown-world"


def test_a_quiet_stream_gets_heartbeats(c1: httpx.Client, w: str) -> None:
    with _stream(c1, w) as r:
        s = Sse(r)
        s.subscribed()
        for line in s.lines:
            if line == ": heartbeat":
                break
        _post(c1, w, "late", "e1", x=1.0)
        assert s.take(1)[0]["data"]["entity"] == "late"  # still delivering after heartbeats


def _script_calls(d: Deployment) -> int:
    """Script calls r1's Redis has run (every read of a changes log is one, per partition)."""
    stats = redis.Redis(port=d.redis["r1"].port).info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))


def _progress(s: Sse) -> str:
    for line in s.lines:
        if line.startswith(": progress "):
            return line.removeprefix(": progress ")
    raise AssertionError("the stream ended")


def test_idle_subscribers_say_their_progress_without_reading_the_logs(d: Deployment, c1: httpx.Client,
                                                                      w: str) -> None:
    """Three world subscriptions asking for progress every 0.1 s: while nothing is written, the node's
    one tail watches the logs for them all, rather than each reading its 64 partitions ten times a
    second (1,920 script calls a second for three); what is written next still reaches each."""
    window_s = 3.0

    def calls_per_s() -> float:
        before = _script_calls(d)
        time.sleep(window_s)
        return (_script_calls(d) - before) / window_s

    alone = calls_per_s()
    with _stream(c1, w, params={"progress_s": 0.1}) as a, _stream(c1, w, params={"progress_s": 0.1}) as b, \
            _stream(c1, w, params={"progress_s": 0.1}) as c:
        subs = [Sse(r) for r in (a, b, c)]
        for s in subs:
            s.subscribed()
            _progress(s)
        idle = calls_per_s()
        for s in subs:
            _progress(s)  # still saying it, after the window's backlog of comments
        _post(c1, w, "after-idle", "e1", x=1.0)
        for s in subs:
            assert s.take(1)[0]["data"]["entity"] == "after-idle"
    # The tail's own look is 64 calls each time the logs move or its 0.5 s block ends: 128 a second.
    assert idle - alone < 400, (idle, alone)


def test_waiters_cancelled_twice_leave_the_tail_waking_the_others(d: Deployment, c1: httpx.Client, w: str) -> None:
    """A closed stream's task is cancelled until it leaves its scope (anyio), so a subscriber waiting for
    the node's tail can be cancelled again while it is being cancelled. When the tail was a Condition,
    one such waiter could leave its lock taken for good, and every subscription of the node stalled."""
    stop = threading.Event()

    def writes() -> None:  # the tail wakes (and, as a Condition, took its lock) at each one
        i = 0
        while not stop.is_set():
            _post(c1, w, "busy", f"busy-{i}", x=float(i))
            i += 1

    async def scenario() -> bool:
        store = ReplicaStore(d.redis["r1"].url, "r1", "tail-test")
        tail = _Tail(store)
        heads = {p: s.last_id for p, s in (await store.changes_heads()).items()}
        later = {p: "9999999999999-0" for p in heads}  # past anything: nothing wakes these but a cancel
        for i in range(100):
            waiting = [asyncio.create_task(tail.wait(later, 30)) for _ in range(5)]
            await asyncio.sleep(0.002 * (i % 7))
            for _ in range(3):  # as anyio does, once a loop turn until they are gone
                for t in waiting:
                    t.cancel()
                await asyncio.sleep(0)
            await asyncio.gather(*waiting, return_exceptions=True)
        stop.set()
        await asyncio.sleep(0.2)
        heads = {p: s.last_id for p, s in (await store.changes_heads()).items()}
        waiter = asyncio.create_task(tail.wait(heads, 30))
        await asyncio.sleep(0.1)
        await asyncio.to_thread(_post, c1, w, "after", "after-1", x=1.0)
        woke = await asyncio.wait_for(waiter, 20)
        await store.close()
        return woke

    # In threads: a waiter stuck re-taking a lost lock ignores every cancel, so it would hang the test
    # rather than fail it.
    writer = threading.Thread(target=writes, daemon=True)
    writer.start()
    ended: list[bool] = []
    runner = threading.Thread(target=lambda: ended.append(asyncio.run(scenario())), daemon=True)
    runner.start()
    runner.join(120)
    stop.set()
    writer.join(30)
    assert ended == [True], "a waiter never ended, or the tail never woke the next one"


def test_a_revoked_key_ends_the_stream(d: Deployment, c1: httpx.Client, w: str) -> None:
    made = c1.post("/v1/keys", json={"name": "sub", "scopes": ["read"], "worlds": [w]})
    assert made.status_code == 201, made.text
    with httpx.stream("GET", f"{d.api['r1'].url}/v1/worlds/{w}/entities/stream", timeout=30,
                      headers={"Authorization": f"Bearer {made.json()['token']}"}) as r:
        s = Sse(r)
        s.subscribed()
        assert c1.delete(f"/v1/keys/{made.json()['id']}").status_code == 200
        end = s.next()
        assert end is not None and end["event"] == "error" and end["data"]["type"] == "/problems/unauthorized"
        assert s.next() is None
