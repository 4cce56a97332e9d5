"""The service's problem types as exceptions: catch what you can act on.

    WorldstateError                 any problem+json answer (`status`, `type`, `detail`, `body`)
    ├── NotFound                    404 not-found, unknown-world, unknown-entity
    ├── Conflict                    412 precondition-failed: `current_revision` won
    ├── Unauthorized / Forbidden    401 / 403
    ├── InvalidRequest              other 4xx: fix the request, do not retry it (`errors` lists each field)
    ├── Compacted                   410 compacted: history before `compact_revision` is gone
    ├── ChangesTrimmed              an entity stream's position was trimmed: read the state again
    ├── SlowConsumer                an entity stream dropped this reader for falling behind
    ├── RateLimited                 429: retry after `retry_after`
    ├── Unavailable                 503: nothing was changed; retry after `retry_after`
    │   └── ModelUnavailable        503 model-unavailable: no model published yet
    ├── OutcomeUnknown              504 outcome-unknown: may or may not have been applied
    └── NotYetConsistent            504 not-yet-consistent: the replica has not caught up

A connection that fails is raised as one of these too, with `status` 0:
Unavailable when nothing can have been applied (the connection never opened,
or the request was a read), OutcomeUnknown when a write was sent and no
answer came.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ChangesTrimmed", "Compacted", "Conflict", "Forbidden", "InvalidRequest", "ModelUnavailable",
           "NotFound", "NotYetConsistent", "OutcomeUnknown", "RateLimited", "SlowConsumer", "Unauthorized",
           "Unavailable", "WorldstateError", "error_for"]


class WorldstateError(Exception):
    """A problem+json answer (or a failed connection, `status` 0)."""

    def __init__(self, status: int, body: dict[str, Any], retry_after: float | None = None) -> None:
        self.status = status
        self.body = body
        self.type = str(body.get("type", ""))
        self.detail = str(body.get("detail", ""))
        self.retry_after = retry_after
        super().__init__(f"{status} {self.type}: {self.detail}")


class NotFound(WorldstateError):
    """No such key, world or entity."""


class Conflict(WorldstateError):
    """A compare-and-swap or create-only write lost; `current_revision` is the key's revision now (0: absent)."""

    @property
    def current_revision(self) -> int:
        return int(self.body.get("current_revision", 0))


class Unauthorized(WorldstateError):
    """The API key is missing, unknown or revoked."""


class Forbidden(WorldstateError):
    """The key's scopes or worlds do not cover the operation."""


class InvalidRequest(WorldstateError):
    """The request is wrong as sent; retrying it unchanged cannot help."""

    @property
    def errors(self) -> list[dict[str, Any]]:
        return list(self.body.get("errors", []))


class Compacted(WorldstateError):
    """etcd compacted the history a read or watch needed; continue from `compact_revision`."""

    @property
    def compact_revision(self) -> int:
        return int(self.body.get("compact_revision", 0))


class ChangesTrimmed(WorldstateError):
    """The entity stream no longer holds the position to resume from: read the state, subscribe anew."""


class SlowConsumer(WorldstateError):
    """The entity stream closed because this reader fell too far behind."""


class RateLimited(WorldstateError):
    """Over the key's rate quota; nothing was changed."""


class Unavailable(WorldstateError):
    """A tier (or the node) cannot answer now; nothing was changed."""


class ModelUnavailable(Unavailable):
    """No world model is published, or its blob failed its hash check."""


class OutcomeUnknown(WorldstateError):
    """A write was sent and not answered: read before deciding to write again."""


class NotYetConsistent(WorldstateError):
    """The replica had not applied the write the session's token names within the wait."""


_BY_TYPE: dict[str, type[WorldstateError]] = {
    "precondition-failed": Conflict, "not-found": NotFound, "unknown-world": NotFound,
    "unknown-entity": NotFound, "unauthorized": Unauthorized, "forbidden": Forbidden,
    "rate-limited": RateLimited, "outcome-unknown": OutcomeUnknown, "not-yet-consistent": NotYetConsistent,
    "compacted": Compacted, "changes-trimmed": ChangesTrimmed, "slow-consumer": SlowConsumer,
    "model-unavailable": ModelUnavailable, "unavailable": Unavailable, "replica-full": Unavailable,
    "too-many-connections": Unavailable,
}
_BY_STATUS: dict[int, type[WorldstateError]] = {
    401: Unauthorized, 403: Forbidden, 404: NotFound, 410: Compacted, 412: Conflict, 429: RateLimited,
    503: Unavailable, 504: OutcomeUnknown,
}


def error_for(status: int, body: Any, retry_after: str | float | None = None) -> WorldstateError:
    """The exception for one problem: by its type first, then by its status."""
    doc = body if isinstance(body, dict) else {"detail": str(body)}
    slug = str(doc.get("type", "")).removeprefix("/problems/")
    cls = _BY_TYPE.get(slug) or _BY_STATUS.get(status)
    if cls is None:
        cls = InvalidRequest if 400 <= status < 500 else WorldstateError
    try:
        after = float(retry_after) if retry_after is not None else None
    except ValueError:
        after = None
    return cls(status, doc, after)
