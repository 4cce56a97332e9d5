"""Child processes a deployment owns: start, stop, kill -9, pause, resume, restart.

Every child asks the kernel to SIGTERM it when its parent dies
(PR_SET_PDEATHSIG), so even a launcher killed with -9 leaves no orphans.
Children get their own process group so a terminal's Ctrl-C reaches only the
launcher, which then stops them in order.
"""

from __future__ import annotations

import ctypes
import os
import queue
import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


class ProcessFailed(RuntimeError):
    """A child exited or never became healthy; the message carries its log tail."""


def _ephemeral_floor() -> int:
    try:
        return int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_handed_out: set[int] = set()
_rng = random.Random()
# Ports handed out by any process on this machine, a file each, held _HOLD_S: two processes (the
# test suite's workers, a benchmark beside a deployment) drawing the same still-free port before
# either server bound it made one of them fail with "address already in use". Once bound, the bind
# check below refuses the port anyway; the hold only has to outlast a server's start.
_RESERVED = Path(os.environ.get("TMPDIR", "/tmp")) / f"worldstate-ports-{os.getuid()}"
_HOLD_S = 300.0


def _reserve(port: int) -> bool:
    """Claim `port` machine-wide for _HOLD_S; False when another process holds it."""
    _RESERVED.mkdir(exist_ok=True)
    path = _RESERVED / str(port)
    for _ in range(2):
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return True
        except FileExistsError:
            try:
                if time.time() - path.stat().st_mtime < _HOLD_S:
                    return False
                path.unlink()  # an expired claim: take it over (a server bound to it fails the bind check)
            except FileNotFoundError:
                pass
    return False


def free_port() -> int:
    """A loopback port that was free a moment ago, for a server that binds it soon after.

    Drawn below the kernel's ephemeral range: a port from bind(0) could be taken,
    before the server starts, by another socket's bind(0) or by the local end of
    an outgoing connection. Never the same port twice in one process, nor within
    _HOLD_S in two processes of this machine's user.
    """
    top = _ephemeral_floor()
    for _ in range(1000):
        port = _rng.randrange(max(1024, top - 12000), top)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        if not _reserve(port):
            continue
        _handed_out.add(port)
        return port
    raise OSError("no free port below the ephemeral range")


def _die_with_parent() -> None:
    os.setsid()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux: the launcher's own shutdown still stops children


class _Spawner:
    """Starts every child from one thread that lives as long as the process.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not
    the process: a child started from a short-lived worker thread (asyncio's
    to_thread, a nemesis thread) would be killed when that thread ends.
    """

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[dict[str, object], queue.Queue[object]]] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while True:
            kwargs, reply = self._jobs.get()
            try:
                reply.put(subprocess.Popen(**kwargs))  # type: ignore[call-overload]
            except BaseException as e:  # handed to the caller, who raises it
                reply.put(e)

    def popen(self, **kwargs: object) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="worldstate-spawner", daemon=True)
                self._thread.start()
        reply: queue.Queue[object] = queue.Queue(maxsize=1)
        self._jobs.put((kwargs, reply))
        result = reply.get()
        if isinstance(result, BaseException):
            raise result
        return result  # type: ignore[return-value]


_spawner = _Spawner()


class ManagedProcess:
    """One child process with a stable command line, log file and health check."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        health: Callable[[], bool],
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.health = health
        self.env = env
        self.popen: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self) -> None:
        if self.running:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        env = {**os.environ, **(self.env or {})}
        self.popen = _spawner.popen(
            args=self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=_die_with_parent,
        )
        log.close()
        self.paused = False

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise ProcessFailed(f"{self.name} exited with {self.popen and self.popen.returncode}:\n{self.log_tail()}")
            try:
                if self.health():
                    return
            except Exception:
                pass
            time.sleep(0.1)
        raise ProcessFailed(f"{self.name} not healthy after {timeout}s:\n{self.log_tail()}")

    def _signal(self, sig: int) -> None:
        if self.running and self.popen is not None:
            os.kill(self.popen.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
        if not self.running or self.popen is None:
            return
        if self.paused:
            self.resume()  # a stopped process cannot handle SIGTERM
        self._signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """kill -9: no shutdown path runs, as in a crash."""
        if self.popen is None:
            return
        self._signal(signal.SIGKILL)
        self.popen.wait()
        self.paused = False

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self._signal(signal.SIGCONT)
        self.paused = False

    def restart(self, wait: bool = True, timeout: float = 30.0) -> None:
        self.stop()
        self.start()
        if wait:
            self.wait_healthy(timeout)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll `predicate` until it is truthy or `timeout` passes; returns the last result."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return True
        except Exception:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
