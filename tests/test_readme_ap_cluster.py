"""README's "A region's AP replica on a Redis Cluster": its `worldstate up --ap-shards` command run as a user
runs it, then an observation posted to one region and read in the other with its token."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from deploy.launcher import Deployment, Topology
from tests.test_readme_streams import blocks, section
from tests.up_output import auth, until_up

ROOT = Path(__file__).resolve().parent.parent
WORLDSTATE = Path(sys.executable).with_name("worldstate")


def test_the_readme_command_starts_clustered_regions_that_replicate(tmp_path: Path) -> None:
    text = section("### A region's AP replica on a Redis Cluster: `--ap-shards`")
    argv = shlex.split(blocks(text, "sh")[0].strip())
    assert argv[0] == ".venv/bin/worldstate" and "--ap-shards" in argv
    proc = subprocess.Popen([str(WORLDSTATE), *argv[1:], "--run-dir", str(tmp_path), "--no-default-model"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        out = until_up(proc)
        state = json.loads((tmp_path / "deployment.json").read_text())
        assert all(url.startswith("redis+cluster://") for url in state["redis"].values()), out
        for region in ("r1", "r2"):
            roles = sorted(n["role"] for n in state["redis_clusters"][region]["nodes"])
            assert roles == ["master"] * 3 + ["slave"] * 3, out
            assert f"shard   redis-{region}-0" in out
        r1, r2, headers = state["api"]["r1"], state["api"]["r2"], auth(out)
        assert httpx.put(f"{r1}/v1/worlds/lab", json={}, headers=headers).status_code in (200, 201)
        posted = httpx.post(f"{r1}/v1/worlds/lab/observations", headers=headers, json=[
            {"event_id": f"readme-{i}", "entity": f"ball-{i}", "source": "cam", "fields": {"x": float(i)}}
            for i in range(20)])
        assert posted.status_code == 202, posted.text
        assert posted.json()["accepted"] == 20  # each acknowledged after a replica of its master held it
        token = posted.json()["token"]
        # the token's wait is bounded by the node (WORLDSTATE_READ_WAIT_S): ask again while it is not yet there
        deadline = time.monotonic() + 120
        while True:
            got = httpx.get(f"{r2}/v1/worlds/lab/entities/ball-7", headers=headers, params={"token": token},
                            timeout=60)
            if got.status_code == 200 or time.monotonic() > deadline:
                break
        assert got.status_code == 200, got.text
        assert got.json()["fields"]["x"]["value"] == 7.0 and got.json()["replica"] == "r2"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_default_topology_keeps_one_plain_redis_and_clusters_refuse_what_they_lack(tmp_path: Path) -> None:
    plain = Deployment(Topology(etcd_members=0, regions=2, api=False, run_dir=tmp_path / "plain"))
    assert set(plain.redis) == {"r1", "r2"} and plain.clusters == {}
    sharded = Deployment(Topology(etcd_members=1, regions=2, run_dir=tmp_path / "sharded", ap_shards=2))
    assert sharded.redis == {} and [len(c.nodes) for c in sharded.clusters.values()] == [2, 2]
    home, peers = sharded.api["r1"].env["WORLDSTATE_REDIS_URL"], sharded.api["r1"].env["WORLDSTATE_PEERS"]
    assert home == sharded.clusters["r1"].store_url and peers == f"r2={sharded.clusters['r2'].store_url}"
    for bad in ({"ap_shards": 0}, {"ap_replicas": -1}, {"ap_shards": 2, "backend_auth": True},
                {"ap_shards": 2, "learn": True}):
        with pytest.raises(ValueError):
            Deployment(Topology(etcd_members=0, regions=1, api=False, run_dir=tmp_path / "bad", **bad))  # type: ignore[arg-type]
