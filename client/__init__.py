"""The Python client of worldstate: `Client` (sync, on httpx) and the errors it raises."""

from client.errors import (Conflict, Forbidden, InvalidRequest, NotFound, NotYetConsistent, OutcomeUnknown,
                           RateLimited, Unauthorized, Unavailable, WorldstateError)
from client.sync import Client, Param, Receipt

__all__ = ["Client", "Conflict", "Forbidden", "InvalidRequest", "NotFound", "NotYetConsistent", "OutcomeUnknown",
           "Param", "RateLimited", "Receipt", "Unauthorized", "Unavailable", "WorldstateError"]
