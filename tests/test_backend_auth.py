"""Backends that require credentials: etcd with auth on, Redis with an ACL user (`--backend-auth`).

One etcd member and one region, with etcd tokens that expire after 2 s idle, so the
node and the store must renew theirs between the steps of these tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from aetcd import rpc

from consistency.cp_store import AuthFailed, CPStore
from consistency.errors import StoreError
from deploy.cli import build_parser
from deploy.launcher import Deployment, Topology
from service.config import Settings
from tests.conftest import auth_headers, repo_root, run

TOKEN_TTL_S = 2


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    d = Deployment(Topology(etcd_members=1, regions=1, run_dir=tmp_path_factory.mktemp("secured"),
                            backend_auth=True, etcd_auth_token_ttl_s=TOKEN_TTL_S))
    d.start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def client(secured: Deployment) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=secured.api["r1"].url, timeout=30, headers=auth_headers(secured)) as c:
        yield c


def _passwords(d: Deployment) -> list[str]:
    assert d.credentials is not None
    return [d.credentials.etcd_password, d.credentials.redis_password]


def _idle_past_token_ttl() -> None:
    time.sleep(TOKEN_TTL_S + 1.5)  # not a timing assertion: lets every etcd token expire


def test_node_serves_cp_watch_and_ap_with_backend_auth(secured: Deployment, client: httpx.Client) -> None:
    assert client.put("/v1/worlds/w", json={"description": "backend auth"}).status_code == 200
    put = client.put("/v1/worlds/w/params/sim/g", json=9.81)
    assert put.status_code == 200, put.text
    assert client.get("/v1/worlds/w/params/sim/g").json()["value"] == 9.81

    _idle_past_token_ttl()  # the node's token has expired: it must renew it, not fail
    again = client.put("/v1/worlds/w/params/sim/g", json=9.8)
    assert again.status_code == 200, again.text
    assert client.get("/v1/worlds/w/params/sim/g").json()["value"] == 9.8

    with httpx.stream("GET", f"{secured.api['r1'].url}/v1/worlds/w/watch", timeout=20, headers=auth_headers(secured),
                      params={"prefix": "sim/", "start_revision": again.json()["revision"]}) as stream:
        assert stream.status_code == 200
        event: dict[str, str] = {}
        for line in stream.iter_lines():
            if line == "" and event:
                break
            if ":" in line and not line.startswith(":"):
                name, _, value = line.partition(": ")
                event[name] = value
    assert json.loads(event["data"])["value"] == 9.8

    obs = {"event_id": "e1", "entity": "ball", "source": "cam1", "fields": {"x": 1.0}}
    posted = client.post("/v1/worlds/w/observations", json=obs)
    assert posted.status_code == 202, posted.text
    entity = client.get("/v1/worlds/w/entities/ball", params={"token": posted.json()["token"]})
    assert entity.status_code == 200 and entity.json()["fields"]["x"]["value"] == 1.0
    assert client.get("/readyz").status_code == 200


def test_store_renews_expired_tokens_for_calls_and_watches(secured: Deployment) -> None:
    async def scenario() -> None:
        store = secured.cp_store()
        await store.connect()
        try:
            first = await store.put("/auth-test/a", 1)
            _idle_past_token_ttl()
            assert (await store.get("/auth-test/a")).value == 1
            _idle_past_token_ttl()
            # A watch opened with an expired token is cancelled by etcd; it must renew and reopen.
            watch = store.watch("/auth-test/", first.revision)
            event = await asyncio.wait_for(watch.__anext__(), 20)
            assert (event.key, event.value) == ("/auth-test/a", 1)
        finally:
            await store.close()

    run(scenario())


def test_etcd_refuses_clients_without_the_password(secured: Deployment) -> None:
    async def scenario() -> None:
        channel = rpc.insecure_channel(secured.etcd_endpoints[0])
        try:
            with pytest.raises(rpc.AioRpcError) as refused:
                await rpc.KVStub(channel).Range(rpc.RangeRequest(key=b"/auth-test/a"), timeout=5)
            assert "user name is empty" in (refused.value.details() or "")
        finally:
            await channel.close()
        anonymous = CPStore(secured.etcd_endpoints, 2.0)
        await anonymous.connect()
        try:
            with pytest.raises(Exception, match="user name is empty"):
                await anonymous.get("/auth-test/a")
        finally:
            await anonymous.close()
        wrong = CPStore(secured.etcd_endpoints, 2.0, "root", "not-the-password")
        with pytest.raises(AuthFailed, match="refused the credentials of user 'root'"):
            await wrong.connect()

    run(scenario())


def test_redis_refuses_clients_without_the_password(secured: Deployment) -> None:
    node = secured.redis["r1"]
    once = Retry(NoBackoff(), 0)  # redis-py retries a refused login 10 times with backoff by default
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=node.port, retry=once).ping()  # NOAUTH: the default user is off
    with pytest.raises(redis.AuthenticationError, match="invalid username-password"):
        redis.Redis(port=node.port, username="worldstate", password="not-the-password", retry=once).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=node.port, username="default", password="", retry=once).ping()
    assert redis.Redis.from_url(node.client_url).ping()


def test_node_with_a_wrong_etcd_password_stops_at_start_and_says_why(secured: Deployment) -> None:
    api_env = secured.api["r1"].env or {}
    settings = Settings.from_env(api_env)
    env = {**os.environ, **settings.to_env(), "WORLDSTATE_ETCD_PASSWORD": "not-the-password"}
    proc = subprocess.run([sys.executable, "-m", "deploy", "serve", "--port", "0"], env=env, cwd=repo_root(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "refused the credentials of user 'root'" in proc.stdout + proc.stderr, proc.stderr[-2000:]
    assert "not-the-password" not in proc.stdout + proc.stderr


def test_no_password_is_reported_or_logged(secured: Deployment, client: httpx.Client) -> None:
    creds = Path(secured.run_dir, "credentials.json")
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    described = json.dumps(secured.describe())
    ready = client.get("/readyz").text
    state = (secured.run_dir / "deployment.json").read_text()
    logs = "".join(p.read_text(errors="replace") for p in (secured.run_dir / "logs").iterdir())
    for secret in _passwords(secured):
        assert secret not in described and secret not in ready and secret not in state and secret not in logs
    assert secured.describe()["backend_auth"] == {"etcd_user": "root", "redis_user": "worldstate",
                                                  "credentials": str(creds)}
    # The node's settings hold the password, and their repr does not show the etcd one.
    assert secured.credentials is not None and secured.credentials.etcd_password not in repr(secured.credentials)


def test_compose_auth_init_command_is_idempotent_and_checks_the_password(secured: Deployment) -> None:
    """What docker-compose's etcd-auth-init runs, against etcd with auth already on."""
    assert secured.credentials is not None
    argv = [sys.executable, "-m", "deploy.backend_auth", "--endpoints", ",".join(secured.etcd_endpoints),
            "--timeout", "10"]
    env = {**os.environ, "WORLDSTATE_ETCD_USERNAME": "root", "WORLDSTATE_ETCD_PASSWORD": secured.credentials.etcd_password}
    again = subprocess.run(argv, env=env, cwd=repo_root(), capture_output=True, text=True, timeout=60)
    assert (again.returncode, again.stdout.strip()) == (0, "etcd auth already enabled for user root"), again.stderr
    wrong = subprocess.run(argv, env={**env, "WORLDSTATE_ETCD_PASSWORD": "not-the-password"}, cwd=repo_root(),
                           capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 1 and "refuses user 'root'" in wrong.stderr


def test_worldstate_up_takes_backend_auth() -> None:
    assert build_parser().parse_args(["up", "--backend-auth"]).backend_auth is True
    assert build_parser().parse_args(["up"]).backend_auth is False


def test_restart_with_the_same_run_dir_keeps_the_credentials(tmp_path: Path) -> None:
    """Auth enabling is idempotent: a second start over the same data finds it on, with the same password."""
    d = Deployment(Topology(etcd_members=1, regions=1, api=False, run_dir=tmp_path, backend_auth=True))
    d.start()
    d.stop()
    again = Deployment(Topology(etcd_members=1, regions=1, api=False, run_dir=tmp_path, backend_auth=True))
    assert again.credentials == d.credentials
    again.start()
    try:
        async def read() -> None:
            store = again.cp_store()
            await store.connect()
            try:
                await store.put("/auth-test/restart", 1)
            finally:
                await store.close()
        run(read())
    finally:
        again.stop()


def test_etcd_checks_a_watch_permission_only_when_it_is_created(secured: Deployment) -> None:
    """Why API keys are checked by the node, not left to etcd users: a user whose read
    permission is revoked keeps receiving events on a watch opened before (etcd 3.4 checks
    the range at creation only). tests/test_auth.py shows a revoked API key's stream ending."""
    assert secured.credentials is not None

    async def go() -> list[str]:
        root = secured.cp_store()
        await root.connect()
        auth = rpc.AuthStub(root.channel)
        md = root.metadata(False)
        pw = "watcher-pw"
        await auth.UserAdd(rpc.AuthUserAddRequest(name="watcher", password=pw), metadata=md)
        await auth.RoleAdd(rpc.AuthRoleAddRequest(name="demo-reader"), metadata=md)
        await auth.RoleGrantPermission(rpc.AuthRoleGrantPermissionRequest(
            name="demo-reader", perm=rpc.Permission(permType=rpc.Permission.READ, key=b"/demo/",
                                                    range_end=b"/demo0")), metadata=md)
        await auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="watcher", role="demo-reader"), metadata=md)
        watcher = CPStore(secured.etcd_endpoints, 4.0, "watcher", pw)
        await watcher.connect()
        seen: list[str] = []
        opened = asyncio.Event()

        async def watch() -> None:
            async for ev in watcher.watch("/demo/", await root.current_revision() + 1):
                seen.append(ev.key)
                opened.set()
                if len(seen) == 2:
                    return

        task = asyncio.create_task(watch())
        await asyncio.sleep(0.5)
        await root.put("/demo/before", 1)
        await asyncio.wait_for(opened.wait(), 10)
        await auth.UserRevokeRole(rpc.AuthUserRevokeRoleRequest(name="watcher", role="demo-reader"), metadata=md)
        fresh = CPStore(secured.etcd_endpoints, 4.0, "watcher", pw)
        await fresh.connect()
        try:
            with pytest.raises(StoreError, match="permission denied"):  # a new read is refused at once
                await fresh.get("/demo/before")
        finally:
            await fresh.close()
        await root.put("/demo/after", 2)
        await asyncio.wait_for(task, 10)
        await watcher.close()
        await root.close()
        return seen

    assert run(go()) == ["/demo/before", "/demo/after"]
