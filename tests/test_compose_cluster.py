"""docker-compose.cluster.yml, over docker-compose.yml, against `worldstate up --ap-shards 3`.

There is no Docker engine here: the files are merged as Compose merges them (for the keys these
files use) and checked against the launcher's plan, as tests/test_launcher.py checks the plain file;
then the cluster nodes' own redis-server command lines are started for real (addresses moved to
loopback) and the one-shot init's script forms them with this machine's redis-cli.
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import redis
import yaml

from consistency.ap_backend import credentials, is_cluster_url, startup_nodes
from deploy import binaries
from deploy.launcher import Deployment, Topology
from deploy.nodes import RedisNode
from deploy.processes import free_port
from learn.federated import region_urls
from service.config import Settings
from tests.conftest import repo_root
from tests.test_launcher import _acl, _flags, _interpolate, _waits_healthy

PASSWORD = "pw"
# Flags only a container needs: the address the other nodes and the clients are given.
ANNOUNCE = {"--cluster-announce-ip", "--cluster-announce-hostname", "--cluster-preferred-endpoint-type"}


class _Override(dict):  # type: ignore[type-arg]
    """A mapping tagged `!override`: it replaces the base file's value instead of merging into it."""


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!override", lambda loader, node: _Override(loader.construct_mapping(node, deep=True)))


def merged_services() -> dict[str, Any]:
    """`docker compose -f docker-compose.yml -f docker-compose.cluster.yml config`'s services, for the keys
    these files use: mappings (environment, depends_on) merge key by key unless tagged `!override`, other
    values (command, profiles added to a service that had none) replace; services with a profile are off."""
    base = yaml.safe_load((repo_root() / "docker-compose.yml").read_text())["services"]
    over = yaml.load((repo_root() / "docker-compose.cluster.yml").read_text(), Loader=_Loader)["services"]
    for name, svc in over.items():
        into = base.setdefault(name, {})
        for key, value in svc.items():
            if isinstance(value, dict) and not isinstance(value, _Override) and isinstance(into.get(key), dict):
                into[key] = {**into[key], **value}
            else:
                into[key] = dict(value) if isinstance(value, _Override) else value
    return {name: svc for name, svc in base.items() if not svc.get("profiles")}


def _planned(tmp_path: Path) -> Deployment:
    # Planned, not started: the same topology as the plain file's check, each region a 3-master cluster.
    return Deployment(Topology(etcd_members=3, regions=2, run_dir=tmp_path, backend_auth=True, edges=1, learn=True,
                               ap_shards=3))


def test_compose_cluster_matches_launcher_topology(tmp_path: Path) -> None:
    compose, d = merged_services(), _planned(tmp_path)
    inits = {f"cluster-init-{r}" for r in d.clusters}
    assert set(compose) == {p.name for p in d.processes()} | {"model-init", "etcd-auth-init", "keys-init"} | inits
    assert d.redis == {} and "redis-r1" not in compose
    plain_redis = yaml.safe_load((repo_root() / "docker-compose.yml").read_text())["services"]["redis-r1"]
    network = yaml.load((repo_root() / "docker-compose.cluster.yml").read_text(), Loader=_Loader)["networks"]
    ipam = network["default"]["ipam"]["config"][0]
    subnet, dynamic = ipaddress.ip_network(ipam["subnet"]), ipaddress.ip_network(ipam["ip_range"])
    assert dynamic.subnet_of(subnet)  # type: ignore[arg-type]

    for region, cluster in d.clusters.items():
        addresses = []
        for node in cluster.nodes:
            svc = compose[node.name]
            ours, theirs = _flags(node.argv[1:]), _flags(svc["command"][1:])
            assert svc["command"][0] == "redis-server" and svc["image"] == plain_redis["image"]
            assert set(ours) == set(theirs) - ANNOUNCE
            for flag in ("--appendonly", "--appendfsync", "--save", "--daemonize", "--maxmemory", "--maxmemory-policy",
                         "--cluster-enabled", "--cluster-config-file", "--cluster-node-timeout",
                         "--cluster-allow-replica-migration", "--masteruser"):
                assert ours[flag] == theirs[flag], (node.name, flag)
            # The ACL user as on the plain Redis, and replicas log in to their master as it.
            assert _acl(svc["command"]) == _acl(node.argv) == [["default", "off"], ["worldstate", "on", "~*", "&*", "+@all"]]
            assert theirs["--masterauth"].startswith("${WORLDSTATE_REDIS_PASSWORD:?")
            assert "ports" not in svc and set(svc["expose"]) == {theirs["--port"], theirs["--cluster-port"]}
            assert "redis-cli --user worldstate ping" in " ".join(svc["healthcheck"]["test"])
            assert "REDISCLI_AUTH" in svc["environment"]
            # Announced as its fixed address on the compose network, and to clients by its service name.
            ip = svc["networks"]["default"]["ipv4_address"]
            assert theirs["--cluster-announce-ip"] == ip and theirs["--cluster-announce-hostname"] == node.name
            assert theirs["--cluster-preferred-endpoint-type"] == "hostname"
            # in the subnet, outside the range Docker hands other containers from
            assert ipaddress.ip_address(ip) in subnet and ipaddress.ip_address(ip) not in dynamic
            assert any(v == f"{node.name}:{theirs['--dir']}" for v in svc["volumes"])
            addresses.append(f"{ip}:{theirs['--port']}")

        init = compose[f"cluster-init-{region}"]
        script = init["command"][2]
        assert init["command"][:2] == ["sh", "-c"] and init["image"] == "redis:7.0"
        created = re.search(r"--cluster create ((?:\S+:\d+ )+)--cluster-replicas (\d+) --cluster-yes", script)
        assert created and created.group(1).split() == addresses and int(created.group(2)) == cluster.replicas
        assert "--user worldstate" in script and "REDISCLI_AUTH" in init["environment"]
        assert _waits_healthy(init, {n.name for n in cluster.nodes}), init.get("depends_on")

    shards = {n.name for c in d.clusters.values() for n in c.nodes}
    for region, node in d.api.items():
        svc = compose[f"api-{region}"]
        env = {k: str(v) for k, v in svc["environment"].items()}
        assert set(env) == set(node.env)
        assert _waits_healthy(svc, {*(m.name for m in d.etcd), *shards}), svc.get("depends_on")
        assert set(svc["depends_on"]) == {*(m.name for m in d.etcd), *shards, "etcd-auth-init", *inits}
        assert all(svc["depends_on"][i] == {"condition": "service_completed_successfully"} for i in inits)
        # The store URL: every node of the region's cluster a startup node, as the ACL user.
        theirs = Settings.from_env(_interpolate_env(env))
        ours = Settings.from_env(node.env)
        for region_of, their_url in [(region, theirs.redis_url), *theirs.peers.items()]:
            ours_url = ours.redis_url if region_of == region else ours.peers[region_of]
            assert is_cluster_url(their_url) and is_cluster_url(ours_url)
            assert startup_nodes(their_url) == [(n.name, 6379) for n in d.clusters[region_of].nodes]
            assert credentials(their_url) == {"username": "worldstate", "password": PASSWORD}
            assert credentials(ours_url)["username"] == "worldstate"
        assert set(theirs.peers) == set(ours.peers)

    _check_cluster_learning_roles(compose, d)


def _interpolate_env(env: dict[str, str]) -> dict[str, str]:
    return {k: _interpolate(v, WORLDSTATE_REDIS_PASSWORD=PASSWORD, WORLDSTATE_ETCD_PASSWORD=PASSWORD)
            for k, v in env.items()}


def _check_cluster_learning_roles(compose: dict[str, Any], d: Deployment) -> None:
    """The learners and the aggregator run `worldstate up --ap-shards 3 --learn`'s flags, reading and
    announcing through their regions' cluster URLs."""
    def cluster_of(url: str, region: str) -> bool:
        url = _interpolate(url, WORLDSTATE_REDIS_PASSWORD=PASSWORD)
        return startup_nodes(url) == [(n.name, 6379) for n in d.clusters[region].nodes] and \
            credentials(url) == {"username": "worldstate", "password": PASSWORD}

    assert [p.name for p in d.learners] == ["learner-r1", "learner-r2", "aggregator"]
    for role in d.learners:
        svc = compose[role.name]
        verb = "learn" if role.region else "aggregate"
        assert svc["command"][:2] == ["worldstate", verb]
        ours, theirs = _flags(role.argv[role.argv.index(verb) + 1:]), _flags(svc["command"][2:])
        assert set(ours) == set(theirs), role.name
        for flag in ("--world", "--every", "--publish", "--region", "--learner", "--aggregator"):
            assert ours.get(flag) == theirs.get(flag), (role.name, flag)
        if role.region:
            assert cluster_of(theirs["--from-log"], role.region) and cluster_of(theirs["--announce"], role.region)
            assert theirs["--shard-dir"] == f"/shards/{role.region}"
            nodes = {n.name for n in d.clusters[role.region].nodes}
            assert set(svc["depends_on"]) == {f"api-{role.region}", *nodes, "keys-init"}
            assert _waits_healthy(svc, {f"api-{role.region}", *nodes}), svc.get("depends_on")
        else:
            urls = region_urls(theirs["--region-redis"])
            assert set(urls) == set(d.clusters) and all(cluster_of(u, r) for r, u in urls.items())
            nodes = {n.name for c in d.clusters.values() for n in c.nodes}
            assert set(svc["depends_on"]) == {"api-r1", *nodes, "keys-init"}
            assert _waits_healthy(svc, {"api-r1", *nodes}), svc.get("depends_on")


def test_the_init_script_forms_the_compose_nodes_with_this_redis(tmp_path: Path) -> None:
    """The r1 nodes' compose command lines, run by this machine's redis-server on loopback (port, bus port,
    data dir and announced address moved), formed by cluster-init-r1's script with this redis-cli, twice."""
    compose = merged_services()
    names = [f"redis-r1-{i}" for i in range(3)]
    server = binaries.find("redis-server").path
    nodes, moved = [], {}
    for name in names:
        argv = [_interpolate(a, WORLDSTATE_REDIS_PASSWORD=PASSWORD) for a in compose[name]["command"]]
        ip = compose[name]["networks"]["default"]["ipv4_address"]
        port, bus, data = free_port(), free_port(), tmp_path / name
        data.mkdir()
        local = {"--port": str(port), "--cluster-port": str(bus), "--dir": str(data), "--bind": "127.0.0.1",
                 "--cluster-announce-ip": "127.0.0.1"}
        argv = [server, *(local.get(argv[i - 1], a) for i, a in enumerate(argv) if i > 0)]
        nodes.append(RedisNode("r1", port, argv, tmp_path / f"{name}.log", user=("worldstate", PASSWORD)))
        moved[ip] = port
    script = compose["cluster-init-r1"]["command"][2].replace("$$", "$")
    for ip, port in moved.items():
        script = script.replace(f"{ip}:6379", f"127.0.0.1:{port}").replace(f"-h {ip} ", f"-h 127.0.0.1 -p {port} ")
    assert "172." not in script
    env = {**os.environ, "REDISCLI_AUTH": PASSWORD}
    try:
        for n in nodes:
            n.start()
        for n in nodes:
            n.wait_healthy(30)
        first = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=180)
        assert first.returncode == 0, first.stdout + first.stderr
        again = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=180)
        assert again.returncode == 0 and "already formed" in again.stdout, again.stdout + again.stderr
        with redis.Redis(port=nodes[0].port, username="worldstate", password=PASSWORD, decode_responses=True) as r:
            info = dict(line.split(":", 1) for line in r.execute_command("CLUSTER", "INFO").splitlines() if ":" in line)
            assert info["cluster_state"] == "ok" and info["cluster_known_nodes"] == "3"
            slots = r.execute_command("CLUSTER", "SLOTS")
        # Three masters of a third each, each named to clients by its service name.
        assert sorted(int(s[1]) - int(s[0]) + 1 for s in slots) == [5461, 5461, 5462]
        assert sorted(str(s[2][0]) for s in slots) == names
    finally:
        for n in nodes:
            n.stop()

