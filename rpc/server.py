"""The gRPC server of one node, started and stopped with the HTTP app (api/app.py) and
sharing its Node: worldstate.v1.Worldstate, grpc.health.v1 and server reflection, so
grpcurl and grpc_health_probe work without the proto.

WORLDSTATE_GRPC_PORT (0: no gRPC) and WORLDSTATE_GRPC_HOST (empty: the HTTP --host).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from rpc import worldstate_pb2 as pb
from rpc import worldstate_pb2_grpc as pb_grpc
from rpc.servicer import Servicer
from service.node import Node

__all__ = ["HEALTH_REFRESH_S", "SERVICE", "GrpcServer", "options", "ready"]

log = logging.getLogger("worldstate.rpc")
SERVICE = pb.DESCRIPTOR.services_by_name["Worldstate"].full_name  # "worldstate.v1.Worldstate"
# How often the health service re-reads the node's readiness (both tiers, the keys): the
# standard Check answers from it at once, so a probe never waits on an unreachable etcd.
HEALTH_REFRESH_S = 1.0
# HTTP/2 streams one connection may hold open at once. A client multiplexes its calls over one
# connection; this bounds what one client can pin (watches, subscriptions) as max_connections
# bounds HTTP's connections.
MAX_STREAMS_PER_CONNECTION = 256


def options(node: Node) -> list[tuple[str, int]]:
    s = node.settings
    return [
        # A message is a request body: the same bound as HTTP's (a batch of observations in protobuf
        # is smaller than its JSON, so anything HTTP takes fits).
        ("grpc.max_receive_message_length", s.max_body_bytes),
        ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
        # Idle watch and subscribe streams stay open through proxies that drop quiet connections:
        # HTTP/2 pings play the part of SSE's heartbeat comments.
        ("grpc.keepalive_time_ms", int(s.sse_heartbeat_s * 1000)),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ]


async def ready(node: Node) -> bool:
    """The rule of /readyz: both tiers serve their guarantee and the keys are loaded (or off)."""
    tiers = await node.readiness()
    return all(tiers[t].get("state") == "ok" for t in ("cp", "ap")) and tiers["keys"]["state"] in ("ok", "off")


class GrpcServer:
    """One grpc.aio server on the node's event loop."""

    def __init__(self, node: Node, host: str) -> None:
        s = node.settings
        self.node = node
        self.address = f"{host}:{s.grpc_port}"
        # Past this many calls in flight a new one is refused RESOURCE_EXHAUSTED, as HTTP refuses
        # connections past max_connections.
        self.server = grpc.aio.server(options=options(node), maximum_concurrent_rpcs=s.max_connections)
        pb_grpc.add_WorldstateServicer_to_server(Servicer(node), self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection((SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        self._refresh: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.server.add_insecure_port(self.address) == 0:
            raise OSError(f"gRPC could not bind {self.address}")
        await self._set(await self._ready())
        await self.server.start()
        self._refresh = asyncio.create_task(self._follow(), name="grpc-health")

    async def stop(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            await asyncio.gather(self._refresh, return_exceptions=True)
        await self.health.enter_graceful_shutdown()
        # Calls in flight get the CP bound to finish; open streams are then cut (a client resumes
        # a watch from its last revision, a subscription after its last id).
        await self.server.stop(self.node.settings.cp_timeout_s)

    async def _ready(self) -> bool:
        try:
            return await ready(self.node)
        except Exception:  # noqa: BLE001 - a failed readiness check is "not serving"
            log.warning("readiness check failed", exc_info=True)
            return False

    async def _set(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE):  # "": the server as a whole, what grpc_health_probe asks by default
            await self.health.set(name, status)

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_REFRESH_S)
            with contextlib.suppress(Exception):
                await self._set(await self._ready())
