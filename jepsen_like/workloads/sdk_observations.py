"""sdk-observations (AP): the observations workload, with every post and read made by the Python SDK.

The same operations, final reads and checkers as ``observations``; what changes is
who talks to the service: `client.AsyncClient`, with its own retries. The SDK
resends a batch after a 429, 503 or 504 with the same event ids (safe: a replay
is a duplicate), and carries each session's last write token into its reads
(read-your-writes). The history records what the SDK answered the agent:

- a Receipt: ok, "accepted" when its event was applied by this call (not in
  `duplicates`), else "duplicate";
- an error the service promised changed nothing (4xx, Unavailable, RateLimited,
  NotYetConsistent on a read): fail;
- OutcomeUnknown or a connection lost after sending: info (may have happened).
"""

from __future__ import annotations

from typing import Any

from client import AsyncClient
from client import errors as sdk

from ..history import FAIL, INFO, OK
from ..recorder import Process
from .observations import Observations, entity_state

# Not sent, or refused by the service before anything was applied.
_NOTHING_DONE = (sdk.NotFound, sdk.Unauthorized, sdk.Forbidden, sdk.InvalidRequest, sdk.RateLimited, sdk.Unavailable,
                 sdk.NotYetConsistent)


class SdkObservations(Observations):
    name = "sdk-observations"
    via = "sdk"
    prefix = "sdk-"

    def __init__(self, ctx: Any, **kw: Any) -> None:
        super().__init__(ctx, **kw)
        self._sessions: dict[tuple[int, str], AsyncClient] = {}

    def session(self, pid: int, region: str) -> AsyncClient:
        """One SDK session per client process and region: its write token follows its own writes."""
        key = (pid, region)
        if key not in self._sessions:
            api = self.ctx.api
            self._sessions[key] = AsyncClient(api.urls[region], api.key, timeout=api.timeout_s)
        return self._sessions[key]

    async def post(self, proc: Process, region: str, ev: dict[str, Any], replay: bool = False) -> bool:
        rec = self.ctx.rec
        extra = {"tier": "ap", "region": region, "node": self.ctx.node(region), "via": "sdk",
                 **({"replay": True} if replay else {})}
        rec.invoke(proc.id, "post", ev["entity"], ev, **extra)
        body = {"event_id": ev["id"], "entity": ev["entity"], "source": ev["source"], "fields": ev["fields"]}
        try:
            # Two attempts: enough to show the SDK's resend, short enough for the client timeout.
            r = await self.session(proc.id, region).observe(self.ctx.world, [body], attempts=2)
        except _NOTHING_DONE as e:
            rec.record(FAIL, proc.id, "post", ev["entity"], ev, error=f"{type(e).__name__}: {e}"[:200], **extra)
            return False
        except Exception as e:  # noqa: BLE001  OutcomeUnknown, a connection lost mid-request, ...
            rec.record(INFO, proc.id, "post", ev["entity"], ev, error=f"{type(e).__name__}: {e}"[:200], **extra)
            proc.crashed()
            self._sessions.pop((proc.id, region), None)
            return False
        accepted = ev["id"] not in r.duplicates and r.accepted == 1
        out = {"status": "accepted" if accepted else "duplicate", "token": r.token}
        if accepted:
            out["hlc"] = r.hlc
        rec.record(OK, proc.id, "post", ev["entity"], out, **extra)
        return accepted

    async def read(self, proc: Process | int, region: str, entity: str, **extra: Any) -> dict[str, Any] | None:
        pid = proc if isinstance(proc, int) else proc.id
        if not isinstance(proc, Process):  # final reads: the plain HTTP reader, paged
            return await super().read(proc, region, entity, **extra)
        rec = self.ctx.rec
        extra = {"tier": "ap", "region": region, "via": "sdk", **extra}
        rec.invoke(pid, "read-entity", entity, None, **extra)
        try:
            e = await self.session(pid, region).entity(self.ctx.world, entity)
        except sdk.NotFound:
            rec.record(OK, pid, "read-entity", entity, None, **extra)
            return {}
        except Exception as exc:  # noqa: BLE001  a read changes nothing: any error is a fail
            rec.record(FAIL, pid, "read-entity", entity, None, error=f"{type(exc).__name__}: {exc}"[:200], **extra)
            return None
        state = entity_state(e.doc)
        rec.record(OK, pid, "read-entity", entity, state, **extra)
        return state

    async def final(self) -> None:
        for s in self._sessions.values():
            await s.aclose()
        self._sessions.clear()
        await super().final()
