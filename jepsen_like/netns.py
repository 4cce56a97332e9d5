"""Optional root mode: hosts as network namespaces, partitions as iptables rules.

The proxy mode (proxy.py) needs no privileges; this one cuts real packets,
as Jepsen does on its nodes. Each host ``nK`` is a namespace joined to one
bridge in the root namespace, where the harness's clients live::

    root ns: bridge wsb<tag> 10.<net>.0.1/24   (no route to anywhere else is added)
    nK:      eth0 10.<net>.0.<10+K>/24, lo; no default route; iptables chain WSJ hooked first in INPUT

The launcher places each process with ``Topology.host`` (the host's address,
bound and advertised instead of 127.0.0.1) and ``Topology.wrap``
(``ip netns exec ws<tag>-nK ...``, which execs, so pids stay the real ones).

- ``blackhole`` src -> dst: in dst's namespace ``-A WSJ -s <src ip> -j DROP``
  (Jepsen's grudge: a host drops what comes from the hosts it holds one
  against; TCP retransmits, nobody is told). One-way at the packet level, so
  ``majorities-ring`` works as in Jepsen.
- ``reset``: ``-A WSJ -s <src ip> -p tcp -j REJECT --reject-with tcp-reset``.
- ``delay`` / ``drop``: an htb class with netem per destination on src's eth0
  (``delay D J`` / ``loss P%``), selected by a u32 filter on the destination.
  Only where the kernel has ``sch_netem``; otherwise the ``net`` family is
  refused before anything is set up (`refusal`).

Rules are per host pair (processes on one host share its namespace, so an
API node's link to its home Redis cannot be cut here). Every change rewrites
the affected namespace's chain in one ``iptables-restore`` (atomic per host)
from the rules in force, so healing is the same code path as cutting.

Cleanup: `close` deletes the namespaces (their veths go with them) and the
bridge; it runs from Cluster.stop, on a failed setup, and at interpreter
exit. Names carry the owner's pid, so `sweep_stale` removes what a harness
killed with -9 left behind, and nothing else.
"""

from __future__ import annotations

import atexit
import fcntl
import ipaddress
import itertools
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterable
from pathlib import Path

from .hosts import host_of
from .proxy import BLACKHOLE, DELAY, DROP, PASS_RULE, RESET, Rule

_SEQ = itertools.count()
_LIVE: set["NetnsNet"] = set()
_OURS_NS = re.compile(r"^ws([0-9a-f]+)-(\d+)-n\d+$")      # ws<pid hex>-<seq>-nK
_PROBE_NS = re.compile(r"^wsprobe(\d+)$")                  # wsprobe<pid>: available(), netem_available()
_OURS_BRIDGE = re.compile(r"^wsb([0-9a-f]+)-(\d+)$")     # wsb<pid hex>-<seq>
SUBNETS = range(77, 127)                                  # 10.77.0.0/24 .. 10.126.0.0/24, first one free
_LOCK_FILE = Path("/run/worldstate-netns.lock")


class Unavailable(RuntimeError):
    """netns mode cannot run here, or cannot run this fault: nothing was set up."""


def _run(*argv: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=15, input=stdin)
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"{' '.join(argv)} failed ({e.returncode}): {e.stderr.strip()}") from e


def available() -> str | None:
    """None when this mode can run here, else why not (probes iptables in a scratch namespace)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    missing = [t for t in ("ip", "iptables", "iptables-restore") if shutil.which(t) is None]
    if missing:
        return f"missing tools: {', '.join(missing)} (Debian: apt-get install -y iptables)"
    ns = f"wsprobe{os.getpid()}"
    if (r := _run("ip", "netns", "add", ns, check=False)).returncode != 0:
        return f"ip netns add failed: {r.stderr.strip()}"
    try:
        r = _run("ip", "netns", "exec", ns, "iptables", "-w", "-N", "WSJ", check=False)
        return None if r.returncode == 0 else f"iptables does not work in a namespace: {r.stderr.strip()}"
    finally:
        _run("ip", "netns", "del", ns, check=False)


def netem_available() -> bool:
    """Whether the kernel has sch_netem (minimal VM kernels often lack it): probed in a scratch namespace."""
    if shutil.which("tc") is None:
        return False
    ns = f"wsprobe{os.getpid()}"
    if _run("ip", "netns", "add", ns, check=False).returncode != 0:
        return False
    try:
        _run("ip", "-n", ns, "link", "set", "lo", "up", check=False)
        return _run("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
                    check=False).returncode == 0
    finally:
        _run("ip", "netns", "del", ns, check=False)


def refusal(nemeses: Iterable[str]) -> str | None:
    """Why a netns run with these nemesis families cannot start, or None. Checked before any setup."""
    why = available()
    if why:
        return f"netns mode unavailable: {why}"
    if "net" in nemeses and not netem_available():
        return ("netns mode cannot run the 'net' nemesis: delay and loss need the kernel's sch_netem qdisc "
                "(and tc), which this kernel lacks; drop 'net' from --nemesis or use --net proxy")
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_inside(ns: str) -> None:
    """kill -9 whatever still runs in namespace `ns` (only the harness places processes there).

    Deleting a namespace's name does not stop what runs in it, and a process left
    there loses its peers: an API node told to stop (PR_SET_PDEATHSIG) whose clients'
    FINs can no longer arrive waits for those connections forever.
    """
    for pid in _run("ip", "netns", "pids", ns, check=False).stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def sweep_stale() -> list[str]:
    """Delete namespaces (and what runs in them) and bridges of this harness whose owner is gone (killed -9)."""
    removed = []
    for line in _run("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m, probe = _OURS_NS.match(name), _PROBE_NS.match(name)
        if probe and not _pid_alive(int(probe.group(1))):
            _run("ip", "netns", "del", name, check=False)
            removed.append(name)
        elif m and not _pid_alive(int(m.group(1), 16)):
            _kill_inside(name)
            _run("ip", "netns", "del", name, check=False)
            removed.append(name)
    for line in _run("ip", "-o", "link", "show", "type", "bridge", check=False).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if line.count(":") >= 2 else ""
        m = _OURS_BRIDGE.match(name)
        if m and not _pid_alive(int(m.group(1), 16)):
            _run("ip", "link", "del", name, check=False)
            removed.append(name)
    return removed


def _used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the root namespace has an address or a route in (default route aside)."""
    nets = []
    for line in _run("ip", "-4", "route", "show", "table", "all", check=False).stdout.splitlines():
        dst = line.split()[0] if line.split() else "default"
        if dst in ("default", "broadcast", "local", "unreachable", "blackhole", "prohibit", "multicast"):
            dst = line.split()[1] if dst != "default" and len(line.split()) > 1 else ""
        try:
            net = ipaddress.ip_network(dst, strict=False)
        except ValueError:
            continue
        if isinstance(net, ipaddress.IPv4Network) and net.prefixlen > 0:
            nets.append(net)
    return nets


class NetnsNet:
    """The same control surface as proxy.Net (`hosts.Links`: set, heal, active, close), on namespaces."""

    def __init__(self, hosts: list[str], tag: str | None = None, subnet: int | None = None) -> None:
        self.hosts = list(hosts)
        self.tag = tag or f"{os.getpid():x}-{next(_SEQ) % 100}"
        if len(self.tag) > 10:
            raise ValueError("tag too long for interface names (15 characters)")
        self.subnet = subnet if subnet is not None else SUBNETS[0]
        self._pick_subnet = subnet is None
        self.bridge = f"wsb{self.tag}"
        self._rules: dict[tuple[str, str], Rule] = {}   # (src host, dst host) -> rule
        self._shaped: set[str] = set()                  # hosts whose eth0 has our qdisc
        self._netem: bool | None = None                 # probed on the first delay/drop rule
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
        """The command line that runs `process` inside its host's namespace (ip execs it: same pid)."""
        return ["ip", "netns", "exec", self.ns(host_of(process)), *argv]

    def host(self, process: str) -> str:
        return self.ip(host_of(process))

    def describe(self) -> dict[str, object]:
        return {"bridge": self.bridge, "gateway": self.gateway,
                "hosts": {h: {"ns": self.ns(h), "ip": self.ip(h)} for h in self.hosts}}

    # -- lifecycle -------------------------------------------------------------------

    def setup(self, iptables: bool = True) -> None:
        """Bridge, one namespace per host, WSJ chains. On any failure, undo what was made and raise."""
        sweep_stale()
        try:
            # One lock across harnesses on this machine: choosing a free /24 and claiming it is one step.
            with open(_LOCK_FILE, "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if self._pick_subnet:
                    used = _used_networks()
                    free = [s for s in SUBNETS
                            if not any(ipaddress.ip_network(f"10.{s}.0.0/24").overlaps(u) for u in used)]
                    if not free:
                        raise Unavailable(f"no free 10.x.0.0/24 among 10.{SUBNETS[0]}..10.{SUBNETS[-1]}")
                    self.subnet = free[0]
                self._up = True
                _LIVE.add(self)
                _run("ip", "link", "add", self.bridge, "type", "bridge")
                _run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
                _run("ip", "link", "set", self.bridge, "up")
            for h in self.hosts:
                ns, veth = self.ns(h), f"wsv{h[1:]}{self.tag}"
                _run("ip", "netns", "add", ns)
                _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
                _run("ip", "link", "set", veth, "master", self.bridge, "up")
                _run("ip", "-n", ns, "addr", "add", f"{self.ip(h)}/24", "dev", "eth0")
                _run("ip", "-n", ns, "link", "set", "eth0", "up")
                _run("ip", "-n", ns, "link", "set", "lo", "up")
                if iptables:
                    self._restore(h, [":WSJ - [0:0]", "-I INPUT -j WSJ"])
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Delete every namespace and the bridge; safe to call twice and after a partial setup.

        After Cluster.stop nothing runs in them; on an abort (SIGTERM, atexit) what
        still runs is killed first, while the network still exists.
        """
        if not self._up:
            return
        for h in self.hosts:
            _kill_inside(self.ns(h))
            _run("ip", "netns", "del", self.ns(h), check=False)  # takes its veth with it
        _run("ip", "link", "del", self.bridge, check=False)
        self._up = False
        self._rules.clear()
        _LIVE.discard(self)

    def leftovers(self) -> list[str]:
        """Namespaces or the bridge of this net that still exist (empty after close)."""
        names = {ln.split()[0] for ln in _run("ip", "netns", "list", check=False).stdout.splitlines() if ln.split()}
        left = [self.ns(h) for h in self.hosts if self.ns(h) in names]
        if _run("ip", "link", "show", self.bridge, check=False).returncode == 0:
            left.append(self.bridge)
        return left

    # -- rules -----------------------------------------------------------------------

    def alias(self, raw: str, name: str) -> None:
        """Not needed here: packets are told apart by their source address."""

    def set(self, pairs: Iterable[tuple[str, str]], rule: Rule) -> None:
        if rule.mode in (DELAY, DROP):
            if self._netem is None:
                self._netem = netem_available()
            if not self._netem:
                raise Unavailable(f"{rule.mode} needs the kernel's sch_netem qdisc, which this kernel lacks")
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
            for h in sorted({d for _, d in touched}):
                self._write_filter(h)
            for h in sorted({s for s, _ in touched}):
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

    def installed_rules(self, host: str) -> list[str]:
        """What `host`'s WSJ chain holds now, as ``iptables -S`` prints it (for tests and debugging)."""
        out = _run("ip", "netns", "exec", self.ns(host), "iptables", "-w", "-S", "WSJ").stdout
        return [ln for ln in out.splitlines() if ln.startswith("-A WSJ")]

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

    def _restore(self, host: str, lines: list[str]) -> None:
        # --noflush: only the lines given change anything, and the whole batch applies at once.
        _run("ip", "netns", "exec", self.ns(host), "iptables-restore", "-w", "--noflush",
             stdin="\n".join(["*filter", *lines, "COMMIT", ""]))

    def _write_filter(self, host: str) -> None:
        if shutil.which("iptables-restore") is None:
            if self.filter_rules(host):
                raise Unavailable("iptables is not installed: partitions cannot be applied in netns mode")
            return
        self._restore(host, ["-F WSJ", *(" ".join(["-A", "WSJ", *r]) for r in self.filter_rules(host))])

    def _write_qdisc(self, host: str) -> None:
        cmds = self.qdisc_commands(host)
        if len(cmds) == 1 and host not in self._shaped:
            return  # nothing installed, nothing wanted: no tc at all (it may be missing without netem)
        for i, cmd in enumerate(cmds):
            _run("ip", "netns", "exec", self.ns(host), "tc", *cmd, check=i > 0)  # no qdisc to delete is fine
        if len(cmds) == 1:
            self._shaped.discard(host)
        else:
            self._shaped.add(host)


@atexit.register
def close_all() -> None:
    """A harness that forgot to stop (or raised past its own cleanup) still leaves no namespaces."""
    for net in list(_LIVE):
        net.close()
