"""grpc-observations (AP): the observations workload, with every post and read made over gRPC.

The same operations, final reads and checkers as ``observations``; each post is
one `Observe` stream carrying one batch of one event, each read a `GetEntity`.
A status the node itself sent (it carries the node's google.rpc.ErrorInfo) says
what happened, as an HTTP status does: UNAVAILABLE, RESOURCE_EXHAUSTED,
INVALID_ARGUMENT and the like changed nothing (fail); UNKNOWN with reason
OUTCOME_UNKNOWN may have. A status without it came from the client's own
channel (a deadline, a connection lost after sending): a write it ends may
have happened (info), a read changed nothing (fail).
"""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from rpc.worldstate_pb2 import GetEntityRequest, Observation, ObserveRequest
from rpc.channel import achannel, metadata
from rpc.values import from_value, to_value
from rpc.worldstate_pb2_grpc import WorldstateStub

from ..history import FAIL, INFO, OK
from ..recorder import Process
from .observations import Observations

_MAYBE_APPLIED = {"OUTCOME_UNKNOWN"}


def _outcome(e: grpc.aio.AioRpcError) -> tuple[str, str]:
    """(history type for a write, error text) of a failed call."""
    status = rpc_status.from_call(e)  # type: ignore[arg-type]
    text = f"{e.code().name}: {e.details()}"[:200]
    if status is None:
        return INFO, "no answer: " + text  # the channel's own status: the node may have applied it
    for d in status.details:
        info = error_details_pb2.ErrorInfo()
        if d.Unpack(info):
            return (INFO if info.reason in _MAYBE_APPLIED else FAIL), text
    return FAIL, text


class GrpcObservations(Observations):
    name = "grpc-observations"
    via = "grpc"
    prefix = "grpc-"

    def __init__(self, ctx: Any, **kw: Any) -> None:
        super().__init__(ctx, **kw)
        self._stubs: dict[str, tuple[grpc.aio.Channel, WorldstateStub]] = {}

    def stub(self, region: str) -> WorldstateStub:
        if region not in self._stubs:
            ch = achannel(self.ctx.api.grpc[region])
            self._stubs[region] = (ch, WorldstateStub(ch))
        return self._stubs[region][1]

    async def post(self, proc: Process, region: str, ev: dict[str, Any], replay: bool = False) -> bool:
        rec = self.ctx.rec
        extra = {"tier": "ap", "region": region, "node": self.ctx.node(region), "via": "grpc",
                 **({"replay": True} if replay else {})}
        rec.invoke(proc.id, "post", ev["entity"], ev, **extra)
        fields = {k: to_value(v) for k, v in ev["fields"].items()}
        req = ObserveRequest(world=self.ctx.world, observations=[
            Observation(event_id=ev["id"], entity=ev["entity"], source=ev["source"], fields=fields)])

        async def one():  # type: ignore[no-untyped-def]
            yield req

        try:
            acks = [a async for a in self.stub(region).Observe(one(), metadata=metadata(self.ctx.api.key),
                                                                timeout=self.ctx.api.timeout_s)]
        except grpc.aio.AioRpcError as e:
            kind, text = _outcome(e)
            rec.record(kind, proc.id, "post", ev["entity"], ev, error=text, **extra)
            if kind == INFO:
                proc.crashed()
            return False
        if len(acks) != 1:
            rec.record(INFO, proc.id, "post", ev["entity"], ev, error=f"{len(acks)} acks for one batch", **extra)
            proc.crashed()
            return False
        ack = acks[0]
        accepted = ack.accepted == 1
        out = {"status": "accepted" if accepted else "duplicate", "token": ack.token}
        if accepted:
            out["hlc"] = ack.hlc
        rec.record(OK, proc.id, "post", ev["entity"], out, **extra)
        return accepted

    async def read(self, proc: Process | int, region: str, entity: str, **extra: Any) -> dict[str, Any] | None:
        pid = proc if isinstance(proc, int) else proc.id
        rec = self.ctx.rec
        extra = {"tier": "ap", "region": region, "via": "grpc", **extra}
        rec.invoke(pid, "read-entity", entity, None, **extra)
        try:
            e = await self.stub(region).GetEntity(GetEntityRequest(world=self.ctx.world, entity=entity),
                                                  metadata=metadata(self.ctx.api.key), timeout=self.ctx.api.timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                rec.record(OK, pid, "read-entity", entity, None, **extra)
                return {}
            rec.record(FAIL, pid, "read-entity", entity, None, error=f"{exc.code().name}: {exc.details()}"[:200],
                       **extra)
            return None
        state = {"fields": {n: {"value": from_value(f.value), "hlc": f.hlc, "node": f.node, "event_id": f.event_id}
                            for n, f in e.fields.items()},
                 "counters": {s: c for s, c in e.observations_by_source.items()}}
        rec.record(OK, pid, "read-entity", entity, state, **extra)
        return state

    async def final(self) -> None:
        for ch, _ in self._stubs.values():
            await ch.close()
        self._stubs.clear()
        await super().final()
