"""The AP tier through the HTTP API: two regions, each with its API node and its replica.

Writes, reads, tokens, listing and refusals run on both layouts of a region's replica (one Redis,
and a Redis Cluster of 3 masters: docs/ap-cluster.md); the tests that stop a region's Redis or
etcd run on the session's one-Redis deployment (the cluster's own faults: tests/test_ap_failover.py,
test_ap_replication.py, test_jepsen_shards.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from consistency import ap_keys as K
from consistency.ap_store import ALL
from deploy.launcher import Deployment, Topology, wait_until
from service.config import Settings
from tests.ap_helpers import LAYOUTS, SETTLE_S, SHARDS, raw
from tests.conftest import auth_headers
from tests.test_entity_stream import Sse

# The conftest cluster leaves WORLDSTATE_READ_WAIT_S at its default: the most a read waits for its token.
READ_WAIT_S = Settings().read_wait_s


@pytest.fixture(scope="module", params=LAYOUTS)
def ap_deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Two regions with an API node each: the session's deployment (one Redis a region), or one whose
    regions are each a Redis Cluster of SHARDS masters, started once for this module."""
    if request.param == "single":
        yield request.getfixturevalue("cluster")
        return
    with Deployment(Topology(etcd_members=1, regions=2, ap_shards=SHARDS, api_env={"WORLDSTATE_DEVICE": "cpu"},
                             run_dir=tmp_path_factory.mktemp("ap-api-cluster"))) as d:
        yield d


ONE_REDIS = pytest.mark.parametrize("ap_deployment", ["single"], indirect=True)


@pytest.fixture
def api(ap_deployment: Deployment) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ap_deployment.api["r1"].url, timeout=30, headers=auth_headers(ap_deployment)) as c:
        yield c


@pytest.fixture
def api2(ap_deployment: Deployment) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ap_deployment.api["r2"].url, timeout=30, headers=auth_headers(ap_deployment)) as c:
        yield c


@pytest.fixture
def ap_world(api: httpx.Client, world: str) -> str:
    assert api.put(f"/v1/worlds/{world}", json={"description": "AP test"}).status_code == 200
    return world


def _stream_last_id(d: Deployment, region: str) -> dict[int, str]:
    """The last id each partition's stream ever took: it moves with every entry added and, unlike
    the stream's length, not when housekeeping trims what every peer has applied (seen under load)."""
    r = raw(d, region)  # on a cluster, each partition's key asked of its master
    return {p: r.xinfo_stream(K.stream(p))["last-generated-id"].decode() for p in ALL if r.exists(K.stream(p))}


def _read_with_token(client: httpx.Client, url: str, token: str) -> httpx.Response:
    """A read given a causal token, retried on 504 not-yet-consistent as that problem tells a
    client to: a replica may take longer than one read's wait (READ_WAIT_S) to apply the write
    on a loaded machine, but whatever it does answer must already reflect the write."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        r = client.get(url, params={"token": token})
        if r.status_code != 504 or time.monotonic() > deadline:
            return r
        assert r.json()["type"] == "/problems/not-yet-consistent", r.text


def test_post_batch_reports_duplicates_and_reads_merge(api: httpx.Client, ap_world: str) -> None:
    batch = [
        {"event_id": "e1", "entity": "ball", "source": "cam1", "fields": {"x": 1.0, "y": 2.0, "label": "red"}},
        {"event_id": "e2", "entity": "ball", "source": "cam2", "fields": {"x": 1.5}},
        {"event_id": "e1", "entity": "ball", "source": "cam1", "fields": {"x": 9.0}},  # same batch duplicate
    ]
    r = api.post(f"/v1/worlds/{ap_world}/observations", json=batch)
    assert r.status_code == 202, r.text
    body = r.json()
    assert (body["accepted"], body["duplicate"], body["replica"]) == (2, 1, "r1")
    assert body["duplicates"] == ["e1"]
    assert body["token"].startswith("r1:")

    again = api.post(f"/v1/worlds/{ap_world}/observations", json=batch[0])
    assert again.status_code == 202 and again.json()["duplicate"] == 1

    e = api.get(f"/v1/worlds/{ap_world}/entities/ball").json()
    assert e["fields"]["x"]["value"] == 1.5 and e["fields"]["x"]["source"] == "cam2"
    assert e["fields"]["label"]["value"] == "red"
    assert e["counters"]["observations"] == {"by_source": {"cam1": 1, "cam2": 1}, "total": 2}
    assert e["replica"] == "r1" and "r1" in e["watermark"] and isinstance(e["behind"], list)
    assert e["fields"]["x"]["hlc"] > e["fields"]["y"]["hlc"]


def test_subscriptions_deliver_local_and_peer_changes_and_resume(api: httpx.Client, api2: httpx.Client,
                                                                  ap_world: str) -> None:
    """The entity stream reads the changes logs partition by partition: on a cluster, of every master."""
    url = f"/v1/worlds/{ap_world}/entities/stream"
    entities = [f"sub-{i}" for i in range(8)]  # several partitions: on a cluster, several masters
    with api.stream("GET", url, params={"prefix": "sub-"}) as r:
        stream = Sse(r)
        for i, e in enumerate(entities):
            writer = api if i % 2 else api2  # half written at r1, half shipped from r2
            assert writer.post(f"/v1/worlds/{ap_world}/observations",
                               json={"event_id": f"s{i}", "entity": e, "source": "cam",
                                     "fields": {"x": float(i)}}).status_code == 202
        got = stream.take(len(entities))
    assert sorted(c["data"]["entity"] for c in got) == entities
    assert {c["data"]["origin"] for c in got} == {"r1", "r2"}
    # Resumed after the fourth: exactly the four after it (entities of different partitions have no
    # order between them), then the next write and nothing before it.
    with api.stream("GET", url, params={"prefix": "sub-"}, headers={"Last-Event-ID": got[3]["id"]}) as r:
        stream = Sse(r)
        rest = stream.take(4)
        assert sorted(c["data"]["entity"] for c in rest) == sorted(c["data"]["entity"] for c in got[4:])
        assert api.post(f"/v1/worlds/{ap_world}/observations",
                        json={"event_id": "s-last", "entity": "sub-0", "source": "cam",
                              "fields": {"x": -1.0}}).status_code == 202
        last = stream.take(1)[0]["data"]
        assert (last["entity"], last["fields"]) == ("sub-0", {"x": -1.0})


def test_read_your_writes_on_another_region(api: httpx.Client, api2: httpx.Client, ap_world: str) -> None:
    for i in range(10):
        w = api.post(f"/v1/worlds/{ap_world}/observations",
                     json={"event_id": f"ryw-{i}", "entity": "arm", "source": "enc", "fields": {"angle": i}})
        r = _read_with_token(api2, f"/v1/worlds/{ap_world}/entities/arm", w.json()["token"])
        assert r.status_code == 200, r.text
        assert r.json()["fields"]["angle"]["value"] == i  # never an older state
        assert r.json()["replica"] == "r2"


def test_causal_token_errors(api2: httpx.Client, ap_world: str) -> None:
    url = f"/v1/worlds/{ap_world}/entities/arm"
    bad = api2.get(url, params={"token": "not a token"})
    assert bad.status_code == 400 and bad.json()["type"] == "/problems/invalid-token"
    old = api2.get(url, params={"token": "r1:1732170000000-0"})  # the unpartitioned form of older versions
    assert old.status_code == 400 and old.json()["type"] == "/problems/invalid-token"
    assert "older version" in old.json()["detail"]
    for broken in ("r1:v2.64-1-0", "r1:v2.7-1-0.3-1-0", "r1:v2.7-1-0.7-2-0", "r1:v2.x"):  # no such partition,
        got = api2.get(url, params={"token": broken})  # out of order, twice, not a position
        assert got.status_code == 400 and got.json()["type"] == "/problems/invalid-token", (broken, got.text)
    unknown = api2.get(url, params={"token": "r9:v2.0-1-0"})
    assert unknown.status_code == 409 and unknown.json()["type"] == "/problems/token-unknown"
    # A token this replica can never reach: the read waits as long as it was told, then 504.
    # What the node waited is in its answer; the wall clock only gives a lower bound, which
    # no load can break (an upper bound would be a guess at how slow the machine is).
    for asked_ms, waits_s in ((300, 0.3), (60_000, READ_WAIT_S)):  # 60 s is capped by the node
        t0 = time.monotonic()
        future = api2.get(url, params={"token": "r1:v2.0-99999999999999-0", "wait_ms": asked_ms})
        waited = time.monotonic() - t0
        assert future.status_code == 504 and future.json()["type"] == "/problems/not-yet-consistent"
        assert future.json()["detail"].endswith(f"after {waits_s:.1f}s"), future.text
        assert waited >= waits_s


def test_entities_are_listed_in_pages(api: httpx.Client, ap_world: str) -> None:
    obs = [{"event_id": f"p{i}", "entity": f"body{i:02d}", "source": "sim", "fields": {"i": i}} for i in range(12)]
    api.post(f"/v1/worlds/{ap_world}/observations", json=obs)
    seen, after = [], None
    while True:
        params = {"limit": 5, **({"after": after} if after else {})}
        page = api.get(f"/v1/worlds/{ap_world}/entities", params=params).json()
        seen += [e["entity"] for e in page["items"]]
        if not page["next"]:
            break
        after = page["next"]["after"]
    assert seen == [f"body{i:02d}" for i in range(12)]


GOOD = {"event_id": "ok-1", "entity": "ball", "source": "cam", "fields": {"x": 1.0}}
BAD = [
    ({k: v for k, v in GOOD.items() if k != "event_id"}, 422, "validation-error"),
    ({**GOOD, "event_id": ""}, 422, "validation-error"),
    ({**GOOD, "event_id": "has space"}, 422, "validation-error"),
    ({**GOOD, "entity": "../x"}, 422, "validation-error"),
    ({**GOOD, "fields": {"x": "1e400"}}, None, None),  # placeholder replaced below by a raw body
    ({**GOOD, "fields": {"bad name": 1}}, 422, "validation-error"),
    ({**GOOD, "fields": {"x": [1, 2]}}, 422, "validation-error"),
    ({**GOOD, "fields": {"x": 2**60}}, 422, "validation-error"),
    ({**GOOD, "extra": 1}, 422, "validation-error"),
    ({**GOOD, "observed_at": time.time() + 3600}, 422, "clock-drift"),
    ([], 422, "validation-error"),
    ([GOOD] * 1001, 413, "batch-too-large"),
    ("just a string", 422, "validation-error"),
]
RAW = [
    (b'{"event_id":"n1","entity":"b","source":"c","fields":{"x":NaN}}', 400, "invalid-json"),
    (b'{"event_id":"n1","entity":"b","source":"c","fields":{"x":1e400}}', 400, "invalid-json"),
    (b'{"event_id":"n1","entity":"b","source":"c","fields":{"x":-Infinity}}', 400, "invalid-json"),
    (b'{"event_id":"n1",', 400, "invalid-json"),
]


@pytest.mark.parametrize("body,status,kind", [b for b in BAD if b[1]] + RAW)
def test_bad_observations_are_refused_and_write_nothing(ap_deployment: Deployment, api: httpx.Client,
                                                        ap_world: str, body: object, status: int, kind: str) -> None:
    before = _stream_last_id(ap_deployment, "r1")
    url = f"/v1/worlds/{ap_world}/observations"
    r = (api.post(url, content=body, headers={"Content-Type": "application/json"}) if isinstance(body, bytes)
         else api.post(url, json=body))
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == f"/problems/{kind}"
    assert _stream_last_id(ap_deployment, "r1") == before
    assert api.get(f"/v1/worlds/{ap_world}/entities/ball").status_code == 404


def test_unknown_world_is_refused(ap_deployment: Deployment, api: httpx.Client) -> None:
    before = _stream_last_id(ap_deployment, "r1")
    r = api.post("/v1/worlds/never-created/observations", json=GOOD)
    assert r.status_code == 404 and r.json()["type"] == "/problems/unknown-world"
    assert _stream_last_id(ap_deployment, "r1") == before


@ONE_REDIS
def test_ap_keeps_working_while_etcd_has_lost_quorum(healthy_cluster: Deployment, api: httpx.Client,
                                                     api2: httpx.Client, ap_world: str) -> None:
    first = api.post(f"/v1/worlds/{ap_world}/observations",
                     json={"event_id": "before", "entity": "drone", "source": "gps", "fields": {"alt": -1}})
    # r2 learns of the world through replication, not from etcd
    assert _read_with_token(api2, f"/v1/worlds/{ap_world}/entities/drone", first.json()["token"]).status_code == 200
    for m in healthy_cluster.etcd[:2]:
        m.stop()
    try:
        assert wait_until(lambda: api.get("/readyz").json()["tiers"]["cp"]["state"] == "unavailable", SETTLE_S)
        assert api.get(f"/v1/worlds/{ap_world}/params/anything").status_code == 503
        for i in range(5):
            w = api.post(f"/v1/worlds/{ap_world}/observations",
                         json={"event_id": f"q{i}", "entity": "drone", "source": "gps", "fields": {"alt": i}})
            assert w.status_code == 202, w.text
        w2 = api2.post(f"/v1/worlds/{ap_world}/observations",
                       json={"event_id": "q-r2", "entity": "drone", "source": "imu", "fields": {"roll": 0.1}})
        assert w2.status_code == 202, w2.text
        r = _read_with_token(api2, f"/v1/worlds/{ap_world}/entities/drone", w.json()["token"])
        assert r.status_code == 200, r.text
        assert r.json()["counters"]["observations"]["by_source"] == {"gps": 6, "imu": 1}
        back = _read_with_token(api, f"/v1/worlds/{ap_world}/entities/drone", w2.json()["token"])
        assert back.status_code == 200 and back.json()["fields"]["roll"]["value"] == 0.1
        assert api.get("/readyz").json()["tiers"]["ap"]["state"] == "ok"
    finally:
        for m in healthy_cluster.etcd[:2]:
            m.start()


@ONE_REDIS
def test_region_redis_down_then_back_converges(healthy_cluster: Deployment, api: httpx.Client,
                                               api2: httpx.Client, ap_world: str) -> None:
    healthy_cluster.redis["r2"].stop()  # cuts r1 -> r2 replication and r2's own writes
    obs = [{"event_id": f"d{i}", "entity": "cart", "source": "odo", "fields": {"v": i}} for i in range(50)]
    assert api.post(f"/v1/worlds/{ap_world}/observations", json=obs).status_code == 202
    down = api2.post(f"/v1/worlds/{ap_world}/observations", json={**obs[0], "event_id": "x"})
    assert down.status_code == 503 and down.json()["type"] == "/problems/unavailable"
    assert wait_until(lambda: "r2" in api.get("/readyz").json()["tiers"]["ap"]["behind"], SETTLE_S)
    healthy_cluster.redis["r2"].start()
    healthy_cluster.redis["r2"].wait_healthy(30)
    assert wait_until(lambda: api.get("/readyz").json()["tiers"]["ap"]["behind"] == [], SETTLE_S)
    r = api2.get(f"/v1/worlds/{ap_world}/entities/cart")
    assert r.status_code == 200
    assert r.json()["counters"]["observations"]["total"] == 50
    assert r.json()["fields"]["v"]["value"] == 49


@ONE_REDIS
def test_paused_redis_gives_outcome_unknown_and_a_replay_is_safe(healthy_cluster: Deployment,
                                                                 api: httpx.Client, ap_world: str) -> None:
    ob = {"event_id": "paused-1", "entity": "crane", "source": "enc", "fields": {"h": 3.0}}
    healthy_cluster.redis["r1"].pause()
    try:
        r = api.post(f"/v1/worlds/{ap_world}/observations", json=ob)
    finally:
        healthy_cluster.redis["r1"].resume()
    # Sent and not answered: a paused Redis may run it when it wakes, so "nothing changed"
    # (503) would be a promise the node cannot keep.
    assert r.status_code == 504 and r.json()["type"] == "/problems/outcome-unknown"
    again = api.post(f"/v1/worlds/{ap_world}/observations", json=ob)  # the safe reaction: post it again
    assert again.status_code == 202 and again.json()["accepted"] + again.json()["duplicate"] == 1
    e = api.get(f"/v1/worlds/{ap_world}/entities/crane").json()
    assert e["counters"]["observations"]["total"] == 1  # applied once, whichever attempt it was
