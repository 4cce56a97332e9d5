"""The Python client of worldstate: `Client` (sync) and `AsyncClient` (asyncio), on httpx,
the typed results they return and the errors they raise (client.errors)."""

from client.aio import AsyncClient
from client.errors import (ChangesTrimmed, Compacted, Conflict, Forbidden, InvalidRequest, ModelUnavailable, NotFound,
                           NotYetConsistent, OutcomeUnknown, RateLimited, SlowConsumer, Unauthorized, Unavailable,
                           WorldstateError)
from client.observer import AsyncObserver, Observer
from client.sync import Client
from client.types import (DeleteReceipt, Entity, EntityChange, FieldValue, Manifest, Param, ParamChange, ParamItem,
                          ParamList, Physics, Plan, Prediction, Receipt, Surprise, Trajectory)

__all__ = ["AsyncClient", "AsyncObserver", "ChangesTrimmed", "Client", "Compacted", "Conflict", "DeleteReceipt",
           "Entity", "EntityChange", "FieldValue", "Forbidden", "InvalidRequest", "Manifest", "ModelUnavailable",
           "NotFound", "NotYetConsistent", "Observer", "OutcomeUnknown", "Param", "ParamChange", "ParamItem",
           "ParamList", "Physics", "Plan", "Prediction", "RateLimited", "Receipt", "SlowConsumer", "Surprise",
           "Trajectory", "Unauthorized", "Unavailable", "WorldstateError"]
