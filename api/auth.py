"""Who may send what, checked before any route runs: the Host header, the API key
and its scope, and the body's media type. (A key's rate quotas are charged by the
operations, which know how many observations a batch holds: service/quotas.py.)

One table (`required`) says which scope each operation needs; tests/test_auth.py
walks every route of the app against it, so a route without a rule fails there.
An ASGI middleware, not a FastAPI dependency, so the plain Starlette route of the
hottest read is covered too, and a stream opened with a key is cut when the key
is revoked.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from api.problems import Problem, problem_response
from service.keyring import KeyRing
from service.keys import ADMIN, Key, acting

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Need:
    """What an operation requires: a scope, on the world in its path (None: no world in
    the path), and whether the key must cover every world (the model manifest, keys)."""

    scope: str | None  # None: any valid key (an unknown path under /v1 then answers 404)
    world: str | None = None
    all_worlds: bool = False
    stream: bool = False  # a long-lived response, cut when its key is revoked


_WORLD = re.compile(r"/v1/worlds/([^/]+)(/.*)?")
_WRITES = frozenset({"PUT", "DELETE", "POST", "PATCH"})


@functools.lru_cache(maxsize=4096)  # the same few hundred paths, every request
def required(method: str, path: str) -> Need | None:
    """The need of one request; None for the public paths (health, metrics, docs, problem types)."""
    if not (path.startswith("/v1/") or path.startswith("/_faults")):
        return None
    read = method in ("GET", "HEAD")
    if path.startswith("/_faults") or path == "/v1/keys" or path.startswith("/v1/keys/"):
        return Need(ADMIN, all_worlds=True)
    if path.startswith("/v1/models/"):
        return Need("read") if read else Need(ADMIN, all_worlds=True)
    if path == "/v1/worlds":
        return Need("read") if read else Need(None)  # the listing shows only the worlds the key may read
    m = _WORLD.fullmatch(path)
    if m is None:
        return Need(None)
    world, rest = m.group(1), m.group(2) or ""
    if rest == "":
        return Need("read", world) if read else Need(ADMIN, world)
    if rest == "/physics" or rest.startswith("/params/physics/"):
        return Need("read", world) if read else Need(ADMIN, world)
    if rest.startswith("/params"):
        return Need("read", world) if read else Need("params:write", world)
    if rest == "/watch":
        return Need("read", world, stream=True)
    if rest == "/positions":
        return Need("read", world)
    if rest == "/entities/stream" and read:
        return Need("read", world, stream=True)
    if rest.startswith("/entities/") and method == "DELETE":
        return Need("observe", world)  # a delete is a write like an observation
    if rest.startswith("/entities"):
        return Need("read", world)
    if rest == "/observations" and method == "POST":
        return Need("observe", world)
    if rest in ("/predict", "/surprise", "/plan") and method == "POST":
        return Need("predict", world)
    return Need(None, world)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


@functools.lru_cache(maxsize=1024)
def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """A Host naming an IP address, or a name on the list ('*' takes any).

    Why names are checked at all: DNS rebinding makes a browser send a page's own
    name to a loopback node; a name this node was not told about is that."""
    if "*" in allowed:
        return True
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:host.find("]")]
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return name.lower() in allowed


def check_scope(key: Key, need: Need) -> None:
    """Problem("forbidden") unless `key` covers `need` (HTTP's guard and gRPC's gate ask this)."""
    if need.scope is None:
        return
    if not (key.allows(need.scope, need.world) and (not need.all_worlds or "*" in key.worlds)):
        where = "every world" if need.all_worlds else (f"world {need.world!r}" if need.world else "")
        raise Problem("forbidden", f"key {key.id} ({key.name}) lacks scope {need.scope!r}"
                                   + (f" on {where}" if where else ""), scope=need.scope, key_id=key.id)


class Guard:
    """The ASGI middleware that applies `required` to every request."""

    def __init__(self, app: ASGIApp, *, keyring: KeyRing | None, allowed_hosts: list[str]) -> None:
        self.app = app
        self.keyring = keyring  # None: auth is off (WORLDSTATE_AUTH=off)
        self.allowed_hosts = tuple(h.lower() for h in allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k: v for k, v in scope["headers"] if k in (b"host", b"authorization", b"content-type",
                                                              b"content-length", b"transfer-encoding")}
        path, method = scope["path"], scope["method"]
        try:
            host = headers.get(b"host", b"").decode("latin-1")
            if not host_allowed(host, self.allowed_hosts):
                raise Problem("host-not-allowed", f"Host {host!r} is not one this node answers to "
                                                  "(WORLDSTATE_ALLOWED_HOSTS)")
            need = required(method, path)
            key = None if need is None or self.keyring is None else await self._authorize(need, headers)
            if method in _WRITES and (headers.get(b"content-length", b"0") not in (b"0", b"")
                                      or b"transfer-encoding" in headers) \
                    and not _is_json(headers.get(b"content-type", b"").decode("latin-1")):
                raise Problem("unsupported-media-type", "the body must be sent as Content-Type: application/json")
        except Problem as p:
            await problem_response(p, path)(scope, receive, send)
            return
        token = acting.set(key)
        try:
            if key is not None and need is not None and need.stream:
                await self._until_revoked(key, scope, receive, send)
            else:
                await self.app(scope, receive, send)
        finally:
            acting.reset(token)

    async def _authorize(self, need: Need, headers: dict[bytes, bytes]) -> Key:
        assert self.keyring is not None
        auth = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = auth.partition(" ")
        if not auth or scheme.lower() != "bearer" or not token.strip():
            raise Problem("unauthorized", "send an API key as Authorization: Bearer <key>",
                          headers={"WWW-Authenticate": 'Bearer realm="worldstate"'})
        if not self.keyring.loaded.is_set():
            raise Problem("unavailable", "this node has not loaded the API keys from the CP tier yet",
                          headers={"Retry-After": "1"})
        key = await self.keyring.authenticate(token.strip())
        if key is None:
            raise Problem("unauthorized", "the API key is unknown or revoked",
                          headers={"WWW-Authenticate": 'Bearer realm="worldstate", error="invalid_token"'})
        check_scope(key, need)
        return key

    async def _until_revoked(self, key: Key, scope: Scope, receive: Receive, send: Send) -> None:
        """Run a streaming request until it ends or its key is revoked; then end the stream
        with an `error` event, as a compacted watch does."""
        assert self.keyring is not None
        revoked = self.keyring.revoked(key.id)
        started = False

        async def tracking_send(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        app = asyncio.ensure_future(self.app(scope, receive, tracking_send))
        watcher = asyncio.ensure_future(revoked.wait())
        try:
            await asyncio.wait({app, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if app.done():
            app.result()
            return
        app.cancel()
        await asyncio.gather(app, return_exceptions=True)
        p = Problem("unauthorized", "the API key this stream was opened with was revoked")
        if not started:
            await problem_response(p, scope["path"])(scope, receive, send)
            return
        data = ('{"type": "/problems/unauthorized", "status": 401, "detail": "%s"}' % p.detail).encode()
        await send({"type": "http.response.body", "body": b"event: error\ndata: " + data + b"\n\n",
                    "more_body": False})
