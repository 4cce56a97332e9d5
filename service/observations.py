"""The AP tier's operations: take observations in, delete entities, read merged
entities back, each answer saying what it reflects (replica, watermark, who lags).

A delete is a tombstone merged like an observation (consistency/ap_entity.py):
it hides every field written before its HLC stamp, on every replica, whatever
order the writes arrive in.

A write answers a causal token `REGION:v2.<p>-<ms>-<seq>[.<p>-<ms>-<seq>...]`: the
partitions the write touched and how far each of that region's partition streams held it
(consistency/ap_positions.py). A read given one waits, up to a bound, until this replica has
applied those partitions of that region's streams that far (read-your-writes across regions),
or refuses with NotYetConsistent. The unpartitioned `REGION:STREAM_ID` of older versions is
refused (400): tokens are short-lived, and its single id means nothing in any one partition.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from consistency import ap_keys
from consistency.ap_positions import format_vector, parse_vector
from consistency.ap_store import EntityState, IngestResult, ReplicaStore, tombstone
from consistency.errors import OutcomeUnknown, StoreError
from consistency.hlc import HybridLogicalClock
from consistency.replication import Replicator
from service import observation_input
from service.config import Settings
from service.errors import (EntityDeleted, EntityNotFound, InvalidInput, InvalidToken, NotYetConsistent, ServiceError,
                            TokenUnknown)
from service.metrics import Metrics
from service.quotas import Quotas
from service.worlds import Worlds

_TOKEN = re.compile(rf"({ap_keys.REGION_RE.pattern}):(v2[0-9.-]*)")
_OLD_TOKEN = re.compile(rf"{ap_keys.REGION_RE.pattern}:\d{{1,20}}-\d{{1,20}}")
ENTITY_PATTERN = ap_keys.ENTITY_RE.pattern

__all__ = ["ENTITY_PATTERN", "Deleted", "EntityState", "Observations", "Receipt", "Reflects"]
# Entity ids a listing reads at most per page, deleted ones included: a page may come back short
# (even empty) with a cursor to continue from, rather than read past any number of deletes.
SCAN_PER_PAGE = 10


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
class Deleted:
    """What a delete did: its tombstone's stamp, or nothing (a duplicate event id)."""

    replica: str
    hlc: str
    token: str
    duplicate: bool


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
                 worlds: Worlds, now_ms: Callable[[], int], quotas: Quotas, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.ap = ap
        self.hlc = hlc
        self.replicator = replicator
        self.worlds = worlds
        self.now_ms = now_ms
        self.quotas = quotas
        self.counted = (metrics or Metrics()).observations

    async def post(self, world: str, body: Any) -> Receipt:
        """Merge one observation (an object) or a batch (an array); replays are duplicates."""
        try:
            receipt = await self._post(world, body)
        except OutcomeUnknown:
            raise  # it may have been applied: counted nowhere rather than as refused
        except (ServiceError, StoreError):
            # Refused whole (invalid, too large, unknown world, quota, replica unavailable or full):
            # counted per observation the body held, an array's length, else one.
            self.counted.labels("refused").inc(len(body) if isinstance(body, list) else 1)
            raise
        self.counted.labels("accepted").inc(receipt.accepted)
        self.counted.labels("duplicate").inc(len(receipt.duplicates))
        return receipt

    async def _post(self, world: str, body: Any) -> Receipt:
        s = self.settings
        Worlds.check(world)
        obs = observation_input.parse(body, world, s.max_batch, self.now_ms(), s.max_drift_ms)
        await self.worlds.require(world)
        await self.quotas.charge("observations_per_s", len(obs))
        result = await self.ap.ingest(obs)
        duplicates = [o.event_id for o, a in zip(obs, result.accepted) if not a]
        return Receipt(s.region, len(obs) - len(duplicates), duplicates, result.stamp, self._token(result),
                       self.replicator.behind())

    def _token(self, result: IngestResult) -> str:
        return f"{self.settings.region}:{format_vector(result.positions)}"

    async def delete(self, world: str, entity: str, event_id: str | None = None) -> Deleted:
        """Delete an entity: a tombstone stamped now hides every field written before it. Given
        the same `event_id` again (ids are per entity, shared with observations) it is a duplicate
        and changes nothing. An entity never observed here gets a tombstone too: a write made
        before it on a replica not heard from yet must stay hidden when it arrives."""
        s = self.settings
        Worlds.check(world)
        ap_keys.check(ap_keys.ENTITY_RE, "entity", entity)
        if event_id is None:
            event_id = f"delete-{uuid.uuid4().hex}"
        elif not ap_keys.EVENT_RE.fullmatch(event_id):
            msg = f"must match {ap_keys.EVENT_RE.pattern}"
            raise InvalidInput(f"event_id {msg}", [{"loc": ["query", "event_id"], "msg": msg, "type": "value_error"}])
        await self.worlds.require(world)
        await self.quotas.charge("observations_per_s", 1)
        result = await self.ap.ingest([tombstone(world, entity, event_id, self.now_ms())])
        return Deleted(s.region, result.stamp, self._token(result), not result.accepted[0])

    async def get(self, world: str, entity: str, token: str | None = None,
                  wait_ms: int | None = None) -> tuple[EntityState, Reflects]:
        Worlds.check(world)
        ap_keys.check(ap_keys.ENTITY_RE, "entity", entity)
        await self._honour(token, wait_ms)
        state = await self.ap.get_entity(world, entity, deleted=True)
        region = self.settings.region
        if state is None:
            raise EntityNotFound(f"no observations of {entity!r} in {world!r} on replica {region}")
        if state.deleted and state.tombstone is not None:
            t = state.tombstone
            raise EntityDeleted(f"{entity!r} in {world!r} was deleted at hlc {t.hlc} (node {t.node}) and not "
                                f"written since, on replica {region}", t.hlc, t.node)
        return state, await self.reflects()

    async def list(self, world: str, after: str | None = None, limit: int = 100, token: str | None = None,
                   wait_ms: int | None = None) -> tuple[list[EntityState], str | None, Reflects]:
        """A page of entities in id order after `after`, deleted ones left out, and the id to
        continue after (None: no more). The page may be short, even empty, with a cursor."""
        Worlds.check(world)
        if after is not None:
            ap_keys.check(ap_keys.ENTITY_RE, "after", after)
        await self._honour(token, wait_ms)
        states, cursor = await self.ap.entity_page(world, after, limit, scan_max=SCAN_PER_PAGE * limit)
        return states, cursor, await self.reflects()

    async def reflects(self) -> Reflects:
        return Reflects(self.settings.region, await self.ap.watermark(), self.hlc.last.to_string(),
                        self.replicator.behind(), self.replicator.status())

    async def _honour(self, token: str | None, wait_ms: int | None) -> None:
        if token is None:
            return
        s = self.settings
        if _OLD_TOKEN.fullmatch(token):
            raise InvalidToken(f"token {token!r} is in the unpartitioned form REGION:STREAM_ID of an older version; "
                               "this version's tokens are REGION:v2.<partition>-<ms>-<seq>...: write again for one")
        m = _TOKEN.fullmatch(token)
        if not m:
            raise InvalidToken(f"token {token!r} is not REGION:v2.<partition>-<ms>-<seq>[.<partition>-<ms>-<seq>...]")
        region, written = m.groups()
        try:
            target = parse_vector(written)
        except ValueError as e:
            raise InvalidToken(f"token {token!r}: {e}") from e
        if region != s.region and region not in s.peers:
            raise TokenUnknown(f"this replica ({s.region}) does not replicate from {region!r}", region)
        wait_s = s.read_wait_s if wait_ms is None else min(wait_ms / 1000, s.read_wait_s)
        if not await self.ap.wait_applied(region, target, wait_s):
            raise NotYetConsistent(f"replica {s.region} has not applied {token} after {wait_s:.1f}s", token,
                                   self.replicator.behind())
