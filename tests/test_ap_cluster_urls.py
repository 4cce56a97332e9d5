"""A Redis Cluster reached through addresses it does not advertise: the `advertised>reached` form of a
`redis+cluster://` URL (consistency/ap_backend.py), as a node's settings carry it and as the launcher
builds it for a proxied network. The proxied clusters themselves are exercised by the AP suite
(tests/ap_helpers.py) and tests/test_ap_replication_failover.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from consistency.ap_backend import cluster_url, remapped_nodes, startup_nodes
from consistency.ap_store import ReplicaStore
from deploy.launcher import Deployment, Topology
from deploy.processes import wait_until
from jepsen_like.proxy import RESET, Net, Rule
from service.config import Settings


def test_a_node_is_dialed_where_the_url_says_and_known_by_what_it_advertises() -> None:
    url = "redis+cluster://10.0.0.5:6379>127.0.0.1:40001,10.0.0.6:6379>127.0.0.1:40002,127.0.0.1:7003"
    assert remapped_nodes(url) == [(("10.0.0.5", 6379), ("127.0.0.1", 40001)),
                                   (("10.0.0.6", 6379), ("127.0.0.1", 40002)),
                                   (("127.0.0.1", 7003), ("127.0.0.1", 7003))]
    assert startup_nodes(url) == [("127.0.0.1", 40001), ("127.0.0.1", 40002), ("127.0.0.1", 7003)]
    assert cluster_url(dict(remapped_nodes(url))) == url  # the launcher's builder writes the same form
    assert cluster_url([("127.0.0.1", 7001), ("127.0.0.1", 7002)]) == "redis+cluster://127.0.0.1:7001,127.0.0.1:7002"
    assert startup_nodes("redis://h:1/0") == [("h", 1)] and startup_nodes("redis://h/0") == [("h", 6379)]


@pytest.mark.parametrize("url, says", [
    ("redis+cluster://a:1>b", "'a:1>b' is not HOST:PORT"),
    ("redis+cluster://a:1,b:x", "'b:x' is not HOST:PORT"),
    ("redis+cluster://a:1>>b:2", "'a:1>>b:2' is not HOST:PORT"),
    ("redis+cluster://a:70000", "'a:70000' is not HOST:PORT"),
    ("redis+cluster://a:1>b:2,a:1>c:3", "a:1 is remapped to two addresses"),
    ("redis+cluster://a:1,b:2?remap=a:1>c:3", "only /0 may follow the node list"),
    ("redis+cluster://a:1/3", "only /0 may follow the node list"),
])
def test_a_malformed_cluster_url_is_refused_naming_the_node(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        remapped_nodes(url)
    with pytest.raises(ValueError, match=says):
        ReplicaStore(url, "r1", "n")  # before any connection
    with pytest.raises(ValueError, match="WORLDSTATE_REDIS_URL: .*" + says):
        Settings.from_env({"WORLDSTATE_REDIS_URL": url})
    with pytest.raises(ValueError):  # a bad node, or (a query's `=`) a peer that is not REGION=URL
        Settings.from_env({"WORLDSTATE_PEERS": f"r2={url}"})


def test_the_error_never_shows_the_password() -> None:
    with pytest.raises(ValueError) as refused:
        remapped_nodes("redis+cluster://user:s3cret@a:1>b")
    assert "s3cret" not in str(refused.value)


def test_a_remapped_cluster_url_survives_the_peers_setting() -> None:
    url = "redis+cluster://127.0.0.1:7001>127.0.0.1:40001,127.0.0.1:7002>127.0.0.1:40002"
    env = {"WORLDSTATE_REDIS_URL": url, "WORLDSTATE_PEERS": f"r2={url},r3=redis://h:4/0"}
    settings = Settings.from_env(env)
    assert settings.redis_url == url and settings.peers == {"r2": url, "r3": "redis://h:4/0"}
    assert Settings.from_env(settings.to_env()).peers == settings.peers


def test_a_node_with_a_bad_cluster_url_refuses_to_start() -> None:
    """`worldstate serve` as a user runs it: it exits at once, naming the setting and the node."""
    env = {**os.environ, "WORLDSTATE_REDIS_URL": "redis+cluster://127.0.0.1:7001>127.0.0.1", "WORLDSTATE_AUTH": "off"}
    done = subprocess.run([sys.executable, "-m", "deploy", "serve", "--host", "127.0.0.1", "--port", "0"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "WORLDSTATE_REDIS_URL: redis+cluster URL: node '127.0.0.1:7001>127.0.0.1' is not HOST:PORT" in done.stderr


def test_the_launcher_proxies_each_cluster_node_and_remaps_its_address(tmp_path: Path) -> None:
    linked: list[tuple[str, str, int]] = []

    def link(src: str, dst: str, port: int) -> int:
        linked.append((src, dst, port))
        return 50000 + len(linked)  # a proxy port per (dialer, node)

    d = Deployment(Topology(etcd_members=0, regions=2, ap_shards=2, ap_replicas=1, run_dir=tmp_path, link=link))
    for me, region, peer in (("api-r1", "r1", "r2"), ("api-r2", "r2", "r1")):
        env = d.api[region].env
        for got, of in ((env["WORLDSTATE_REDIS_URL"], region), (Settings.from_env(env).peers[peer], peer)):
            nodes = d.clusters[of].nodes
            proxies = {(src, dst, port): 50001 + i for i, (src, dst, port) in enumerate(linked)}
            assert remapped_nodes(got) == [((n.host, n.port), ("127.0.0.1", proxies[(me, n.name, n.port)]))
                                           for n in nodes]
    assert len(linked) == 2 * 2 * 4  # each API node, both regions' clusters, 2 masters + 2 replicas each
    with pytest.raises(ValueError, match="netns"):  # a node listening on a namespace's address: not yet
        Deployment(Topology(etcd_members=0, regions=1, ap_shards=2, run_dir=tmp_path / "ns",
                            host=lambda name: "10.0.0.1"))


def test_api_nodes_reach_the_other_region_s_cluster_only_through_the_proxies(tmp_path: Path) -> None:
    """A proxied deployment with clustered regions, as jepsen_like's proxy mode builds one: the API
    nodes' peer URLs remap every cluster node to its proxy, so a cut between the regions stops their
    replication (were any node dialed where it advertises itself, the shipper would never fail)."""
    net = Net()
    d = Deployment(Topology(etcd_members=1, regions=2, ap_shards=2, run_dir=tmp_path,
                            link=lambda src, dst, port: net.listen(src, dst, port)))
    try:
        d.start()
        r1, r2 = d.api["r1"].url, d.api["r2"].url
        headers = {"Authorization": f"Bearer {d.admin_key}"}
        assert httpx.put(f"{r1}/v1/worlds/lab", json={}, headers=headers).status_code in (200, 201)

        def post(event: str) -> str:
            got = httpx.post(f"{r1}/v1/worlds/lab/observations", headers=headers,
                             json=[{"event_id": event, "entity": event, "source": "cam", "fields": {"x": 1.0}}])
            assert got.status_code == 202 and got.json()["accepted"] == 1, got.text
            return str(got.json()["token"])

        def read_in_r2(entity: str, token: str) -> None:
            deadline = time.monotonic() + 120  # bounds a failure only: the token's wait is the node's
            while True:
                got = httpx.get(f"{r2}/v1/worlds/lab/entities/{entity}", headers=headers, params={"token": token},
                                timeout=60)
                if got.status_code == 200 or time.monotonic() > deadline:
                    break
            assert got.status_code == 200, got.text

        def r1_reaches_r2() -> bool:
            return bool(httpx.get(f"{r1}/readyz", timeout=30).json()["tiers"]["ap"]["peers"]["r2"]["reachable"])

        read_in_r2("before", post("before"))
        assert wait_until(r1_reaches_r2, 60)

        def failover_watch(api: str) -> dict:
            return dict(httpx.get(f"{api}/readyz", timeout=30).json()["tiers"]["ap"]["failover"])

        # Each node's failover watch finds the master of every partition through the proxies (it once
        # looked the slot map's advertised addresses up unmapped, found none, and never recovered a
        # failover in a proxied deployment), and its first look recovers the unmarked partitions.
        for api in (r1, r2):
            assert wait_until(lambda: (w := failover_watch(api))["watched"] == 64 and w["partitions_recovered"] >= 64
                              and not w["pending"], 60), failover_watch(api)
        shards = [n.name for c in d.clusters.values() for n in c.nodes]
        across = [(f"api-{a}", s) for a in ("r1", "r2") for s in shards if not s.startswith(f"redis-{a}-")]
        net.set([*across, *((dst, src) for src, dst in across)], Rule(RESET))
        token = post("during")  # r1's own cluster is not cut
        assert wait_until(lambda: not r1_reaches_r2(), 60), "r1's shipper to r2 never failed: a link bypassed the proxies"
        assert httpx.get(f"{r2}/v1/worlds/lab/entities/during", headers=headers).status_code == 404
        net.heal()
        read_in_r2("during", token)
    finally:
        d.stop()
        net.close()
