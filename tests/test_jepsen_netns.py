"""jepsen_like's netns mode: every host in its own network namespace, partitions as iptables rules.

The placement hooks of the launcher (Topology.host / Topology.wrap) are
checked without privileges. The rest needs root, a working `ip netns` and
iptables, and is skipped with the reason otherwise: a cluster whose
partitions must cut real packets (DROP, then REJECT), a short run under
partition, kill and pause faults that must be valid, and a planted stale
cache that must be caught. After each, no namespace or bridge of this
process may remain.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jepsen_like import netns, runner
from jepsen_like.cluster import Cluster, host_of
from jepsen_like.proxy import BLACKHOLE, RESET, Rule
from deploy.launcher import Deployment, EtcdMember, Topology, wait_until


def _flags(argv: list[str]) -> dict[str, str]:
    return {argv[i]: argv[i + 1] for i in range(0, len(argv) - 1, 2) if argv[i].startswith("--")}


def test_topology_host_and_wrap_place_processes(tmp_path: Path) -> None:
    """Addresses from host(), command lines through wrap(); without them, exactly what ran before."""
    addr = lambda name: f"10.255.0.{10 + int(host_of(name)[1:])}"  # noqa: E731  (planned only, never bound)
    wrap = lambda name, argv: ["enter", name, *argv]  # noqa: E731
    d = Deployment(Topology(etcd_members=3, regions=2, run_dir=tmp_path / "placed", host=addr, wrap=wrap))
    for m in d.etcd:
        assert m.argv[:2] == ["enter", m.name] and m.endpoint == f"{addr(m.name)}:{m.client_port}"
        f = _flags(m.argv[3:])
        assert f["--listen-client-urls"] == f["--advertise-client-urls"] == f"http://{m.endpoint}"
        assert f["--listen-peer-urls"] == f"http://{addr(m.name)}:{m.peer_port}"
        assert all(f"{n.name}=http://{addr(n.name)}:{n.peer_port}" in f["--initial-cluster"] for n in d.etcd)
    for region, r in d.redis.items():
        f = _flags(r.argv[3:])
        assert r.argv[1] == f"redis-{region}" and f["--bind"] == addr(r.name) and f["--protected-mode"] == "no"
        assert r.url == f"redis://{addr(r.name)}:{r.port}/0"
    for region, a in d.api.items():
        assert a.argv[1] == a.name and _flags(a.argv[a.argv.index("serve") + 1:])["--host"] == addr(a.name)
        assert a.url == f"http://{addr(a.name)}:{a.port}"
        env = a.env or {}
        assert env["WORLDSTATE_ETCD_ENDPOINTS"] == ",".join(m.endpoint for m in d.etcd)
        assert env["WORLDSTATE_REDIS_URL"] == d.redis[region].url
        assert all(d.redis[r].url in env["WORLDSTATE_PEERS"] for r in d.redis if r != region)

    plain = Deployment(Topology(etcd_members=3, regions=2, run_dir=tmp_path / "plain"))
    assert all(Path(p.argv[0]).name in ("etcd", "redis-server") or p.argv[0] == sys.executable
               for p in plain.processes())
    assert all("--protected-mode" not in r.argv and "--bind" in r.argv for r in plain.redis.values())
    assert plain.api["r1"].url.startswith("http://127.0.0.1:") and plain.etcd[0].endpoint.startswith("127.0.0.1:")


def test_net_family_is_refused_before_anything_starts(tmp_path: Path) -> None:
    """Without sch_netem (or root) the net family cannot run in netns mode: a clear refusal, no store, no namespaces."""
    if os.geteuid() == 0 and netns.available() is None and netns.netem_available():
        pytest.skip("this kernel has sch_netem: the net family can run in netns mode")
    o = runner.Options(nemeses=["partition", "net"], net="netns", store=tmp_path / "store", time_limit_s=1)
    with pytest.raises(netns.Unavailable) as e:
        runner.run(o)
    assert "netns mode" in str(e.value)
    if os.geteuid() == 0 and netns.available() is None:
        assert "sch_netem" in str(e.value)
    assert not (tmp_path / "store").exists()


@functools.cache
def _why_skip() -> str | None:
    if os.geteuid() != 0:
        return "netns mode needs root"
    if shutil.which("ip") is None or subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        return "netns mode needs a working `ip netns`"
    if shutil.which("iptables") is None:
        return "iptables is not installed (Debian: apt-get install -y iptables; scripts/install-servers.sh does not)"
    return netns.available()  # iptables must also work inside a namespace


def _ours() -> list[str]:
    """Namespaces and bridges this test process made that still exist."""
    prefix = f"ws{os.getpid():x}-"
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    links = subprocess.run(["ip", "-o", "link", "show", "type", "bridge"], capture_output=True, text=True).stdout
    bridges = [ln.split(":")[1].strip() for ln in links.splitlines() if ln.count(":") >= 2]
    return [n for n in names if n.startswith(prefix)] + [b for b in bridges if b.startswith("wsb" + prefix[2:])]


@pytest.fixture
def clean() -> Iterator[None]:
    """Skips with the reason when netns mode cannot run here; afterwards, nothing of ours may be left."""
    if (why := _why_skip()) is not None:
        pytest.skip(why)
    yield
    assert _ours() == [], "namespaces or bridges left behind"


def _healthy(m: EtcdMember) -> bool:
    try:
        return m.healthy()
    except OSError:  # no leader: /health's read waits past the client's 1 s
        return False


def _connect_from(net: netns.NetnsNet, process: str, addr: str, port: int) -> str:
    """Open a TCP connection from `process`'s namespace: 'ok', 'refused' (a reset) or 'timeout' (dropped)."""
    code = ("import socket,sys\n"
            f"try: socket.create_connection(('{addr}', {port}), timeout=1.5).close(); print('ok')\n"
            "except ConnectionRefusedError: print('refused')\n"
            "except OSError: print('timeout')\n")
    out = subprocess.run(net.wrap(process, [sys.executable, "-c", code]), capture_output=True, text=True, timeout=30)
    return out.stdout.strip() or out.stderr.strip()


def test_partitions_cut_packets_between_namespaces(tmp_path: Path, clean: None) -> None:
    c = Cluster(tmp_path / "cluster", regions=3, cp_timeout_s=4.0, mode="netns")
    net = c.net
    assert isinstance(net, netns.NetnsNet)
    try:
        c.start()
        for p in c.processes():  # wrap execs: the pid the launcher holds is the process, in its host's namespace
            assert Path(f"/proc/{p.pid}/comm").read_text().strip() != "ip", p.name
            assert os.stat(f"/proc/{p.pid}/ns/net").st_ino == os.stat(f"/run/netns/{net.ns(host_of(p.name))}").st_ino
        etcd1 = c.deployment.etcd[0]
        assert _connect_from(net, "api-r2", net.ip("n1"), etcd1.client_port) == "ok"
        others = [p for h in ("n2", "n3") for p in c.on_host(h)]
        cut = [(p, q) for p in others for q in c.on_host("n1")] + [(q, p) for p in others for q in c.on_host("n1")]
        net.set(cut, Rule(BLACKHOLE))  # n1 isolated, both ways
        assert net.installed_rules("n1") == [f"-A WSJ -s {net.ip(h)}/32 -j DROP" for h in ("n2", "n3")]
        assert _connect_from(net, "api-r2", net.ip("n1"), etcd1.client_port) == "timeout"
        assert wait_until(lambda: not _healthy(etcd1), 20, 0.2), "etcd1 kept a leader while isolated"
        assert etcd1.serving()  # the harness (root namespace) is never cut off
        net.heal()
        net.set([(p, q) for p, q in cut if host_of(q) == "n1"], Rule(RESET))  # one way: n1 resets what n2, n3 send
        assert net.active() == {"n2->n1": "reset", "n3->n1": "reset"}
        assert _connect_from(net, "api-r2", net.ip("n1"), etcd1.client_port) == "refused"
        net.heal()
        assert net.installed_rules("n1") == [] and net.active() == {}
        assert _connect_from(net, "api-r2", net.ip("n1"), etcd1.client_port) == "ok"
        assert c.wait_healthy(60), "the cluster did not recover after heal"
    finally:
        c.stop()


FAST = dict(quiet_s=2, final_wait_s=15, plots=False, net="netns")


def test_short_netns_run_with_partitions_kills_and_pauses_is_valid(tmp_path: Path, clean: None) -> None:
    o = runner.Options(
        workloads=["register", "observations", "watch"], nemeses=["partition", "kill", "pause"],
        time_limit_s=25, seed=7, store=tmp_path, kill_targets=["etcd", "redis"],
        pause_targets=["etcd", "redis", "api"], gap_s=(0.5, 1.0), hold_s=(3.0, 4.0), order="cycle",
        workload_options={"register": {"clients": 4}, "observations": {"clients": 4}}, **FAST)  # type: ignore[arg-type]
    t = time.monotonic()
    out = runner.run(o)
    print(out.summary, f"\ntotal {time.monotonic() - t:.1f}s")
    assert out.valid is True, out.summary
    log = out.results["test"]["nemesis_log"]
    assert not [e for e in log if "error" in e], log  # every fault was applied, iptables included
    assert {w[2] for w in out.results["nemesis_windows"]} == {"partition", "kill", "pause"}
    assert any(e.get("drops") for e in log if e["fault"] == "partition")
    assert out.results["test"]["net"]["hosts"]["n1"]["ns"].startswith(f"ws{os.getpid():x}-")
    checkers = out.results["checkers"]
    # Enough operations for the checkers to mean something. Not more: the count falls with the machine's
    # load (175 in 25 s on two cores with four busy loops and another test beside it).
    assert checkers["linearizability"]["ops"] > 100 and checkers["convergence"]["stats"]["acknowledged"] > 50


def test_netns_run_catches_a_stale_cache(tmp_path: Path, clean: None) -> None:
    o = runner.Options(workloads=["register"], nemeses=[], sabotage=["cp-stale-cache"], time_limit_s=6, seed=3,
                       store=tmp_path, **{**FAST, "quiet_s": 1, "final_wait_s": 3})  # type: ignore[arg-type]
    out = runner.run(o)
    print(out.summary)
    assert out.valid is False, out.summary
    assert out.results["checkers"]["linearizability"]["valid"] is False
