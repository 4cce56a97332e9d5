"""TCP proxies for every link the nemesis may cut, in one background thread.

Each link of the cluster (an API node dialing an etcd member or a Redis, an
etcd member dialing a peer) goes through a listener here that forwards to the
real port. Rules are kept per *direction* of bytes between two processes,
``(src, dst)``, so an asymmetric partition (Jepsen's majorities ring) is a
set of one-way rules; a connection carries bytes both ways and each way
obeys its own rule.

Modes, as a network would behave (TCP retransmits, so bytes are never lost
or corrupted, only held back):

- ``pass``: forward at once.
- ``blackhole``: hold every byte, and the connection's end, until the rule
  changes; nobody is told (like iptables DROP: no RST, no FIN). New
  connections are accepted and held too.
- ``reset``: RST existing connections at once and refuse new ones.
- ``delay``: each chunk arrives ``delay_ms`` (+/- ``jitter_ms``) later, in order.
- ``drop``: each chunk is "lost" with probability ``drop`` and delivered after
  a retransmission timeout (200 ms, doubling per repeated loss), in order.
  Dropping bytes for real would corrupt the stream, which TCP never does.

etcd members all dial one advertised peer URL per member, so the peer
proxies tell the dialer from the ``X-Server-From`` header etcd's rafthttp
puts on every request; the member id is mapped to a name by `alias` once
the cluster is up (looked up at every rule check, so connections opened
before the mapping was known obey rules too).
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

PASS, BLACKHOLE, RESET, DELAY, DROP = "pass", "blackhole", "reset", "delay", "drop"
MODES = (PASS, BLACKHOLE, RESET, DELAY, DROP)
RTO_S = 0.2           # first retransmission timeout of an emulated loss
MAX_LOSSES = 5        # consecutive losses of one chunk, so a chunk always arrives
SNIFF_BYTES = 16384   # most we read looking for the first request's headers
SNIFF_TIMEOUT_S = 5.0
CHUNK = 65536


@dataclass(frozen=True)
class Rule:
    mode: str = PASS
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    drop: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"link mode {self.mode!r} is not one of {MODES}")
        if not 0.0 <= self.drop < 1.0:
            raise ValueError("drop is a fraction in [0, 1)")


PASS_RULE = Rule()


@dataclass(eq=False)
class _Conn:
    target: str
    dialer: str | None                  # None: learnt from the first request (etcd peers)
    transports: list[asyncio.BaseTransport] = field(default_factory=list)
    closed: bool = False

    def abort(self) -> None:
        """RST both sides: SO_LINGER 0 makes close() send a reset instead of a FIN."""
        if self.closed:
            return
        self.closed = True
        for t in self.transports:
            sock = t.get_extra_info("socket")
            try:
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            t.abort()


class Net:
    """Every proxied link of one test and the rules they obey."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)
        self._rules: dict[tuple[str, str], Rule] = {}
        self._aliases: dict[str, str] = {}
        self._conns: set[_Conn] = set()
        self._servers: list[asyncio.AbstractServer] = []
        self.links: list[tuple[str | None, str, int, int]] = []  # dialer, target, listen port, upstream
        self._loop = asyncio.new_event_loop()
        self._wake = asyncio.Event()
        self._thread = threading.Thread(target=self._loop.run_forever, name="jepsen-proxy", daemon=True)
        self._thread.start()

    # -- control (any thread) ----------------------------------------------------

    def listen(self, dialer: str | None, target: str, upstream_port: int) -> int:
        """A new listener on a free loopback port forwarding to `upstream_port`; returns its port.

        `dialer` None means "identify from the X-Server-From header" (etcd peers).
        """
        fut = asyncio.run_coroutine_threadsafe(self._listen(dialer, target, upstream_port), self._loop)
        port = fut.result(10)
        self.links.append((dialer, target, port, upstream_port))
        return port

    def alias(self, raw: str, name: str) -> None:
        """Name the dialer whose X-Server-From header says `raw` (an etcd member id in hex)."""
        self._aliases[raw.lower()] = name

    def rule(self, src: str | None, dst: str | None) -> Rule:
        if src is None or dst is None:
            return PASS_RULE  # an unidentified dialer (e.g. etcd's /version probe) is never cut
        return self._rules.get((src, dst), PASS_RULE)

    def set(self, pairs: Iterable[tuple[str, str]], rule: Rule) -> None:
        """Apply `rule` to bytes flowing src -> dst for each pair."""
        for pair in pairs:
            if rule == PASS_RULE:
                self._rules.pop(pair, None)
            else:
                self._rules[pair] = rule
        self._loop.call_soon_threadsafe(self._changed)

    def heal(self) -> None:
        self._rules.clear()
        self._loop.call_soon_threadsafe(self._changed)

    def active(self) -> dict[str, str]:
        """The rules in force, for logs: "src->dst" -> mode."""
        return {f"{s}->{d}": r.mode for (s, d), r in sorted(self._rules.items())}

    def describe(self) -> dict[str, object] | None:
        """Nothing for results.json: every link is a loopback port, listed in the processes' logs."""
        return None

    def close(self) -> None:
        if not self._loop.is_running():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    # -- the loop's side -----------------------------------------------------------

    def _dialer(self, conn: _Conn) -> str | None:
        return self._aliases.get(conn.dialer, conn.dialer) if conn.dialer is not None else None

    def _changed(self) -> None:
        """Wake every held writer, and reset connections a new reset rule covers."""
        self._wake.set()
        self._wake = asyncio.Event()
        for conn in list(self._conns):
            d = self._dialer(conn)
            if RESET in (self.rule(d, conn.target).mode, self.rule(conn.target, d).mode):
                conn.abort()

    async def _listen(self, dialer: str | None, target: str, upstream: int) -> int:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._serve(dialer, target, upstream, reader, writer)

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        self._servers.append(server)
        return server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        for s in self._servers:
            s.close()
        for c in list(self._conns):
            c.abort()
        self._wake.set()

    async def _serve(self, dialer: str | None, target: str, upstream: int,
                     creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        conn = _Conn(target, dialer, [cwriter.transport])
        self._conns.add(conn)
        try:
            _nodelay(cwriter)
            first = b""
            if dialer is None:
                first = await _sniff(creader)
                conn.dialer = _server_from(first)
            d = self._dialer(conn)
            if RESET in (self.rule(d, target).mode, self.rule(target, d).mode):
                return conn.abort()  # refused, as a reset link refuses a SYN
            try:
                ureader, uwriter = await asyncio.open_connection("127.0.0.1", upstream)
            except OSError:
                return conn.abort()  # the process is down: the dialer sees a refusal
            conn.transports.append(uwriter.transport)
            _nodelay(uwriter)
            up = asyncio.ensure_future(self._pump(conn, True, creader, uwriter, first))
            down = asyncio.ensure_future(self._pump(conn, False, ureader, cwriter, b""))
            await asyncio.gather(up, down, return_exceptions=True)
        finally:
            self._conns.discard(conn)
            if not conn.closed:
                conn.closed = True
                for t in conn.transports:
                    t.close()

    async def _pump(self, conn: _Conn, upward: bool, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter, first: bytes) -> None:
        """Copy one direction; the reader stamps each chunk with when it may arrive."""
        queue: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue(maxsize=64)
        loop = asyncio.get_running_loop()

        def direction() -> tuple[str | None, str | None]:
            d = self._dialer(conn)
            return (d, conn.target) if upward else (conn.target, d)

        async def read_side() -> None:
            last = 0.0
            data = first
            while True:
                if not data:
                    try:
                        data = await reader.read(CHUNK)
                    except (ConnectionError, OSError):
                        await queue.put((last, None))  # a reset travels like any other packet
                        return
                at = max(last, loop.time() + self._lateness(self.rule(*direction())))
                last = at
                await queue.put((at, data))
                if not data:
                    return  # EOF queued behind the data
                data = b""

        async def write_side() -> None:
            while True:
                at, data = await queue.get()
                while True:
                    rule = self.rule(*direction())
                    if rule.mode == RESET or conn.closed:
                        return conn.abort()
                    if rule.mode != BLACKHOLE:
                        break
                    await self._wake.wait()
                wait = at - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if data is None:
                    return conn.abort()
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                try:
                    await writer.drain()
                except (ConnectionError, OSError):
                    return conn.abort()

        reading = asyncio.ensure_future(read_side())
        try:
            await write_side()
        finally:
            reading.cancel()

    def _lateness(self, rule: Rule) -> float:
        """Seconds this chunk spends in flight beyond a healthy link."""
        if rule.mode == DELAY:
            return max(0.0, (rule.delay_ms + self._rng.uniform(-rule.jitter_ms, rule.jitter_ms)) / 1000)
        if rule.mode == DROP:
            late, rto = 0.0, RTO_S
            for _ in range(MAX_LOSSES):
                if self._rng.random() >= rule.drop:
                    break
                late, rto = late + rto, rto * 2
            return late
        return 0.0


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass


async def _sniff(reader: asyncio.StreamReader) -> bytes:
    """Read until the first request's headers are complete (or a bound is hit)."""
    buf = b""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SNIFF_TIMEOUT_S
    while b"\r\n\r\n" not in buf and len(buf) < SNIFF_BYTES:
        try:
            chunk = await asyncio.wait_for(reader.read(CHUNK), max(0.01, deadline - loop.time()))
        except (asyncio.TimeoutError, ConnectionError, OSError):
            break
        if not chunk:
            break
        buf += chunk
    return buf


def _server_from(head: bytes) -> str | None:
    """The X-Server-From header of an HTTP request head (etcd's member id in hex), if any."""
    for line in head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"x-server-from":
            return value.strip().decode("ascii", "replace").lower()
    return None
