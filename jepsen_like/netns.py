"""Optional root mode: hosts as network namespaces, faults as iptables rules and netem qdiscs.

The proxy mode (proxy.py) needs no privileges; this one cuts real packets,
as Jepsen does on its nodes. Each host ``nK`` is a namespace joined to one
bridge in the root namespace, where the harness's clients live::

    root ns: bridge wsb<tag> 10.<net>.0.1/24
    nK:      eth0 10.<net>.0.<10+K>/24, lo; iptables chain WSJ hooked first in INPUT

- ``blackhole`` src -> dst: in dst's namespace ``-A WSJ -s <src ip> -j DROP``
  (Jepsen's grudge: a host drops what comes from the hosts it holds one
  against; TCP retransmits, nobody is told).
- ``reset``: ``-A WSJ -s <src ip> -p tcp -j REJECT --reject-with tcp-reset``.
- ``delay`` / ``drop``: an htb class with netem per destination on src's eth0
  (``delay D J`` / ``loss P%``), selected by a u32 filter on the destination.

Rules are per host pair (processes on one host share its namespace, so an
API node's link to its home Redis cannot be cut here). Every change
rewrites the affected namespace's chain and qdisc from the rules in force,
so healing is the same code path as cutting.

It needs root, ``ip``, ``iptables`` and ``tc``, and a launcher that places
each process in its host: ``Topology`` would need ``host(name) -> address``
(what a process binds and advertises, instead of 127.0.0.1) and
``wrap(name, argv) -> argv`` (here ``ip netns exec ws<tag>-nK ...``). Until
the launcher has them, `Cluster` refuses ``net="netns"`` with that message.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterable

from .cluster import host_of
from .proxy import BLACKHOLE, DELAY, DROP, PASS_RULE, RESET, Rule


def available() -> str | None:
    """None when this mode can run here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    missing = [t for t in ("ip", "iptables", "tc") if shutil.which(t) is None]
    return f"missing tools: {', '.join(missing)}" if missing else None


def netem_available() -> bool:
    """Whether the kernel has sch_netem (minimal VM kernels often lack it): probed in a scratch namespace."""
    ns = f"wsprobe{os.getpid()}"
    if _run("ip", "netns", "add", ns, check=False).returncode != 0:
        return False
    try:
        _run("ip", "-n", ns, "link", "set", "lo", "up", check=False)
        return _run("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
                    check=False).returncode == 0
    finally:
        _run("ip", "netns", "del", ns, check=False)


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=10)


class NetnsNet:
    """The same control surface as proxy.Net (set, heal, active, close), on namespaces."""

    def __init__(self, hosts: list[str], tag: str | None = None, subnet: int = 77) -> None:
        self.hosts = list(hosts)
        self.tag = (tag or f"{os.getpid() % 100000:05d}")[:6]
        self.subnet = subnet
        self.bridge = f"wsb{self.tag}"
        self._rules: dict[tuple[str, str], Rule] = {}   # (src host, dst host) -> rule
        self._lock = threading.Lock()
        self._up = False

    # -- addressing ------------------------------------------------------------------

    def ns(self, host: str) -> str:
        return f"ws{self.tag}-{host}"

    def ip(self, host: str) -> str:
        return f"10.{self.subnet}.0.{10 + int(host[1:])}"

    @property
    def gateway(self) -> str:
        return f"10.{self.subnet}.0.1"

    def wrap(self, process: str, argv: list[str]) -> list[str]:
        """The command line that runs `process` inside its host's namespace."""
        return ["ip", "netns", "exec", self.ns(host_of(process)), *argv]

    def host(self, process: str) -> str:
        return self.ip(host_of(process))

    # -- lifecycle -------------------------------------------------------------------

    def setup(self, iptables: bool = True) -> None:
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        self._up = True
        _run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        for h in self.hosts:
            ns, veth = self.ns(h), f"wsv{self.tag}{h[1:]}"
            _run("ip", "netns", "add", ns)
            _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _run("ip", "link", "set", veth, "master", self.bridge, "up")
            _run("ip", "-n", ns, "addr", "add", f"{self.ip(h)}/24", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            if iptables:
                self._ipt(h, "-N", "WSJ")
                self._ipt(h, "-I", "INPUT", "-j", "WSJ")

    def close(self) -> None:
        if not self._up:
            return
        for h in self.hosts:
            _run("ip", "netns", "del", self.ns(h), check=False)  # takes its veth with it
        _run("ip", "link", "del", self.bridge, check=False)
        self._up = False

    # -- rules -----------------------------------------------------------------------

    def alias(self, raw: str, name: str) -> None:
        """Not needed here: packets are told apart by their source address."""

    def set(self, pairs: Iterable[tuple[str, str]], rule: Rule) -> None:
        touched: set[tuple[str, str]] = set()
        with self._lock:
            for p, q in pairs:
                hp, hq = host_of(p), host_of(q)
                if hp == hq:
                    continue  # one namespace: nothing between them to cut
                touched.add((hp, hq))
                if rule == PASS_RULE:
                    self._rules.pop((hp, hq), None)
                else:
                    self._rules[(hp, hq)] = rule
            for h in {d for _, d in touched}:
                self._write_filter(h)
            for h in {s for s, _ in touched}:
                self._write_qdisc(h)

    def heal(self) -> None:
        with self._lock:
            self._rules.clear()
            for h in self.hosts:
                self._write_filter(h)
                self._write_qdisc(h)

    def active(self) -> dict[str, str]:
        return {f"{s}->{d}": r.mode for (s, d), r in sorted(self._rules.items())}

    def filter_rules(self, dst: str) -> list[list[str]]:
        """The iptables rules (after ``-A WSJ``) that `dst`'s namespace needs now."""
        out = []
        for (s, d), r in sorted(self._rules.items()):
            if d != dst:
                continue
            if r.mode == BLACKHOLE:
                out.append(["-s", self.ip(s), "-j", "DROP"])
            elif r.mode == RESET:
                out.append(["-s", self.ip(s), "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"])
        return out

    def qdisc_commands(self, src: str) -> list[list[str]]:
        """tc commands (after ``tc``) that give `src`'s eth0 one netem band per slowed destination."""
        slow = [(d, r) for (s, d), r in sorted(self._rules.items()) if s == src and r.mode in (DELAY, DROP)]
        cmds = [["qdisc", "del", "dev", "eth0", "root"]]
        if not slow:
            return cmds
        # htb, not prio: one class per slowed destination (class 1:1 takes the rest), netem under each.
        cmds.append(["qdisc", "add", "dev", "eth0", "root", "handle", "1:", "htb", "default", "1"])
        cmds.append(["class", "add", "dev", "eth0", "parent", "1:", "classid", "1:1", "htb", "rate", "10gbit"])
        for i, (d, r) in enumerate(slow, start=2):
            netem = (["delay", f"{r.delay_ms:g}ms", f"{r.jitter_ms:g}ms"] if r.mode == DELAY
                     else ["loss", f"{100 * r.drop:g}%"])
            cmds.append(["class", "add", "dev", "eth0", "parent", "1:", "classid", f"1:{i}", "htb", "rate", "10gbit"])
            cmds.append(["qdisc", "add", "dev", "eth0", "parent", f"1:{i}", "handle", f"{i}0:", "netem", *netem])
            cmds.append(["filter", "add", "dev", "eth0", "parent", "1:", "protocol", "ip", "prio", "1", "u32",
                         "match", "ip", "dst", f"{self.ip(d)}/32", "flowid", f"1:{i}"])
        return cmds

    def _ipt(self, host: str, *args: str) -> None:
        _run("ip", "netns", "exec", self.ns(host), "iptables", "-w", *args)

    def _write_filter(self, host: str) -> None:
        if shutil.which("iptables") is None:
            if self.filter_rules(host):
                raise RuntimeError("iptables is not installed: partitions cannot be applied in netns mode")
            return
        self._ipt(host, "-F", "WSJ")
        for rule in self.filter_rules(host):
            self._ipt(host, "-A", "WSJ", *rule)

    def _write_qdisc(self, host: str) -> None:
        for i, cmd in enumerate(self.qdisc_commands(host)):
            _run("ip", "netns", "exec", self.ns(host), "tc", *cmd, check=i > 0)  # no qdisc to delete is fine
