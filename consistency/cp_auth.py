"""etcd authentication for the CP store: a user's token on every call, renewed when etcd drops it.

etcd's simple tokens live in each member's memory: one expires after --auth-token-ttl
idle (5 min by default), and a restarted member has forgotten every token. Our calls go
to the gRPC stubs directly with their own metadata, so aetcd's one-shot token (taken at
connect, never renewed) would not reach them; this module keeps the token and adds it.
A call whose token etcd refuses is renewed and sent once more: etcd refuses a token
before it proposes anything (or, for an auth revision that moved, in the apply, whole),
so even a write is safe to resend.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aetcd import rpc

from consistency.errors import StoreError, Unavailable

Metadata = tuple[tuple[str, str], ...]

# What etcd 3.4 answers for a token it no longer knows (expired, or a restarted member), for a
# call sent before any token was had, and for a token older than the last change to users or roles.
_TOKEN_REFUSED = ("invalid auth token", "user name is empty", "revision of auth store is old")


class AuthFailed(StoreError):
    """etcd refused the configured user name and password (or knows no such user)."""


def token_refused(details: str) -> bool:
    """Whether an etcd error (or a watch's cancel reason) says the token, not the request, was refused."""
    return any(s in details for s in _TOKEN_REFUSED)


class EtcdAuth:
    """One user's credentials and current token; `username=None` is a cluster without auth."""

    def __init__(self, username: str | None, password: str | None) -> None:
        if (username is None) != (password is None):
            raise ValueError("an etcd user name needs a password, and a password a user name")
        self.username = username
        self._password = password
        self.token: str | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:  # never the password
        return f"EtcdAuth(username={self.username!r})"

    @property
    def enabled(self) -> bool:
        return self.username is not None

    def metadata(self, base: Metadata = ()) -> Metadata | None:
        """`base` plus the current token; None when there is nothing to send."""
        md = (*base, ("token", self.token)) if self.token else base
        return md or None

    async def authenticate(self, channel: Any, timeout_s: float) -> None:
        """Take a fresh token. AuthFailed: wrong credentials; Unavailable: etcd did not answer.

        A cluster with auth not (yet) enabled answers FAILED_PRECONDITION: calls then go
        without a token, and the first one refused after auth is enabled takes one."""
        if self.username is None:
            return
        req = rpc.AuthenticateRequest(name=self.username, password=self._password)
        try:
            resp = await rpc.AuthStub(channel).Authenticate(req, timeout=timeout_s)
        except rpc.AioRpcError as e:
            details = e.details() or ""
            if e.code() == rpc.StatusCode.FAILED_PRECONDITION and "not enabled" in details:
                self.token = None
                return
            if "authentication failed" in details:
                raise AuthFailed(f"etcd refused the credentials of user {self.username!r} ({details}): "
                                 "check WORLDSTATE_ETCD_USERNAME and WORLDSTATE_ETCD_PASSWORD") from None
            raise Unavailable(f"etcd did not hand out an auth token ({e.code().name}: {details}); "
                              "nothing was sent") from None
        self.token = resp.token

    async def renew(self, stale: str | None, channel: Any, timeout_s: float) -> None:
        """Re-authenticate unless another call already replaced the `stale` token."""
        async with self._lock:
            if self.token == stale:
                await self.authenticate(channel, timeout_s)


class AuthedStub:
    """A gRPC stub whose unary calls carry the token, renewed and resent once if etcd refuses it.

    Wrap any stub the store calls (the KV stub, or a per-member stub): `AuthedStub(stub, auth, channel)`.
    """

    def __init__(self, stub: Any, auth: EtcdAuth, channel: Any) -> None:
        self._stub, self._auth, self._channel = stub, auth, channel

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)
        auth, channel = self._auth, self._channel

        async def call(request: Any, *, timeout: float | None = None, metadata: Metadata | None = None) -> Any:
            deadline = time.monotonic() + (timeout if timeout is not None else 3600.0)
            sent = auth.token
            try:
                return await method(request, timeout=timeout, metadata=auth.metadata(_without_token(metadata)))
            except rpc.AioRpcError as e:
                if not auth.enabled or not token_refused(e.details() or ""):
                    raise
            await auth.renew(sent, channel, max(deadline - time.monotonic(), 0.01))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Unavailable("etcd refused the auth token and renewing it took the whole bound; "
                                  "nothing was sent")
            return await method(request, timeout=remaining, metadata=auth.metadata(_without_token(metadata)))

        return call


def _without_token(metadata: Metadata | None) -> Metadata:
    return tuple(kv for kv in metadata or () if kv[0] != "token")
