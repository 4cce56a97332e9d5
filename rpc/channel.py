"""Client channels to a node's gRPC port that send an API key with every call.

    from rpc.channel import connect
    from rpc import worldstate_pb2 as pb

    with connect("127.0.0.1:50051", key) as (channel, stub):
        param = stub.GetParam(pb.GetParamRequest(world="lab", key="physics/constants"))

    async with aconnect("127.0.0.1:50051", key) as (channel, stub):   # grpc.aio
        async for ack in stub.Observe(batches()):
            ...

The key travels as metadata `authorization: Bearer <key>` over plaintext HTTP/2, as it does
over the node's plain HTTP port: put TLS in front of both beyond one machine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import grpc

from rpc import worldstate_pb2_grpc as pb_grpc

__all__ = ["CHANNEL_OPTIONS", "aconnect", "achannel", "channel", "connect", "metadata"]

# Model answers (a plan's path, a long prediction) can pass gRPC's default 4 MiB.
CHANNEL_OPTIONS: Sequence[tuple[str, Any]] = (("grpc.max_receive_message_length", 64 << 20),)


def metadata(key: str | None) -> tuple[tuple[str, str], ...]:
    """The call metadata that carries `key` (none without one)."""
    return (("authorization", f"Bearer {key}"),) if key else ()


def _details(details: Any, key: str | None) -> Any:
    extra = metadata(key)
    if not extra:
        return details
    return details._replace(metadata=[*(details.metadata or ()), *extra])


class _Key(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
           grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    def __init__(self, key: str | None) -> None:
        self.key = key

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(_details(details, self.key), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(_details(details, self.key), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(_details(details, self.key), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(_details(details, self.key), requests)


# grpc.aio files an interceptor under the first of the four kinds it is an instance of
# (grpc/aio/_channel.py: an if/elif chain), so one class of all four would key unary-unary
# calls only and streams would go out without the key: one class a kind.
class _AioKey:
    def __init__(self, key: str | None) -> None:
        self.key = key


class _AioUnaryUnary(_AioKey, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_details(details, self.key), request)


class _AioUnaryStream(_AioKey, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_details(details, self.key), request)


class _AioStreamUnary(_AioKey, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_details(details, self.key), requests)


class _AioStreamStream(_AioKey, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_details(details, self.key), requests)


def channel(target: str, key: str | None = None) -> grpc.Channel:
    """A blocking channel to `target` (host:port) that sends `key` with every call."""
    return grpc.intercept_channel(grpc.insecure_channel(target, options=CHANNEL_OPTIONS), _Key(key))


def achannel(target: str, key: str | None = None) -> grpc.aio.Channel:
    """A grpc.aio channel to `target` that sends `key` with every call (make it inside a running loop)."""
    kinds = (_AioUnaryUnary, _AioUnaryStream, _AioStreamUnary, _AioStreamStream)
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS, interceptors=[k(key) for k in kinds])


@contextmanager
def connect(target: str, key: str | None = None) -> Iterator[tuple[grpc.Channel, pb_grpc.WorldstateStub]]:
    """A blocking channel and its Worldstate stub, closed on exit."""
    ch = channel(target, key)
    try:
        yield ch, pb_grpc.WorldstateStub(ch)
    finally:
        ch.close()


@asynccontextmanager
async def aconnect(target: str, key: str | None = None) -> AsyncIterator[tuple[grpc.aio.Channel,
                                                                             pb_grpc.WorldstateStub]]:
    """A grpc.aio channel and its Worldstate stub, closed on exit."""
    ch = achannel(target, key)
    try:
        yield ch, pb_grpc.WorldstateStub(ch)
    finally:
        await ch.close()
