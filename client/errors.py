"""The service's problem types as exceptions: catch what you can act on.

    WorldstateError                 any problem+json answer (`status`, `type`, `detail`, `body`)
    ├── NotFound                    404 not-found, unknown-world, unknown-entity
    ├── Conflict                    412 precondition-failed: `current_revision` won
    ├── Unauthorized / Forbidden    401 / 403
    ├── InvalidRequest              other 4xx: fix the request, do not retry it
    ├── RateLimited                 429: retry after `retry_after`
    ├── Unavailable                 503: nothing was changed; retry after `retry_after`
    ├── OutcomeUnknown              504 outcome-unknown: may or may not have been applied
    └── NotYetConsistent            504 not-yet-consistent: the replica has not caught up
"""

from __future__ import annotations

from typing import Any


class WorldstateError(Exception):
    def __init__(self, status: int, body: dict[str, Any], retry_after: float | None = None) -> None:
        self.status = status
        self.body = body
        self.type = str(body.get("type", ""))
        self.detail = str(body.get("detail", ""))
        self.retry_after = retry_after
        super().__init__(f"{status} {self.type}: {self.detail}")


class NotFound(WorldstateError):
    pass


class Conflict(WorldstateError):
    @property
    def current_revision(self) -> int:
        return int(self.body.get("current_revision", 0))


class Unauthorized(WorldstateError):
    pass


class Forbidden(WorldstateError):
    pass


class InvalidRequest(WorldstateError):
    pass


class RateLimited(WorldstateError):
    pass


class Unavailable(WorldstateError):
    pass


class OutcomeUnknown(WorldstateError):
    pass


class NotYetConsistent(WorldstateError):
    pass


_BY_TYPE: dict[str, type[WorldstateError]] = {
    "precondition-failed": Conflict, "not-found": NotFound, "unknown-world": NotFound,
    "unknown-entity": NotFound, "unauthorized": Unauthorized, "forbidden": Forbidden,
    "rate-limited": RateLimited, "outcome-unknown": OutcomeUnknown, "not-yet-consistent": NotYetConsistent,
}


def error_for(status: int, body: Any, retry_after: str | None) -> WorldstateError:
    """The exception for one non-2xx answer."""
    doc = body if isinstance(body, dict) else {"detail": str(body)}
    slug = str(doc.get("type", "")).removeprefix("/problems/")
    cls = _BY_TYPE.get(slug)
    if cls is None:
        cls = Unavailable if status == 503 else OutcomeUnknown if status == 504 else \
            InvalidRequest if 400 <= status < 500 else WorldstateError
    try:
        after = float(retry_after) if retry_after is not None else None
    except ValueError:
        after = None
    return cls(status, doc, after)
