"""What every workload shares: the `Context` its clients run in, and the `Workload` base class.

A workload owns some client slots (each one sequential process in the
history), runs them until the test's time limit, makes its final reads
after the faults are healed, and checks the history. All of it talks to the
system only over HTTP.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from dataclasses import dataclass, field
from typing import Any

from ..checkers.result import CheckerResult
from ..client import Api
from ..history import Event
from ..recorder import Process, Recorder


@dataclass
class Context:
    api: Api
    rec: Recorder
    regions: list[str]
    world: str
    stop: asyncio.Event                       # set at the time limit: clients finish their operation and return
    think_s: float = 0.05                     # mean pause between a client's operations
    final_wait_s: float = 10.0                # how long final reads may wait for agreement
    _final_pids: itertools.count = field(default_factory=lambda: itertools.count(1_000_000))

    def final_process(self) -> int:
        """A fresh process id for a final read, never shared with a client slot."""
        return next(self._final_pids)

    def node(self, region: str) -> str:
        return f"api-{region}"

    async def think(self, rng: random.Random) -> None:
        await asyncio.sleep(rng.expovariate(1 / self.think_s) if self.think_s > 0 else 0)


class Workload:
    """Base class; see register.py for the shape of a concrete one."""

    name = "workload"
    clients = 0
    until_final = False  # True: clients keep running after the time limit until final() ends them

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def setup(self) -> None:
        """Before the clients start (and before any fault)."""

    async def run_client(self, proc: Process, rng: random.Random) -> None:
        raise NotImplementedError

    async def final(self) -> None:
        """After the faults are healed and the quiet period: final reads."""

    def final_state(self) -> dict[str, Any]:
        """What the final reads found, saved to final.json so a history can be re-checked."""
        return {}

    def check(self, history: list[Event], final: dict[str, Any]) -> dict[str, CheckerResult]:
        """checker name -> its result (a checkers.result.Result or a LinearizabilityResult: each has a verdict)."""
        return {}
