"""The errors the service raises on purpose, one base for all.

    ServiceError
    ├── InvalidInput          a request document is malformed or out of range (`errors` lists each)
    │   ├── ClockDrift        an observation is stamped too far ahead of this node's clock
    │   ├── ValueTooDeep      a value to store nests arrays and objects deeper than the limit
    │   └── ValueTooLarge     a value to store is longer, as JSON, than the limit
    ├── BatchTooLarge         more observations than the node takes in one request
    ├── InvalidToken          a causal token that does not parse
    ├── TokenUnknown          a causal token from a region this replica never hears from
    ├── NotYetConsistent      a causal token not honoured within the wait
    ├── EntityNotFound        GET of an entity with no observations on this replica
    │   └── EntityDeleted     GET of an entity whose every field a delete hides
    ├── ChangesTrimmed        a subscription resumed after a position the changes log no longer holds
    ├── SlowConsumer          a subscriber fell more than the allowed lag behind the changes log
    ├── EntityMissing         an entity a model query names has no observations here
    ├── ActionsForUnknown     a predict query gives actions for entities it does not query
    ├── EntityIncomplete      an entity lacks the numeric state the model needs
    ├── ManifestInvalid       a manifest that is malformed or names a blob this node lacks
    ├── ModelUnavailable      no model is loaded yet
    ├── QuotaExceeded         the acting API key is over one of its rate quotas
    ├── EdgeStale             an edge node has not been in step with the core for longer than allowed
    └── NotOnEdge             a request for a world an edge node does not hold

The stores' errors (`consistency.errors`, here as `store`, and the CP store's
FutureRevision) and the world model's (`world_model.errors`, here as `model`)
pass through the service unchanged; `api.problems` maps all three families to
problem types in one table.
"""

from __future__ import annotations

from typing import Any

from consistency import errors as store
from consistency.cp_store import FutureRevision
from world_model import errors as model

__all__ = ["ActionsForUnknown", "BatchTooLarge", "ChangesTrimmed", "ClockDrift", "EntityDeleted", "EntityIncomplete",
           "EntityMissing", "EntityNotFound", "FutureRevision", "InvalidInput", "InvalidToken", "ManifestInvalid",
           "ModelUnavailable", "NotYetConsistent", "EdgeStale", "NotOnEdge", "QuotaExceeded", "ServiceError", "SlowConsumer", "TokenUnknown",
           "ValueTooDeep", "ValueTooLarge", "model", "store"]


class ServiceError(Exception):
    """Base of every error the service raises on purpose."""


class InvalidInput(ServiceError, ValueError):
    """A request document is malformed or out of range; nothing was changed."""

    def __init__(self, detail: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.errors = errors


class ClockDrift(InvalidInput):
    def __init__(self, detail: str, index: int, drift_ms: int, max_drift_ms: int) -> None:
        super().__init__(detail)
        self.index, self.drift_ms, self.max_drift_ms = index, drift_ms, max_drift_ms


class ValueTooDeep(InvalidInput):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the value nests arrays and objects more than {limit} deep, the most that is stored")
        self.limit = limit


class ValueTooLarge(InvalidInput):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the value is {size} bytes as JSON; at most {limit} is stored")
        self.limit = limit


class BatchTooLarge(ServiceError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"{size} observations; at most {limit} per request")
        self.limit = limit


class InvalidToken(ServiceError, ValueError):
    pass


class TokenUnknown(ServiceError):
    def __init__(self, detail: str, region: str) -> None:
        super().__init__(detail)
        self.region = region


class NotYetConsistent(ServiceError):
    def __init__(self, detail: str, token: str, behind: list[str]) -> None:
        super().__init__(detail)
        self.token, self.behind = token, behind


class EntityNotFound(ServiceError, LookupError):
    pass


class EntityDeleted(EntityNotFound):
    def __init__(self, detail: str, deleted_hlc: str, deleted_by: str) -> None:
        super().__init__(detail)
        self.deleted_hlc, self.deleted_by = deleted_hlc, deleted_by  # the tombstone's stamp and node


class ChangesTrimmed(ServiceError):
    """The changes log no longer holds every entry after `after`: re-read the entities, then
    subscribe from now."""

    def __init__(self, after: str, oldest: str) -> None:
        super().__init__(f"the changes log was trimmed past position {after} (its oldest entry is now {oldest}): "
                         "entries after it are gone; read the entities again and subscribe from now")
        self.after, self.oldest = after, oldest


class SlowConsumer(ServiceError):
    """A subscriber's position is more than `max_lag` entries behind the changes log's head;
    the subscription ends rather than buffer without bound."""

    def __init__(self, position: str, lag: int, max_lag: int) -> None:
        super().__init__(f"position {position} is {lag} entries behind this replica's changes log, more than "
                         f"the {max_lag} a subscriber may fall behind; read the entities again and subscribe "
                         "from now")
        self.position, self.lag, self.max_lag = position, lag, max_lag


class EntityMissing(ServiceError, LookupError):
    def __init__(self, entity: str) -> None:
        super().__init__(f"no observations of entity {entity!r} on this replica")
        self.entity = entity


class ActionsForUnknown(ServiceError, LookupError):
    def __init__(self, entities: list[str]) -> None:
        super().__init__(f"actions for entities not in the query: {entities}")
        self.entities = entities


class EntityIncomplete(ServiceError, ValueError):
    def __init__(self, entity: str, missing: list[str]) -> None:
        super().__init__(f"entity {entity!r} lacks numeric {', '.join(missing)}")
        self.entity, self.missing = entity, missing


class ManifestInvalid(ServiceError, ValueError):
    pass


class ModelUnavailable(ServiceError):
    """No model is loaded yet (none published, or its blob was refused)."""

    retry_after_s = 5.0


class QuotaExceeded(ServiceError):
    """Over a rate quota; `retry_after_s` is None when waiting cannot help (a batch over the burst)."""

    def __init__(self, detail: str, quota: str, limit: float, retry_after_s: float | None) -> None:
        super().__init__(detail)
        self.quota, self.limit, self.retry_after_s = quota, limit, retry_after_s


class EdgeStale(ServiceError):
    """An edge node cannot show it reflects the core recently enough for this request: its last
    moment in step with the core (`as_of_ms`, None: never yet) is more than `max_staleness_ms` ago."""

    def __init__(self, stale_ms: int | None, max_staleness_ms: int, as_of_ms: int | None, retry_after_s: float) -> None:
        since = "has not been in step with the core yet" if stale_ms is None else \
            f"was last in step with the core {stale_ms} ms ago"
        super().__init__(f"this edge {since}; the answer may be at most {max_staleness_ms} ms stale "
                         "(ask for more with ?max_staleness_ms=, or ask the core)")
        self.stale_ms, self.max_staleness_ms, self.as_of_ms = stale_ms, max_staleness_ms, as_of_ms
        self.retry_after_s = retry_after_s


class NotOnEdge(ServiceError):
    """A request for a world, or an entity outside the prefix, that this edge node does not hold."""
