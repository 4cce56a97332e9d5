"""Fixtures that start real etcd, Redis and API processes through the project's launcher."""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")  # children exec at once; skip gRPC's fork hooks

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from consistency.cp_store import CPStore
from deploy.launcher import Deployment, Topology, wait_until

# Generous enough for an election on a loaded 2-core machine, still "a few seconds".
CP_TIMEOUT_S = 4.0

# Modules that start no process and run in seconds: `pytest -m unit` runs them alone.
UNIT_MODULES = frozenset({
    "test_config", "test_crdt", "test_hlc", "test_layering", "test_world_model_sim", "test_world_model_physics",
    "test_jepsen_checkers", "test_jepsen_history", "test_jepsen_imports", "test_jepsen_linearizability",
    "test_jepsen_models", "test_jepsen_nemesis", "test_jepsen_porcupine_etcd",
})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem in UNIT_MODULES:
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """3 etcd members, 2 regions, an API node per region; shared by the whole session."""
    run_dir = tmp_path_factory.mktemp("cluster")
    topo = Topology(etcd_members=3, regions=2, run_dir=run_dir, cp_timeout_s=CP_TIMEOUT_S,
                    api_env={"WORLDSTATE_DEVICE": "cpu"})
    with Deployment(topo) as d:
        yield d


@pytest.fixture
def healthy_cluster(cluster: Deployment) -> Iterator[Deployment]:
    """The shared cluster, put back whole after a test that breaks it."""
    yield cluster
    for p in cluster.processes():
        if p.paused:
            p.resume()
        if not p.running:
            p.start()
    for p in cluster.processes():
        p.wait_healthy(60)
    assert wait_until(lambda: cluster.etcd_leader() is not None, 30), "etcd has no leader after repair"


def auth_headers(d: Deployment) -> dict[str, str]:
    """The Authorization header of the deployment's admin key (made at its first start)."""
    return {"Authorization": f"Bearer {d.admin_key}"} if d.admin_key else {}


@pytest.fixture
def api(cluster: Deployment) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cluster.api["r1"].url, timeout=30, headers=auth_headers(cluster)) as c:
        yield c


@pytest.fixture
def api2(cluster: Deployment) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cluster.api["r2"].url, timeout=30, headers=auth_headers(cluster)) as c:
        yield c


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def etcd_revision(cluster: Deployment) -> int:
    """etcd's current store revision, read directly (not through the API under test)."""

    async def rev() -> int:
        store = CPStore(cluster.etcd_endpoints, CP_TIMEOUT_S)
        await store.connect()
        try:
            return await store.current_revision()
        finally:
            await store.close()

    return run(rev())


@pytest.fixture
def world(request: pytest.FixtureRequest) -> str:
    """A world name of its own for each test, so tests never see each other's keys."""
    return "t-" + request.node.name.replace("[", "-").replace("]", "").replace("_", "-")[:50]


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
