"""The harness's HTTP client of the API, and what each answer means for the history.

Every request ends in one of Jepsen's three outcomes:

- ``ok``: the service answered what was asked (a 412 on a CAS is ok too:
  the operation happened and said "no"; the workload decides that).
- ``fail``: it definitely did not happen. A 503 (the service promises it
  changed nothing), a 4xx, a connection that was never made, or any read
  that got no answer (a read changes nothing, so an unanswered read is as
  good as one that never happened).
- ``info``: a write whose outcome is unknown: a 504, a timeout, a
  connection lost after the request was sent, any other 5xx. It may have
  happened, now or later; it is never retried blindly (a retry of a CP write
  could apply twice). AP posts are idempotent by event id, so the
  observations workload replays them on purpose, as a new operation.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from .history import FAIL, INFO, OK


@dataclass
class Answer:
    type: str                      # ok / fail / info
    status: int | None = None      # HTTP status, None when there was none
    body: Any = None               # parsed JSON body, when there was one
    headers: httpx.Headers | None = None
    error: str | None = None       # why, for fail and info


class Api:
    """One pooled HTTP client per region's API node."""

    def __init__(self, urls: dict[str, str], timeout_s: float, auth: dict[str, str] | None = None,
                 grpc: dict[str, str] | None = None) -> None:
        """`auth`: the Authorization header every request sends (Cluster.auth_headers());
        `grpc`: each region's gRPC target, for the workloads that drive gRPC or the SDK."""
        self.timeout_s = timeout_s
        self.urls = urls
        self.grpc = grpc or {}
        self.key = (auth or {}).get("Authorization", "").removeprefix("Bearer ") or None
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
        self.http = {r: httpx.AsyncClient(base_url=u, timeout=timeout_s, limits=limits, headers=auth)
                     for r, u in urls.items()}

    async def close(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self.http.values()), return_exceptions=True)

    async def call(self, region: str, method: str, path: str, *, write: bool, body: Any = None,
                   headers: dict[str, str] | None = None, params: dict[str, Any] | None = None,
                   timeout_s: float | None = None) -> Answer:
        content = None if body is None else json.dumps(body)
        if content is not None:  # a node refuses a body of any other media type (415)
            headers = {"Content-Type": "application/json", **(headers or {})}
        try:
            r = await self.http[region].request(method, path, content=content, headers=headers, params=params,
                                                timeout=timeout_s or self.timeout_s)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as e:
            return Answer(FAIL, error=f"not sent: {type(e).__name__}")
        except (httpx.TransportError, asyncio.TimeoutError) as e:
            return Answer(INFO if write else FAIL, error=f"no answer: {type(e).__name__}")
        try:
            parsed = r.json()
        except ValueError:
            parsed = None
        if r.status_code < 300 or r.status_code == 412:
            return Answer(OK, r.status_code, parsed, r.headers)
        if isinstance(parsed, dict):
            err = f"{r.status_code} {parsed.get('type')}: {str(parsed.get('detail', ''))[:160]}"
        else:
            err = f"{r.status_code} {r.text[:160]}"
        if r.status_code < 500 or r.status_code == 503:
            return Answer(FAIL, r.status_code, parsed, r.headers, err)
        return Answer(INFO if write else FAIL, r.status_code, parsed, r.headers, err)

    async def sse(self, region: str, path: str, params: dict[str, Any],
                  headers: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
        """Server-sent events of one stream as {"id", "event", "data"}; ends when the stream does."""
        timeout = httpx.Timeout(self.timeout_s, read=None)  # a quiet watch is not a dead one
        async with self.http[region].stream("GET", path, params=params, headers=headers, timeout=timeout) as r:
            if r.status_code != 200:
                raise httpx.HTTPStatusError(f"watch answered {r.status_code}", request=r.request, response=r)
            event: dict[str, Any] = {}
            async for line in r.aiter_lines():
                if not line:
                    if "data" in event:
                        yield event
                    event = {}
                elif line.startswith(":"):
                    continue
                else:
                    name, _, value = line.partition(":")
                    event[name] = value[1:] if value.startswith(" ") else value
