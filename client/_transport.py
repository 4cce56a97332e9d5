"""What the sync and async clients share, free of I/O: where to connect, a request
described as a `Call`, multi-step operations as generators of Calls (`Flow`), how an
answer becomes a result or an exception, and how long to wait before trying again.

Each client only runs Calls on its own httpx client (`drive_sync` / `drive_async`),
so the two cannot drift apart in what they send or how they retry.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from client.errors import OutcomeUnknown, Unavailable, WorldstateError, error_for

T = TypeVar("T")
NO_BODY: Any = object()
# The documented name first; `worldstate keys` has read WORLDSTATE_API since before the SDK.
URL_VARIABLES = ("WORLDSTATE_URL", "WORLDSTATE_API")
KEY_VARIABLE = "WORLDSTATE_KEY"


def resolve(url: str | None, key: str | None) -> tuple[str, str | None]:
    """The node URL and key: as given, else from the environment."""
    url = url or next((os.environ[v] for v in URL_VARIABLES if os.environ.get(v)), None)
    if not url:
        raise ValueError("give url= (--url) or set WORLDSTATE_URL")
    return url.rstrip("/"), key or os.environ.get(KEY_VARIABLE) or None


def world_path(world: str) -> str:
    return f"/v1/worlds/{quote(world, safe='')}"


def auth_headers(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def precondition(if_revision: int | None = None, create_only: bool = False) -> dict[str, str]:
    """If-Match / If-None-Match for a conditional CP write."""
    headers = {"If-Match": f'"{if_revision}"'} if if_revision is not None else {}
    if create_only:
        headers["If-None-Match"] = "*"
    return headers


def backoff(attempt: int, retry_after: float | None = None, base: float = 0.1, cap: float = 5.0) -> float:
    """Seconds to wait before try `attempt + 1`: the server's Retry-After when it gave one,
    else exponential with jitter, so clients refused together do not return together."""
    if retry_after is not None:
        return retry_after
    return min(cap, base * 2 ** attempt) * random.uniform(0.5, 1.5)


@dataclass(frozen=True)
class Call(Generic[T]):
    """One HTTP request and how to read its (2xx) answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json: Any = NO_BODY
    params: Mapping[str, Any] | None = None
    headers: Mapping[str, str] | None = None

    def request_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"params": self.params, "headers": self.headers}
        if self.json is not NO_BODY:
            args["json"] = self.json
        return args


@dataclass(frozen=True)
class Sleep:
    seconds: float


# A multi-step operation: yields Calls (sent back their results, or thrown their errors)
# and Sleeps, and returns its result.
Flow = Generator["Call[Any] | Sleep", Any, T]


def raise_for(r: httpx.Response) -> httpx.Response:
    """`r` if it is a success; the problem it carries as an exception otherwise."""
    if r.status_code >= 400:
        try:
            body = r.json()
        except ValueError:
            body = r.text
        raise error_for(r.status_code, body, r.headers.get("retry-after"))
    return r


def connection_error(method: str, exc: httpx.TransportError) -> WorldstateError:
    """A failed connection as a problem: nothing can have been applied unless a write was
    sent and then went unanswered. That one is OutcomeUnknown, never resent by the client."""
    never_sent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
    cls = Unavailable if never_sent or method in ("GET", "HEAD") else OutcomeUnknown
    slug = "unavailable" if cls is Unavailable else "outcome-unknown"
    return cls(0, {"type": f"/problems/{slug}", "detail": f"{type(exc).__name__}: {exc}"})


def drive_sync(flow: Flow[T], do: Callable[[Call[Any]], Any]) -> T:
    """Run a Flow, doing its Calls with `do` and its Sleeps with time.sleep."""
    value: Any = None
    error: WorldstateError | None = None
    while True:
        try:
            step = flow.throw(error) if error is not None else flow.send(value)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        value, error = None, None
        try:
            if isinstance(step, Sleep):
                time.sleep(step.seconds)
            else:
                value = do(step)
        except WorldstateError as e:
            error = e


async def drive_async(flow: Flow[T], do: Callable[[Call[Any]], Awaitable[Any]]) -> T:
    """`drive_sync`, awaiting."""
    value: Any = None
    error: WorldstateError | None = None
    while True:
        try:
            step = flow.throw(error) if error is not None else flow.send(value)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        value, error = None, None
        try:
            if isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
            else:
                value = await do(step)
        except WorldstateError as e:
            error = e


def single(call: Call[T]) -> Flow[T]:
    """A Call as a one-step Flow."""
    return (yield call)  # type: ignore[no-any-return]
