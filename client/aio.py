"""The asynchronous client: `Client`'s methods (client.sync, documented there), awaited;
`watch` and `subscribe` are async iterators and `observer` an async context manager.

    from client import AsyncClient

    async with AsyncClient("http://127.0.0.1:8000", key="wsk_...") as ws:
        await ws.put_param("lab", "sim/max_bodies", 64)
        async with ws.observer("lab", source="cam1") as w:
            await w.add("ball-3", {"x": 1.25, "y": 0.5})
        async for change in ws.watch("lab", "sim/"):
            ...

Both clients send the same requests and retry by the same rules: each operation is
one description (client._calls) that either client runs.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, TypeVar

import httpx

from client import _calls as calls
from client._sse import EntityStream, ParamWatch
from client._tokens import merged_token
from client._transport import Call, Flow, auth_headers, connection_error, drive_async, raise_for, resolve
from client.observer import AsyncObserver
from client.types import (DeleteReceipt, Entity, EntityChange, Manifest, Param, ParamChange, ParamList, Physics, Plan,
                          Prediction, Receipt, Surprise)
from client.watch import IDLE_TIMEOUT_S, aiterate

__all__ = ["AsyncClient"]
T = TypeVar("T")


class AsyncClient:
    """A session with one node, for asyncio: see `client.Client`."""

    def __init__(self, url: str | None = None, key: str | None = None, *, timeout: float = 30.0,
                 source: str | None = None, transport: httpx.AsyncBaseTransport | None = None) -> None:
        url, key = resolve(url, key)
        self.http = httpx.AsyncClient(base_url=url, headers=auth_headers(key), timeout=timeout, transport=transport)
        self.source = source or f"sdk-{uuid.uuid4().hex[:12]}"
        self.token: str | None = None

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _do(self, call: Call[T]) -> T:
        try:
            r = await self.http.request(call.method, call.path, **call.request_args())
        except httpx.TransportError as e:
            raise connection_error(call.method, e) from e
        return call.parse(raise_for(r))

    async def _run(self, flow: Flow[T]) -> T:
        return await drive_async(flow, self._do)

    # -- CP params ----------------------------------------------------------------------

    async def get_param(self, world: str, key: str, *, serializable: bool = False) -> Param:
        return await self._do(calls.get_param(world, key, serializable))

    async def put_param(self, world: str, key: str, value: Any, *, if_revision: int | None = None,
                        create_only: bool = False) -> int:
        return await self._do(calls.put_param(world, key, value, if_revision, create_only))

    async def create_param(self, world: str, key: str, value: Any) -> int:
        return await self.put_param(world, key, value, create_only=True)

    async def delete_param(self, world: str, key: str, *, if_revision: int | None = None) -> None:
        await self._do(calls.delete_param(world, key, if_revision))

    async def list_params(self, world: str, prefix: str = "", *, serializable: bool = False) -> ParamList:
        return await self._run(calls.list_params(world, prefix, serializable))

    async def update(self, world: str, key: str, fn: Callable[[Any], Any], *, attempts: int = 50) -> int:
        return await self._run(calls.update(world, key, fn, attempts))

    def watch(self, world: str, prefix: str = "", start_revision: int = 0, *, idle_timeout: float = IDLE_TIMEOUT_S,
              max_failures: int = 10) -> AsyncIterator[ParamChange]:
        """`async for change in ws.watch(...)`; close it early with `contextlib.aclosing`."""
        return aiterate(self.http, ParamWatch(world, prefix, start_revision, max_failures), idle_timeout)

    async def get_physics(self, world: str, *, serializable: bool = False) -> Physics:
        return await self._do(calls.get_physics(world, serializable))

    async def put_physics(self, world: str, physics: Mapping[str, Any] | Physics, *, if_revision: int | None = None,
                          create_only: bool = False) -> int:
        return await self._do(calls.put_physics(world, physics, if_revision, create_only))

    # -- worlds ---------------------------------------------------------------------------

    async def create_world(self, world: str, meta: Mapping[str, Any] | None = None, *,
                           if_revision: int | None = None, create_only: bool = False) -> int:
        return await self._do(calls.create_world(world, meta, if_revision, create_only))

    async def worlds(self) -> list[str]:
        return await self._run(calls.worlds())

    # -- the AP tier ----------------------------------------------------------------------

    async def observe(self, world: str, observations: Iterable[Mapping[str, Any]], *, attempts: int = 5) -> Receipt:
        return await self._observe(world, calls.stamp(list(observations), self.source), attempts)

    async def _observe(self, world: str, batch: list[dict[str, Any]], attempts: int) -> Receipt:
        receipt = await self._run(calls.observe(world, batch, attempts))
        self.token = merged_token(self.token, receipt.token)
        return receipt

    def observer(self, world: str, batch: int = 500, source: str | None = None, *,
                 attempts: int = 5) -> AsyncObserver:
        """`async with ws.observer("lab") as w: await w.add("ball-3", {"x": 1.0})`"""
        return AsyncObserver(lambda chunk: self._observe(world, chunk, attempts), batch, source or self.source)

    async def entity(self, world: str, entity: str, *, wait_ms: int | None = None) -> Entity:
        return await self._do(calls.get_entity(world, entity, self.token, wait_ms))

    async def entities(self, world: str, *, limit: int | None = None) -> list[Entity]:
        return await self._run(calls.list_entities(world, self.token, limit))

    async def delete_entity(self, world: str, entity: str, *, event_id: str | None = None,
                            attempts: int = 5) -> DeleteReceipt:
        receipt = await self._run(calls.delete_entity(world, entity, event_id or uuid.uuid4().hex, attempts))
        self.token = merged_token(self.token, receipt.token)
        return receipt

    def subscribe(self, world: str, entity: str | None = None, prefix: str | None = None, after: str | None = None,
                  *, idle_timeout: float = IDLE_TIMEOUT_S, max_failures: int = 10) -> AsyncIterator[EntityChange]:
        return aiterate(self.http, EntityStream(world, entity, prefix, after, max_failures), idle_timeout)

    # -- the world model ----------------------------------------------------------------

    async def predict(self, world: str, horizon: int, *, entities: list[str] | None = None,
                      actions: Mapping[str, list[list[float]]] | None = None,
                      serializable: bool = False) -> Prediction:
        body = calls.body_of(horizon=horizon, entities=entities, actions=actions)
        return await self._do(calls.predict(world, body, serializable))

    async def surprise(self, world: str, observed: Mapping[str, list[Mapping[str, float]]], *,
                       entities: list[str] | None = None, serializable: bool = False) -> Surprise:
        body = calls.body_of(observed=observed, entities=entities)
        return await self._do(calls.surprise(world, body, serializable))

    async def plan(self, world: str, entity: str, goal: Mapping[str, float], horizon: int, *,
                   budget: int | None = None, entities: list[str] | None = None, serializable: bool = False) -> Plan:
        body = calls.body_of(entity=entity, goal=goal, horizon=horizon, budget=budget, entities=entities)
        return await self._do(calls.plan(world, body, serializable))

    async def manifest(self, *, serializable: bool = False) -> Manifest:
        return await self._do(calls.manifest(serializable))

    async def publish(self, manifest: Mapping[str, Any], *, if_revision: int | None = None,
                      create_only: bool = False) -> int:
        return await self._do(calls.publish(manifest, if_revision, create_only))

    async def serving(self) -> dict[str, Any]:
        return await self._do(calls.serving())

    async def call(self, call: Call[T]) -> T:
        return await self._do(call)
