"""Observation documents: validation and conversion into the AP store's records.

Validation is hand-written rather than a pydantic model: at tens of thousands
of observations a second it is a third of the node's work, and this is about
twice as fast. `api.schemas.ObservationIn` describes the same document for
OpenAPI from these limits and patterns.
"""

from __future__ import annotations

import math
from typing import Any

from consistency import ap_keys
from consistency.ap_store import Observation
from service.errors import BatchTooLarge, ClockDrift, InvalidInput

MAX_SAFE_INT = 2**53 - 1  # beyond it, JSON readers in other languages lose precision
# observed_at in seconds whose milliseconds stay a safe integer (the year 287396): 1e308 s
# overflowed into an infinite millisecond count, a 500.
MAX_OBSERVED_AT = MAX_SAFE_INT / 1000
MAX_FIELDS = 64
MAX_STRING = 1024
_KEYS = {"event_id", "entity", "source", "observed_at", "fields"}
# The names' patterns, for documents that describe an observation (OpenAPI).
PATTERNS = {"event_id": ap_keys.EVENT_RE.pattern, "entity": ap_keys.ENTITY_RE.pattern,
            "source": ap_keys.SOURCE_RE.pattern, "field": ap_keys.FIELD_RE.pattern}
# Field names repeat across observations; a name seen valid once skips its regex.
_GOOD_FIELDS: set[str] = set()


class _Invalid(Exception):
    def __init__(self, loc: list[Any], msg: str) -> None:
        self.loc, self.msg = loc, msg


def _name(ob: dict[str, Any], key: str, pattern: Any, i: int) -> str:
    v = ob.get(key)
    if not isinstance(v, str) or not pattern.fullmatch(v):
        raise _Invalid([i, key], f"must be a string matching {pattern.pattern}")
    return v


def _value(v: Any, loc: list[Any]) -> Any:
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, int):
        if abs(v) > MAX_SAFE_INT:
            raise _Invalid(loc, "integer beyond +-2^53")
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise _Invalid(loc, "number must be finite")
        return v
    if isinstance(v, str):
        if len(v) > MAX_STRING:
            raise _Invalid(loc, f"string longer than {MAX_STRING}")
        return v
    raise _Invalid(loc, "must be a number, string, boolean or null")


def _one(ob: Any, i: int, world: str, now_ms: int, max_drift_ms: int) -> Observation:
    if not isinstance(ob, dict):
        raise _Invalid([i], "an observation is a JSON object")
    extra = ob.keys() - _KEYS
    if extra:
        raise _Invalid([i, sorted(extra)[0]], "unknown member")
    event_id = _name(ob, "event_id", ap_keys.EVENT_RE, i)
    entity = _name(ob, "entity", ap_keys.ENTITY_RE, i)
    source = _name(ob, "source", ap_keys.SOURCE_RE, i)
    fields = ob.get("fields", {})
    if not isinstance(fields, dict):
        raise _Invalid([i, "fields"], "must be an object")
    if len(fields) > MAX_FIELDS:
        raise _Invalid([i, "fields"], f"at most {MAX_FIELDS} fields")
    for name, v in fields.items():
        if name not in _GOOD_FIELDS:
            if not ap_keys.FIELD_RE.fullmatch(name):
                raise _Invalid([i, "fields", name], f"field names match {ap_keys.FIELD_RE.pattern}")
            if len(_GOOD_FIELDS) < 10_000:
                _GOOD_FIELDS.add(name)
        if v is not None and type(v) is not float:  # the common case, checked first
            _value(v, [i, "fields", name])
        elif v is not None and not math.isfinite(v):
            raise _Invalid([i, "fields", name], "number must be finite")
    at = ob.get("observed_at")
    at_ms = None
    if at is not None:
        if isinstance(at, bool) or not isinstance(at, (int, float)) or not 0 <= at <= MAX_OBSERVED_AT:
            raise _Invalid([i, "observed_at"], f"unix seconds, a number in [0, {MAX_OBSERVED_AT:.3f}]")
        at_ms = int(at * 1000)
        if at_ms - now_ms > max_drift_ms:
            raise ClockDrift(f"observation {i} ({event_id}) is {at_ms - now_ms} ms ahead of this "
                             f"node's clock; at most {max_drift_ms} ms is accepted", index=i,
                             drift_ms=at_ms - now_ms, max_drift_ms=max_drift_ms)
    return Observation(world, entity, event_id, source, fields, at_ms)


def parse(body: Any, world: str, max_batch: int, now_ms: int, max_drift_ms: int) -> list[Observation]:
    """One observation (an object) or a batch (an array) into store records."""
    items = body if isinstance(body, list) else [body]
    if isinstance(body, list):
        if len(body) > max_batch:
            raise BatchTooLarge(len(body), max_batch)
        if not body:
            raise InvalidInput("the batch is empty")
    try:
        return [_one(ob, i, world, now_ms, max_drift_ms) for i, ob in enumerate(items)]
    except _Invalid as e:
        raise InvalidInput(f"observation {e.loc[0]}: {e.msg}",
                           [{"loc": e.loc, "msg": e.msg, "type": "value_error"}]) from None
