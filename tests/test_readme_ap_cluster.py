"""README's "A region's AP replica on a Redis Cluster": its `worldstate up --ap-shards` command run as a user
runs it, then an observation posted to one region and read in the other with its token."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis

from deploy.launcher import Deployment, Topology, wait_until
from deploy.processes import free_port
from deploy.redis_cluster import cluster_args, wait_role
from tests.conftest import auth_headers
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
    for bad in ({"ap_shards": 0}, {"ap_replicas": -1}, {"ap_shards": 2, "host": lambda name: "127.0.0.2"}):
        with pytest.raises(ValueError):
            Deployment(Topology(etcd_members=0, regions=1, api=False, run_dir=tmp_path / "bad", **bad))  # type: ignore[arg-type]


def _bus_free_ports() -> tuple[int, int]:
    """Two free ports whose cluster bus ports (+10000) are free too, as the README's block assumes."""
    found: list[int] = []
    while len(found) < 2:
        p = free_port()
        if p + 10_000 < 65_536 and p not in found:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p + 10_000))
                except OSError:
                    continue
            found.append(p)
    return found[0], found[1]


def _bash(code: str, env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", code], env={**os.environ, **env}, cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{code}\nexited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


class Poster(threading.Thread):
    """Posts one new entity a request, to r1 and r2 in turn, each until acknowledged (a 503 or 504
    is posted again, as a client would: the event id makes a repeat a duplicate)."""

    def __init__(self, d: Deployment, world: str) -> None:
        super().__init__(daemon=True)
        self.urls = [d.api["r1"].url, d.api["r2"].url]
        self.headers, self.world = auth_headers(d), world
        self.stop = threading.Event()
        self.acked: list[str] = []
        self.refused = 0
        self.unexpected: list[str] = []

    def run(self) -> None:
        with httpx.Client(headers=self.headers, timeout=30) as client:
            i = 0
            while not self.stop.is_set():
                entity = f"b{i}"
                body = [{"event_id": f"ev-{i}", "entity": entity, "source": "cam", "fields": {"x": float(i)}}]
                while True:
                    got = client.post(f"{self.urls[i % 2]}/v1/worlds/{self.world}/observations", json=body)
                    if got.status_code == 202:
                        break
                    if got.status_code not in (503, 504):  # moving, failing over, a replica behind: retry
                        self.unexpected.append(got.text)
                        return
                    self.refused += 1
                    time.sleep(0.1)
                self.acked.append(entity)
                i += 1
                time.sleep(0.01)


def test_the_readme_operations_fail_over_and_grow_a_region_under_load(tmp_path: Path) -> None:
    text = section("#### Operating a clustered region")
    check, failover, grow = blocks(text, "sh")
    flags = set(re.findall(r"--[a-z-]+ \S+", grow.replace("\\\n", " ")))
    wanted = set(re.findall(r"--[a-z-]+ \S+", " ".join(cluster_args(1, 2, "d"))))
    ours = {f for f in wanted if f.split()[0] not in ("--port", "--dir", "--cluster-port", "--bind", "--daemonize",
                                                      "--cluster-allow-replica-migration")}
    assert ours <= flags | {"--save "}, ours - flags  # the README's nodes run as `up` runs its own
    with Deployment(Topology(etcd_members=1, regions=2, ap_shards=2, ap_replicas=1, run_dir=tmp_path / "run")) as d:
        assert httpx.put(f"{d.api['r1'].url}/v1/worlds/ops", json={}, headers=auth_headers(d)).status_code in (200, 201)
        c = d.clusters["r1"]
        master = c.current_masters()[0]
        replica = c.replicas_of(master)[0]
        new, new_replica = _bus_free_ports()
        env = {"NODE": str(master.port), "REPLICA": str(replica.port), "NEW": str(new), "NEW_REPLICA": str(new_replica)}
        poster = Poster(d, "ops")
        poster.start()
        try:
            assert "cluster_state:ok" in _bash(check, env, tmp_path)
            _bash(failover, env, tmp_path)
            wait_role(replica, "master", 60)
            c.wait_serving(60)
            _bash(grow, env, tmp_path)  # it waits, as a user would, until every node has the failover's configuration
            with redis.Redis(port=new) as r:
                assert r.info("replication")["role"] == "master"
                slots = sum(int(hi) - int(lo) + 1 for lo, hi, m, *_ in r.execute_command("CLUSTER", "SLOTS")
                            if int(m[1]) == new)
                assert slots > 16384 // 4, slots  # its share of a 3-master region
            time.sleep(1)  # a few writes after the move, some to the new master's partitions
            poster.stop.set()
            poster.join(120)
            assert not poster.unexpected and len(poster.acked) > 20, (poster.unexpected, len(poster.acked))
            with httpx.Client(headers=auth_headers(d), timeout=30) as client:
                for region in ("r1", "r2"):
                    seen: dict[str, int] = {}

                    def gather() -> bool:
                        seen.clear()
                        after = None
                        while True:
                            page = client.get(f"{d.api[region].url}/v1/worlds/ops/entities",
                                              params={"limit": 1000, **({"after": after} if after else {})}).json()
                            seen.update({e["entity"]: e["counters"]["observations"]["total"] for e in page["items"]})
                            if not page["next"]:
                                return set(poster.acked) <= set(seen)
                            after = page["next"]["after"]

                    assert wait_until(gather, 120, 0.5), (region, sorted(set(poster.acked) - set(seen))[:10])
                    assert all(seen[e] == 1 for e in poster.acked), region  # each acknowledged once, in both
        finally:
            poster.stop.set()
            poster.join(120)
            for port in (new, new_replica):
                subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)
