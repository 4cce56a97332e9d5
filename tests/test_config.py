"""Settings from WORLDSTATE_* variables: what the launcher writes, a node reads back."""

from __future__ import annotations

from dataclasses import fields

import pytest

from service.config import Settings


def test_environment_round_trip() -> None:
    s = Settings(region="r2", node_id="api-r2", etcd_endpoints=["10.0.0.1:2379", "10.0.0.2:2379"],
                 peers={"r1": "redis://h:1/0", "r3": "redis://h:3/0"}, dedup_window_s=60.0, faults=True,
                 sabotage=frozenset({"no-dedup"}))
    assert Settings.from_env(s.to_env()) == s


def test_every_setting_away_from_its_default_round_trips() -> None:
    odd = Settings(region="eu", node_id="n7", etcd_endpoints=["10.0.0.1:2379"], cp_timeout_s=7.5,
                   redis_url="redis://h:9/1", peers={"us": "redis://h:8/0"}, max_body_bytes=4096, max_connections=64,
                   header_timeout_s=2.5, body_timeout_s=7.5, keep_alive_s=1.5, max_header_bytes=1024, max_batch=3,
                   max_drift_ms=5000, dedup_window_s=60.0, dedup_max=10, stream_maxlen=100, read_wait_s=3.5,
                   checkpoint_dir="/ck", device="cpu", predict_max_batch=4, predict_max_wait_ms=0.5, predict_memo=7, torch_threads=2,
                   telemetry=True, faults=True, sabotage=frozenset({"no-dedup"}), auth="off",
                   allowed_hosts=["api-r1", "localhost"], etcd_username="u", etcd_password="p", sse_heartbeat_s=0.5,
                   grpc_port=50051, grpc_host="0.0.0.0", changes_maxlen=500, subscribe_max_lag=50,
                   log_format="text", access_log=True, slow_request_s=0.25, ap_ack_replicas=2)
    # A field added to Settings must be added here too, away from its default.
    default = Settings()
    assert [f.name for f in fields(Settings) if getattr(odd, f.name) == getattr(default, f.name)] == []
    assert Settings.from_env(odd.to_env()) == odd


def test_node_id_follows_region_unless_set() -> None:
    assert Settings.from_env({"WORLDSTATE_REGION": "eu"}).node_id == "api-eu"
    assert Settings.from_env({"WORLDSTATE_REGION": "eu", "WORLDSTATE_NODE_ID": "n7"}).node_id == "n7"


@pytest.mark.parametrize("env", [
    {"WORLDSTATE_MAX_BATCH": "many"},
    {"WORLDSTATE_CP_TIMEOUT_S": "0"},
    {"WORLDSTATE_PEERS": "r2"},
    {"WORLDSTATE_SABOTAGE": "rm-rf"},
    {"WORLDSTATE_MAX_CONNECTIONS": "0"},
    {"WORLDSTATE_HEADER_TIMEOUT_S": "-1"},
    {"WORLDSTATE_GRPC_PORT": "70000"},
    {"WORLDSTATE_CHANGES_MAXLEN": "0"},
    {"WORLDSTATE_LOG_FORMAT": "xml"},
    {"WORLDSTATE_SLOW_REQUEST_S": "0"},
])
def test_bad_settings_refuse_to_start(env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        Settings.from_env(env)


def test_peers_may_name_a_redis_cluster_by_its_startup_nodes() -> None:
    env = {"WORLDSTATE_PEERS": "r2=redis+cluster://h:1,h:2,h:3,r3=redis://h:4/0"}
    assert Settings.from_env(env).peers == {"r2": "redis+cluster://h:1,h:2,h:3", "r3": "redis://h:4/0"}
    assert Settings.from_env(Settings(peers={"r2": "redis+cluster://h:1,h:2"}).to_env()).peers == \
        {"r2": "redis+cluster://h:1,h:2"}
    with pytest.raises(ValueError):
        Settings.from_env({"WORLDSTATE_PEERS": "r2=redis://h:1/0,h:2"})  # only a cluster's URL continues
