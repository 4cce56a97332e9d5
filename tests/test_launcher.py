"""`worldstate up`, per-process control, and docker-compose.yml matching the launcher."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
import yaml

from deploy import binaries
from deploy.launcher import Deployment, Topology, wait_until
from tests.up_output import until_up
from tests.conftest import auth_headers, repo_root


def _options(argv: list[str]) -> list[tuple[str, list[str]]]:
    """`--a x --b y z --b w` -> [("--a", ["x"]), ("--b", ["y", "z"]), ("--b", ["w"])]."""
    out: list[tuple[str, list[str]]] = []
    for arg in argv:
        if arg.startswith("--"):
            out.append((arg, []))
        elif out:
            out[-1][1].append(arg)
    return out


def _flags(argv: list[str]) -> dict[str, str]:
    """`--a x --b y` -> {"--a": "x", "--b": "y"} (a flag given more than once: its last value)."""
    return {flag: " ".join(values) for flag, values in _options(argv)}


def _interpolate(value: str, **env: str) -> str:
    """What docker compose makes of `${NAME:?message}` with NAME set."""
    return re.sub(r"\$\{(\w+)(?::\?[^}]*)?\}", lambda m: env[m.group(1)], value)


def _acl(argv: list[str]) -> list[list[str]]:
    """Redis's `--user` rules, the password (`>...`) left out."""
    return [[v for v in values if not v.startswith(">")] for flag, values in _options(argv) if flag == "--user"]


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status  # a zombie has exited; only its parent has not reaped it


def _values(argv: list[str], flag: str) -> list[str]:
    """Every value a repeatable flag is given."""
    return [argv[i + 1] for i in range(len(argv) - 1) if argv[i] == flag]


def _waits_healthy(svc: dict[str, Any], on: set[str]) -> bool:
    deps = svc.get("depends_on", {})
    return isinstance(deps, dict) and all(deps.get(n, {}).get("condition") == "service_healthy" for n in on)


def test_compose_matches_launcher_topology(tmp_path: Path) -> None:
    compose = yaml.safe_load((repo_root() / "docker-compose.yml").read_text())["services"]
    # Planned, not started; compose's backends require credentials, as `worldstate up --backend-auth`'s do.
    d = Deployment(Topology(etcd_members=3, regions=2, run_dir=tmp_path, backend_auth=True, edges=1, learn=True))
    # The launcher's processes, plus model-init (the one-shot publish `worldstate up` does last),
    # etcd-auth-init (its enabling of etcd auth) and keys-init (its first admin key).
    assert set(compose) == {p.name for p in d.processes()} | {"model-init", "etcd-auth-init", "keys-init"}

    # The etcd release line the tests run against, not another one with its own bugs.
    tag = compose["etcd1"]["image"].rpartition(":v")[2]
    assert tuple(int(x) for x in tag.split(".")[:2]) == binaries.find("etcd").version[:2], tag
    for m in d.etcd:
        assert compose[m.name]["image"] == compose["etcd1"]["image"]
        assert compose[m.name]["healthcheck"]["test"][1:2] == ["etcdctl"]
        assert compose[m.name]["healthcheck"]["test"][-2:] == ["endpoint", "health"]
    for node in d.redis.values():
        assert "redis-cli --user worldstate ping" in " ".join(compose[node.name]["healthcheck"]["test"])

    for m in d.etcd:
        ours, theirs = _flags(m.argv[1:]), _flags(compose[m.name]["command"][1:])
        assert compose[m.name]["command"][0] == "etcd"
        assert set(ours) == set(theirs)
        for flag in ("--name", "--initial-cluster-state", "--initial-cluster-token", "--heartbeat-interval",
                     "--election-timeout", "--logger", "--log-level"):
            assert ours[flag] == theirs[flag], flag
        names = lambda cluster: sorted(x.split("=")[0] for x in cluster.split(","))  # noqa: E731
        assert names(ours["--initial-cluster"]) == names(theirs["--initial-cluster"])
        assert theirs["--advertise-client-urls"].endswith(":2379")
        assert {"2379", "2380"} <= set(compose["etcd1"]["expose"])
        assert "ports" not in compose[m.name], "etcd is reachable only inside the compose network"
        # With auth on, etcd answers no anonymous read: the health check logs in as root.
        assert compose[m.name]["environment"]["ETCDCTL_USER"].startswith("root:${WORLDSTATE_ETCD_PASSWORD")

    init = compose["etcd-auth-init"]
    assert init["command"][:3] == ["python", "-m", "deploy.backend_auth"]
    assert sorted(_flags(init["command"][3:])["--endpoints"].split(",")) == sorted(f"{m.name}:2379" for m in d.etcd)
    assert init["environment"]["WORLDSTATE_ETCD_USERNAME"] == d.credentials.etcd_user  # type: ignore[union-attr]
    assert _waits_healthy(init, {m.name for m in d.etcd}), init.get("depends_on")

    for region, node in d.redis.items():
        svc = compose[f"redis-{region}"]
        ours, theirs = _flags(node.argv[1:]), _flags(svc["command"][1:])
        assert svc["command"][0] == "redis-server"
        assert set(ours) == set(theirs)
        for flag in ("--appendonly", "--appendfsync", "--save", "--daemonize"):
            assert ours[flag] == theirs[flag], flag
        assert "ports" not in svc and svc["expose"] == [theirs["--port"]], "Redis is reachable only inside"
        # Only the ACL user, with the launcher's rules; the default user is off.
        assert _acl(svc["command"]) == _acl(node.argv) == [["default", "off"], ["worldstate", "on", "~*", "&*", "+@all"]]
        assert any(v == ">${WORLDSTATE_REDIS_PASSWORD:?" + v.partition(":?")[2] for _, vs in _options(svc["command"])
                   for v in vs if v.startswith(">"))
        assert "REDISCLI_AUTH" in svc["environment"]  # the health check's password

    for region, node in d.api.items():
        svc = compose[f"api-{region}"]
        assert svc["command"][:2] == ["worldstate", "serve"]
        ours = node.argv[node.argv.index("serve") + 1:]
        assert set(_flags(ours)) == set(_flags(svc["command"][2:]))
        assert any(p.endswith(":" + _flags(svc["command"][2:])["--port"]) for p in svc["ports"])
        env = {k: str(v) for k, v in svc["environment"].items()}
        assert set(env) == set(node.env or {})
        assert env["WORLDSTATE_REGION"] == region == node.env["WORLDSTATE_REGION"]  # type: ignore[index]
        assert len(env["WORLDSTATE_ETCD_ENDPOINTS"].split(",")) == len(d.etcd)
        peers = lambda v: sorted(x.split("=")[0] for x in v.split(","))  # noqa: E731
        assert peers(env["WORLDSTATE_PEERS"]) == peers(node.env["WORLDSTATE_PEERS"])  # type: ignore[index]
        # Started, as the launcher does, only once every etcd member and Redis is healthy.
        assert _waits_healthy(svc, {p.name for p in [*d.etcd, *d.redis.values()]}), svc.get("depends_on")
        assert svc["depends_on"]["etcd-auth-init"] == {"condition": "service_completed_successfully"}
        # The same users as the launcher hands its nodes; every Redis URL carries the ACL user.
        assert env["WORLDSTATE_ETCD_USERNAME"] == node.env["WORLDSTATE_ETCD_USERNAME"]  # type: ignore[index]
        assert env["WORLDSTATE_ETCD_PASSWORD"].startswith("${WORLDSTATE_ETCD_PASSWORD:?")
        urls = lambda e: [e["WORLDSTATE_REDIS_URL"], *(p.partition("=")[2] for p in e["WORLDSTATE_PEERS"].split(","))]  # noqa: E731
        for ours_url, their_url in zip(urls(node.env), urls(env)):  # type: ignore[arg-type]
            assert their_url.startswith("redis://worldstate:${WORLDSTATE_REDIS_PASSWORD:?")  # required, not defaulted
            theirs = urllib.parse.urlsplit(_interpolate(their_url, WORLDSTATE_REDIS_PASSWORD="pw"))
            ours = urllib.parse.urlsplit(ours_url)
            assert (theirs.username, theirs.password) == ("worldstate", "pw") and ours.username == "worldstate"
        port = _flags(svc["command"][2:])["--port"]
        assert f"127.0.0.1:{port}/healthz" in " ".join(svc["healthcheck"]["test"])

    for edge in d.edges:  # the same command as `worldstate up --edges`, at the compose names
        svc = compose[edge.name]
        assert svc["command"][:2] == ["worldstate", "edge"]
        ours, theirs = _flags(edge.argv[edge.argv.index("edge") + 1:]), _flags(svc["command"][2:])
        assert set(ours) == set(theirs) and ours["--world"] == theirs["--world"]
        api = compose[f"api-{edge.region}"]
        assert theirs["--core"] == f"http://api-{edge.region}:{_flags(api['command'][2:])['--port']}"
        assert any(p.endswith(":" + theirs["--port"]) for p in svc["ports"])
        assert any(v.endswith(":" + theirs["--data-dir"]) for v in svc["volumes"])
        assert _waits_healthy(svc, {f"api-{edge.region}"}), svc.get("depends_on")

    _check_learning_roles(compose, d)

    init, apis = compose["model-init"], {f"api-{r}": compose[f"api-{r}"] for r in d.api}
    assert init["command"][:2] == ["worldstate", "publish-default"]
    # It publishes to, and waits for, every API node at the port it serves in its container.
    assert sorted(_values(init["command"], "--api")) == sorted(
        f"http://{name}:{_flags(svc['command'][2:])['--port']}" for name, svc in apis.items())
    assert _waits_healthy(init, set(apis)), init.get("depends_on")
    # The blob goes where the nodes read blobs: the same volume, at their checkpoint directory.
    ckpt = _values(init["command"], "--checkpoint-dir")
    for svc in apis.values():
        assert ckpt == [svc["environment"]["WORLDSTATE_CHECKPOINT_DIR"]]
        assert [v for v in svc["volumes"] if v.endswith(":" + ckpt[0])] == \
               [v for v in init["volumes"] if v.endswith(":" + ckpt[0])] != []
    # It publishes with the admin key keys-init made, read from the volume keys-init wrote it to.
    keys = compose["keys-init"]
    assert keys["command"][:3] == ["worldstate", "keys", "bootstrap"]
    assert _values(keys["command"], "--etcd-endpoints") == [compose["api-r1"]["environment"]["WORLDSTATE_ETCD_ENDPOINTS"]]
    key_file = _values(keys["command"], "--out")[0]
    assert _values(init["command"], "--key-file") == [key_file]
    key_dir = key_file.rpartition("/")[0]
    assert [v.split(":")[0] for v in keys["volumes"] if v.split(":")[1] == key_dir] == \
           [v.split(":")[0] for v in init["volumes"] if v.split(":")[1] == key_dir] != []
    assert init["depends_on"]["keys-init"] == {"condition": "service_completed_successfully"}


def _check_learning_roles(compose: dict[str, Any], d: Deployment) -> None:
    """learner-r1, learner-r2 and aggregator run `worldstate up --learn`'s command lines at the compose names."""
    def redis_at(url: str, region: str) -> bool:
        u = urllib.parse.urlsplit(_interpolate(url, WORLDSTATE_REDIS_PASSWORD="pw"))
        port = _flags(compose[f"redis-{region}"]["command"][1:])["--port"]
        return (u.hostname, str(u.port), u.username, u.password) == (f"redis-{region}", port, "worldstate", "pw")

    ckpt = compose["api-r1"]["environment"]["WORLDSTATE_CHECKPOINT_DIR"]
    key_file = _values(compose["keys-init"]["command"], "--out")[0]
    assert [p.name for p in d.learners] == ["learner-r1", "learner-r2", "aggregator"]
    for role in d.learners:
        svc, verb = compose[role.name], ("learn" if role.region else "aggregate")
        assert svc["command"][:2] == ["worldstate", verb]
        ours, theirs = _flags(role.argv[role.argv.index(verb) + 1:]), _flags(svc["command"][2:])
        assert set(ours) == set(theirs), role.name
        for flag in ("--world", "--every", "--publish", "--region", "--learner", "--aggregator"):
            assert ours.get(flag) == theirs.get(flag), (role.name, flag)
        assert theirs["--checkpoint-dir"] == ckpt and theirs["--key-file"] == key_file
        assert any(v.endswith(":" + ckpt) for v in svc["volumes"]) and any(
            v.split(":")[1] == key_file.rpartition("/")[0] for v in svc["volumes"])
        shard_dirs = _values(svc["command"], "--shard-dir")
        assert all(any(v.split(":")[1] == s.rpartition("/")[0] for v in svc["volumes"]) for s in shard_dirs)
        if role.region:  # a learner: its region's API node, Redis and shard folder
            api = compose[f"api-{role.region}"]
            assert theirs["--api"] == f"http://api-{role.region}:{_flags(api['command'][2:])['--port']}"
            assert redis_at(theirs["--from-log"], role.region) and redis_at(theirs["--announce"], role.region)
            assert shard_dirs == [f"/shards/{role.region}"]
            assert _waits_healthy(svc, {f"api-{role.region}", f"redis-{role.region}"}), svc.get("depends_on")
        else:  # the aggregator: every region's Redis, every learner's shards
            urls = dict(item.split("=", 1) for item in theirs["--region-redis"].split(","))
            assert set(urls) == set(d.redis) and all(redis_at(u, r) for r, u in urls.items())
            learners = [compose[p.name] for p in d.learners if p.region]
            assert sorted(shard_dirs) == sorted(_values(lc["command"], "--shard-dir")[0] for lc in learners)
            assert _waits_healthy(svc, {"api-r1", *(f"redis-{r}" for r in d.redis)}), svc.get("depends_on")


def test_worldstate_up_starts_everything_and_leaves_no_orphans(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy", "up", "--etcd-members", "3", "--regions", "2", "--run-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=repo_root(),
    )
    try:
        out = until_up(proc)
        assert "worldstate is up" in out, out
        state = json.loads((tmp_path / "deployment.json").read_text())
        pids = list(state["pids"].values())
        assert len(pids) == 3 + 2 + 2 and all(_alive(p) for p in pids)
        for url in state["api"].values():
            assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
            assert url in out
        proc.send_signal(signal.SIGINT)  # what Ctrl-C delivers
        assert proc.wait(60) == 0
        assert wait_until(lambda: not any(_alive(p) for p in pids), 10), "orphans left behind"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_children_die_with_a_killed_launcher(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy", "up", "--etcd-members", "1", "--regions", "1", "--run-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=repo_root(),
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "Ctrl-C stops everything" in line:
            break
    pids = list(json.loads((tmp_path / "deployment.json").read_text())["pids"].values())
    os.kill(proc.pid, signal.SIGKILL)  # no shutdown path runs in the launcher
    proc.wait(10)
    assert wait_until(lambda: not any(_alive(p) for p in pids), 20), "children outlived a killed launcher"


def test_per_process_control(healthy_cluster: Deployment) -> None:
    redis = healthy_cluster.redis["r1"]
    redis.pause()
    assert not wait_until(redis.health, timeout=1.5), "a SIGSTOPped Redis answered PING"
    redis.resume()
    assert wait_until(redis.health, timeout=10)

    member = healthy_cluster.etcd[2]
    old_pid = member.pid
    member.kill()
    assert not member.running
    member.start()
    member.wait_healthy(30)
    assert member.pid != old_pid
    assert wait_until(lambda: healthy_cluster.etcd_leader() is not None, 20)
    t0 = time.monotonic()
    healthy_cluster.api["r2"].restart(wait=True)
    assert time.monotonic() - t0 < 60


def test_api_node_with_an_open_watch_exits_on_sigterm(tmp_path: Path) -> None:
    # uvicorn waits for every response to finish before it exits; a watch never finishes.
    d = Deployment(Topology(etcd_members=1, regions=1, run_dir=tmp_path))
    d.start()
    try:
        api = d.api["r1"]
        with httpx.stream("GET", f"{api.url}/v1/worlds/w/watch", timeout=30, headers=auth_headers(d)) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()  # held: dropping the generator would close the stream
            assert next(lines).startswith(": watching from revision")
            t0 = time.monotonic()
            assert api.popen is not None
            api.popen.send_signal(signal.SIGTERM)
            api.popen.wait(30)
            elapsed = time.monotonic() - t0
        # The bound is the CP timeout (2 s here) plus a second, then in-flight work is cancelled.
        assert elapsed < 10, f"took {elapsed:.1f} s"
        assert api.popen.returncode == -signal.SIGTERM  # uvicorn re-raises the signal once it has shut down
        assert "timeout graceful shutdown exceeded" in api.log_path.read_text()
    finally:
        d.stop()


def test_two_processes_drawing_ports_at_once_never_get_the_same_one(tmp_path: Path) -> None:
    """free_port in two processes with the same random sequence (the worst case of the suite's two
    workers): without the machine-wide claims both would hand out every port alike, each still free."""
    draw = ("import sys; from deploy import processes as p; p._rng.seed(7); "
            "print(' '.join(str(p.free_port()) for _ in range(200)))")
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", draw], stdout=subprocess.PIPE, text=True, env=env, cwd=repo_root())
             for _ in range(2)]
    a, b = (set(map(int, p.communicate(timeout=120)[0].split())) for p in procs)
    assert len(a) == len(b) == 200 and not a & b, sorted(a & b)[:10]
    assert len(list(tmp_path.glob("worldstate-ports-*/*"))) == 400
