"""Who may call what over gRPC: the same keys and scopes as HTTP.

A call sends its API key as metadata `authorization: Bearer wsk_...`. Each RPC has an
HTTP twin (`TWINS`), and its need is what `api.auth.required` says of that twin, so
one rule table decides both protocols and a rule changed there changes here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from api.auth import Need, check_scope, required
from api.problems import Problem
from service.keyring import KeyRing
from service.keys import Key
from service.worlds import Worlds

__all__ = ["TWINS", "Gate", "need_of", "token_of"]

# RPC name -> (HTTP method, path) of the route that does the same.
TWINS: dict[str, Callable[[Any], tuple[str, str]]] = {
    "GetParam": lambda r: ("GET", f"/v1/worlds/{r.world}/params/{r.key}"),
    "PutParam": lambda r: ("PUT", f"/v1/worlds/{r.world}/params/{r.key}"),
    "DeleteParam": lambda r: ("DELETE", f"/v1/worlds/{r.world}/params/{r.key}"),
    "Watch": lambda r: ("GET", f"/v1/worlds/{r.world}/watch"),
    "Observe": lambda r: ("POST", f"/v1/worlds/{r.world}/observations"),
    "GetEntity": lambda r: ("GET", f"/v1/worlds/{r.world}/entities/{r.entity}"),
    "Subscribe": lambda r: ("GET", f"/v1/worlds/{r.world}/entities/stream"),
    "Predict": lambda r: ("POST", f"/v1/worlds/{r.world}/predict"),
    "Surprise": lambda r: ("POST", f"/v1/worlds/{r.world}/surprise"),
    "Plan": lambda r: ("POST", f"/v1/worlds/{r.world}/plan"),
}


def need_of(rpc: str, request: Any) -> Need:
    """The need of one call, read from its HTTP twin's rule. The world is checked first: a
    name with a '/' would make the twin's path name another world."""
    Worlds.check(request.world)
    method, path = TWINS[rpc](request)
    need = required(method, path)
    assert need is not None, f"{rpc}'s twin {method} {path} is a public path"
    return need


def token_of(metadata: Any) -> str | None:
    """The bearer token in call metadata, None when there is none."""
    for name, value in metadata or ():
        if name == "authorization":
            scheme, _, token = (value if isinstance(value, str) else value.decode("latin-1")).partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


class Gate:
    """Authenticates a call once and checks each request of it against its need."""

    def __init__(self, keyring: KeyRing | None) -> None:
        self.keyring = keyring  # None: auth is off (WORLDSTATE_AUTH=off)

    async def key(self, context: grpc.aio.ServicerContext[Any, Any]) -> Key | None:
        """The key the call is made with (None when auth is off); Problem when it has none."""
        if self.keyring is None:
            return None
        token = token_of(context.invocation_metadata())
        if token is None:
            raise Problem("unauthorized", "send an API key as metadata authorization: Bearer <key>")
        if not self.keyring.loaded.is_set():
            raise Problem("unavailable", "this node has not loaded the API keys from the CP tier yet",
                          headers={"Retry-After": "1"})
        key = await self.keyring.authenticate(token)
        if key is None:
            raise Problem("unauthorized", "the API key is unknown or revoked")
        return key

    def check(self, key: Key | None, rpc: str, request: Any) -> Need:
        """The call's need, or Problem("forbidden") when `key` does not cover it."""
        need = need_of(rpc, request)
        if key is not None:
            check_scope(key, need)
        return need

    async def admit(self, context: grpc.aio.ServicerContext[Any, Any], rpc: str, request: Any) -> tuple[Key | None, Need]:
        """Authenticate and authorize a call of one request."""
        key = await self.key(context)
        return key, self.check(key, rpc, request)
