"""Credentials for a deployment's backends: an etcd user, with auth enabled, and a Redis ACL user.

`worldstate up --backend-auth` generates both passwords at first start and keeps them
(mode 0600) in the run directory; docker-compose takes them from the environment.
etcd enables auth only with a user named root holding the role root, so that is the
user the nodes log in as. `python -m deploy.backend_auth --endpoints a:2379,b:2379`
enables etcd auth for the user in WORLDSTATE_ETCD_USERNAME/PASSWORD (compose's
etcd-auth-init runs it); it is idempotent, as the launcher runs it at every start.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import secrets
import socket
import sys
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from aetcd import rpc

from consistency.cp_auth import AuthFailed

ETCD_USER = "root"
REDIS_USER = "worldstate"
CREDENTIALS_FILE = "credentials.json"


@dataclass(frozen=True)
class Credentials:
    etcd_password: str = field(repr=False)
    redis_password: str = field(repr=False)
    etcd_user: str = ETCD_USER
    redis_user: str = REDIS_USER


def load_or_create(run_dir: Path) -> Credentials:
    """The run directory's credentials, generated (mode 0600) at its first start."""
    path = run_dir / CREDENTIALS_FILE
    if path.exists():
        return Credentials(**json.loads(path.read_text()))
    creds = Credentials(secrets.token_hex(24), secrets.token_hex(24))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(creds), f)
    return creds


def redis_acl_args(user: str, password: str) -> list[str]:
    """redis-server flags: only `user`, with every key, channel and command; `default` off.

    Redis overwrites its process title, so the password does not stay visible in ps."""
    return ["--user", "default", "off", "--user", user, "on", f">{password}", "~*", "&*", "+@all"]


def redis_url(host: str, port: int, user: str | None = None, password: str | None = None) -> str:
    if user is None or password is None:
        return f"redis://{host}:{port}/0"
    return f"redis://{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}@{host}:{port}/0"


def _resp(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for p in parts:
        b = p.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def redis_ping(port: int, host: str = "127.0.0.1", user: str | None = None, password: str | None = None) -> bool:
    """PONG from Redis, after AUTH when a user is given (-LOADING while it replays its AOF: False)."""
    with socket.create_connection((host, port), timeout=1.0) as s:
        hello = _resp("AUTH", user, password) if user is not None and password is not None else b""
        s.sendall(hello + _resp("PING"))
        answer, lines = b"", 2 if hello else 1
        while answer.count(b"\r\n") < lines:
            chunk = s.recv(256)
            if not chunk:
                return False
            answer += chunk
        return answer.split(b"\r\n")[lines - 1].startswith(b"+PONG")


# -- etcd ---------------------------------------------------------------------

async def _call(stub_method: object, request: object, timeout_s: float, tolerate: str = "") -> None:
    try:
        await stub_method(request, timeout=timeout_s)  # type: ignore[operator]
    except rpc.AioRpcError as e:
        if not tolerate or tolerate not in (e.details() or ""):
            raise


async def _enable_once(endpoint: str, user: str, password: str, timeout_s: float) -> str:
    channel = rpc.insecure_channel(endpoint)
    try:
        auth = rpc.AuthStub(channel)
        try:
            await auth.Authenticate(rpc.AuthenticateRequest(name=user, password=password), timeout=timeout_s)
            return "already enabled"
        except rpc.AioRpcError as e:
            if "authentication failed" in (e.details() or ""):
                raise AuthFailed(f"etcd auth is enabled but refuses user {user!r} with this password") from None
            if "not enabled" not in (e.details() or ""):
                raise
        try:
            await auth.UserAdd(rpc.AuthUserAddRequest(name=user, password=password), timeout=timeout_s)
        except rpc.AioRpcError as e:
            if "already exists" not in (e.details() or ""):
                raise
            # Left by an earlier run that stopped before enabling: make sure it has this password.
            await auth.UserChangePassword(rpc.AuthUserChangePasswordRequest(name=user, password=password),
                                          timeout=timeout_s)
        if user == ETCD_USER:  # etcd enables auth only once root holds the root role
            await _call(auth.RoleAdd, rpc.AuthRoleAddRequest(name="root"), timeout_s, "already exists")
            await _call(auth.UserGrantRole, rpc.AuthUserGrantRoleRequest(user=user, role="root"), timeout_s)
        await auth.AuthEnable(rpc.AuthEnableRequest(), timeout=timeout_s)
        return "enabled"
    finally:
        await channel.close()


async def enable_etcd_auth(endpoints: Sequence[str], user: str, password: str, timeout_s: float = 60.0) -> str:
    """Create `user` (root) and enable auth, unless it is enabled already and takes this password.

    Returns "enabled" or "already enabled"; AuthFailed when auth is on and refuses the password.
    Each step is idempotent, so a failed attempt is retried whole, member after member, until
    `timeout_s` (a cluster still electing answers "no leader")."""
    deadline = time.monotonic() + timeout_s
    attempt = 0
    while True:
        endpoint = endpoints[attempt % len(endpoints)]
        attempt += 1
        try:
            return await _enable_once(endpoint, user, password, min(5.0, max(deadline - time.monotonic(), 0.1)))
        except rpc.AioRpcError as e:
            if time.monotonic() >= deadline:
                raise RuntimeError(f"enabling etcd auth failed at {endpoint}: {e.code().name}: {e.details()}") from None
        await asyncio.sleep(0.2)


def enable_etcd_auth_blocking(endpoints: Sequence[str], user: str, password: str, timeout_s: float = 60.0) -> str:
    """enable_etcd_auth from synchronous code, even code that runs inside an event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, enable_etcd_auth(endpoints, user, password, timeout_s)).result()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.backend_auth", description=__doc__.split("\n")[0])
    parser.add_argument("--endpoints", required=True, help="etcd client endpoints, host:port,...")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    user, password = os.environ.get("WORLDSTATE_ETCD_USERNAME", ""), os.environ.get("WORLDSTATE_ETCD_PASSWORD", "")
    if not user or not password:
        print("WORLDSTATE_ETCD_USERNAME and WORLDSTATE_ETCD_PASSWORD must be set", file=sys.stderr)
        return 2
    endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    try:
        outcome = asyncio.run(enable_etcd_auth(endpoints, user, password, args.timeout))
    except (AuthFailed, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"etcd auth {outcome} for user {user}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
