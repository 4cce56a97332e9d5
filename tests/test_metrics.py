"""GET /metrics against the real deployment: scraped before and after known traffic,
the numbers move by exactly that traffic; labels stay bounded; the README's curl works."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import time
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from consistency.hlc import HLCTimestamp, HybridLogicalClock
from deploy.launcher import Deployment
from service.metrics import HlcAhead
from tests.conftest import repo_root
from tests.scrape import scrape, value

PARAM_ROUTE = "/v1/worlds/{world}/params/{key}"


def _obs(world: str, i: int) -> dict[str, Any]:
    return {"entity": f"m{i}", "event_id": f"metrics-{world}-{i}", "source": "t", "observed_at": time.time(),
            "fields": {"x": 1.0, "y": 2.0, "vx": 0.0, "vy": 0.0}}


def test_scrape_moves_with_the_traffic(cluster: Deployment, api: httpx.Client, world: str) -> None:
    url = cluster.api["r1"].url
    assert api.put(f"/v1/worlds/{world}", json={}).status_code in (200, 201)
    before = scrape(url)

    assert api.put(f"/v1/worlds/{world}/params/a/b", json={"v": 1}).status_code in (200, 201)
    gets = 3
    for _ in range(gets):
        assert api.get(f"/v1/worlds/{world}/params/a/b").status_code == 200
    batch = [_obs(world, i) for i in range(3)]
    assert api.post(f"/v1/worlds/{world}/observations", json=batch).status_code == 202
    assert api.post(f"/v1/worlds/{world}/observations", json=batch).json()["duplicate"] == 3
    bad = [_obs(world, 10), {**_obs(world, 11), "entity": "../x"}]
    assert api.post(f"/v1/worlds/{world}/observations", json=bad).status_code == 422

    after = scrape(url)
    count = "worldstate_http_request_duration_seconds_count"
    assert value(after, count, method="GET", route=PARAM_ROUTE, status="200") \
        - value(before, count, method="GET", route=PARAM_ROUTE, status="200") == gets
    assert value(after, count, method="PUT", route=PARAM_ROUTE, status="200") \
        + value(after, count, method="PUT", route=PARAM_ROUTE, status="201") \
        - value(before, count, method="PUT", route=PARAM_ROUTE, status="200") \
        - value(before, count, method="PUT", route=PARAM_ROUTE, status="201") == 1
    total = "worldstate_observations_total"
    moved = {o: value(after, total, outcome=o) - value(before, total, outcome=o)
             for o in ("accepted", "duplicate", "refused")}
    assert moved == {"accepted": 3, "duplicate": 3, "refused": 2}  # refused: per observation of the batch

    routes = {dict(labels)["route"] for (name, labels) in after if name == count}
    assert PARAM_ROUTE in routes and "/v1/worlds/{world}/observations" in routes
    assert not any(world in r for r in routes), routes  # templates, never raw paths
    assert ("worldstate_replication_lag_seconds", (("peer", "r2"),)) in after
    assert ("worldstate_replication_behind_entries", (("peer", "r2"),)) in after
    assert any(name == "worldstate_model_info" for name, _ in after)


def test_unmatched_paths_and_odd_methods_stay_bounded(cluster: Deployment) -> None:
    url = cluster.api["r1"].url
    before = scrape(url)
    assert httpx.get(f"{url}/no/such/path-xyz").status_code == 404
    assert httpx.request("PROPFIND", f"{url}/healthz").status_code == 405
    # A request refused before routing (no key) is still named by the route it was for.
    assert httpx.get(f"{url}/v1/worlds/some-world/params/k").status_code == 401
    after = scrape(url)
    count = "worldstate_http_request_duration_seconds_count"
    assert value(after, count, method="GET", route="other", status="404") \
        - value(before, count, method="GET", route="other", status="404") == 1
    assert value(after, count, method="other", route="/healthz", status="405") \
        - value(before, count, method="other", route="/healthz", status="405") == 1
    assert value(after, count, method="GET", route=PARAM_ROUTE, status="401") \
        - value(before, count, method="GET", route=PARAM_ROUTE, status="401") == 1
    labels = [dict(lb) for (name, lb) in after if name == count]
    assert not any("xyz" in lb["route"] or "some-world" in lb["route"] or lb["method"] == "PROPFIND" for lb in labels)


def test_readme_curl(cluster: Deployment) -> None:
    """The README's line, run as written."""
    out = subprocess.run(["bash", "-c", "curl -s $API/metrics | grep worldstate_observations_total"],
                         env={**os.environ, "API": cluster.api["r1"].url}, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert 'worldstate_observations_total{outcome="accepted"}' in out.stdout


def _serving(cluster: Deployment, api: httpx.Client, world: str) -> httpx.Response:
    """A world with one body and the default model served; the observation's answer."""
    cluster.publish_default_model()
    assert api.put(f"/v1/worlds/{world}", json={}).status_code in (200, 201)
    assert api.put(f"/v1/worlds/{world}/physics",
                   json={"gravity": 9.81, "restitution": 0.9, "drag": 0.1, "time_step": 0.05}).status_code < 300
    w = api.post(f"/v1/worlds/{world}/observations", json=[_obs(world, 1)])
    assert w.status_code == 202, w.text
    deadline = time.time() + 60
    while api.get("/v1/models/current").json().get("state") != "ok" and time.time() < deadline:
        time.sleep(0.2)
    return w


def test_predictor_metrics_move_with_predict_queries(cluster: Deployment, api: httpx.Client, world: str) -> None:
    url = cluster.api["r1"].url
    w = _serving(cluster, api, world)
    before = scrape(url)
    # The same query three times, one no test asked before (an impulse of its own): the model
    # answers the first, the predict memo the other two.
    query = {"horizon": 3, "entities": ["m1"], "actions": {"m1": [[random.uniform(0.001, 0.1), 0.0]]}}
    for _ in range(3):
        r = api.post(f"/v1/worlds/{world}/predict", json=query, params={"token": w.json()["token"]})
        assert r.status_code == 200, r.text
    after = scrape(url)
    assert value(after, "worldstate_predict_batch_size_sum") - value(before, "worldstate_predict_batch_size_sum") == 1
    assert value(after, "worldstate_predict_memo_hits_total") - value(before, "worldstate_predict_memo_hits_total") == 2
    assert value(after, "worldstate_predict_inference_seconds_total") > value(
        before, "worldstate_predict_inference_seconds_total")
    assert ("worldstate_predict_queue_depth", ()) in after


def test_cp_calls_and_quota_refusals_are_counted(cluster: Deployment, api: httpx.Client, world: str) -> None:
    url = cluster.api["r1"].url
    assert api.put(f"/v1/worlds/{world}", json={}).status_code in (200, 201)
    put = api.put(f"/v1/worlds/{world}/params/cas", json={"v": 1})
    assert put.status_code in (200, 201), put.text
    stale = f'"{put.json()["revision"] - 1}"'
    grant = api.post("/v1/keys", json={"name": "metered", "scopes": ["read", "observe"], "worlds": [world],
                                       "quotas": {"observations_per_s": 2}})
    assert grant.status_code == 201, grant.text
    key_id, token = grant.json()["id"], grant.json()["token"]
    before = scrape(url)

    assert api.get(f"/v1/worlds/{world}/params/missing").status_code == 404
    assert api.put(f"/v1/worlds/{world}/params/cas", json={"v": 2}, headers={"If-Match": stale}).status_code == 412
    assert api.put(f"/v1/worlds/{world}/params/cas", json={"v": 3},
                   headers={"If-Match": put.headers["ETag"]}).status_code == 200
    # Three at once is more than a quota of two a second allows: 429, counted against the key.
    batch = [_obs(world, i) for i in range(3)]
    deadline = time.time() + 30
    while True:  # the new key reaches the node's keyring through its watch
        r = httpx.post(f"{url}/v1/worlds/{world}/observations", json=batch, headers={"Authorization": f"Bearer {token}"})
        if r.status_code != 401 or time.time() > deadline:
            break
        time.sleep(0.1)
    assert r.status_code == 429, r.text
    posted = api.post(f"/v1/worlds/{world}/observations", json=batch)
    assert posted.status_code == 202, posted.text

    after = scrape(url)
    cp = "worldstate_cp_requests_total"
    moved = {(op, o): value(after, cp, op=op, outcome=o) - value(before, cp, op=op, outcome=o)
             for op, o in (("get", "not-found"), ("cas", "conflict"), ("cas", "ok"))}
    assert moved == {("get", "not-found"): 1, ("cas", "conflict"): 1, ("cas", "ok"): 1}
    assert value(after, "worldstate_cp_request_duration_seconds_count", op="cas") \
        - value(before, "worldstate_cp_request_duration_seconds_count", op="cas") == 2
    assert value(after, "worldstate_quota_refusals_total", key=key_id, kind="observations_per_s") \
        - value(before, "worldstate_quota_refusals_total", key=key_id, kind="observations_per_s") == 1
    # The changes log grew by the three new entities (nothing trims it at this size).
    assert value(after, "worldstate_changes_log_entries") - value(before, "worldstate_changes_log_entries") == 3
    assert ("worldstate_replica_stream_entries", ()) in after
    assert ("worldstate_hlc_ahead_seconds", ()) in after
    for name in ("worldstate_anti_entropy_runs_total", "worldstate_anti_entropy_buckets_shipped_total"):
        assert (name, (("peer", "r2"),)) in after


def test_every_answer_carries_a_request_id(cluster: Deployment, api: httpx.Client) -> None:
    url = cluster.api["r1"].url
    given = api.get("/healthz", headers={"X-Request-ID": "trace-4bf9.1"})
    assert given.headers["X-Request-ID"] == "trace-4bf9.1"
    fresh = api.get("/healthz", headers={"X-Request-ID": "not a valid id!"})  # replaced, not refused
    assert fresh.status_code == 200 and len(fresh.headers["X-Request-ID"]) == 32
    refused = httpx.get(f"{url}/v1/worlds/w/params/k")  # no key: answered before routing
    assert refused.status_code == 401 and len(refused.headers["X-Request-ID"]) == 32
    assert refused.headers["X-Request-ID"] != fresh.headers["X-Request-ID"]


def test_grafana_dashboard_reads_only_what_a_node_exports(cluster: Deployment, api: httpx.Client,
                                                          world: str) -> None:
    """Every metric the dashboard's queries name is one a node's /metrics has (a renamed metric
    would leave a panel silently empty), and every family the node exports has a panel."""
    w = _serving(cluster, api, world)
    assert api.post(f"/v1/worlds/{world}/predict", json={"horizon": 2, "entities": ["m1"]},
                    params={"token": w.json()["token"]}).status_code == 200
    text = httpx.get(f"{cluster.api['r1'].url}/metrics").text
    exported = {f.name for f in text_string_to_metric_families(text)}
    dashboard = json.loads((repo_root() / "deploy" / "grafana" / "worldstate.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    named = {re.sub(r"_(bucket|count|sum|total)$", "", m) for e in exprs for m in re.findall(r"worldstate_\w+", e)}
    assert named and named <= exported, named - exported
    assert exported <= named, f"no panel for {exported - named}"


def test_hlc_ahead_follows_a_clock_running_ahead() -> None:
    """The gauge reads how far the node's HLC was pulled past its own wall clock by a peer's stamp."""
    wall = [1_000_000]
    hlc = HybridLogicalClock("n1", now_ms=lambda: wall[0])
    ahead = HlcAhead(hlc, lambda: wall[0])

    def gauge() -> float:
        (family,) = ahead.collect()
        return float(family.samples[0].value)

    hlc.now()
    assert gauge() == 0
    hlc.update(HLCTimestamp(wall[0] + 2500, 0))
    assert gauge() == 2.5
    wall[0] += 4000  # the wall clock catches up and passes it
    assert gauge() == 0


def test_readme_request_id_curl(cluster: Deployment) -> None:
    """The README's request-id line, run as written."""
    out = subprocess.run(["bash", "-c", "curl -s -i -H 'X-Request-ID: agent7-000042' $API/healthz | grep -i x-request-id"],
                         env={**os.environ, "API": cluster.api["r1"].url}, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().lower() == "x-request-id: agent7-000042"
