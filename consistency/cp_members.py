"""Serializable reads from any live etcd member: a channel per member, and a hedged call over them.

The store's round-robin channel picks a member per call. A paused member (or one
cut off the network) still holds its TCP connection and accepts the call, then never
answers; the channel notices only after its keepalive gives up, so until then a
call that lands there waits out the whole bound. A linearizable read must wait
(only a quorum can answer it), but a serializable read is any member's local read:
`hedge` asks one member and, if no answer comes within a short delay, asks every
member and takes the first answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from aetcd import rpc

__all__ = ["Members", "hedge", "hedge_delay"]

T = TypeVar("T")
Call = Callable[[float], Awaitable[T]]  # one attempt, given the seconds it may take


def hedge_delay(timeout_s: float) -> float:
    """How long the first attempt runs alone: well above a loaded member's answer time
    (milliseconds), well below the bound, so the other members still have most of it."""
    return min(0.25, timeout_s / 8)


class Members:
    """One gRPC channel and KV stub per etcd member (`addresses` as "ip:port").

    `wrap(stub)` gives the stub the store actually calls (one that adds the auth
    token, `CPStore.authed`); by default the plain stub.
    """

    def __init__(self, addresses: Sequence[str], options: Mapping[str, Any],
                 wrap: Callable[[Any], Any] = lambda stub: stub) -> None:
        # One address per channel: a load-balancing policy has nothing to choose between.
        opts = [(k, v) for k, v in options.items() if k != "grpc.lb_policy_name"]
        self.channels = [rpc.insecure_channel(a, options=opts) for a in addresses]
        for ch in self.channels:
            ch.get_state(try_to_connect=True)  # connect now, not on the first hedge
        self.kv = [wrap(rpc.KVStub(ch)) for ch in self.channels]

    async def close(self) -> None:
        await asyncio.gather(*(ch.close() for ch in self.channels), return_exceptions=True)


def _retrieve(task: asyncio.Future[Any]) -> None:
    # A losing attempt's error is nobody's business: mark it seen, so asyncio does not log it.
    if not task.cancelled():
        task.exception()


async def hedge(first: Call[T], others: Sequence[Call[T]], *, deadline: float, delay_s: float,
                unanswered: Callable[[BaseException], bool]) -> T:
    """The first successful answer of `first` or, once `delay_s` has passed or `first` has
    failed, of any of `others` (all started together); the rest are cancelled.

    An error for which `unanswered` is false (the request itself was refused: compacted,
    out of range) is every member's answer, so it is raised at once. When every attempt
    went unanswered, the last error is raised; no attempt outlives `deadline`.
    """

    def start(call: Call[T]) -> asyncio.Future[T]:
        task = asyncio.ensure_future(call(max(deadline - time.monotonic(), 0.01)))
        task.add_done_callback(_retrieve)
        return task

    pending = {start(first)}
    hedged = not others
    last: BaseException | None = None
    try:
        while pending or not hedged:
            if pending:
                done, pending = await asyncio.wait(pending, timeout=None if hedged else delay_s,
                                                   return_when=asyncio.FIRST_COMPLETED)
            else:
                done = set()
            for task in done:
                error = task.exception()
                if error is None:
                    return task.result()
                if not unanswered(error):
                    raise error
                last = error
            if not hedged:
                hedged = True
                pending |= {start(call) for call in others}
        assert last is not None
        raise last
    finally:
        for task in pending:
            task.cancel()
