"""The CP tier through the HTTP API on a real 3-member etcd cluster."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess

import aetcd
import httpx
import pytest

from deploy.launcher import Deployment
from tests.conftest import auth_headers, etcd_revision, run

PHYSICS = {"gravity": 9.81, "restitution": 0.8, "drag": 0.1, "time_step": 0.01}


def test_put_get_delete_roundtrip(api: httpx.Client, world: str) -> None:
    r = api.put(f"/v1/worlds/{world}/params/sim/max_bodies", json=64)
    assert r.status_code == 200
    rev = r.json()["revision"]
    assert r.headers["etag"] == f'"{rev}"'

    g = api.get(f"/v1/worlds/{world}/params/sim/max_bodies")
    assert g.status_code == 200
    body = g.json()
    assert body["value"] == 64 and body["revision"] == rev and body["consistency"] == "linearizable"
    assert g.headers["etag"] == f'"{rev}"'
    assert int(g.headers["x-worldstate-revision"]) >= rev

    d = api.delete(f"/v1/worlds/{world}/params/sim/max_bodies", headers={"If-Match": f'"{rev}"'})
    assert d.status_code == 200
    missing = api.get(f"/v1/worlds/{world}/params/sim/max_bodies")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["type"] == "/problems/not-found"
    assert api.delete(f"/v1/worlds/{world}/params/sim/max_bodies").status_code == 404


def test_create_only_and_if_match(api: httpx.Client, world: str) -> None:
    url = f"/v1/worlds/{world}/params/k"
    first = api.put(url, json={"a": 1}, headers={"If-None-Match": "*"})
    assert first.status_code == 201
    again = api.put(url, json={"a": 2}, headers={"If-None-Match": "*"})
    assert again.status_code == 412
    assert again.json()["current_revision"] == first.json()["revision"]

    stale = api.put(url, json={"a": 3}, headers={"If-Match": f'"{first.json()["revision"] - 1 or 1}"'})
    assert stale.status_code == 412
    ok = api.put(url, json={"a": 4}, headers={"If-Match": first.headers["etag"]})
    assert ok.status_code == 200
    assert api.get(url).json()["value"] == {"a": 4}
    # If-Match: * updates only an existing key.
    assert api.put(f"/v1/worlds/{world}/params/absent", json=1, headers={"If-Match": "*"}).status_code == 412
    assert api.put(url, json={"a": 5}, headers={"If-Match": "*"}).status_code == 200


def test_cas_race_exactly_one_winner_per_revision(cluster: Deployment, world: str) -> None:
    url = f"/v1/worlds/{world}/params/race"
    nodes = [cluster.api["r1"].url, cluster.api["r2"].url]

    async def race() -> None:
        async with httpx.AsyncClient(timeout=30, headers=auth_headers(cluster)) as c:
            r = await c.put(nodes[0] + url, json={"writer": "init"})
            etag = r.headers["etag"]
            for round_ in range(5):
                writers = [(i, nodes[i % 2]) for i in range(16)]
                results = await asyncio.gather(*[
                    c.put(base + url, json={"writer": i, "round": round_}, headers={"If-Match": etag})
                    for i, base in writers
                ])
                codes = [r.status_code for r in results]
                assert codes.count(200) == 1, codes
                assert codes.count(412) == len(codes) - 1, codes
                winner = codes.index(200)
                for r in results:
                    if r.status_code == 412:
                        assert r.json()["current_revision"] == results[winner].json()["revision"]
                final = (await c.get(nodes[1] + url)).json()
                assert final["value"] == {"writer": winner, "round": round_}
                etag = results[winner].headers["etag"]

    asyncio.run(race())


def test_delete_with_stale_if_match_deletes_nothing(cluster: Deployment, api: httpx.Client, world: str) -> None:
    url = f"/v1/worlds/{world}/params/sim/seed"
    old = api.put(url, json=1).json()["revision"]
    new = api.put(url, json=2).json()["revision"]
    before = etcd_revision(cluster)

    stale = api.delete(url, headers={"If-Match": f'"{old}"'})
    assert stale.status_code == 412, stale.text
    assert stale.headers["content-type"] == "application/problem+json"
    assert stale.json()["type"] == "/problems/precondition-failed"
    assert stale.json()["current_revision"] == new  # the revision that won, to retry against
    assert stale.headers["etag"] == f'"{new}"'
    assert etcd_revision(cluster) == before
    kept = api.get(url).json()
    assert (kept["value"], kept["revision"]) == (2, new)

    # A revision-conditioned delete of a key that is gone is a lost race too: current_revision 0.
    absent = api.delete(f"/v1/worlds/{world}/params/never", headers={"If-Match": f'"{new}"'})
    assert absent.status_code == 412 and absent.json()["current_revision"] == 0
    assert etcd_revision(cluster) == before

    assert api.delete(url, headers={"If-Match": f'"{new}"'}).status_code == 200
    assert api.get(url).status_code == 404


def test_healthz_says_the_process_is_up(api: httpx.Client) -> None:
    r = api.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_world_metadata_read_with_etag(cluster: Deployment, api: httpx.Client, api2: httpx.Client,
                                       world: str) -> None:
    before = etcd_revision(cluster)
    missing = api.get(f"/v1/worlds/{world}")
    assert missing.status_code == 404, missing.text
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["type"] == "/problems/not-found"
    assert etcd_revision(cluster) == before  # reading a world never created does not create it

    put = api.put(f"/v1/worlds/{world}", json={"description": "robot lab"})
    assert put.status_code == 200, put.text
    rev = put.json()["revision"]
    assert put.headers["etag"] == f'"{rev}"'

    got = api2.get(f"/v1/worlds/{world}")  # the other node: a linearizable read sees the write
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["world"] == world and body["meta"] == {"description": "robot lab"}
    assert (body["revision"], body["create_revision"], body["version"]) == (rev, rev, 1)
    assert body["consistency"] == "linearizable" and body["store_revision"] >= rev
    assert got.headers["etag"] == f'"{rev}"'
    assert int(got.headers["x-worldstate-revision"]) == body["store_revision"]

    changed = api.put(f"/v1/worlds/{world}", json={"description": "moved"}, headers={"If-Match": got.headers["etag"]})
    assert changed.status_code == 200
    lost = api.put(f"/v1/worlds/{world}", json={"description": "lost"}, headers={"If-Match": got.headers["etag"]})
    assert lost.status_code == 412 and lost.json()["current_revision"] == changed.json()["revision"]
    again = api2.get(f"/v1/worlds/{world}")
    assert again.json()["meta"] == {"description": "moved"}
    assert (again.json()["revision"], again.json()["create_revision"], again.json()["version"]) == (
        changed.json()["revision"], rev, 2)
    assert again.headers["etag"] == changed.headers["etag"]


def _compact(cluster: Deployment, revision: int) -> None:
    """Compact etcd's history up to `revision`, directly (not through the API under test)."""

    async def compact() -> None:
        host, _, port = cluster.etcd_endpoints[0].rpartition(":")
        async with aetcd.Client(host, int(port)) as raw:
            await raw.compact(revision)

    run(compact())


def test_paged_list_past_compaction_is_gone(cluster: Deployment, api: httpx.Client, world: str) -> None:
    for i in range(4):
        api.put(f"/v1/worlds/{world}/params/page/k{i}", json=i)
    first = api.get(f"/v1/worlds/{world}/params", params={"prefix": "page/", "limit": 2}).json()
    nxt = first["next"]
    assert nxt is not None and nxt["revision"] == first["revision"]
    # History moves on past the first page's snapshot, and etcd compacts it away.
    api.put(f"/v1/worlds/{world}/params/page/k9", json=9)
    now = etcd_revision(cluster)
    assert now > nxt["revision"]
    _compact(cluster, now)

    r = api.get(f"/v1/worlds/{world}/params", params={"prefix": "page/", "limit": 2, **nxt})
    assert r.status_code == 410, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["type"] == "/problems/compacted" and problem["status"] == 410
    assert problem["compact_revision"] == now  # where to start again from
    assert etcd_revision(cluster) == now
    # What the problem says to do works: a fresh listing from the current state.
    fresh = api.get(f"/v1/worlds/{world}/params", params={"prefix": "page/"}).json()
    assert [x["key"] for x in fresh["items"]] == ["page/k0", "page/k1", "page/k2", "page/k3", "page/k9"]
    assert fresh["revision"] >= now


def test_write_on_one_node_read_on_other(api: httpx.Client, api2: httpx.Client, world: str) -> None:
    for i in range(20):
        assert api.put(f"/v1/worlds/{world}/params/counter", json=i).status_code == 200
        assert api2.get(f"/v1/worlds/{world}/params/counter").json()["value"] == i


def test_serializable_read_says_so(api: httpx.Client, world: str) -> None:
    api.put(f"/v1/worlds/{world}/params/s", json="x")
    r = api.get(f"/v1/worlds/{world}/params/s", params={"consistency": "serializable"})
    assert r.status_code == 200
    assert r.json()["consistency"] == "serializable"
    assert r.headers["x-worldstate-consistency"] == "serializable"


def test_list_prefix_pages_at_one_revision(api: httpx.Client, world: str) -> None:
    for i in range(7):
        api.put(f"/v1/worlds/{world}/params/grid/cell{i}", json=i)
    api.put(f"/v1/worlds/{world}/params/other", json="not listed")
    first = api.get(f"/v1/worlds/{world}/params", params={"prefix": "grid/", "limit": 3}).json()
    assert [x["key"] for x in first["items"]] == ["grid/cell0", "grid/cell1", "grid/cell2"]
    snapshot = first["revision"]
    # A write after the first page must not appear in later pages of the same snapshot.
    api.put(f"/v1/worlds/{world}/params/grid/cell9", json=9)
    keys, nxt = [x["key"] for x in first["items"]], first["next"]
    while nxt:
        page = api.get(f"/v1/worlds/{world}/params", params={"prefix": "grid/", "limit": 3, **nxt}).json()
        assert page["revision"] == snapshot
        keys += [x["key"] for x in page["items"]]
        nxt = page["next"]
    assert keys == [f"grid/cell{i}" for i in range(7)]


def test_physics_document(api: httpx.Client, api2: httpx.Client, world: str) -> None:
    assert api.get(f"/v1/worlds/{world}/physics").status_code == 404
    put = api.put(f"/v1/worlds/{world}/physics", json=PHYSICS)
    assert put.status_code == 200
    got = api2.get(f"/v1/worlds/{world}/physics").json()
    assert got["physics"] == PHYSICS and got["revision"] == put.json()["revision"]
    changed = {**PHYSICS, "gravity": 3.7}
    assert api.put(f"/v1/worlds/{world}/physics", json=changed, headers={"If-Match": put.headers["etag"]}).status_code == 200
    assert api.put(f"/v1/worlds/{world}/physics", json=PHYSICS, headers={"If-Match": put.headers["etag"]}).status_code == 412
    # The same document through the generic params route is the same value.
    assert api.get(f"/v1/worlds/{world}/params/physics/constants").json()["value"]["gravity"] == 3.7


@pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl not installed")
def test_values_readable_with_etcdctl(cluster: Deployment, api: httpx.Client, world: str) -> None:
    api.put(f"/v1/worlds/{world}/physics", json=PHYSICS)
    out = subprocess.run(
        ["etcdctl", "--endpoints", ",".join(cluster.etcd_endpoints), "get", "--print-value-only",
         f"/worldstate/v1/worlds/{world}/params/physics/constants"],
        capture_output=True, text=True, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}, timeout=20, check=True)
    assert json.loads(out.stdout) == PHYSICS


BAD_REQUESTS = [
    # (method, path suffix, kwargs, status, problem type)
    ("put", "params/a b", {"json": 1}, 400, "invalid-key"),
    ("put", "params/a//b", {"json": 1}, 400, "invalid-key"),
    ("put", "params/a/%2E%2E", {"json": 1}, 400, "invalid-key"),
    ("put", "params/" + "x" * 300, {"json": 1}, 400, "invalid-key"),
    ("put", "params/k", {"content": b"{not json"}, 400, "invalid-json"),
    ("put", "params/k", {"content": b""}, 400, "invalid-json"),
    ("put", "params/k", {"content": b'{"v": NaN}'}, 400, "invalid-json"),
    ("put", "params/k", {"content": b"[Infinity]"}, 400, "invalid-json"),
    ("put", "params/k", {"content": b"\xff\xfe"}, 400, "invalid-json"),
    ("put", "physics", {"json": {**PHYSICS, "gravity": 1000}}, 422, "validation-error"),
    ("put", "physics", {"json": {**PHYSICS, "restitution": 1.5}}, 422, "validation-error"),
    ("put", "physics", {"json": {**PHYSICS, "time_step": 0}}, 422, "validation-error"),
    ("put", "physics", {"json": {**PHYSICS, "drag": "high"}}, 422, "validation-error"),
    ("put", "physics", {"json": {"gravity": 9.8}}, 422, "validation-error"),
    ("put", "physics", {"json": {**PHYSICS, "wind": 2}}, 422, "validation-error"),
    ("put", "physics", {"content": b'{"gravity": NaN, "restitution": 1, "drag": 0, "time_step": 0.01}'}, 400, "invalid-json"),
    ("put", "params/physics/constants", {"json": {**PHYSICS, "gravity": -1e9}}, 422, "validation-error"),
    ("put", "params/k", {"json": 1, "headers": {"If-Match": "abc"}}, 400, "invalid-precondition"),
    ("put", "params/k", {"json": 1, "headers": {"If-Match": 'W/"3"'}}, 400, "invalid-precondition"),
    ("put", "params/k", {"json": 1, "headers": {"If-Match": '"0"'}}, 400, "invalid-precondition"),
    ("put", "params/k", {"json": 1, "headers": {"If-Match": '"-1"'}}, 400, "invalid-precondition"),
    ("put", "params/k", {"json": 1, "headers": {"If-Match": '"1", "2"'}}, 400, "invalid-precondition"),
    ("put", "params/k", {"json": 1, "headers": {"If-None-Match": '"3"'}}, 400, "invalid-precondition"),
    ("put", "params/k", {"json": 1, "headers": {"If-Match": '"3"', "If-None-Match": "*"}}, 400, "invalid-precondition"),
    ("delete", "params/k", {"headers": {"If-Match": "nope"}}, 400, "invalid-precondition"),
    ("get", "params/k?consistency=eventual", {}, 422, "validation-error"),
    ("get", "params/a//b", {}, 400, "invalid-key"),
    ("get", "params/a/%2E%2E/b", {}, 400, "invalid-key"),
    ("get", "params?limit=0", {}, 422, "validation-error"),
    ("put", "params/k", {"content": b"1" * (2 << 20)}, 413, "payload-too-large"),
]


@pytest.mark.parametrize("method,suffix,kwargs,status,kind", BAD_REQUESTS,
                         ids=[f"{m}-{s[:20]}-{t}-{i}" for i, (m, s, _, _, t) in enumerate(BAD_REQUESTS)])
def test_bad_input_is_refused_and_changes_nothing(cluster: Deployment, api: httpx.Client, method: str,
                                                  suffix: str, kwargs: dict, status: int, kind: str) -> None:
    before = etcd_revision(cluster)
    if "content" in kwargs:  # raw bytes: say they are meant as JSON, as a real client would (else 415)
        kwargs = {**kwargs, "headers": {"Content-Type": "application/json", **kwargs.get("headers", {})}}
    r = api.request(method.upper(), f"/v1/worlds/badinput/{suffix}", **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == f"/problems/{kind}"
    assert r.json()["status"] == status
    assert etcd_revision(cluster) == before


def test_openapi_documents_every_param_route(api: httpx.Client) -> None:
    # GET of one param is a plain Starlette route, documented by hand: check it stays listed.
    paths = api.get("/openapi.json").json()["paths"]
    one = paths["/v1/worlds/{world}/params/{key}"]
    assert set(one) == {"get", "put", "delete"}
    assert [p["name"] for p in one["get"]["parameters"]] == ["world", "key", "consistency", "include"]
    assert "get" in paths["/v1/worlds/{world}/params"]


def test_bad_world_name(api: httpx.Client) -> None:
    r = api.put("/v1/worlds/-bad/params/k", json=1)
    assert r.status_code == 400 and r.json()["type"] == "/problems/invalid-key"


def test_chunked_oversized_body_is_refused(cluster: Deployment, api: httpx.Client) -> None:
    before = etcd_revision(cluster)

    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(40):
            yield b"1" * 65536  # 2.5 MiB with no Content-Length

    r = api.put("/v1/worlds/badinput/params/k", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.json()["type"] == "/problems/payload-too-large"
    assert etcd_revision(cluster) == before


def test_problem_types_are_described(api: httpx.Client) -> None:
    r = api.get("/problems/outcome-unknown")
    assert r.status_code == 200 and r.json()["status"] == 504
