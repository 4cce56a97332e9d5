"""Workloads: what the clients do, what they read at the end, and which checkers judge them.

`base` holds the `Context` and the `Workload` base class; each workload is a
module of its own, and `WORKLOADS` names them for the command line.
"""

from __future__ import annotations

from .base import Context, Workload
from .observations import Observations
from .register import Register
from .watch import Watch

WORKLOADS: dict[str, type[Workload]] = {"register": Register, "observations": Observations, "watch": Watch}

__all__ = ["Context", "Workload", "WORKLOADS", "Register", "Observations", "Watch"]
