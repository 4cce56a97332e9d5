"""Settings from WORLDSTATE_* variables: what the launcher writes, a node reads back."""

from __future__ import annotations

import pytest

from service.config import Settings


def test_environment_round_trip() -> None:
    s = Settings(region="r2", node_id="api-r2", etcd_endpoints=["10.0.0.1:2379", "10.0.0.2:2379"],
                 peers={"r1": "redis://h:1/0", "r3": "redis://h:3/0"}, dedup_window_s=60.0, faults=True,
                 sabotage=frozenset({"no-dedup"}))
    assert Settings.from_env(s.to_env()) == s


def test_node_id_follows_region_unless_set() -> None:
    assert Settings.from_env({"WORLDSTATE_REGION": "eu"}).node_id == "api-eu"
    assert Settings.from_env({"WORLDSTATE_REGION": "eu", "WORLDSTATE_NODE_ID": "n7"}).node_id == "n7"


@pytest.mark.parametrize("env", [
    {"WORLDSTATE_MAX_BATCH": "many"},
    {"WORLDSTATE_CP_TIMEOUT_S": "0"},
    {"WORLDSTATE_PEERS": "r2"},
    {"WORLDSTATE_SABOTAGE": "rm-rf"},
])
def test_bad_settings_refuse_to_start(env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        Settings.from_env(env)
