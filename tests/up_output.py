"""Reading `worldstate up` as a user does: its output until it says it is up, the admin key and the
gRPC targets it printed."""

from __future__ import annotations

import re
import subprocess

READY = "Ctrl-C stops everything"
_ADMIN_KEY = re.compile(r"^\s*admin key (wsk_\S+)\s*$", re.MULTILINE)
_GRPC = re.compile(r"^\s*grpc\s+(\S+)\s+(\S+:\d+)\s*$", re.MULTILINE)


def until_up(proc: subprocess.Popen[str]) -> str:
    """What `up` printed up to and including its ready line (all of it, if it exited first)."""
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if READY in line:
            break
    return "".join(lines)


def admin_key(out: str) -> str:
    """The admin key in `up`'s output (printed when it made the cluster's first start)."""
    m = _ADMIN_KEY.search(out)
    assert m is not None, f"no admin key in the output of up:\n{out}"
    return m.group(1)


def auth(out: str) -> dict[str, str]:
    """The Authorization header of the admin key in `up`'s output."""
    return {"Authorization": f"Bearer {admin_key(out)}"}


def grpc_targets(out: str) -> dict[str, str]:
    """Each region's gRPC target (host:port) in `up`'s output: lines `  grpc    r1   127.0.0.1:PORT`."""
    return dict(_GRPC.findall(out))
