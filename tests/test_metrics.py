"""GET /metrics against the real deployment: scraped before and after known traffic,
the numbers move by exactly that traffic; labels stay bounded; the README's curl works."""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from deploy.launcher import Deployment

PARAM_ROUTE = "/v1/worlds/{world}/params/{key}"


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the page, by name and sorted labels."""
    r = httpx.get(f"{url}/metrics")  # no key: the page is public
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(r.text) for s in f.samples}


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


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


def test_predictor_metrics_move_with_predict_queries(cluster: Deployment, api: httpx.Client, world: str) -> None:
    cluster.publish_default_model()
    url = cluster.api["r1"].url
    assert api.put(f"/v1/worlds/{world}", json={}).status_code in (200, 201)
    assert api.put(f"/v1/worlds/{world}/physics",
                   json={"gravity": 9.81, "restitution": 0.9, "drag": 0.1, "time_step": 0.05}).status_code < 300
    w = api.post(f"/v1/worlds/{world}/observations", json=[_obs(world, 1)])
    assert w.status_code == 202, w.text
    deadline = time.time() + 60
    while api.get("/v1/models/current").json().get("state") != "ok" and time.time() < deadline:
        time.sleep(0.2)
    before = scrape(url)
    for _ in range(3):
        r = api.post(f"/v1/worlds/{world}/predict", json={"horizon": 3, "entities": ["m1"]},
                     params={"token": w.json()["token"]})
        assert r.status_code == 200, r.text
    after = scrape(url)
    assert value(after, "worldstate_predict_batch_size_count") - value(before, "worldstate_predict_batch_size_count") >= 1
    assert value(after, "worldstate_predict_batch_size_sum") - value(before, "worldstate_predict_batch_size_sum") == 3
    assert value(after, "worldstate_predict_inference_seconds_total") > value(
        before, "worldstate_predict_inference_seconds_total")
    assert ("worldstate_predict_queue_depth", ()) in after
