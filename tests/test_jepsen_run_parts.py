"""jepsen_like's parts without a cluster: the link proxy's modes, partition shapes, the causal checker."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from jepsen_like.checkers import causal
from jepsen_like.history import INVOKE, OK, Event
from jepsen_like.nemesis import Partition
from jepsen_like.proxy import BLACKHOLE, DELAY, DROP, PASS_RULE, RESET, Net, Rule, _server_from


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except ConnectionResetError:
            pass  # the RESET rule's whole point: not a failure of the echo


@pytest.fixture
def echo() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def net() -> Iterator[Net]:
    n = Net(seed=1)
    yield n
    n.close()


def _roundtrip(port: int, payload: bytes = b"ping", timeout: float = 5.0) -> tuple[bytes, float]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        t = time.monotonic()
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got, time.monotonic() - t


def test_pass_and_delay(net: Net, echo: int) -> None:
    port = net.listen("a", "b", echo)
    assert _roundtrip(port)[0] == b"ping"
    net.set([("a", "b")], Rule(DELAY, delay_ms=150, jitter_ms=20))
    got, took = _roundtrip(port)
    assert got == b"ping" and 0.12 <= took < 2.0  # only the a -> b direction is delayed


def test_blackhole_holds_bytes_until_healed(net: Net, echo: int) -> None:
    port = net.listen("a", "b", echo)
    net.set([("b", "a")], Rule(BLACKHOLE))  # answers are held, requests pass
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
        s.sendall(b"held")
        with pytest.raises(socket.timeout):
            s.recv(16)  # no reset, no answer: a blackhole
        net.set([("b", "a")], PASS_RULE)
        s.settimeout(5)
        assert s.recv(16) == b"held"  # delivered once the link heals, nothing lost


def _reset_or_timeout(act: Callable[[], bytes]) -> str:
    """What a peer saw of a link: "reset" (RST, refused, a pipe broken by one), "closed" (an orderly
    end: EOF), "timeout" (nothing at all, as through a blackhole) or "answered"."""
    try:
        return "answered" if act() else "closed"
    except ConnectionError:  # reset, refused, aborted, broken pipe; never socket.timeout
        return "reset"
    except socket.timeout:
        return "timeout"


def test_reset_refuses_and_cuts(net: Net, echo: int) -> None:
    port = net.listen("a", "b", echo)
    # The reset must come at once; 5 s of silence is a blackhole, not a slow machine.
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"x")
    assert s.recv(1) == b"x"
    net.set([("a", "b")], Rule(RESET))

    def echo_once() -> bytes:
        s.sendall(b"y")
        return s.recv(1)

    assert _reset_or_timeout(echo_once) == "reset"  # the existing connection is reset
    s.close()

    def connect_and_echo() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.sendall(b"ping")
            return c.recv(4)

    assert _reset_or_timeout(connect_and_echo) == "reset"  # a new connection is refused
    net.heal()
    assert _roundtrip(port)[0] == b"ping"


def test_drop_loses_nothing_and_keeps_order(net: Net, echo: int) -> None:
    port = net.listen("a", "b", echo)
    net.set([("a", "b")], Rule(DROP, drop=0.2))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        sent = b"".join(b"%04d," % i for i in range(20))
        for i in range(20):
            s.sendall(b"%04d," % i)
            time.sleep(0.005)
        got = b""
        while len(got) < len(sent):
            got += s.recv(65536)
    assert got == sent


def test_etcd_peer_dialer_from_header(net: Net, echo: int) -> None:
    assert _server_from(b"GET /raft/stream/msgapp/abc HTTP/1.1\r\nHost: x\r\nX-Server-From: ABC12\r\n\r\n") == "abc12"
    assert _server_from(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n") is None
    port = net.listen(None, "etcd2", echo)
    net.alias("abc12", "etcd1")
    net.set([("etcd1", "etcd2")], Rule(BLACKHOLE))
    req = b"GET /raft HTTP/1.1\r\nX-Server-From: abc12\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
        s.sendall(req)
        with pytest.raises(socket.timeout):
            s.recv(16)  # etcd1 -> etcd2 is cut: held
    other = b"GET /raft HTTP/1.1\r\nX-Server-From: def34\r\n\r\n"
    assert _roundtrip(port, other)[0] == other  # another member's connection passes


class _FakeCluster:
    hosts = ["n1", "n2", "n3", "n4", "n5"]

    def leader_host(self) -> str:
        return "n4"


@pytest.mark.parametrize("n", [3, 5])
def test_partition_shapes(n: int) -> None:
    import random

    c = _FakeCluster()
    c.hosts = _FakeCluster.hosts[:n]
    p = Partition(c)  # type: ignore[arg-type]
    rng = random.Random(0)
    one = p.grudge("one", rng)
    alone = [h for h, s in one.items() if len(s) == n - 1]
    assert len(alone) == 1 and all(alone[0] in s for h, s in one.items() if h != alone[0])
    if n == 5:
        assert p.grudge("leader", rng)["n4"] == {"n1", "n2", "n3", "n5"}
    ring = p.grudge("majorities-ring", rng)
    views = [frozenset(set(c.hosts) - s) for s in ring.values()]
    assert all(len(v) > n // 2 for v in views) and len(set(views)) == n  # a majority each, all different
    bridge = p.grudge("bridge", rng)
    b = [h for h, s in bridge.items() if not s]
    assert len(b) == 1 and all(b[0] not in s for s in bridge.values())
    halves = p.grudge("halves", rng)
    assert all(h not in s for h, s in halves.items())


def _op(p: int, f: str, key: str, value: object, out: object, call: int, ret: int, **extra: object) -> list[Event]:
    return [Event(INVOKE, p, f, key, value, call, extra=extra), Event(OK, p, f, key, out, ret, extra=extra)]


def _field(eid: str, hlc: str, node: str = "api-r1") -> dict:
    return {"fields": {"x": {"value": 0, "hlc": hlc, "node": node, "event_id": eid}}, "counters": {}}


def test_causal_checker() -> None:
    follow = {"id": "b", "entity": "e", "fields": {"x": 2}, "counters": {}, "follows": {"x": ["a", "0002-0000"]},
              "read_on": "r1"}
    base = (_op(1, "read-entity", "e", None, _field("a", "0002-0000", "api-r2"), 0, 10, region="r1")
            + _op(1, "post", "e", follow, {"status": "accepted", "hlc": "0003-0000"}, 20, 30, region="r1",
                  node="api-r1"))
    good = base + _op(1, "read-entity", "e", None, _field("b", "0003-0000"), 40, 50, region="r1")
    assert causal.check(good, {"r1": {"e": _field("b", "0003-0000")}}).valid
    # The write made after reading "a" lost to it: what LWW by a skewed wall clock does.
    lost = base + _op(1, "read-entity", "e", None, _field("a", "0002-0000", "api-r2"), 40, 50, region="r1")
    assert causal.check(lost).kinds() == {"lost-to-predecessor"}
    final = causal.check(base, {"r1": {"e": _field("a", "0002-0000", "api-r2")}})
    assert final.kinds() == {"lost-to-predecessor"}
    # A newer write by someone else may win; an older unrelated one may not.
    other = base + _op(2, "read-entity", "e", None, _field("c", "0004-0000", "api-r3"), 40, 50, region="r1")
    assert causal.check(other).valid
    back = base + _op(2, "read-entity", "e", None, _field("z", "0001-0000", "api-r3"), 40, 50, region="r1")
    assert causal.check(back).kinds() == {"regressed"}
    # The same event replayed and accepted on another node promises no order there.
    replay = [e if e.f != "post" else Event(e.type, e.process, e.f, e.key, e.value, e.time,
                                            extra={**e.extra, "region": "r2", "node": "api-r2"}) for e in base]
    replay += _op(1, "read-entity", "e", None, _field("a", "0002-0000", "api-r2"), 40, 50, region="r2")
    assert "lost-to-predecessor" not in causal.check(replay).kinds()


def _netns_ready() -> str | None:
    import os
    import shutil

    if os.geteuid() != 0:
        return "needs root"
    return None if shutil.which("ip") and shutil.which("tc") else "needs ip and tc"


@pytest.mark.skipif(_netns_ready() is not None, reason=str(_netns_ready()))
def test_netns_links() -> None:
    """Two hosts as namespaces on a bridge: connectivity; netem delay one way and heal when the kernel has
    netem; a DROP partition and heal when iptables is installed."""
    import shutil
    import subprocess
    import sys

    from jepsen_like.netns import NetnsNet, netem_available

    has_netem = netem_available()
    has_iptables = shutil.which("iptables") is not None
    net = NetnsNet(["n1", "n2"], tag=f"t{time.monotonic_ns() % 10000:04d}", subnet=213)
    try:
        net.setup(iptables=has_iptables)
        server = subprocess.Popen(net.wrap("etcd2", [sys.executable, "-c", (
            "import socket\ns=socket.create_server(('0.0.0.0', 7001))\n"
            "while True:\n c,_=s.accept(); c.sendall(c.recv(16)); c.close()")]))
        probe = ("import socket,sys,time\nt=time.monotonic()\n"
                 f"c=socket.create_connection(('{net.ip('n2')}', 7001), timeout=2)\n"
                 "c.sendall(b'x'); c.recv(16); print(time.monotonic()-t)")

        def rtt() -> float:
            out = subprocess.run(net.wrap("api-r1", [sys.executable, "-c", probe]), capture_output=True,
                                 text=True, timeout=15)
            return float(out.stdout) if out.returncode == 0 else float("inf")

        try:
            assert any(rtt() < 0.5 for _ in range(20) if not time.sleep(0.1))  # the server is up
            if has_netem:
                net.set([("api-r1", "etcd2")], Rule(DELAY, delay_ms=200, jitter_ms=0))
                assert net.active() == {"n1->n2": "delay"}
                assert 0.4 <= rtt() < 2.0  # 200 ms on each of the handshake's and the request's n1 -> n2 legs
                net.heal()
                assert rtt() < 0.3
            if has_iptables:
                net.set([("etcd2", "api-r1")], Rule(BLACKHOLE))  # n1 hears nothing from n2
                assert rtt() == float("inf")
                net.heal()
                assert rtt() < 0.3
        finally:
            server.kill()
            server.wait()
    finally:
        net.close()
    assert net.filter_rules("n2") == []


def test_netns_rule_translation() -> None:
    """What netns mode would run for each rule (pure: no root needed)."""
    from jepsen_like.netns import NetnsNet

    net = NetnsNet(["n1", "n2", "n3"], tag="x", subnet=9)
    net._rules = {("n1", "n2"): Rule(BLACKHOLE), ("n3", "n2"): Rule(RESET), ("n1", "n3"): Rule(DELAY, 50, 10)}
    assert net.filter_rules("n2") == [["-s", "10.9.0.11", "-j", "DROP"],
                                      ["-s", "10.9.0.13", "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"]]
    cmds = net.qdisc_commands("n1")
    assert ["qdisc", "add", "dev", "eth0", "parent", "1:2", "handle", "20:", "netem", "delay", "50ms", "10ms"] in cmds
    assert cmds[-1][-3:] == ["10.9.0.13/32", "flowid", "1:2"]
    assert net.qdisc_commands("n2") == [["qdisc", "del", "dev", "eth0", "root"]]
    assert net.wrap("redis-r3", ["redis-server"]) == ["ip", "netns", "exec", "wsx-n3", "redis-server"]


def test_causal_checker_node_order() -> None:
    def post(p: int, eid: str, hlc: str, call: int, ret: int, node: str = "api-r1") -> list[Event]:
        ev = {"id": eid, "entity": eid, "fields": {"x": 1}, "counters": {}}
        return _op(p, "post", eid, ev, {"status": "accepted", "hlc": hlc}, call, ret, region=node[-2:], node=node)

    ordered = post(1, "a", "0002-0000", 0, 10) + post(2, "b", "0003-0000", 20, 30)
    assert causal.check(ordered).valid
    # Concurrent posts may be stamped either way; so may posts on different nodes.
    concurrent = post(1, "a", "0003-0000", 0, 30) + post(2, "b", "0002-0000", 10, 40)
    assert causal.check(concurrent).valid
    elsewhere = post(1, "a", "0003-0000", 0, 10) + post(2, "b", "0002-0000", 20, 30, node="api-r2")
    assert causal.check(elsewhere).valid
    # Stamped below a post the same node acknowledged before it: a fresh HLC after a restart.
    back = post(1, "a", "0003-0000", 0, 10) + post(1, "b", "0004-0000", 12, 14) + post(2, "c", "0003-0000", 20, 30)
    result = causal.check(back)
    assert result.kinds() == {"stamp-went-back"}
    assert len(result.violations) == 1  # c, judged against b: the highest stamp acknowledged before it
    assert "c @ 0003-0000" in result.violations[0].message and "b @ 0004-0000" in result.violations[0].message


def test_every_client_completes_waits_for_an_operation_invoked_after_it() -> None:
    """The runner's wait at both ends of the faults: each looping client must invoke *and* complete an
    operation after the wait began (a new process id after an info counts as the same client)."""
    import asyncio

    from jepsen_like.recorder import Recorder
    from jepsen_like.runner import _every_client_completes

    async def scenario() -> tuple[bool, bool]:
        rec = Recorder(None)
        rec.invoke(0, "read", "k")  # slot 0's operation began before the wait: it does not count
        waiting = asyncio.ensure_future(_every_client_completes(rec, {0, 1}, 3, timeout_s=60))
        await asyncio.sleep(0.1)
        rec.record(OK, 0, "read", "k")
        rec.invoke(1, "read", "k")
        rec.record("info", 1, "read", "k")
        rec.invoke(2, "watch", "k")  # slot 2 is not waited for (a watcher)
        await asyncio.sleep(0.2)
        early = waiting.done()
        rec.invoke(3, "write", "k")  # slot 0 again (0 + stride), as after an info
        rec.record(OK, 3, "write", "k")
        done = await asyncio.wait_for(waiting, 10)
        late = await _every_client_completes(rec, {0}, 3, timeout_s=0.2)  # nobody moves: bounded
        return early, done and not late

    assert asyncio.run(scenario()) == (False, True)
