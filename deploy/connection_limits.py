"""Connection limits for an API node: what uvicorn leaves unbounded.

uvicorn (0.54) accepts every connection it is offered and arms its only timer,
keep-alive, after a response has been sent; any byte that arrives cancels it.
So a connection that never sends anything, or sends its request head or its
body a byte at a time, was held forever: 20,000 of them from one client used
up the node's file descriptors, and every request failed while they were held.
Its `limit_concurrency` answers 503 to requests but still accepts (and keeps)
every connection, so it never stops the descriptor table from filling.

`LimitedHttpToolsProtocol` adds, per connection:
- a cap on open connections, checked as each is accepted: past it the node
  answers 503 and closes at once, so descriptors run out only if the cap is
  set above what the process may open (`fit_connections` keeps it below);
- a head deadline: a complete request line and headers within
  `header_timeout_s` of the connection opening or of the previous response,
  and at most `max_header_bytes` of them (httptools itself has no bound);
- a body deadline: the whole body within `body_timeout_s` after the head.
A deadline missed closes the connection (with 408 when part of a request came).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.problems import PROBLEMS

log = logging.getLogger("worldstate.connections")

# Descriptors a node needs beside its clients' sockets: etcd channels, the Redis pools' base,
# log and checkpoint files, torch. A request in flight may hold a Redis connection of its own
# (redis-py opens one per concurrent command), so each client connection is counted twice.
FD_RESERVE = 256
FDS_PER_CONNECTION = 2


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    header_timeout_s: float
    body_timeout_s: float
    max_header_bytes: int


def raise_fd_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as e:  # a container may forbid it; the cap then fits the soft limit
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, e)
    return soft


def fit_connections(wanted: int, fd_limit: int) -> int:
    """The connection cap that keeps the descriptor table from filling first."""
    fits = max(1, (fd_limit - FD_RESERVE) // FDS_PER_CONNECTION)
    if wanted > fits:
        log.warning("max_connections %d lowered to %d: the process may open %d files", wanted, fits, fd_limit)
    return min(wanted, fits)


def _raw_problem(slug: str, detail: str, retry_after_s: int | None = None) -> bytes:
    """A complete problem+json response that closes the connection, written below the app."""
    p = PROBLEMS[slug]
    body = json.dumps({"type": f"/problems/{slug}", "title": p.title, "status": p.status, "detail": detail}).encode()
    head = [f"HTTP/1.1 {p.status} {p.title}", "content-type: application/problem+json",
            f"content-length: {len(body)}", "connection: close"]
    if retry_after_s is not None:
        head.append(f"retry-after: {retry_after_s}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above; `limited()` binds the limits."""

    limits: ClassVar[ConnectionLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._in_head = self._in_body = False
        self._head_bytes = 0
        self._refused = False

    # -- connection --------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self._refused = True
            self.transport = transport
            transport.write(_raw_problem("too-many-connections",
                                         f"this node holds {self.limits.max_connections} connections", 1))
            transport.close()
            return
        super().connection_made(transport)
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.limits.max_header_bytes and not self.transport.is_closing():
            self._close(self._if_idle("header-too-large", f"request head over {self.limits.max_header_bytes} bytes"))

    # -- parser callbacks: where each deadline starts and ends ------------------------

    def on_message_begin(self) -> None:
        if not self._in_head:  # a pipelined request: its head starts now
            self._await_head()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head, self._in_body = False, True
        self._disarm()
        super().on_headers_complete()
        if not self.pipeline:  # it runs now (a pipelined one, once it starts: on_response_complete)
            self._arm(self.limits.body_timeout_s, self._body_timed_out)  # ended at once when there is no body

    def on_message_complete(self) -> None:
        self._in_body = False
        self._disarm()
        super().on_message_complete()
        if self.cycle is not None and self.cycle.response_complete:  # answered before its body was read
            self._await_idle()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self._in_body:
            self._await_idle()
        elif self._deadline is None:  # a pipelined request started while its body is still coming
            self._arm(self.limits.body_timeout_s, self._body_timed_out)

    # -- deadlines ---------------------------------------------------------------------

    def _await_idle(self) -> None:
        # Idle: the last request is read and answered, and uvicorn started no pipelined one
        # (it would be self.cycle, unanswered).
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self._await_head()

    def _await_head(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._arm(self.limits.header_timeout_s, self._head_timed_out)

    def _arm(self, delay_s: float, callback: Any) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(delay_s, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        # Nothing was asked (a silent or idle connection): nothing to answer.
        detail = f"request head not complete within {self.limits.header_timeout_s} s"
        self._close(self._if_idle("request-timeout", detail) if self._head_bytes else None)

    def _body_timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle, answer = self.cycle, None
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app reading the body gets http.disconnect; what it sends is dropped
            if not cycle.response_started:
                answer = _raw_problem("request-timeout", f"request body not complete within "
                                                         f"{self.limits.body_timeout_s} s")
        self._close(answer)

    def _if_idle(self, slug: str, detail: str) -> bytes | None:
        """A problem answer for a request whose head failed, unless a response to an earlier
        (pipelined) request is under way on the connection: one answer on the wire at a time."""
        return _raw_problem(slug, detail) if self.cycle is None or self.cycle.response_complete else None

    def _close(self, answer: bytes | None) -> None:
        self._disarm()
        if answer is not None:
            self.transport.write(answer)
        self.transport.close()


def limited(limits: ConnectionLimits) -> type[LimitedHttpToolsProtocol]:
    """The protocol class uvicorn should build each connection with (`http=`)."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"limits": limits})
