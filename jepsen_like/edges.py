"""Edge nodes for a run: `worldstate edge` processes, each behind its own proxied link to one
region's API node, with its own data directory under the run's and its log with the others.

Edge ``edge-K`` follows region ``r((K - 1) mod regions + 1)`` and dials it only through a proxy
listener of the run's `proxy.Net`, named (``edge-K``, ``api-rN``) both ways, so the ``edge-cut``
nemesis can blackhole that link alone. As a process it is a `ManagedProcess` like the cluster's
own: the ``edge-kill`` nemesis kills it with -9 and starts it again on the same data directory,
and `nemesis.restore_processes` brings it back at the heal. Edges hold the entities whose ids
start with `ENTITY_PREFIX`, so other workloads' entities in the same world do not concern them.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from deploy.processes import ManagedProcess, free_port

from .proxy import Net

ENTITY_PREFIX = "edge-"
PROBE_S = 0.2          # how often an edge asks the core where it is: the resolution of its staleness
MAX_STALENESS_S = 2.0  # its own bound; the workload's reads accept more (?max_staleness_ms=)


def _ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1.0) as r:
        return r.status == 200 and json.loads(r.read()).get("status") == "ok"


@dataclass
class EdgeSpec:
    name: str       # edge-1: also its process name, and the dialer of its link
    region: str     # the region whose API node it follows
    port: int       # where it answers
    link: int       # the proxy port it dials to reach its region's API node

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Edges:
    """The run's edge nodes: planned with the cluster (ports, links), started once its admin key exists."""

    def __init__(self, run_dir: Path, count: int, regions: list[str], api_ports: dict[str, int], net: Net,
                 world: str, sabotage: tuple[str, ...] = ()) -> None:
        self.run_dir = run_dir
        self.world = world
        self.sabotage = sabotage
        self.specs: list[EdgeSpec] = []
        for k in range(1, count + 1):
            region = regions[(k - 1) % len(regions)]
            name = f"edge-{k}"
            self.specs.append(EdgeSpec(name, region, free_port(), net.listen(name, f"api-{region}", api_ports[region])))
        self.processes: list[ManagedProcess] = []

    def start(self, key: str | None, timeout: float = 90.0) -> None:
        env = {"WORLDSTATE_DEVICE": "cpu", "WORLDSTATE_EDGE_SABOTAGE": ",".join(self.sabotage)}
        for s in self.specs:
            argv = [sys.executable, "-m", "deploy", "edge", "--core", f"http://127.0.0.1:{s.link}",
                    "--world", self.world, "--entities", ENTITY_PREFIX, "--data-dir", str(self.run_dir / s.name),
                    "--port", str(s.port), "--name", s.name, "--probe-s", str(PROBE_S),
                    "--max-staleness", str(MAX_STALENESS_S), "--key", key or ""]
            health_url = f"{s.url}/healthz"
            self.processes.append(ManagedProcess(s.name, argv, self.run_dir / "logs" / f"{s.name}.log",
                                                 lambda u=health_url: _ok(u), env))  # type: ignore[misc]
        for p in self.processes:
            p.start()
        for p in self.processes:
            p.wait_healthy(timeout)

    def stop(self) -> None:
        for p in self.processes:
            p.stop()

    def describe(self) -> dict[str, dict[str, str]]:
        """name -> its URL and the region it follows (what the edge workload is given)."""
        return {s.name: {"url": s.url, "region": s.region} for s in self.specs}
