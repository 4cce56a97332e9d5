"""worldstate.v1.Worldstate: each RPC calls the service operation its HTTP twin calls, so the
two protocols share validation, guarantees, quotas and writer records.

Every call is admitted by `rpc.auth.Gate` (the key, then the twin's scope) with the key set
as `service.keys.acting`; every error ends the call through `rpc.status` (one mapping).
A long-lived stream (Watch, Subscribe, Observe) ends UNAUTHENTICATED once its key is revoked.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from api.problems import Problem
from rpc import model_calls
from rpc import worldstate_pb2 as pb
from rpc import worldstate_pb2_grpc as pb_grpc
from rpc.auth import Gate
from rpc.status import abort
from rpc.values import fill_struct, from_value, set_value
from service.errors import InvalidInput
from service.keys import Key, acting
from service.node import Node
from service.versioned import MAX_REVISION, Precondition

__all__ = ["CONSISTENCY", "Servicer", "consistency_of"]

T = TypeVar("T")
Context = grpc.aio.ServicerContext  # type: ignore[type-arg]
CONSISTENCY = {pb.CONSISTENCY_UNSPECIFIED: "linearizable", pb.LINEARIZABLE: "linearizable",
               pb.SERIALIZABLE: "serializable"}
_CONSISTENCY_ENUM = {"linearizable": pb.LINEARIZABLE, "serializable": pb.SERIALIZABLE}
MAX_WAIT_MS = 60_000  # as GET /entities/{entity}?wait_ms= allows


def consistency_of(value: int) -> Any:
    if value not in CONSISTENCY:
        raise _invalid("consistency", "LINEARIZABLE or SERIALIZABLE")
    return CONSISTENCY[value]


def _invalid(field: str, msg: str) -> InvalidInput:
    return InvalidInput(f"{field}: {msg}", [{"loc": [field], "msg": msg, "type": "value_error"}])


def _revoked(key: Key | None, gate: Gate) -> asyncio.Event | None:
    return gate.keyring.revoked(key.id) if key is not None and gate.keyring is not None else None


def unary(rpc: str) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
    """A unary RPC: admitted, run with its key acting, errors mapped to statuses."""
    def wrap(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        @functools.wraps(fn)
        async def handler(self: Servicer, request: Any, context: Context) -> T:
            try:
                key, _ = await self.gate.admit(context, rpc, request)
                token = acting.set(key)
                try:
                    return await fn(self, request, context)
                finally:
                    acting.reset(token)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:  # noqa: BLE001 - every error becomes a status, `internal` if unmapped
                await abort(context, exc)
                raise AssertionError("unreachable") from exc
        return handler
    return wrap


def streaming(rpc: str) -> Callable[[Callable[..., AsyncIterator[T]]], Callable[..., AsyncIterator[T]]]:
    """A server-streaming RPC: admitted, cut when its key is revoked, errors mapped to statuses."""
    def wrap(fn: Callable[..., AsyncIterator[T]]) -> Callable[..., AsyncIterator[T]]:
        @functools.wraps(fn)
        async def handler(self: Servicer, request: Any, context: Context) -> AsyncIterator[T]:
            try:
                key, _ = await self.gate.admit(context, rpc, request)
                acting.set(key)  # this call's own task: nothing else sees it
                async for item in until_revoked(fn(self, request, context), _revoked(key, self.gate)):
                    yield item
            except grpc.aio.AbortError:
                raise
            except Exception as exc:  # noqa: BLE001
                await abort(context, exc)
        return handler
    return wrap


async def until_revoked(items: AsyncIterator[T], revoked: asyncio.Event | None) -> AsyncIterator[T]:
    """`items`, until `revoked` is set: then Problem("unauthorized")."""
    if revoked is None:
        async for item in items:
            yield item
        return
    it = aiter(items)
    gone = asyncio.ensure_future(revoked.wait())
    try:
        while True:
            nxt = asyncio.ensure_future(anext(it))
            await asyncio.wait({nxt, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not nxt.done():
                nxt.cancel()
                await asyncio.gather(nxt, return_exceptions=True)
                raise Problem("unauthorized", "the API key this stream was opened with was revoked")
            try:
                item = nxt.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        gone.cancel()


def _precondition(if_revision: int | None, create_only: bool = False, must_exist: bool = False) -> Precondition:
    if (if_revision is not None) + create_only + must_exist > 1:
        raise Problem("invalid-precondition", "send at most one of if_revision, create_only, must_exist")
    if if_revision is not None and not 0 < if_revision <= MAX_REVISION:
        raise Problem("invalid-precondition", f"if_revision {if_revision}: a revision is in 1..{MAX_REVISION}")
    return Precondition(if_revision=if_revision, create_only=create_only, must_exist=must_exist)


def _observation(ob: pb.Observation) -> dict[str, Any]:
    """One observation as the HTTP body holds it; service.observation_input validates it."""
    doc: dict[str, Any] = {"event_id": ob.event_id, "entity": ob.entity, "source": ob.source,
                           "fields": {name: _scalar(v) for name, v in ob.fields.items()}}
    if ob.HasField("observed_at_ms"):
        doc["observed_at"] = ob.observed_at_ms / 1000  # exact back to ms: int(ms / 1000 * 1000) == ms
    return doc


def _scalar(v: Any) -> Any:
    # Non-finite numbers, objects and lists pass through to be refused, with their place, by
    # the same validation as HTTP's.
    kind = v.WhichOneof("kind")
    if kind == "number_value":
        return v.number_value
    if kind == "string_value":
        return v.string_value
    if kind == "bool_value":
        return v.bool_value
    return {} if kind == "struct_value" else [] if kind == "list_value" else None


class Servicer(pb_grpc.WorldstateServicer):
    def __init__(self, node: Node) -> None:
        self.node = node
        self.gate = Gate(node.keyring)

    # -- CP params -------------------------------------------------------------------

    @unary("GetParam")
    async def GetParam(self, request: pb.GetParamRequest, context: Context) -> pb.Param:
        v = await self.node.params.get(request.world, request.key, consistency_of(request.consistency))
        out = pb.Param(world=request.world, key=request.key, revision=v.revision, create_revision=v.create_revision,
                       version=v.version, store_revision=v.store_revision,
                       consistency=_CONSISTENCY_ENUM[v.consistency])
        set_value(out.value, v.value)
        return out

    @unary("PutParam")
    async def PutParam(self, request: pb.PutParamRequest, context: Context) -> pb.PutParamResponse:
        self.node.params.check(request.world, request.key)
        if not request.HasField("value"):
            raise _invalid("value", "a value is required (null is Value{null_value})")
        pre = _precondition(request.if_revision if request.HasField("if_revision") else None,
                            request.create_only, request.must_exist)
        result = await self.node.params.put(request.world, request.key, from_value(request.value), pre)
        return pb.PutParamResponse(world=request.world, key=request.key, revision=result.revision,
                                   created=result.created)

    @unary("DeleteParam")
    async def DeleteParam(self, request: pb.DeleteParamRequest, context: Context) -> pb.DeleteParamResponse:
        pre = _precondition(request.if_revision if request.HasField("if_revision") else None)
        store_revision = await self.node.params.delete(request.world, request.key, if_revision=pre.if_revision)
        return pb.DeleteParamResponse(world=request.world, key=request.key, deleted=True,
                                      store_revision=store_revision)

    @streaming("Watch")
    async def Watch(self, request: pb.WatchRequest, context: Context) -> AsyncIterator[pb.ParamChange]:
        start, changes = await self.node.params.watch(request.world, request.prefix, request.start_revision)
        await context.send_initial_metadata((("worldstate-start-revision", str(start)),))
        async for c in changes:
            out = pb.ParamChange(type=pb.ParamChange.PUT if c.type == "put" else pb.ParamChange.DELETE, key=c.key,
                                 revision=c.revision)
            set_value(out.value, c.value)
            yield out

    # -- AP observations ---------------------------------------------------------------

    async def Observe(self, request_iterator: AsyncIterator[pb.ObserveRequest],
                      context: Context) -> AsyncIterator[pb.ObserveAck]:
        try:
            key = await self.gate.key(context)
            revoked = _revoked(key, self.gate)
            acting.set(key)
            async for batch in request_iterator:
                self.gate.check(key, "Observe", batch)
                if revoked is not None and revoked.is_set():
                    raise Problem("unauthorized", "the API key this stream was opened with was revoked")
                r = await self.node.observations.post(batch.world, [_observation(o) for o in batch.observations])
                yield pb.ObserveAck(replica=r.replica, accepted=r.accepted, duplicates=r.duplicates, hlc=r.hlc,
                                    token=r.token, behind=r.behind)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001
            await abort(context, exc)

    @unary("GetEntity")
    async def GetEntity(self, request: pb.GetEntityRequest, context: Context) -> pb.Entity:
        wait_ms = request.wait_ms if request.HasField("wait_ms") else None
        if wait_ms is not None and wait_ms > MAX_WAIT_MS:
            raise _invalid("wait_ms", f"at most {MAX_WAIT_MS}")
        state, reflects = await self.node.observations.get(request.world, request.entity, request.token or None,
                                                           wait_ms)
        out = pb.Entity(world=request.world, entity=state.entity, observations_by_source=state.counters,
                        observations_total=sum(state.counters.values()))
        for name, f in state.fields.items():
            fs = out.fields[name]
            set_value(fs.value, f.value)
            fs.hlc, fs.node, fs.source, fs.event_id = f.hlc, f.node, f.source, f.event_id
            if f.observed_at_ms is not None:
                fs.observed_at_ms = f.observed_at_ms
        r = out.reflects
        r.replica, r.hlc = reflects.replica, reflects.hlc
        r.watermark.update(reflects.watermark)
        r.behind.extend(reflects.behind)
        fill_struct(r.replication, reflects.replication)
        return out

    @streaming("Subscribe")
    async def Subscribe(self, request: pb.SubscribeRequest, context: Context) -> AsyncIterator[pb.EntityChange]:
        subs = self.node.subscriptions
        entity, prefix, after = request.entity or None, request.prefix or None, request.after or None
        await subs.check(request.world, entity=entity, prefix=prefix, after=after)  # refused before any change
        if after is None:  # "from now", at a position the client holds before any change arrives
            after = await subs.head()
        await context.send_initial_metadata((("worldstate-position", after),))
        changes = subs.changes(request.world, entity=entity, prefix=prefix, after=after)
        async for c in changes:
            out = pb.EntityChange(world=c.world, entity=c.entity, deleted=c.deleted, hlc=c.hlc, node=c.node,
                                  origin=c.origin, id=c.id)
            for name, value in (c.fields or {}).items():
                set_value(out.fields[name], value)
            yield out

    # -- the world model ---------------------------------------------------------------

    @unary("Predict")
    async def Predict(self, request: pb.ModelQuery, context: Context) -> pb.ModelAnswer:
        return await model_calls.predict(self.node, request, consistency_of(request.consistency))

    @unary("Surprise")
    async def Surprise(self, request: pb.ModelQuery, context: Context) -> pb.ModelAnswer:
        return await model_calls.surprise(self.node, request, consistency_of(request.consistency))

    @unary("Plan")
    async def Plan(self, request: pb.ModelQuery, context: Context) -> pb.ModelAnswer:
        return await model_calls.plan(self.node, request, consistency_of(request.consistency))

