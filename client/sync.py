"""The synchronous Python client of a worldstate node, on httpx.

    from client import Client

    with Client("http://127.0.0.1:8000", key="wsk_...") as ws:   # or $WORLDSTATE_URL, $WORLDSTATE_KEY
        ws.put_param("lab", "sim/max_bodies", 64)
        ws.update("lab", "sim/max_bodies", lambda v: v * 2)   # read, apply, CAS; retried on 412 only
        with ws.observer("lab", source="cam1") as w:          # batched; ids assigned once
            w.add("ball-3", {"x": 1.25, "y": 0.5})
        ws.entity("lab", "ball-3").values()                   # reads its own writes, on any region

Writes are never resent once sent: a write whose outcome is unknown raises
OutcomeUnknown, as the service answers it. Observations and entity deletes are the
exception: they carry event ids assigned before the first try, so resending them can
only find duplicates, and the client resends them after 429, 503 and 504.
`AsyncClient` (client.aio) has the same methods, to be awaited.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import httpx

from client import _calls as calls
from client._sse import EntityStream, ParamWatch
from client._tokens import merged_token
from client._transport import Call, Flow, auth_headers, connection_error, drive_sync, raise_for, resolve
from client.observer import Observer
from client.types import (DeleteReceipt, Entity, EntityChange, Manifest, Param, ParamChange, ParamList, Physics, Plan,
                          Prediction, Receipt, Surprise)
from client.watch import IDLE_TIMEOUT_S, iterate

__all__ = ["Client", "Param", "Receipt"]
T = TypeVar("T")


class Client:
    """A session with one node: its HTTP connections and its writes' causal token (client/_tokens.py)."""

    def __init__(self, url: str | None = None, key: str | None = None, *, timeout: float = 30.0,
                 source: str | None = None, transport: httpx.BaseTransport | None = None) -> None:
        """`url` and `key` default to $WORLDSTATE_URL (or $WORLDSTATE_API) and $WORLDSTATE_KEY;
        `source` names this client in the observations it sends (default: a random one per
        client); `transport` is httpx's (a proxy, a test's fault injector)."""
        url, key = resolve(url, key)
        self.http = httpx.Client(base_url=url, headers=auth_headers(key), timeout=timeout, transport=transport)
        self.source = source or f"sdk-{uuid.uuid4().hex[:12]}"
        self.token: str | None = None  # the session's writes' causal token, merged, sent with reads

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _do(self, call: Call[T]) -> T:
        try:
            r = self.http.request(call.method, call.path, **call.request_args())
        except httpx.TransportError as e:
            raise connection_error(call.method, e) from e
        return call.parse(raise_for(r))

    def _run(self, flow: Flow[T]) -> T:
        return drive_sync(flow, self._do)

    # -- CP params ----------------------------------------------------------------------

    def get_param(self, world: str, key: str, *, serializable: bool = False) -> Param:
        """A param, read linearizably (`serializable=True`: from any live member, maybe stale).

            ws.get_param("lab", "sim/max_bodies").value      # 64"""
        return self._do(calls.get_param(world, key, serializable))

    def put_param(self, world: str, key: str, value: Any, *, if_revision: int | None = None,
                  create_only: bool = False) -> int:
        """Write `value`; with `if_revision` only if the key is still at it, with `create_only`
        only if absent (Conflict otherwise, with `current_revision`). Returns the new revision.

            rev = ws.put_param("lab", "sim/max_bodies", 64)
            ws.put_param("lab", "sim/max_bodies", 128, if_revision=rev)"""
        return self._do(calls.put_param(world, key, value, if_revision, create_only))

    def create_param(self, world: str, key: str, value: Any) -> int:
        """`put_param(..., create_only=True)`: Conflict if the key exists."""
        return self.put_param(world, key, value, create_only=True)

    def delete_param(self, world: str, key: str, *, if_revision: int | None = None) -> None:
        self._do(calls.delete_param(world, key, if_revision))

    def list_params(self, world: str, prefix: str = "", *, serializable: bool = False) -> ParamList:
        """Every key under `prefix`, paged through one snapshot.

            [(i.key, i.value) for i in ws.list_params("lab", "sim/").items]"""
        return self._run(calls.list_params(world, prefix, serializable))

    def update(self, world: str, key: str, fn: Callable[[Any], Any], *, attempts: int = 50) -> int:
        """Read the key, write `fn(value)` if nobody wrote in between; on a lost race wait a
        random, growing moment and start again (only then: any other error is raised).
        Returns the new revision.

            ws.update("lab", "counter", lambda v: v + 1)"""
        return self._run(calls.update(world, key, fn, attempts))

    def watch(self, world: str, prefix: str = "", start_revision: int = 0, *, idle_timeout: float = IDLE_TIMEOUT_S,
              max_failures: int = 10) -> Iterator[ParamChange]:
        """Every change under `prefix`, in revision order, from `start_revision` (0: from now).
        Reconnects with Last-Event-ID after a dropped connection; raises Compacted when the
        revision it needs is gone, Unavailable after `max_failures` failed connections in a row.

            for change in ws.watch("lab", "sim/"):
                print(change.type, change.key, change.value, change.revision)"""
        return iterate(self.http, ParamWatch(world, prefix, start_revision, max_failures), idle_timeout)

    def get_physics(self, world: str, *, serializable: bool = False) -> Physics:
        return self._do(calls.get_physics(world, serializable))

    def put_physics(self, world: str, physics: Mapping[str, Any] | Physics, *, if_revision: int | None = None,
                    create_only: bool = False) -> int:
        """Write the four constants as one document. Returns its revision.

            ws.put_physics("lab", {"gravity": 9.81, "restitution": 0.8, "drag": 0.1, "time_step": 0.05})"""
        return self._do(calls.put_physics(world, physics, if_revision, create_only))

    # -- worlds ---------------------------------------------------------------------------

    def create_world(self, world: str, meta: Mapping[str, Any] | None = None, *, if_revision: int | None = None,
                     create_only: bool = False) -> int:
        return self._do(calls.create_world(world, meta, if_revision, create_only))

    def worlds(self) -> list[str]:
        """Every world this client's key may read."""
        return self._run(calls.worlds())

    # -- the AP tier ----------------------------------------------------------------------

    def observe(self, world: str, observations: Iterable[Mapping[str, Any]], *, attempts: int = 5) -> Receipt:
        """Post one batch. Each observation without an `event_id` gets one now, once, and `source`
        defaults to this client's: the batch is resent as it is (the same ids) after a 429, 503
        or 504, waiting Retry-After (or a backoff), so a resend can only find duplicates."""
        return self._observe(world, calls.stamp(list(observations), self.source), attempts)

    def _observe(self, world: str, batch: list[dict[str, Any]], attempts: int) -> Receipt:
        receipt = self._run(calls.observe(world, batch, attempts))
        self.token = merged_token(self.token, receipt.token)
        return receipt

    def observer(self, world: str, batch: int = 500, source: str | None = None, *, attempts: int = 5) -> Observer:
        """A batching writer (see client.observer.Observer):

            with ws.observer("lab", batch=500, source="cam1") as w:
                w.add("ball-3", {"x": 1.25, "y": 0.5})"""
        return Observer(lambda chunk: self._observe(world, chunk, attempts), batch, source or self.source)

    def entity(self, world: str, entity: str, *, wait_ms: int | None = None) -> Entity:
        """An entity's merged state, reflecting at least this client's last write (its token);
        NotYetConsistent if this replica has not applied that write within the wait.

            ws.entity("lab", "ball-3").values()                # {"x": 1.25, "y": 0.5}"""
        return self._do(calls.get_entity(world, entity, self.token, wait_ms))

    def entities(self, world: str, *, limit: int | None = None) -> list[Entity]:
        """The world's entities (every page, or the first `limit`), reflecting this client's writes."""
        return self._run(calls.list_entities(world, self.token, limit))

    def delete_entity(self, world: str, entity: str, *, event_id: str | None = None,
                      attempts: int = 5) -> DeleteReceipt:
        """Delete an entity: a tombstone that merges like a write. Its event id is assigned
        once, so a resend (after 429, 503, 504) finds a duplicate rather than deleting twice."""
        receipt = self._run(calls.delete_entity(world, entity, event_id or uuid.uuid4().hex, attempts))
        self.token = merged_token(self.token, receipt.token)
        return receipt

    def subscribe(self, world: str, entity: str | None = None, prefix: str | None = None, after: str | None = None,
                  *, idle_timeout: float = IDLE_TIMEOUT_S, max_failures: int = 10) -> Iterator[EntityChange]:
        """The changes merged at the serving replica (its own writes and its peers'), of one
        entity or of a prefix, from now or right `after` a stream position (an event's `id`).
        Reconnects with Last-Event-ID; raises ChangesTrimmed if that position is gone and
        SlowConsumer if the stream dropped this reader for falling behind.

            for change in ws.subscribe("lab", prefix="ball-"):
                print(change.entity, change.fields, change.deleted)"""
        return iterate(self.http, EntityStream(world, entity, prefix, after, max_failures), idle_timeout)

    # -- the world model ----------------------------------------------------------------

    def predict(self, world: str, horizon: int, *, entities: list[str] | None = None,
                actions: Mapping[str, list[list[float]]] | None = None, serializable: bool = False) -> Prediction:
        """Trajectories of the world's bodies over `horizon` steps.

            ws.predict("lab", 20, actions={"ball-3": [[0.5, 0.0]]}).trajectories["ball-3"].positions"""
        body = calls.body_of(horizon=horizon, entities=entities, actions=actions)
        return self._do(calls.predict(world, body, serializable))

    def surprise(self, world: str, observed: Mapping[str, list[Mapping[str, float]]], *,
                 entities: list[str] | None = None, serializable: bool = False) -> Surprise:
        """How surprising observed frames are against the model's expectation.

            ws.surprise("lab", {"ball-3": [{"x": 1.3, "y": 0.4, "vx": -0.1, "vy": -0.5}]}).surprising"""
        body = calls.body_of(observed=observed, entities=entities)
        return self._do(calls.surprise(world, body, serializable))

    def plan(self, world: str, entity: str, goal: Mapping[str, float], horizon: int, *, budget: int | None = None,
             entities: list[str] | None = None, serializable: bool = False) -> Plan:
        """Impulses that bring `entity` into `goal` ({"x", "y", "radius"}).

            ws.plan("lab", "ball-3", {"x": 5, "y": 5, "radius": 1}, 20).actions"""
        body = calls.body_of(entity=entity, goal=goal, horizon=horizon, budget=budget, entities=entities)
        return self._do(calls.plan(world, body, serializable))

    def manifest(self, *, serializable: bool = False) -> Manifest:
        """The published model manifest and its revision."""
        return self._do(calls.manifest(serializable))

    def publish(self, manifest: Mapping[str, Any], *, if_revision: int | None = None,
                create_only: bool = False) -> int:
        """Publish a model manifest (compare-and-swap like any CP value). Returns its revision."""
        return self._do(calls.publish(manifest, if_revision, create_only))

    def serving(self) -> dict[str, Any]:
        """The model this node serves now, and its queue of plan and surprise jobs."""
        return self._do(calls.serving())

    def call(self, call: Call[T]) -> T:
        """Run one prepared Call (client._calls): what the CLI uses for raw request bodies."""
        return self._do(call)
