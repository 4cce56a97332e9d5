"""The AP tier's operations: take observations in, read merged entities back,
each answer saying what it reflects (replica, watermark, who lags).

A write answers a causal token `REGION:STREAM_ID`; a read given one waits,
up to a bound, until this replica has applied that region's stream that far
(read-your-writes across regions), or refuses with NotYetConsistent.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from consistency import ap_keys
from consistency.ap_store import EntityState, ReplicaStore
from consistency.hlc import HybridLogicalClock
from consistency.replication import Replicator
from service import observation_input
from service.config import Settings
from service.errors import EntityNotFound, InvalidToken, NotYetConsistent, TokenUnknown
from service.quotas import Quotas
from service.worlds import Worlds

_TOKEN = re.compile(rf"({ap_keys.REGION_RE.pattern}):(\d{{1,20}}-\d{{1,20}})")
ENTITY_PATTERN = ap_keys.ENTITY_RE.pattern

__all__ = ["ENTITY_PATTERN", "EntityState", "Observations", "Receipt", "Reflects"]


@dataclass(frozen=True)
class Receipt:
    """What a batch of observations did: accepted or recognised as duplicates."""

    replica: str
    accepted: int
    duplicates: list[str]  # event ids already seen
    hlc: str  # the stamp of the batch's last observation
    token: str  # read-your-writes: hand it to a read on any region
    behind: list[str]  # peer regions not yet caught up with this replica


@dataclass(frozen=True)
class Reflects:
    """What an AP answer reflects: the replica, what it applied from each region, who lags."""

    replica: str
    watermark: dict[str, str]
    hlc: str
    behind: list[str]
    replication: dict[str, dict[str, object]]


class Observations:
    def __init__(self, settings: Settings, ap: ReplicaStore, hlc: HybridLogicalClock, replicator: Replicator,
                 worlds: Worlds, now_ms: Callable[[], int], quotas: Quotas) -> None:
        self.settings = settings
        self.ap = ap
        self.hlc = hlc
        self.replicator = replicator
        self.worlds = worlds
        self.now_ms = now_ms
        self.quotas = quotas

    async def post(self, world: str, body: Any) -> Receipt:
        """Merge one observation (an object) or a batch (an array); replays are duplicates."""
        s = self.settings
        Worlds.check(world)
        obs = observation_input.parse(body, world, s.max_batch, self.now_ms(), s.max_drift_ms)
        await self.worlds.require(world)
        await self.quotas.charge("observations_per_s", len(obs))
        result = await self.ap.ingest(obs)
        token_id = result.last_id or await self.ap.last_id()
        duplicates = [o.event_id for o, a in zip(obs, result.accepted) if not a]
        return Receipt(s.region, len(obs) - len(duplicates), duplicates, result.stamp, f"{s.region}:{token_id}",
                       self.replicator.behind())

    async def get(self, world: str, entity: str, token: str | None = None,
                  wait_ms: int | None = None) -> tuple[EntityState, Reflects]:
        Worlds.check(world)
        ap_keys.check(ap_keys.ENTITY_RE, "entity", entity)
        await self._honour(token, wait_ms)
        state = await self.ap.get_entity(world, entity)
        if state is None:
            raise EntityNotFound(f"no observations of {entity!r} in {world!r} on replica {self.settings.region}")
        return state, await self.reflects()

    async def list(self, world: str, after: str | None = None, limit: int = 100, token: str | None = None,
                   wait_ms: int | None = None) -> tuple[list[EntityState], bool, Reflects]:
        """A page of entities in id order after `after`, and whether more follow."""
        Worlds.check(world)
        if after is not None:
            ap_keys.check(ap_keys.ENTITY_RE, "after", after)
        await self._honour(token, wait_ms)
        states, more = await self.ap.list_entities(world, after, limit)
        return states, more, await self.reflects()

    async def reflects(self) -> Reflects:
        return Reflects(self.settings.region, await self.ap.watermark(), self.hlc.last.to_string(),
                        self.replicator.behind(), self.replicator.status())

    async def _honour(self, token: str | None, wait_ms: int | None) -> None:
        if token is None:
            return
        s = self.settings
        m = _TOKEN.fullmatch(token)
        if not m:
            raise InvalidToken(f"token {token!r} is not REGION:STREAM_ID")
        region, sid = m.groups()
        if region != s.region and region not in s.peers:
            raise TokenUnknown(f"this replica ({s.region}) does not replicate from {region!r}", region)
        wait_s = s.read_wait_s if wait_ms is None else min(wait_ms / 1000, s.read_wait_s)
        if not await self.ap.wait_applied(region, sid, wait_s):
            raise NotYetConsistent(f"replica {s.region} has not applied {token} after {wait_s:.1f}s", token,
                                   self.replicator.behind())
