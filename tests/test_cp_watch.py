"""Watching CP changes: order, resumption across member restarts, compaction."""

from __future__ import annotations

import asyncio
import json

import aetcd
import httpx
import pytest

from consistency.cp_store import CPStore, WatchEvent
from consistency.errors import Compacted
from deploy.launcher import Deployment
from tests.conftest import CP_TIMEOUT_S, auth_headers


async def _store(cluster: Deployment) -> CPStore:
    s = CPStore(cluster.etcd_endpoints, CP_TIMEOUT_S)
    await s.connect()
    return s


async def _collect(store: CPStore, prefix: str, start: int, n: int, out: list[WatchEvent]) -> None:
    async for ev in store.watch(prefix, start):
        out.append(ev)
        if len(out) == n:
            return


def test_watch_delivers_every_change_in_order(cluster: Deployment, world: str) -> None:
    async def scenario() -> None:
        store = await _store(cluster)
        prefix = f"/watch-test/{world}/"
        start = await store.current_revision() + 1
        seen: list[WatchEvent] = []
        watcher = asyncio.create_task(_collect(store, prefix, start, 41, seen))
        written = []
        for i in range(40):
            written.append((await store.put(f"{prefix}k{i % 4}", i)).revision)
        written.append((await store.delete(f"{prefix}k0")).revision)
        await store.put("/watch-test/elsewhere", "not watched")
        await asyncio.wait_for(watcher, 20)
        assert [e.mod_revision for e in seen] == written
        assert [e.value for e in seen[:40]] == list(range(40))
        assert seen[-1].type == "delete" and seen[-1].key == f"{prefix}k0"
        await store.close()

    asyncio.run(scenario())


def test_watch_resumes_across_member_restarts(healthy_cluster: Deployment, world: str) -> None:
    async def scenario() -> None:
        store = await _store(healthy_cluster)
        writer = await _store(healthy_cluster)
        prefix = f"/watch-test/{world}/"
        start = await store.current_revision() + 1
        seen: list[WatchEvent] = []
        total = 60
        watcher = asyncio.create_task(_collect(store, prefix, start, total, seen))
        written: list[int] = []
        for i in range(total):
            if i % 20 == 10:
                # Restart every member in turn: whichever one serves the watch stream goes down.
                member = healthy_cluster.etcd[(i // 20) % len(healthy_cluster.etcd)]
                await asyncio.to_thread(member.restart, True, 60)
            written.append((await writer.put(f"{prefix}k", i)).revision)
        for member in healthy_cluster.etcd:
            await asyncio.to_thread(member.restart, True, 60)
        await asyncio.wait_for(watcher, 30)
        assert [e.mod_revision for e in seen] == written  # none lost, none repeated, in order
        assert [e.value for e in seen] == list(range(total))
        await store.close()
        await writer.close()

    asyncio.run(scenario())


def test_watch_reports_compaction(cluster: Deployment, world: str) -> None:
    async def scenario() -> int:
        store = await _store(cluster)
        prefix = f"/watch-test/{world}/"
        first = (await store.put(f"{prefix}k", 0)).revision
        for i in range(1, 5):
            await store.put(f"{prefix}k", i)
        now = await store.current_revision()
        async with aetcd.Client(*cluster.etcd_endpoints[0].split(":")) as raw:
            await raw.compact(now)
        with pytest.raises(Compacted) as info:
            async for _ in store.watch(prefix, first):
                pass
        assert info.value.compact_revision >= now
        await store.close()
        return first

    first = asyncio.run(scenario())
    # The HTTP watch reports the same as a problem event, then ends the stream.
    with httpx.stream("GET", f"{cluster.api['r1'].url}/v1/worlds/{world}/watch",
                      params={"start_revision": first}, timeout=20, headers=auth_headers(cluster)) as r:
        lines = [line for line in r.iter_lines() if line.startswith(("event:", "data:"))]
    assert lines[0] == "event: error"
    problem = json.loads(lines[1][len("data: "):])
    assert problem["type"] == "/problems/compacted" and problem["compact_revision"] >= first


def test_http_watch_streams_events_and_resumes_with_last_event_id(cluster: Deployment, api: httpx.Client,
                                                                  world: str) -> None:
    revs = [api.put(f"/v1/worlds/{world}/params/sensor/{i}", json=i).json()["revision"] for i in range(6)]

    def read_events(n: int, params: dict, headers: dict | None = None) -> list[tuple[int, str, dict]]:
        events: list[tuple[int, str, dict]] = []
        with httpx.stream("GET", f"{cluster.api['r2'].url}/v1/worlds/{world}/watch", timeout=20, params=params,
                          headers={**auth_headers(cluster), **(headers or {})}) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            ev: dict[str, str] = {}
            for line in r.iter_lines():
                if line == "" and ev:
                    events.append((int(ev["id"]), ev["event"], json.loads(ev["data"])))
                    ev = {}
                    if len(events) == n:
                        break
                elif ":" in line and not line.startswith(":"):
                    field, _, value = line.partition(": ")
                    ev[field] = value
        return events

    first = read_events(3, params={"prefix": "sensor/", "start_revision": revs[0]})
    assert [e[0] for e in first] == revs[:3]
    assert [e[2]["key"] for e in first] == ["sensor/0", "sensor/1", "sensor/2"]
    rest = read_events(3, params={"prefix": "sensor/"}, headers={"Last-Event-ID": str(first[-1][0])})
    assert [e[0] for e in rest] == revs[3:]
    assert [e[2]["value"] for e in rest] == [3, 4, 5]


def test_a_quiet_watch_gets_heartbeats_and_still_delivers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from deploy.launcher import Topology

    topo = Topology(etcd_members=1, regions=1, run_dir=tmp_path, api_env={"WORLDSTATE_SSE_HEARTBEAT_S": "0.3"})
    with Deployment(topo) as d, httpx.Client(base_url=d.api["r1"].url, headers=auth_headers(d), timeout=30) as c:
        assert c.put("/v1/worlds/hb", json={}).status_code in (200, 201)
        lines: list[str] = []
        with c.stream("GET", "/v1/worlds/hb/watch") as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                lines.append(line)
                if lines.count(": heartbeat") == 3:
                    c.put("/v1/worlds/hb/params/k", json=1)
                if line.startswith("data:"):
                    break
    assert lines.count(": heartbeat") >= 3, lines
    assert json.loads(lines[-1].removeprefix("data:"))["key"] == "k"
