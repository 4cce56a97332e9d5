"""What the core offers an edge node (edge/): model blobs by hash, the positions of both tiers
read after a request arrives, and progress comments on the CP watch and the entity stream that
say up to where nothing was left unsent. Against the session's real deployment."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator

import httpx

from consistency.ap_positions import at_least, parse_vector
from deploy.launcher import Deployment


def _until(lines: Iterator[str], prefix: str, ok: Callable[[str], bool], what: str) -> str:
    """The value of the first `: <prefix> <value>` comment `ok` accepts."""
    deadline = time.monotonic() + 20
    for line in lines:
        if line.startswith(f": {prefix} ") and ok(line[len(prefix) + 3:]):
            return line[len(prefix) + 3:]
        assert time.monotonic() < deadline, f"no {prefix} comment {what}"
    raise AssertionError("the stream ended")


def test_a_blob_is_served_by_its_hash_and_nothing_else(cluster: Deployment, api: httpx.Client) -> None:
    cluster.publish_default_model()
    digest = api.get("/v1/models/manifest").json()["manifest"]["hash"]
    r = api.get(f"/v1/models/blobs/{digest}")
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    assert hashlib.sha256(r.content).hexdigest() == digest and r.headers["ETag"] == f'"{digest}"'
    missing = api.get(f"/v1/models/blobs/{'0' * 64}")
    assert missing.status_code == 404 and missing.json()["type"] == "/problems/not-found"
    for bad in ("ABC", "../" + digest, digest.upper(), digest + "0"):
        refused = api.get(f"/v1/models/blobs/{bad}")
        assert refused.status_code in (404, 422), (bad, refused.status_code)
        assert refused.headers["content-type"] == "application/problem+json"
    assert httpx.get(f"{cluster.api['r1'].url}/v1/models/blobs/{digest}").status_code == 401


def test_positions_cover_every_write_acknowledged_before_the_request(api: httpx.Client, world: str) -> None:
    assert api.put(f"/v1/worlds/{world}", json={}).status_code in (200, 201)
    put = api.put(f"/v1/worlds/{world}/params/p", json=1)
    with api.stream("GET", f"/v1/worlds/{world}/entities/stream", params={"entity": "e"}) as s:
        api.post(f"/v1/worlds/{world}/observations",
                 json={"entity": "e", "event_id": f"{world}-1", "source": "t", "fields": {"x": 1.0}}).raise_for_status()
        position = next(ln for ln in s.iter_lines() if ln.startswith("id: "))[4:]
    pos = api.get(f"/v1/worlds/{world}/positions")
    assert pos.status_code == 200, pos.text
    doc = pos.json()
    assert doc["region"] == "r1" and doc["cp_revision"] >= put.json()["revision"]
    assert at_least(parse_vector(doc["changes"]), parse_vector(position))
    assert api.get("/v1/worlds/no-such-world-x/positions").status_code == 404
    assert api.get("/v1/worlds/bad!name/positions").status_code == 400


def test_the_watch_says_up_to_where_it_missed_nothing(api: httpx.Client, world: str) -> None:
    assert api.put(f"/v1/worlds/{world}", json={}).status_code in (200, 201)
    before = api.get(f"/v1/worlds/{world}/positions").json()["cp_revision"]
    with api.stream("GET", f"/v1/worlds/{world}/watch", params={"prefix": "mine/", "progress_s": 0.2}) as r:
        s = r.iter_lines()
        assert int(_until(s, "progress", lambda v: int(v) >= before, f"at {before} or later")) >= before
        # A write elsewhere moves the revision; progress passes it without an event for it.
        other = api.put(f"/v1/worlds/{world}/params/theirs/x", json=2).json()["revision"]
        _until(s, "progress", lambda v: int(v) >= other, f"past {other}")
    assert api.get(f"/v1/worlds/{world}/watch", params={"progress_s": 0}).status_code == 422
    assert api.get(f"/v1/worlds/{world}/watch", params={"progress_s": "soon"}).status_code == 422


def test_the_entity_stream_says_up_to_where_it_missed_nothing(api: httpx.Client, world: str) -> None:
    assert api.put(f"/v1/worlds/{world}", json={}).status_code in (200, 201)
    with api.stream("GET", f"/v1/worlds/{world}/entities/stream", params={"prefix": "mine-", "progress_s": 0.2}) as r:
        s = r.iter_lines()
        first = _until(s, "progress", lambda v: True, "at all")
        # Another entity's change: not delivered, but progress moves past its position.
        api.post(f"/v1/worlds/{world}/observations",
                 json={"entity": "theirs", "event_id": f"{world}-t", "source": "t", "fields": {"x": 1.0}}).raise_for_status()
        head = api.get(f"/v1/worlds/{world}/positions").json()["changes"]
        assert at_least(parse_vector(head), parse_vector(first)) and head != first
        _until(s, "progress", lambda v: at_least(parse_vector(v), parse_vector(head)), f"past {head}")
    assert api.get(f"/v1/worlds/{world}/entities/stream", params={"progress_s": 100}).status_code == 422
