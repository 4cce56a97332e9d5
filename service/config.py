"""Configuration of one API node, as a plain dataclass read from the environment.

Every field has a WORLDSTATE_* variable so the same image runs unchanged under
`worldstate up`, docker-compose and the tests.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from consistency import ap_backend
from consistency import ap_keys as K
from service import sabotage


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _peers(value: str) -> dict[str, str]:
    """`r2=redis://h:p,r3=redis://h:p` -> {"r2": "redis://h:p", ...}. A Redis Cluster's URL lists its
    startup nodes with commas too (`r2=redis+cluster://h:p,h:p`): an item with no `=` after one is its next node."""
    out: dict[str, str] = {}
    last = ""
    for item in _split(value):
        region, _, url = item.partition("=")
        if not url and last and out[last].startswith("redis+cluster://"):
            out[last] += f",{item}"
            continue
        if not url or not K.REGION_RE.fullmatch(region):
            raise ValueError(f"peer {item!r} is not REGION=URL")
        out[region] = url
        last = region
    return out


@dataclass
class Settings:
    region: str = "r1"
    node_id: str = "api-r1"
    etcd_endpoints: list[str] = field(default_factory=lambda: ["127.0.0.1:2379"])
    # Bound on how long a CP call may wait for quorum before answering 503.
    cp_timeout_s: float = 2.0
    # An etcd user, for a cluster with auth enabled (both empty: none). Redis credentials go in
    # the URLs: redis://USER:PASSWORD@host:port/0 (an ACL user), for the home replica and peers.
    etcd_username: str = ""
    etcd_password: str = field(default="", repr=False)
    redis_url: str = "redis://127.0.0.1:6379/0"
    peers: dict[str, str] = field(default_factory=dict)
    max_body_bytes: int = 1 << 20
    # Connections (deploy/connection_limits.py). Past max_connections a new connection is answered
    # 503 and closed as it opens; a request head must arrive whole within header_timeout_s of the
    # connection opening (or of the previous response) and be at most max_header_bytes; a body
    # within body_timeout_s after its head (1 MiB in 30 s: 35 KB/s); an idle kept-alive connection
    # is closed after keep_alive_s. 4096 connections: 3,000 idle and 300 slow-header connections
    # held at once still left /healthz answering (tests/test_limits.py).
    max_connections: int = 4096
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_s: float = 5.0
    max_header_bytes: int = 32768
    # gRPC (rpc/): the port of the node's gRPC server, beside HTTP and sharing its node; 0: none.
    # The host it binds; empty: the HTTP server's --host.
    grpc_port: int = 0
    grpc_host: str = ""
    # AP tier
    # On a Redis Cluster (a redis+cluster:// URL), replicas that must hold a write before it is acknowledged
    # (consistency/ap_backend.py); -1: 1 when the cluster has replicas, else 0. Unused on one Redis.
    ap_ack_replicas: int = -1
    max_batch: int = 1000
    max_drift_ms: int = 500
    dedup_window_s: float = 86400.0
    dedup_max: int = 1_000_000
    stream_maxlen: int = 1_000_000
    read_wait_s: float = 2.0  # longest a read waits for its causal token before 504
    # The replica's changes log (entity subscriptions) keeps about this many entries (XADD MAXLEN ~);
    # a subscriber more than subscribe_max_lag entries behind its head is told so and closed.
    changes_maxlen: int = 100_000
    subscribe_max_lag: int = 10_000
    # A stream quiet this long gets an SSE comment, so proxies that close idle connections keep it.
    sse_heartbeat_s: float = 15.0
    # World model serving
    checkpoint_dir: str = "checkpoints"
    device: str = "auto"  # cuda when present, else cpu
    predict_max_batch: int = 32
    # 0: a lone query runs at once and batches form only from queries already queued; > 0 makes
    # the first query of a batch wait this long for company (a lone query pays it in full).
    predict_max_wait_ms: float = 0.0
    # Answers kept per model for predict queries asked again with the same inputs (state rows,
    # physics, horizon, impulses), which then skip the forward pass (world_model/memo.py); 0: none.
    predict_memo: int = 256
    # torch intra-op threads for model work in this process (0: one per CPU), applied once when the
    # node first loads a model (torch is imported only then). 1, measured on 2 cores: with one per
    # CPU, once a second thread had run model work (a plan) predict p50 tripled and stayed there.
    torch_threads: int = 1
    telemetry: bool = False  # FastAPI's native OpenTelemetry spans and metrics
    # Logs: one JSON object a line ("json") or plain lines ("text"). Requests are logged when they
    # answer 5xx or take slow_request_s or longer (to the response start for streams); every
    # request when access_log is on.
    log_format: str = "json"
    access_log: bool = False
    slow_request_s: float = 1.0
    # "keys": every /v1 request needs an API key (service/keys.py); "off" answers anyone, and
    # says so loudly in the log at start. Nothing else is accepted.
    auth: str = "keys"
    # Host header names the node answers to, beside IP addresses (DNS rebinding sends a page's own
    # name to a loopback node); "*" takes any.
    allowed_hosts: list[str] = field(default_factory=lambda: ["localhost"])
    # Fault injection (jepsen_like only): the /_faults endpoints and planted bugs.
    faults: bool = False
    sabotage: frozenset[str] = frozenset()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Every field from WORLDSTATE_<FIELD NAME>; node_id defaults to api-<region>."""
        env = os.environ if environ is None else environ
        s = cls()
        for f in fields(cls):
            raw = env.get(f"WORLDSTATE_{f.name.upper()}")
            if raw is not None:
                setattr(s, f.name, _parse(f.name, getattr(s, f.name), raw))
        if "WORLDSTATE_REGION" in env and "WORLDSTATE_NODE_ID" not in env:
            s.node_id = f"api-{s.region}"
        if s.sabotage:
            s.faults = True
        if s.log_format not in ("json", "text"):
            raise ValueError(f"WORLDSTATE_LOG_FORMAT must be 'json' or 'text', not {s.log_format!r}")
        if s.auth not in ("keys", "off"):
            raise ValueError(f"WORLDSTATE_AUTH must be 'keys' or 'off', not {s.auth!r}")
        if bool(s.etcd_username) != bool(s.etcd_password):
            raise ValueError("WORLDSTATE_ETCD_USERNAME and WORLDSTATE_ETCD_PASSWORD go together")
        if s.cp_timeout_s <= 0 or s.max_body_bytes <= 0:
            raise ValueError("WORLDSTATE_CP_TIMEOUT_S and WORLDSTATE_MAX_BODY_BYTES must be positive")
        if not 0 <= s.grpc_port <= 65535:
            raise ValueError("WORLDSTATE_GRPC_PORT must be a port number, or 0 for no gRPC")
        limits = ("max_connections", "header_timeout_s", "body_timeout_s", "keep_alive_s", "max_header_bytes",
                  "sse_heartbeat_s", "changes_maxlen", "subscribe_max_lag", "slow_request_s")
        if any(getattr(s, name) <= 0 for name in limits):
            raise ValueError(", ".join(f"WORLDSTATE_{n.upper()}" for n in limits) + " must be positive")
        if s.predict_memo < 0:
            raise ValueError("WORLDSTATE_PREDICT_MEMO must be 0 (no memo) or more")
        if s.ap_ack_replicas < -1:
            raise ValueError("WORLDSTATE_AP_ACK_REPLICAS must be -1 (automatic), 0 or more")
        for setting, url in [("WORLDSTATE_REDIS_URL", s.redis_url), *(("WORLDSTATE_PEERS", u) for u in s.peers.values())]:
            if ap_backend.is_cluster_url(url):
                try:  # refused at start, not at the first write (a node list, maybe remapped: ap_backend.py)
                    ap_backend.remapped_nodes(url)
                except ValueError as e:
                    raise ValueError(f"{setting}: {e}") from None
        return s

    def to_env(self) -> dict[str, str]:
        """The inverse of from_env, for starting a node as a child process."""
        return {f"WORLDSTATE_{f.name.upper()}": _format(getattr(self, f.name)) for f in fields(self)}


def _parse(name: str, default: Any, raw: str) -> Any:
    if name == "peers":
        return _peers(raw)
    if name == "sabotage":
        return sabotage.parse(raw)
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes")
    if isinstance(default, list):
        return _split(raw)
    return type(default)(raw)


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, (list, frozenset)):
        return ",".join(sorted(value) if isinstance(value, frozenset) else value)
    return str(value)
