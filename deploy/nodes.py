"""The processes of a deployment, each a ManagedProcess that knows how to tell it is healthy:
etcd members, Redis replicas, API nodes and edge nodes (deploy/launcher.py plans and starts them)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from deploy import backend_auth
from deploy.processes import ManagedProcess


def _http_ok(url: str, expect: str | None = None) -> bool:
    with urllib.request.urlopen(url, timeout=1.0) as resp:
        body = resp.read().decode()
        return resp.status == 200 and (expect is None or expect in body)


class EtcdMember(ManagedProcess):
    def __init__(self, name: str, client_port: int, peer_port: int, argv: list[str], log: Path,
                 host: str = "127.0.0.1") -> None:
        self.client_port = client_port
        self.peer_port = peer_port
        self.host = host
        super().__init__(name, argv, log, self.healthy)

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"http://{self.endpoint}"

    def healthy(self) -> bool:
        # /health is true only while this member sees a leader with quorum.
        return _http_ok(f"{self.client_url}/health", '"true"')

    def status(self) -> dict[str, Any]:
        """etcd's maintenance status of this member (its id, the leader it sees, its raft index)."""
        req = urllib.request.Request(f"{self.client_url}/v3/maintenance/status", data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=1.0) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]

    def serving(self) -> bool:
        """The member answers at all (used when quorum is knowingly absent)."""
        return _http_ok(f"{self.client_url}/version")


class RedisNode(ManagedProcess):
    def __init__(self, region: str, port: int, argv: list[str], log: Path, host: str = "127.0.0.1",
                 user: tuple[str, str] | None = None) -> None:
        self.region = region
        self.port = port
        self.host = host
        self.user = user  # (name, password) of the ACL user, when one is required
        # The merge scripts compare order keys byte by byte whatever the locale
        # (common.lua's bytes_lt); the C locale keeps Redis's own sorting plain too.
        super().__init__(f"redis-{region}", argv, log, lambda: backend_auth.redis_ping(port, host, *(user or ())),
                         {"LC_ALL": "C"})

    @property
    def url(self) -> str:
        """Without credentials: what describe() shows (`client_url` carries them)."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def client_url(self) -> str:
        return backend_auth.redis_url(self.host, self.port, *(self.user or ()))


class ApiNode(ManagedProcess):
    def __init__(self, region: str, port: int, argv: list[str], log: Path, env: dict[str, str],
                 host: str = "127.0.0.1", grpc_port: int = 0) -> None:
        self.region = region
        self.port = port
        self.host = host
        self.grpc_port = grpc_port  # 0: the node serves no gRPC
        super().__init__(f"api-{region}", argv, log, lambda: _http_ok(f"{self.url}/healthz"), env)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def grpc(self) -> str:
        """The gRPC target, host:port (rpc/channel.py dials it)."""
        return f"{self.host}:{self.grpc_port}"


class EdgeNode(ManagedProcess):
    """`worldstate edge` following one region's API node (edge/)."""

    def __init__(self, name: str, region: str, world: str, port: int, argv: list[str], log: Path,
                 host: str = "127.0.0.1") -> None:
        self.region = region
        self.world = world
        self.port = port
        self.host = host
        super().__init__(name, argv, log, lambda: _http_ok(f"{self.url}/healthz"))

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class LearnRole(ManagedProcess):
    """`worldstate learn ... --every S` (one per region) or `worldstate aggregate ... --every S` (one):
    a loop with no port, healthy while it runs; each round is one JSON line in its log (learn/loop.py)."""

    def __init__(self, name: str, region: str | None, world: str, argv: list[str], log: Path) -> None:
        self.region = region  # None: the aggregator, which reads every region
        self.world = world
        super().__init__(name, argv, log, lambda: True)
