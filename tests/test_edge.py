"""Edge nodes (edge/) against a real core (etcd, two Redis regions, two API nodes), each edge the
`worldstate edge` process a user starts, reaching the core through a TCP proxy the test cuts.

It follows the core and says how stale it is; cut off, it refuses past its bound and answers a
request that accepts more, labelled; it stores observations and forwards them after the heal,
each counted once in every region; restarted, it answers from its disk at once."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.launcher import Deployment, Topology
from deploy.processes import free_port
from jepsen_like.proxy import BLACKHOLE, Net, Rule
from tests.conftest import CP_TIMEOUT_S, auth_headers, repo_root
from tests.up_output import auth, until_up

WORLD = "lab"
PHYSICS = {"gravity": 9.81, "restitution": 0.9, "drag": 0.1, "time_step": 0.05}
SETTLE_S = 60.0  # generous: CI runs this on two busy cores
MAX_STALENESS_S = 3


def _ball(event: str, entity: str, x: float) -> dict[str, Any]:
    return {"event_id": event, "entity": entity, "source": "cam",
            "fields": {"x": x, "y": 3.0, "vx": 1.0, "vy": 0.0, "radius": 0.2, "mass": 1.0}}


def found(client: httpx.Client, path: str) -> dict[str, Any] | None:
    r = client.get(path)
    return r.json() if r.status_code == 200 else None  # type: ignore[no-any-return]


def eventually(check: Callable[[], Any], what: str, timeout: float = SETTLE_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = check()
        except (httpx.TransportError, AssertionError, KeyError, TypeError):
            got = None  # not yet: no answer, or a stale edge's 503 problem (a busy machine)
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with Deployment(Topology(etcd_members=1, regions=2, run_dir=tmp_path_factory.mktemp("edge-core"),
                             cp_timeout_s=CP_TIMEOUT_S, api_env={"WORLDSTATE_DEVICE": "cpu"})) as d:
        d.publish_default_model()
        with httpx.Client(base_url=d.api["r1"].url, headers=auth_headers(d), timeout=30) as c:
            c.put(f"/v1/worlds/{WORLD}", json={}).raise_for_status()
            c.put(f"/v1/worlds/{WORLD}/physics", json=PHYSICS).raise_for_status()
            c.post(f"/v1/worlds/{WORLD}/observations", json=[_ball("seed-1", "ball-1", 2.0)]).raise_for_status()
        yield d


@pytest.fixture(scope="module")
def net(core: Deployment) -> Iterator[Net]:
    n = Net()
    yield n
    n.close()


class EdgeProcess:
    """`worldstate edge` as a user runs it, through its own proxied link to core r1."""

    def __init__(self, core: Deployment, net: Net, data_dir: Path, name: str, *extra: str) -> None:
        self.core, self.data_dir, self.name, self.extra = core, data_dir, name, extra
        self.link = net.listen(name, "core-r1", core.api["r1"].port)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.headers = auth_headers(core)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "EdgeProcess":
        worldstate = str(Path(sys.executable).parent / "worldstate")
        log = open(self.data_dir.parent / f"{self.name}.log", "ab")
        self.proc = subprocess.Popen([worldstate, "edge", "--core", f"http://127.0.0.1:{self.link}", "--world", WORLD,
                                      "--data-dir", str(self.data_dir), "--key", self.core.admin_key or "",
                                      "--port", str(self.port), "--name", self.name, "--probe-s", "0.2",
                                      "--max-staleness", str(MAX_STALENESS_S), *self.extra],
                                     stdout=log, stderr=subprocess.STDOUT)
        eventually(lambda: httpx.get(f"{self.url}/healthz").status_code == 200, f"{self.name} to listen")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers=self.headers, timeout=30, **kw)

    def post(self, path: str, body: Any, **kw: Any) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=body, headers=self.headers, timeout=60, **kw)

    def fresh(self) -> bool:
        return self.get("/readyz").status_code == 200


@pytest.fixture
def edge(core: Deployment, net: Net, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[EdgeProcess]:
    e = EdgeProcess(core, net, tmp_path / "data", f"edge-{request.node.name[5:25]}").start()
    yield e
    net.heal()
    e.stop()


def cut(net: Net, e: EdgeProcess) -> None:
    net.set([(e.name, "core-r1"), ("core-r1", e.name)], Rule(BLACKHOLE))


def test_an_edge_follows_the_core_and_labels_every_answer(core: Deployment, edge: EdgeProcess) -> None:
    api = httpx.Client(base_url=core.api["r1"].url, headers=auth_headers(core), timeout=30)
    eventually(edge.fresh, "the edge in step with the core")
    r = eventually(lambda: (x := edge.get(f"/v1/worlds/{WORLD}/physics")).status_code == 200 and x, "physics")
    label = r.json()["staleness"]
    assert r.json()["physics"] == PHYSICS and 0 <= label["stale_ms"] <= MAX_STALENESS_S * 1000
    assert label["region"] == "r1" and label["bounded"] is False
    assert int(r.headers["X-Worldstate-Stale-Ms"]) == label["stale_ms"]
    # A CP change and an observation at the core reach the edge, each through its stream.
    put = api.put(f"/v1/worlds/{WORLD}/params/speed/max", json=4.5).json()["revision"]
    eventually(lambda: edge.get(f"/v1/worlds/{WORLD}/params/speed/max").json()["value"] == 4.5, "the param")
    assert edge.get(f"/v1/worlds/{WORLD}/params/speed/max").json()["revision"] == put
    # Its label's revision is the one up to which everything is applied: past the put once progress says so.
    eventually(lambda: edge.get(f"/v1/worlds/{WORLD}/physics").json()["staleness"]["cp_revision"] >= put,
               "the edge's revision past the put")
    api.post(f"/v1/worlds/{WORLD}/observations", json=[_ball("core-2", "ball-2", 5.0)]).raise_for_status()
    got = eventually(lambda: edge.get(f"/v1/worlds/{WORLD}/entities/ball-2").json()["fields"]["x"]["value"] == 5.0,
                     "the entity")
    assert got
    # The same model (its blob fetched by hash) on the same state gives the same prediction.
    query = {"horizon": 4, "entities": ["ball-1", "ball-2"]}
    at_edge = eventually(lambda: (x := edge.post(f"/v1/worlds/{WORLD}/predict", query)).status_code == 200 and x,
                         "a prediction at the edge")
    at_core = api.post(f"/v1/worlds/{WORLD}/predict", json=query).json()
    assert at_edge.json()["trajectories"] == at_core["trajectories"]
    assert at_edge.json()["provenance"]["model"]["hash"] == at_core["provenance"]["model"]["hash"]
    assert "staleness" in at_edge.json()
    status = edge.get("/v1/edge").json()
    assert status["model"]["state"] == "ok" and status["model"]["fetched_bytes"] > 0
    # Surprise and plan too, answered there with the same documents as the core's.
    observed = {"ball-1": [{"x": 2.05, "y": 3.0, "vx": 1.0, "vy": -0.5}]}
    s_edge = edge.post(f"/v1/worlds/{WORLD}/surprise", {"observed": observed, "entities": ["ball-1"]})
    s_core = api.post(f"/v1/worlds/{WORLD}/surprise", json={"observed": observed, "entities": ["ball-1"]}).json()
    assert s_edge.status_code == 200 and "staleness" in s_edge.json(), s_edge.text
    assert s_edge.json()["scores"].keys() == s_core["scores"].keys()
    plan = edge.post(f"/v1/worlds/{WORLD}/plan", {"entity": "ball-1", "goal": {"x": 5.0, "y": 5.0, "radius": 1.0},
                                                  "horizon": 5, "budget": 64, "entities": ["ball-1"]})
    assert plan.status_code == 200 and len(plan.json()["actions"]) == 5, plan.text


def test_observations_at_the_edge_reach_every_region_once(core: Deployment, edge: EdgeProcess) -> None:
    batch = [_ball(f"edge-obs-{i}", f"rover-{i}", float(i + 1)) for i in range(5)]
    first = edge.post(f"/v1/worlds/{WORLD}/observations", batch)
    assert first.status_code == 202 and first.json()["accepted"] == 5, first.text
    replay = edge.post(f"/v1/worlds/{WORLD}/observations", batch)
    assert replay.json()["duplicate"] == 5
    for region in ("r1", "r2"):
        with httpx.Client(base_url=core.api[region].url, headers=auth_headers(core), timeout=30) as c:
            for i in range(5):
                doc = eventually(lambda: found(c, f"/v1/worlds/{WORLD}/entities/rover-{i}"), f"rover-{i} in {region}")
                assert doc["counters"]["observations"]["total"] == 1, doc


def test_cut_off_it_refuses_past_its_bound_answers_a_bounded_request_and_forwards_after_the_heal(
        core: Deployment, net: Net, edge: EdgeProcess) -> None:
    eventually(edge.fresh, "the edge in step with the core")
    cut(net, edge)
    refused = eventually(lambda: (r := edge.get(f"/v1/worlds/{WORLD}/physics")).status_code == 503 and r,
                         "the edge to refuse as stale")
    assert refused.json()["type"] == "/problems/edge-stale" and int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["stale_ms"] > MAX_STALENESS_S * 1000
    bounded = edge.get(f"/v1/worlds/{WORLD}/entities/ball-1", params={"max_staleness_ms": 600_000})
    assert bounded.status_code == 200 and bounded.json()["staleness"]["bounded"] is True
    assert bounded.json()["staleness"]["stale_ms"] > MAX_STALENESS_S * 1000
    # Observations are still taken, stored, and held until the link is back.
    held = edge.post(f"/v1/worlds/{WORLD}/observations", [_ball("cut-1", "cut-ball", 7.0)])
    assert held.status_code == 202 and held.json()["outbox"] >= 1
    api = httpx.Client(base_url=core.api["r1"].url, headers=auth_headers(core), timeout=30)
    assert api.get(f"/v1/worlds/{WORLD}/entities/cut-ball").status_code == 404
    net.heal()
    doc = eventually(lambda: found(api, f"/v1/worlds/{WORLD}/entities/cut-ball"), "the held observation")
    assert doc["counters"]["observations"]["total"] == 1
    eventually(lambda: edge.get(f"/v1/worlds/{WORLD}/physics").status_code == 200, "the edge back in step")


def test_a_restarted_edge_answers_from_its_disk_at_once(core: Deployment, net: Net, edge: EdgeProcess) -> None:
    eventually(edge.fresh, "the edge in step with the core")
    eventually(lambda: edge.get(f"/v1/worlds/{WORLD}/entities/ball-1").status_code == 200, "ball-1 at the edge")
    cut(net, edge)
    edge.post(f"/v1/worlds/{WORLD}/observations", [_ball("restart-1", "restart-ball", 1.5)]).raise_for_status()
    edge.stop()
    time.sleep(1.0)  # the last flush of its store has run; nothing about the core can be learnt while cut
    edge.start()
    r = edge.get(f"/v1/worlds/{WORLD}/entities/ball-1", params={"max_staleness_ms": 600_000})
    assert r.status_code == 200, r.text  # from its disk: the core is unreachable
    assert r.json()["staleness"]["stale_ms"] >= 1000
    p = edge.post(f"/v1/worlds/{WORLD}/predict", {"horizon": 2, "entities": ["ball-1"]},
                  params={"max_staleness_ms": 600_000})
    assert p.status_code == 200, p.text  # the model too: its blob is on the edge's disk
    net.heal()
    api = httpx.Client(base_url=core.api["r2"].url, headers=auth_headers(core), timeout=30)
    doc = eventually(lambda: found(api, f"/v1/worlds/{WORLD}/entities/restart-ball"), "the stored observation")
    assert doc["counters"]["observations"]["total"] == 1


def test_bad_requests_are_refused_and_change_nothing(core: Deployment, net: Net, tmp_path: Path) -> None:
    e = EdgeProcess(core, net, tmp_path / "data", "edge-prefixed", "--entities", "rover-").start()
    try:
        eventually(e.fresh, "the edge in step with the core")
        assert httpx.get(f"{e.url}/v1/worlds/{WORLD}/physics").status_code == 401
        other = e.get("/v1/worlds/elsewhere/physics")
        assert other.status_code == 404 and other.json()["type"] == "/problems/not-on-edge"
        outside = e.get(f"/v1/worlds/{WORLD}/entities/ball-1")
        assert outside.status_code == 404 and outside.json()["type"] == "/problems/not-on-edge"
        before = e.get("/v1/edge").json()["outbox"]
        bad = e.post(f"/v1/worlds/{WORLD}/observations", [_ball("ok-1", "rover-9", 1.0), {"entity": "rover-9"}])
        assert bad.status_code == 422 and bad.json()["type"] == "/problems/validation-error"
        assert e.get("/v1/edge").json()["outbox"] == before  # the valid one was not stored either
        assert e.get(f"/v1/worlds/{WORLD}/physics", params={"max_staleness_ms": -1}).status_code == 422
        assert e.post(f"/v1/worlds/{WORLD}/predict", {"horizon": 0}).status_code == 422
    finally:
        e.stop()
    usage = subprocess.run([str(Path(sys.executable).parent / "worldstate"), "edge", "--core", ",", "--world", WORLD],
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "core URL" in usage.stderr


def _readme_blocks() -> list[str]:
    from tests.test_readme_streams import blocks, section
    return blocks(section("## Edge nodes: a world near its sensors"), "sh")


def _documents(text: str) -> list[Any]:
    """The JSON documents curl printed one after another (with no newline between them)."""
    docs, decoder, i = [], json.JSONDecoder(), 0
    while (i := text.find("{", i)) != -1:
        doc, i = decoder.raw_decode(text, i)
        docs.append(doc)
    return docs


def test_the_readme_edge_commands_run_as_shown(core: Deployment) -> None:
    """The README's edge block, run by bash with $API and $WORLDSTATE_KEY set as a user has them;
    the edge it starts in the background is stopped when the block ends."""
    edge_block, _ = _readme_blocks()
    shutil.rmtree("/tmp/edge-lab", ignore_errors=True)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("WORLDSTATE_")},
           "API": core.api["r1"].url, "WORLDSTATE_KEY": core.admin_key or "",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    code = f"trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\ncd {repo_root()}\n{edge_block}"
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", code], env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    physics, posted = _documents(done.stdout)
    assert physics["physics"] == PHYSICS and physics["consistency"] == "edge" and "stale_ms" in physics["staleness"]
    assert posted["accepted"] == 1 and posted["forwarded"] is False
    # The edge stopped with the block; it had forwarded the observation, or does on its next start.
    with httpx.Client(base_url=core.api["r1"].url, headers=auth_headers(core), timeout=30) as api:
        if found(api, f"/v1/worlds/{WORLD}/entities/ball-9") is None:
            again = subprocess.Popen([str(Path(sys.executable).parent / "worldstate"), "edge", "--core",
                                      core.api["r1"].url, "--world", WORLD, "--data-dir", "/tmp/edge-lab",
                                      "--port", str(free_port()), "--key", core.admin_key or ""])
            try:
                eventually(lambda: found(api, f"/v1/worlds/{WORLD}/entities/ball-9"), "ball-9 at the core")
            finally:
                again.terminate()
                again.wait(15)


def test_up_starts_edges_next_to_the_core(core: Deployment) -> None:
    """`worldstate up --edges 2` as the README shows it: each edge it prints follows its region."""
    _, up_block = _readme_blocks()
    command = up_block.splitlines()[0]
    assert command == ".venv/bin/worldstate up --edges 2"
    proc = subprocess.Popen(command.split(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=repo_root())
    try:
        out = until_up(proc)
        edges = re.findall(r"^\s*edge\s+(\S+)\s+(http://\S+)\s+\(world (\S+), follows (\S+)\)$", out, re.M)
        assert [(name, world, region) for name, _, world, region in edges] == \
            [("edge1", "lab", "r1"), ("edge2", "lab", "r2")], out
        state = json.loads((Path(out.split("run dir ")[1].split(")")[0]) / "deployment.json").read_text())
        headers = auth(out)
        httpx.put(f"{state['api']['r1']}/v1/worlds/lab", json={}, headers=headers).raise_for_status()
        httpx.put(f"{state['api']['r1']}/v1/worlds/lab/physics", json=PHYSICS, headers=headers).raise_for_status()
        for _, url, _, region in edges:
            doc = eventually(lambda: (r := httpx.get(f"{url}/v1/worlds/lab/physics", headers=headers)).status_code
                             == 200 and r.json(), f"the edge at {url}")
            assert doc["physics"] == PHYSICS and doc["staleness"]["region"] == region
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_edge_swaps_to_a_newly_published_model(core: Deployment, edge: EdgeProcess) -> None:
    """A new manifest at the core: the edge fetches the blob by its hash and serves it."""
    from world_model.checkpoints import CheckpointStore, from_bytes, to_bytes

    eventually(edge.fresh, "the edge in step with the core")
    api = httpx.Client(base_url=core.api["r1"].url, headers=auth_headers(core), timeout=30)
    current = api.get("/v1/models/manifest")
    manifest = current.json()["manifest"]
    blobs = CheckpointStore(core.run_dir / "checkpoints")
    variant = from_bytes(blobs.get_bytes(manifest["hash"]))
    variant["metrics"] = {**variant["metrics"], "variant": "edge-swap"}  # same weights, another blob
    digest = blobs.put_bytes(to_bytes(variant))
    published = api.put("/v1/models/manifest", json={**manifest, "hash": digest, "version": manifest["version"] + 1},
                        headers={"If-Match": current.headers["ETag"]})
    assert published.status_code == 200, published.text
    eventually(lambda: edge.get("/v1/edge").json()["model"]["hash"] == digest, "the edge serving the new model")
    p = eventually(lambda: (x := edge.post(f"/v1/worlds/{WORLD}/predict", {"horizon": 2, "entities": ["ball-1"]}))
                   .status_code == 200 and x, "a prediction")
    assert p.json()["provenance"]["model"]["hash"] == digest
