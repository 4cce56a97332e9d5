"""Configuration of one API node, as a plain dataclass read from the environment.

Every field has a WORLDSTATE_* variable so the same image runs unchanged under
`worldstate up`, docker-compose and the tests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _peers(value: str) -> dict[str, str]:
    """`r2=redis://h:p,r3=redis://h:p` -> {"r2": "redis://h:p", ...}."""
    out: dict[str, str] = {}
    for item in _split(value):
        region, _, url = item.partition("=")
        if not url:
            raise ValueError(f"peer {item!r} is not REGION=URL")
        out[region] = url
    return out


@dataclass
class Settings:
    region: str = "r1"
    node_id: str = "api-r1"
    etcd_endpoints: list[str] = field(default_factory=lambda: ["127.0.0.1:2379"])
    # Bound on how long a CP call may wait for quorum before answering 503.
    cp_timeout_s: float = 2.0
    redis_url: str = "redis://127.0.0.1:6379/0"
    peers: dict[str, str] = field(default_factory=dict)
    max_body_bytes: int = 1 << 20
    # AP tier
    max_batch: int = 1000
    max_drift_ms: int = 500
    dedup_window_s: float = 24 * 3600
    dedup_max: int = 1_000_000
    stream_maxlen: int = 1_000_000
    read_wait_s: float = 2.0  # longest a read waits for its causal token before 504
    # World model serving
    checkpoint_dir: str = "checkpoints"
    device: str = "auto"  # cuda when present, else cpu
    predict_max_batch: int = 32
    predict_max_wait_ms: float = 2.0
    telemetry: bool = False  # FastAPI's native OpenTelemetry spans and metrics
    # Fault injection (jepsen_like only): the /_faults endpoints and planted bugs.
    faults: bool = False
    sabotage: frozenset[str] = frozenset()

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        s = cls()
        if "WORLDSTATE_REGION" in env:
            s.region = env["WORLDSTATE_REGION"]
            s.node_id = f"api-{s.region}"
        if "WORLDSTATE_NODE_ID" in env:
            s.node_id = env["WORLDSTATE_NODE_ID"]
        if "WORLDSTATE_ETCD_ENDPOINTS" in env:
            s.etcd_endpoints = _split(env["WORLDSTATE_ETCD_ENDPOINTS"])
        if "WORLDSTATE_CP_TIMEOUT_S" in env:
            s.cp_timeout_s = float(env["WORLDSTATE_CP_TIMEOUT_S"])
        if "WORLDSTATE_REDIS_URL" in env:
            s.redis_url = env["WORLDSTATE_REDIS_URL"]
        if "WORLDSTATE_PEERS" in env:
            s.peers = _peers(env["WORLDSTATE_PEERS"])
        if "WORLDSTATE_MAX_BODY_BYTES" in env:
            s.max_body_bytes = int(env["WORLDSTATE_MAX_BODY_BYTES"])
        for name, conv in (("max_batch", int), ("max_drift_ms", int), ("dedup_window_s", float),
                           ("dedup_max", int), ("stream_maxlen", int), ("read_wait_s", float),
                           ("checkpoint_dir", str), ("device", str), ("predict_max_batch", int),
                           ("predict_max_wait_ms", float)):
            var = f"WORLDSTATE_{name.upper()}"
            if var in env:
                setattr(s, name, conv(env[var]))
        s.faults = env.get("WORLDSTATE_FAULTS", "") in ("1", "true", "yes")
        s.telemetry = env.get("WORLDSTATE_TELEMETRY", "") in ("1", "true", "yes")
        if env.get("WORLDSTATE_SABOTAGE"):
            from service.faults import parse_sabotage

            s.sabotage = parse_sabotage(env["WORLDSTATE_SABOTAGE"])
            s.faults = True
        if s.cp_timeout_s <= 0 or s.max_body_bytes <= 0:
            raise ValueError("WORLDSTATE_CP_TIMEOUT_S and WORLDSTATE_MAX_BODY_BYTES must be positive")
        return s

    def to_env(self) -> dict[str, str]:
        """The inverse of from_env, for starting a node as a child process."""
        return {
            "WORLDSTATE_REGION": self.region,
            "WORLDSTATE_NODE_ID": self.node_id,
            "WORLDSTATE_ETCD_ENDPOINTS": ",".join(self.etcd_endpoints),
            "WORLDSTATE_CP_TIMEOUT_S": str(self.cp_timeout_s),
            "WORLDSTATE_REDIS_URL": self.redis_url,
            "WORLDSTATE_PEERS": ",".join(f"{r}={u}" for r, u in self.peers.items()),
            "WORLDSTATE_MAX_BODY_BYTES": str(self.max_body_bytes),
            "WORLDSTATE_MAX_BATCH": str(self.max_batch),
            "WORLDSTATE_MAX_DRIFT_MS": str(self.max_drift_ms),
            "WORLDSTATE_DEDUP_WINDOW_S": str(self.dedup_window_s),
            "WORLDSTATE_DEDUP_MAX": str(self.dedup_max),
            "WORLDSTATE_STREAM_MAXLEN": str(self.stream_maxlen),
            "WORLDSTATE_READ_WAIT_S": str(self.read_wait_s),
            "WORLDSTATE_CHECKPOINT_DIR": self.checkpoint_dir,
            "WORLDSTATE_DEVICE": self.device,
            "WORLDSTATE_PREDICT_MAX_BATCH": str(self.predict_max_batch),
            "WORLDSTATE_PREDICT_MAX_WAIT_MS": str(self.predict_max_wait_ms),
            "WORLDSTATE_TELEMETRY": "1" if self.telemetry else "0",
            "WORLDSTATE_FAULTS": "1" if self.faults else "0",
            "WORLDSTATE_SABOTAGE": ",".join(sorted(self.sabotage)),
        }
