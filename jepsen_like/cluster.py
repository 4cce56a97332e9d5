"""The system under test: the project's own launcher, with every link through our proxies
(proxy mode) or every host in a network namespace of its own (netns mode, netns.py).

The deployment is modelled as hosts, as docker-compose would place it: host
``n1`` runs ``etcd1``, ``redis-r1`` and ``api-r1``, and so on. Partitions
cut hosts apart (every link between processes on different hosts); the
link between an API node and its home Redis is on one host and is only
touched by the ``net`` nemesis. The harness's clients talk to the API nodes
directly, like Jepsen's control node, and are never partitioned.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

from deploy.launcher import Deployment, Topology, wait_until
from deploy.processes import ManagedProcess

from .proxy import Net

FAULTS_ENV = {"WORLDSTATE_FAULTS": "1"}


def host_of(process: str) -> str:
    """``etcd2`` / ``redis-r2`` / ``api-r2`` -> ``n2``."""
    m = re.search(r"(\d+)$", process)
    if not m:
        raise ValueError(f"no host for process {process!r}")
    return f"n{m.group(1)}"


class Cluster:
    """3 etcd members and N regions (Redis + API node each), started and stopped as one."""

    def __init__(self, run_dir: Path, *, etcd_members: int = 3, regions: int = 3, cp_timeout_s: float = 3.0,
                 sabotage: tuple[str, ...] = (), seed: int = 0, mode: str = "proxy") -> None:
        env = dict(FAULTS_ENV)
        if sabotage:
            env["WORLDSTATE_SABOTAGE"] = ",".join(sabotage)
        self.sabotage = tuple(sabotage)
        self.hosts = [f"n{i + 1}" for i in range(max(etcd_members, regions))]
        placement: dict[str, Any] = {}
        if mode == "proxy":
            self.net: Any = Net(seed)
            placement["link"] = self._link
        elif mode == "netns":
            self.net = self._netns()
            placement.update(host=self.net.host, wrap=self.net.wrap)
        else:
            raise ValueError(f"network mode {mode!r} is proxy or netns")
        try:
            self.topology = Topology(etcd_members=etcd_members, regions=regions, run_dir=run_dir,
                                     cp_timeout_s=cp_timeout_s, api_env=env, **placement)
            self.d = Deployment(self.topology)
        except BaseException:
            self.net.close()  # namespaces and a bridge already exist in netns mode
            raise
        self.regions = self.topology.region_names()

    def _netns(self) -> Any:
        from . import netns

        why = netns.available()
        if why:
            raise netns.Unavailable(f"netns mode unavailable: {why}")
        net = netns.NetnsNet(self.hosts)
        net.setup()  # removes what it made if it fails
        return net

    def _link(self, src: str, dst: str, port: int) -> int:
        # etcd members share one advertised peer URL per member: the proxy learns who dials.
        return self.net.listen(None if src == "etcd-peers" else src, dst, port)

    # -- lifecycle ------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> None:
        self.d.start(timeout)
        for m in self.d.etcd:
            member_id = m.status()["header"]["member_id"]
            self.net.alias(format(int(member_id), "x"), m.name)

    def stop(self) -> None:
        try:
            self.d.stop()
        finally:
            self.net.close()

    # -- what the nemesis needs ---------------------------------------------------------

    def processes(self) -> list[ManagedProcess]:
        return self.d.processes()

    def process(self, name: str) -> ManagedProcess:
        return self.d.process(name)

    def on_host(self, host: str) -> list[str]:
        return [p.name for p in self.d.processes() if host_of(p.name) == host]

    def api_url(self, region: str) -> str:
        return self.d.api[region].url

    def leader_host(self) -> str | None:
        leader = self.d.etcd_leader()
        return host_of(leader.name) if leader else None

    def healthy(self) -> bool:
        """Every process up and unpaused, etcd has a leader, and every API node is ready."""
        if any(not p.running or p.paused for p in self.d.processes()):
            return False
        if self.d.etcd and self.d.etcd_leader() is None:
            return False
        for api in self.d.api.values():
            try:
                with urllib.request.urlopen(f"{api.url}/readyz", timeout=2) as r:
                    if json.loads(r.read()).get("status") != "ready":
                        return False
            except OSError:
                return False
        return True

    def wait_healthy(self, timeout: float = 60.0) -> bool:
        return wait_until(self.healthy, timeout, 0.25)


def wait_http(url: str, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            time.sleep(0.1)
    return False
