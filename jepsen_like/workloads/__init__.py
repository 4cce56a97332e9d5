"""Workloads: what the clients do, what they read at the end, and which checkers judge them.

`base` holds the `Context` and the `Workload` base class; each workload is a
module of its own, and `WORKLOADS` names them for the command line.
`sdk-observations` and `grpc-observations` are `observations` driven through
the Python SDK and through gRPC: the same checks, other clients. `edge` drives
the run's edge nodes (jepsen_like/edges.py) and writes at the core they follow.
"""

from __future__ import annotations

from .base import Context, Workload
from .edge import Edge
from .grpc_observations import GrpcObservations
from .observations import Observations
from .register import Register
from .sdk_observations import SdkObservations
from .watch import Watch

WORKLOADS: dict[str, type[Workload]] = {"register": Register, "observations": Observations, "watch": Watch,
                                        "sdk-observations": SdkObservations, "grpc-observations": GrpcObservations,
                                        "edge": Edge}

__all__ = ["Context", "Workload", "WORKLOADS", "Register", "Observations", "Watch", "SdkObservations",
           "GrpcObservations", "Edge"]
