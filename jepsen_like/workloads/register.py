"""register (CP): read, write and compare-and-swap on a few keys through the API.

As Jepsen's etcd register test: every written value is unique, so a CAS on a
revision (If-Match) is recorded as a CAS on the value read at that revision,
which is what the register model compares. Each client is bound to one
region's API node. A share of reads ask for ``consistency=serializable``:
they may be stale by contract, so they are left out of the linearizability
check and measured by the staleness checker instead.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

from ..checkers import linearizability, staleness
from ..checkers.result import CheckerResult
from ..history import FAIL, INFO, OK, Event, as_operations
from ..recorder import Process
from .base import Context, Workload

PREFIX = "reg/"


class Register(Workload):
    name = "register"

    def __init__(self, ctx: Context, *, clients: int = 6, keys: int = 4, serializable: float = 0.25,
                 read_share: float = 0.5, write_share: float = 0.25, check_time_limit_s: float = 60.0) -> None:
        super().__init__(ctx)
        self.clients = clients
        self.keys = [f"{PREFIX}k{i}" for i in range(keys)]
        self.serializable = serializable
        self.read_share, self.write_share = read_share, write_share
        self.check_time_limit_s = check_time_limit_s
        self._values = itertools.count(1)   # unique written values
        self._final: dict[str, dict[str, Any]] = {}

    def path(self, key: str) -> str:
        return f"/v1/worlds/{self.ctx.world}/params/{key}"

    # -- operations -------------------------------------------------------------------

    async def read(self, proc: Process | int, region: str, key: str, consistency: str = "linearizable",
                   **extra: Any) -> tuple[Any, int | None] | None:
        """One recorded read; returns (value, revision) when it answered."""
        pid = proc if isinstance(proc, int) else proc.id
        rec = self.ctx.rec
        rec.invoke(pid, "read", key, None, consistency=consistency, tier="cp", region=region, **extra)
        params = {"consistency": "serializable"} if consistency == "serializable" else None
        a = await self.ctx.api.call(region, "GET", self.path(key), write=False, params=params)
        if a.type == FAIL and a.status == 404:
            rec.record(OK, pid, "read", key, None, tier="cp", region=region, **extra)
            return None, None
        if a.type != OK:
            rec.record(a.type, pid, "read", key, None, error=a.error, tier="cp", region=region, **extra)
            return None
        body = a.body
        rec.record(OK, pid, "read", key, body["value"], revision=body["revision"], tier="cp", region=region,
                   store_revision=body.get("store_revision"), **extra)
        return body["value"], body["revision"]

    async def write(self, proc: Process, region: str, key: str) -> tuple[Any, int] | None:
        value = next(self._values)
        rec = self.ctx.rec
        rec.invoke(proc.id, "write", key, value, tier="cp", region=region)
        a = await self.ctx.api.call(region, "PUT", self.path(key), write=True, body=value)
        if a.type == OK:
            rec.record(OK, proc.id, "write", key, value, revision=a.body["revision"], tier="cp", region=region)
            return value, a.body["revision"]
        self._failed(proc, "write", key, value, region, a.type, a.error)
        return None

    async def cas(self, proc: Process, region: str, key: str, expected: Any, revision: int | None
                  ) -> tuple[Any, int] | None:
        new = next(self._values)
        rec = self.ctx.rec
        # With unique values, "still at the revision where it held `expected`" is "still holds `expected`".
        rec.invoke(proc.id, "cas", key, [expected, new], tier="cp", region=region, if_revision=revision)
        headers = {"If-None-Match": "*"} if expected is None else {"If-Match": f'"{revision}"'}
        a = await self.ctx.api.call(region, "PUT", self.path(key), write=True, body=new, headers=headers)
        if a.type == OK and a.status == 412:
            current = a.body.get("current_revision") if isinstance(a.body, dict) else None
            rec.record(OK, proc.id, "cas", key, {"cas_ok": False}, revision=current, tier="cp", region=region)
            return None
        if a.type == OK:
            rec.record(OK, proc.id, "cas", key, {"cas_ok": True}, revision=a.body["revision"], tier="cp",
                       region=region)
            return new, a.body["revision"]
        self._failed(proc, "cas", key, [expected, new], region, a.type, a.error)
        return None

    def _failed(self, proc: Process, f: str, key: str, value: Any, region: str, type_: str, error: str | None) -> None:
        self.ctx.rec.record(type_, proc.id, f, key, value, error=error, tier="cp", region=region)
        if type_ == INFO:
            proc.crashed()  # never reuse a process whose write may still be in flight

    # -- the client loop ----------------------------------------------------------------

    async def run_client(self, proc: Process, rng: random.Random) -> None:
        regions = self.ctx.regions
        region = regions[proc.slot % len(regions)]
        known: dict[str, tuple[Any, int | None]] = {}  # what this client last saw of each key
        while not self.ctx.stop.is_set():
            key = rng.choice(self.keys)
            r = rng.random()
            if r < self.read_share or key not in known:
                level = "serializable" if rng.random() < self.serializable else "linearizable"
                got = await self.read(proc, region, key, level)
                if got is not None:
                    known[key] = got
            elif r < self.read_share + self.write_share:
                wrote = await self.write(proc, region, key)
                if wrote is not None:
                    known[key] = wrote
                else:
                    known.pop(key, None)  # unknown now: read before a CAS
            else:
                expected, revision = known[key]
                swapped = await self.cas(proc, region, key, expected, revision)
                if swapped is not None:
                    known[key] = swapped
                else:
                    known.pop(key, None)
            await self.ctx.think(rng)

    async def final(self) -> None:
        """A linearizable read of every key on every node, recorded like any other read."""
        for key in self.keys:
            for region in self.ctx.regions:
                got = await self.read(self.ctx.final_process(), region, key, final=True)
                self._final.setdefault(key, {})[region] = None if got is None else {"value": got[0],
                                                                                      "revision": got[1]}

    def final_state(self) -> dict[str, Any]:
        return {"reads": self._final}

    def check(self, history: list[Event], final: dict[str, Any]) -> dict[str, CheckerResult]:
        ops = [op for op in as_operations(history) if op.f in ("read", "write", "cas")]
        linear = [op for op in ops if not (op.f == "read" and op.consistency == "serializable")]
        return {
            "linearizability": linearizability.check(linear, time_limit=self.check_time_limit_s),
            "staleness": staleness.check(ops),
        }
