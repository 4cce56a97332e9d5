"""WORLDSTATE_* settings away from their defaults, taking effect in a running node.

One deployment for the module (1 etcd member, 1 Redis, 1 API node), started
through the launcher with its API node's environment set as an operator would
set it. Each value is chosen so the default could not produce what the test
sees: where the proof is a time, the setting is *larger* than its default and
the test asserts a lower bound, which a slow machine cannot break.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deploy.launcher import Deployment, Topology, wait_until
from service.config import Settings
from tests.conftest import auth_headers

DEFAULTS = Settings()
LIVE = {
    "WORLDSTATE_NODE_ID": "probe-7",
    "WORLDSTATE_MAX_BODY_BYTES": "2048",
    "WORLDSTATE_MAX_BATCH": "3",
    "WORLDSTATE_MAX_DRIFT_MS": "5000",
    "WORLDSTATE_READ_WAIT_S": "3.0",
    "WORLDSTATE_CP_TIMEOUT_S": "5.0",
}
SETTINGS = Settings.from_env(LIVE)
AHEAD_S = 3.0  # how far ahead of the node's clock an accepted observation is stamped
CP_EARLY_S = 0.5  # a refused read may give up early by at most its longest retry sleep (CPStore._read)


def test_the_settings_under_test_are_not_the_defaults() -> None:
    for name in LIVE:
        field = name.removeprefix("WORLDSTATE_").lower()
        assert getattr(SETTINGS, field) != getattr(DEFAULTS, field), name
    # The times below are lower bounds that only a non-default value can meet.
    assert SETTINGS.read_wait_s > DEFAULTS.read_wait_s
    assert SETTINGS.cp_timeout_s - CP_EARLY_S > DEFAULTS.cp_timeout_s
    # AHEAD_S is past the default's reach even if the request takes 2 s to arrive.
    assert DEFAULTS.max_drift_ms < AHEAD_S * 1000 - 2000 and AHEAD_S * 1000 < SETTINGS.max_drift_ms


def test_api_env_overrides_what_the_launcher_derives(tmp_path: Path) -> None:
    # Planned only (no server starts): what each API node of a deployment would read.
    d = Deployment(Topology(etcd_members=1, regions=2, run_dir=tmp_path, cp_timeout_s=2.0,
                            api_env={"WORLDSTATE_CP_TIMEOUT_S": "5.0", "WORLDSTATE_MAX_BATCH": "3"}))
    for region, api in d.api.items():
        s = Settings.from_env(api.env)
        assert (s.cp_timeout_s, s.max_batch, s.region) == (5.0, 3, region)
        assert s.etcd_endpoints == d.etcd_endpoints and s.redis_url == d.redis[region].url


@pytest.fixture(scope="module")
def live_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    topo = Topology(etcd_members=1, regions=1, run_dir=tmp_path_factory.mktemp("settings-live"),
                    api_env={"WORLDSTATE_DEVICE": "cpu", **LIVE})
    with Deployment(topo) as d:
        yield d


@pytest.fixture
def live_api(live_node: Deployment) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_node.api["r1"].url, timeout=60, headers=auth_headers(live_node)) as c:
        yield c


def _problem(r: httpx.Response, status: int, kind: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == f"/problems/{kind}"
    return r.json()  # type: ignore[no-any-return]


def _world(live_api: httpx.Client, world: str) -> str:
    assert live_api.put(f"/v1/worlds/{world}", json={}).status_code == 200
    return world


def test_node_id(live_api: httpx.Client, world: str) -> None:
    assert live_api.get("/readyz").json()["node"] == "probe-7"
    _world(live_api, world)
    live_api.post(f"/v1/worlds/{world}/observations",
             json={"event_id": "n1", "entity": "arm", "source": "enc", "fields": {"a": 1}})
    assert live_api.get(f"/v1/worlds/{world}/entities/arm").json()["fields"]["a"]["node"] == "probe-7"


def test_max_body_bytes(live_api: httpx.Client, world: str) -> None:
    url = f"/v1/worlds/{world}/params/blob"
    big = "x" * 3000  # over 2048, far under the default 1 MiB
    p = _problem(live_api.put(url, json=big), 413, "payload-too-large")
    assert p["limit"] == SETTINGS.max_body_bytes
    assert live_api.get(url).status_code == 404  # nothing written
    assert live_api.put(url, json="x" * 1500).status_code == 200  # under the limit: taken


def test_max_batch(live_api: httpx.Client, world: str) -> None:
    _world(live_api, world)
    url = f"/v1/worlds/{world}/observations"
    batch = [{"event_id": f"b{i}", "entity": f"e{i}", "source": "cam", "fields": {"x": i}} for i in range(4)]
    p = _problem(live_api.post(url, json=batch), 413, "batch-too-large")
    assert p["limit"] == SETTINGS.max_batch
    assert live_api.get(f"/v1/worlds/{world}/entities").json()["items"] == []  # nothing written
    ok = live_api.post(url, json=batch[:3])
    assert ok.status_code == 202 and ok.json()["accepted"] == 3


def test_max_drift_ms(live_api: httpx.Client, world: str) -> None:
    _world(live_api, world)
    url = f"/v1/worlds/{world}/observations"

    def ob(event_id: str, ahead_s: float) -> dict:
        return {"event_id": event_id, "entity": "clock", "source": "cam", "observed_at": time.time() + ahead_s,
                "fields": {"x": 1.0}}

    # 3 s ahead: the default (500 ms) refuses it unless the request takes 2.5 s to
    # arrive (travel time shrinks the drift, never grows it); this node allows 5000 ms.
    assert live_api.post(url, json=ob("near", AHEAD_S)).status_code == 202
    far = _problem(live_api.post(url, json=ob("far", 60)), 422, "clock-drift")
    assert far["max_drift_ms"] == SETTINGS.max_drift_ms and far["drift_ms"] > SETTINGS.max_drift_ms
    fields = live_api.get(f"/v1/worlds/{world}/entities/clock").json()["fields"]
    assert fields["x"]["event_id"] == "near"  # the refused one wrote nothing


def test_read_wait_s(live_api: httpx.Client, world: str) -> None:
    # A token this replica has not reached (a stream id far in the future), and a
    # wait_ms far over the node's cap: the node waits its own READ_WAIT_S, then 504.
    t0 = time.monotonic()
    r = live_api.get(f"/v1/worlds/{world}/entities/arm", params={"token": "r1:v2.0-99999999999999-0", "wait_ms": 60000})
    elapsed = time.monotonic() - t0
    p = _problem(r, 504, "not-yet-consistent")
    assert f"after {SETTINGS.read_wait_s:.1f}s" in p["detail"]
    assert elapsed >= SETTINGS.read_wait_s, f"answered after {elapsed:.2f}s"  # not the default 2 s
    # ...and not the 60 s asked for: the cap holds (slack as in test_cp_faults.refusal_bound_s).
    assert elapsed <= 2 * SETTINGS.read_wait_s + 10, f"answered after {elapsed:.2f}s"


def test_cp_timeout_s(live_node: Deployment, live_api: httpx.Client, world: str) -> None:
    url = f"/v1/worlds/{world}/params/k"
    assert live_api.put(url, json=1).status_code == 200
    etcd = live_node.etcd[0]
    etcd.pause()  # the only member: nothing answers, the node waits out its CP timeout
    try:
        t0 = time.monotonic()
        r = live_api.get(url)
        elapsed = time.monotonic() - t0
    finally:
        etcd.resume()
    _problem(r, 503, "unavailable")
    assert elapsed >= SETTINGS.cp_timeout_s - CP_EARLY_S, f"refused after {elapsed:.2f}s"  # not the default 2 s
    assert elapsed <= 2 * SETTINGS.cp_timeout_s + 10, f"refused after {elapsed:.2f}s"
    assert wait_until(lambda: live_api.get("/readyz").status_code == 200, timeout=60)
    assert live_api.get(url).json()["value"] == 1
