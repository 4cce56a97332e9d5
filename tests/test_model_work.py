"""Model work has a bounded cost and a bounded queue, and stops when its client leaves.

The queue and the cancellation run against ModelWork itself; the cost bound and the
disconnect run against a real node serving the shipped model."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from deploy.launcher import Deployment, wait_until
from service.model_work import ModelWork
from tests.conftest import auth_headers
from world_model import shipped
from world_model.errors import Cancelled, Overloaded
from world_model.state import largest_budget

PHYSICS = {"gravity": 9.81, "restitution": 0.9, "drag": 0.1, "time_step": 0.05}


def test_a_full_queue_refuses_at_once_with_a_jittered_retry_after() -> None:
    release = threading.Event()

    async def go() -> tuple[list[Any], dict[str, Any]]:
        work = ModelWork(max_waiting=2)
        held = [asyncio.ensure_future(work.run(release.wait)) for _ in range(2)]
        await asyncio.sleep(0.05)
        refused = []
        for _ in range(5):
            with pytest.raises(Overloaded) as e:
                await work.run(lambda: None)
            refused.append(e.value.retry_after_s)
        release.set()
        await asyncio.gather(*held)
        work.close()
        return refused, work.status()

    refused, status = asyncio.run(go())
    assert all(r is not None and r >= 1.0 for r in refused)
    assert status["refused"] == 5 and status["done"] == 2 and status["admitted"] == 0


def test_a_job_whose_caller_gave_up_is_skipped_or_stopped() -> None:
    started, release = threading.Event(), threading.Event()

    def long_job(cancelled: Callable[[], bool]) -> str:
        started.set()
        while not cancelled():  # a plan checks between CEM iterations
            release.wait(0.01)
        raise Cancelled("stopped")

    async def go() -> dict[str, Any]:
        work = ModelWork(max_waiting=4)
        running_cancel, queued_cancel = threading.Event(), threading.Event()
        ran: list[int] = []
        running = asyncio.ensure_future(work.run(long_job, cancel=running_cancel, cancellable=True))
        queued = asyncio.ensure_future(work.run(lambda: ran.append(1), cancel=queued_cancel))
        await asyncio.to_thread(started.wait, 10)
        queued_cancel.set()
        running_cancel.set()
        for f in (running, queued):
            with pytest.raises(Cancelled):
                await f
        assert ran == []  # the queued job never ran
        work.close()
        return work.status()

    status = asyncio.run(go())
    assert status["cancelled"] == 2 and status["done"] == 0 and status["admitted"] == 0


@pytest.fixture(scope="module")
def served(cluster: Deployment) -> str:
    """The cluster serving the shipped model, and a world of two bodies."""
    api = httpx.Client(base_url=cluster.api["r1"].url, timeout=30, headers=auth_headers(cluster))
    manifest = shipped.install(cluster.api["r1"].env["WORLDSTATE_CHECKPOINT_DIR"])  # type: ignore[index]
    current = api.get("/v1/models/manifest")
    if current.status_code != 200 or current.json()["manifest"]["hash"] != manifest["hash"]:
        headers = {"If-Match": current.headers["etag"]} if current.status_code == 200 else {"If-None-Match": "*"}
        assert api.put("/v1/models/manifest", json=manifest, headers=headers).status_code == 200
    assert wait_until(lambda: api.get("/v1/models/current").json().get("hash") == manifest["hash"], 60)
    world = "model-work"
    api.put(f"/v1/worlds/{world}", json={})
    assert api.put(f"/v1/worlds/{world}/physics", json=PHYSICS).status_code == 200
    w = api.post(f"/v1/worlds/{world}/observations", json=[
        {"event_id": f"mw-{i}", "entity": f"b{i}", "source": "t",
         "fields": {"x": 2.0 + 5 * i, "y": 3.0, "vx": 0.0, "vy": 0.0, "radius": 0.4}} for i in range(2)])
    assert w.status_code == 202
    assert api.get(f"/v1/worlds/{world}/entities/b1", params={"token": w.json()["token"]}).status_code == 200
    return world


def test_a_plan_beyond_the_cost_bound_is_refused(api: httpx.Client, served: str) -> None:
    r = api.post(f"/v1/worlds/{served}/plan", json={"entity": "b0", "goal": {"x": 5, "y": 5, "radius": 1},
                                                    "horizon": 50, "budget": 65536})
    assert r.status_code == 422 and r.json()["code"] == "query_too_costly", r.text
    assert "at most" in r.json()["detail"]


def test_a_plan_whose_client_left_stops(api: httpx.Client, cluster: Deployment, served: str) -> None:
    """The biggest plan allowed takes about a second; the client leaves after 0.2 s and the node
    stops the search instead of finishing it for no one."""
    budget = largest_budget(50, 2)
    body = (f'{{"entity": "b0", "goal": {{"x": 5, "y": 5, "radius": 1}}, "horizon": 50, '
            f'"budget": {budget}}}').encode()
    before = api.get("/v1/models/current").json()["work"]
    host, port = cluster.api["r1"].url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"POST /v1/worlds/{served}/plan HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                  f"Authorization: Bearer {cluster.admin_key}\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(0.2)
    assert wait_until(lambda: api.get("/v1/models/current").json()["work"]["cancelled"] > before["cancelled"], 30)
    after = api.get("/v1/models/current").json()["work"]
    assert after["done"] == before["done"] and after["admitted"] == 0
