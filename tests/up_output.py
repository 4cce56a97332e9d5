"""Reading `worldstate up` as a user does: its output until it says it is up."""

from __future__ import annotations

import subprocess

READY = "Ctrl-C stops everything"


def until_up(proc: subprocess.Popen[str]) -> str:
    """What `up` printed up to and including its ready line (all of it, if it exited first)."""
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if READY in line:
            break
    return "".join(lines)
