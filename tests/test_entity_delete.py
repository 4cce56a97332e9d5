"""Deleting an entity: a tombstone that merges like an observation.

Over HTTP on the shared cluster: the answer, reads that no longer see the entity,
retries that are duplicates, writes after the delete, bad input. On bare replicas
with the network between them cut: a delete and a concurrent write resolve the same
way on both sides, by HLC order, through the replication stream and through
anti-entropy alike.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from consistency import ap_keys as K
from consistency.ap_store import ALL, ReplicaStore, tombstone
from consistency.hlc import HybridLogicalClock, wall_clock_ms
from deploy.launcher import Deployment
from jepsen_like.proxy import RESET
from tests.ap_helpers import (SCENARIO_S, cut, eventually, failed_across, fresh, heal, ob, quiesce, raw,  # noqa: F401
                              replicas, replication, state, stream_len, url)
from tests.test_ap_api import _read_with_token, _stream_last_id


@pytest.fixture
def ap_world(api: httpx.Client, world: str) -> str:
    assert api.put(f"/v1/worlds/{world}", json={}).status_code in (200, 201)
    return world


def _post(api: httpx.Client, world: str, entity: str, event: str, **fields: object) -> dict:
    r = api.post(f"/v1/worlds/{world}/observations",
                 json={"event_id": event, "entity": entity, "source": "cam", "fields": fields})
    assert r.status_code == 202, r.text
    return r.json()


def test_delete_hides_the_entity_and_a_later_write_shows_only_its_fields(api: httpx.Client, api2: httpx.Client,
                                                                         cluster: Deployment, ap_world: str) -> None:
    base = f"/v1/worlds/{ap_world}/entities"
    _post(api, ap_world, "ball", "e1", x=1.0, y=2.0)
    r = api.delete(f"{base}/ball", params={"event_id": "del-1"})
    assert r.status_code == 202, r.text
    d = r.json()
    assert (d["replica"], d["duplicate"]) == ("r1", False) and d["token"].startswith("r1:") and d["hlc"]

    gone = api.get(f"{base}/ball")
    assert gone.status_code == 404 and gone.json()["type"] == "/problems/not-found"
    assert "deleted" in gone.json()["detail"] and gone.json()["deleted_hlc"] == d["hlc"]
    assert "ball" not in [e["entity"] for e in api.get(base).json()["items"]]
    # The other region sees the delete once it has applied it (the token says when).
    assert _read_with_token(api2, f"{base}/ball", d["token"]).status_code == 404

    # The same delete again is a duplicate: it writes nothing at all.
    before = _stream_last_id(cluster, "r1")
    again = api.delete(f"{base}/ball", params={"event_id": "del-1"})
    assert again.status_code == 202 and again.json()["duplicate"] is True
    assert _stream_last_id(cluster, "r1") == before

    # A write stamped after the delete brings back only what it writes; x stays deleted.
    w = _post(api, ap_world, "ball", "e2", y=5.0)
    back = _read_with_token(api2, f"{base}/ball", w["token"])
    assert back.status_code == 200, back.text
    assert {k: v["value"] for k, v in back.json()["fields"].items()} == {"y": 5.0}
    assert back.json()["counters"]["observations"]["total"] == 2  # counters are not reset by a delete
    assert "ball" in [e["entity"] for e in api.get(base).json()["items"]]


def test_listing_pages_past_deleted_entities(api: httpx.Client, ap_world: str) -> None:
    base = f"/v1/worlds/{ap_world}/entities"
    for i in range(6):
        _post(api, ap_world, f"e{i}", f"ev{i}", x=float(i))
    for i in (1, 2, 3):
        assert api.delete(f"{base}/e{i}").status_code == 202
    seen, after = [], None
    for _ in range(10):
        page = api.get(base, params={"limit": 1, **({"after": after} if after else {})}).json()
        seen += [e["entity"] for e in page["items"]]
        if page["next"] is None:
            break
        after = page["next"]["after"]
    assert seen == ["e0", "e4", "e5"]


def test_deleting_a_never_observed_entity_leaves_a_tombstone(api: httpx.Client, ap_world: str) -> None:
    """The replica cannot know whether a write made before the delete is on its way from a peer."""
    r = api.delete(f"/v1/worlds/{ap_world}/entities/ghost")
    assert r.status_code == 202 and r.json()["duplicate"] is False
    got = api.get(f"/v1/worlds/{ap_world}/entities/ghost")
    assert got.status_code == 404 and "deleted" in got.json()["detail"]


def test_bad_deletes_are_refused_and_write_nothing(cluster: Deployment, api: httpx.Client, ap_world: str) -> None:
    before = _stream_last_id(cluster, "r1")
    bad = [(f"/v1/worlds/{ap_world}/entities/ball", {"event_id": "has space"}, 422, "validation-error"),
           (f"/v1/worlds/{ap_world}/entities/ball", {"event_id": "x" * 129}, 422, "validation-error"),
           (f"/v1/worlds/{ap_world}/entities/b%40d", {}, 400, "invalid-key"),
           ("/v1/worlds/no-such-world-13/entities/ball", {}, 404, "unknown-world")]
    for path, params, status, kind in bad:
        r = api.delete(path, params=params)
        assert r.status_code == status, (path, r.text)
        assert r.json()["type"] == f"/problems/{kind}"
    assert _stream_last_id(cluster, "r1") == before


def _clock(node: str, offset_ms: int) -> HybridLogicalClock:
    return HybridLogicalClock(node, now_ms=lambda: wall_clock_ms() + offset_ms)


@pytest.mark.parametrize(("deleter", "winner", "path"), [
    ("r1", "write", "stream"), ("r1", "delete", "stream"),
    ("r2", "write", "anti-entropy"), ("r2", "delete", "anti-entropy")])
def test_a_delete_and_a_concurrent_write_resolve_alike_on_both_sides(fresh: Deployment, deleter: str,
                                                                      winner: str, path: str) -> None:
    """Partitioned, one region deletes the entity while the other writes one field of it; the
    side whose HLC stamp is later (its clock a minute ahead) wins. After the heal both replicas
    hold byte-identical state: the later write alone if it won, else nothing visible."""
    writer = "r2" if deleter == "r1" else "r1"
    ahead = {deleter: 60_000 if winner == "delete" else 0, writer: 60_000 if winner == "write" else 0}

    async def scenario() -> None:
        async with replication(fresh, ["r1", "r2"]) as reps:
            await reps["r1"].home.ingest([ob("ball", "e0", x=1.0, y=1.0)])
            await quiesce(reps)
            # RESET: nothing sent during the cut arrives later, so the anti-entropy case needs it.
            cut(reps, "r1", "r2", RESET)
            stores = {r: ReplicaStore(url(fresh, r), r, f"w-{r}", _clock(f"w-{r}", ahead[r])) for r in reps}
            deleted = await stores[deleter].ingest([tombstone("w", "ball", "del-1")])
            written = await stores[writer].ingest([ob("ball", "e1", x=2.0)])
            assert (written.stamp > deleted.stamp) == (winner == "write")
            if path == "anti-entropy":
                for r in reps:
                    assert [await reps[r].home.trim(p, maxlen=0) for p in ALL] != [""] * len(ALL)
                await failed_across(reps, ("r1", "r2"), ("r2", "r1"))  # nothing shipped in the cut arrives after it
            heal(reps)
            await quiesce(reps)
            if path == "anti-entropy":
                for r, other in (("r1", "r2"), ("r2", "r1")):
                    sh = reps[r].shippers[other]
                    try:
                        await eventually(lambda: sh.status.anti_entropy_runs >= 1, what=f"anti-entropy {r} -> {other}")
                    except AssertionError as e:  # say where the shipper stands: the path it took instead
                        raise AssertionError(f"{e}: {sh.status.as_dict()}, acked {await sh.home.acked(other)}, "
                                             f"trimmed {await sh.home.trimmed()}, last {await sh.home.last_ids()}, "
                                             f"stream {stream_len(fresh, r)}") from None
            await eventually(lambda: state(fresh, "r1") == state(fresh, "r2"), what="identical replicas")
            for r in reps:
                got = await stores[r].get_entity("w", "ball")
                if winner == "write":
                    assert got is not None and {k: f.value for k, f in got.fields.items()} == {"x": 2.0}, r
                else:
                    assert got is None, (r, got)
                    tomb = await stores[r].get_entity("w", "ball", deleted=True)
                    assert tomb is not None and tomb.tombstone is not None and tomb.tombstone.event_id == "del-1"
            for s in stores.values():
                await s.close()

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_S))


def test_delete_is_counted_apart_from_observations(fresh: Deployment) -> None:
    """The tombstone is counted under a reserved source that readers leave out."""
    async def scenario() -> None:
        store = ReplicaStore(url(fresh, "r1"), "r1", "node-r1")
        await store.ingest([ob("a", "e1", x=1), tombstone("w", "a", "d1"), ob("a", "e2", y=1)])
        got = await store.get_entity("w", "a")
        assert got is not None and got.counters == {"cam": 2} and list(got.fields) == ["y"]
        with raw(fresh, "r1") as r:
            held = r.hgetall(K.entity_key("w", "a"))
        assert b"p:~delete@r1" in held
        await store.close()

    asyncio.run(scenario())
