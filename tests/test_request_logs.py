"""A node's logs are JSON lines, and the lines about a request carry the X-Request-ID its
answer carried. A deployment of its own, with WORLDSTATE_ACCESS_LOG=1 (a line per request)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.launcher import Deployment, Topology
from tests.conftest import CP_TIMEOUT_S, auth_headers


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    run_dir: Path = tmp_path_factory.mktemp("request-logs")
    with Deployment(Topology(etcd_members=1, regions=1, run_dir=run_dir, cp_timeout_s=CP_TIMEOUT_S,
                             api_env={"WORLDSTATE_DEVICE": "cpu", "WORLDSTATE_ACCESS_LOG": "1"})) as d:
        yield d


def _lines(d: Deployment, request_id: str) -> list[dict[str, Any]]:
    """The log lines carrying `request_id`, waiting a little for the write to land."""
    deadline = time.monotonic() + 10
    while True:
        text = d.api["r1"].log_path.read_text(errors="replace")
        found = [json.loads(line) for line in text.splitlines() if request_id in line]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_each_request_is_one_json_line_with_the_id_its_answer_carried(logged: Deployment) -> None:
    url = logged.api["r1"].url
    with httpx.Client(base_url=url, timeout=30, headers=auth_headers(logged)) as api:
        ok = api.put("/v1/worlds/logs-w/params/a", json={"v": 1}, headers={"X-Request-ID": "agent7-000042"})
        refused = httpx.get(f"{url}/v1/worlds/logs-w/params/a")  # no key
    assert ok.status_code in (200, 201) and ok.headers["X-Request-ID"] == "agent7-000042"
    (line,) = _lines(logged, "agent7-000042")
    assert line["logger"] == "worldstate.requests" and line["request_id"] == "agent7-000042"
    assert (line["method"], line["path"], line["status"]) == ("PUT", "/v1/worlds/logs-w/params/a", ok.status_code)
    assert line["duration_ms"] > 0 and line["ts"].endswith("Z")
    (line,) = _lines(logged, refused.headers["X-Request-ID"])
    assert line["status"] == 401


def test_every_log_line_is_json(logged: Deployment) -> None:
    with httpx.Client(base_url=logged.api["r1"].url, timeout=30) as api:
        api.get("/healthz")
    lines = [ln for ln in logged.api["r1"].log_path.read_text(errors="replace").splitlines() if ln.strip()]
    assert lines
    for ln in lines:
        doc = json.loads(ln)  # raises on a line that is not one JSON object
        assert {"ts", "level", "logger", "msg"} <= doc.keys(), ln
