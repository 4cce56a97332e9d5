"""Observation documents: validation and conversion into the AP store's records."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from api.problems import Problem
from consistency import ap_keys
from consistency.ap_store import Observation

MAX_SAFE_INT = 2**53 - 1  # beyond it, JSON readers in other languages lose precision
def _full(pattern: str) -> str:
    return f"^{pattern}$"  # pydantic's pattern searches; names must match whole


FieldName = Annotated[str, StringConstraints(pattern=_full(ap_keys.FIELD_RE.pattern))]
FieldValue = Annotated[bool, Field(strict=True)] | int | float | Annotated[str, StringConstraints(max_length=1024)] | None


class ObservationIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    event_id: str = Field(pattern=_full(ap_keys.EVENT_RE.pattern), description="unique per event; a replay is a duplicate")
    entity: str = Field(pattern=_full(ap_keys.ENTITY_RE.pattern))
    source: str = Field(pattern=_full(ap_keys.SOURCE_RE.pattern), description="sensor or agent that observed it")
    observed_at: float | None = Field(None, ge=0, description="unix time in seconds, by the source's clock")
    fields: dict[FieldName, FieldValue] = Field(default_factory=dict, max_length=64)


_ONE = TypeAdapter(ObservationIn)
_MANY = TypeAdapter(list[ObservationIn])


def _errors(e: ValidationError) -> list[dict[str, Any]]:
    return [{"loc": list(x["loc"]), "msg": x["msg"], "type": x["type"]} for x in e.errors()[:50]]


def parse(body: Any, world: str, max_batch: int, now_ms: int, max_drift_ms: int) -> list[Observation]:
    """One observation (an object) or a batch (an array) into store records, or a 4xx Problem."""
    if isinstance(body, list):
        if len(body) > max_batch:
            raise Problem("batch-too-large", f"{len(body)} observations; at most {max_batch} per request",
                          limit=max_batch)
        if not body:
            raise Problem("validation-error", "the batch is empty")
        try:
            items = _MANY.validate_python(body)
        except ValidationError as e:
            raise Problem("validation-error", "observation failed validation", errors=_errors(e)) from None
    else:
        try:
            items = [_ONE.validate_python(body)]
        except ValidationError as e:
            raise Problem("validation-error", "observation failed validation", errors=_errors(e)) from None
    out = []
    for i, ob in enumerate(items):
        for name, value in ob.fields.items():
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_SAFE_INT:
                raise Problem("validation-error", f"observation {i}: field {name!r} is beyond +-2^53",
                              errors=[{"loc": [i, "fields", name], "msg": "integer too large", "type": "range"}])
        at_ms = None if ob.observed_at is None else int(ob.observed_at * 1000)
        if at_ms is not None and at_ms - now_ms > max_drift_ms:
            raise Problem("clock-drift", f"observation {i} ({ob.event_id}) is {at_ms - now_ms} ms ahead of this "
                          f"node's clock; at most {max_drift_ms} ms is accepted", index=i,
                          drift_ms=at_ms - now_ms, max_drift_ms=max_drift_ms)
        out.append(Observation(world, ob.entity, ob.event_id, ob.source, ob.fields, at_ms))
    return out
