"""Every operation of the API as a Call or a Flow (see _transport): the one place that
knows paths, bodies, headers and retry rules, for the sync and the async client alike."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from client._transport import Call, Flow, Sleep, backoff, precondition
from client._transport import world_path as _w
from client.errors import Conflict, OutcomeUnknown, RateLimited, Unavailable
from client.types import (DeleteReceipt, Entity, Manifest, Param, ParamItem, ParamList, Physics, Plan, Prediction,
                          Receipt, Surprise)

D = TypeVar("D")


def _doc(r: httpx.Response) -> Any:
    return r.json()


def _pick(cls: type[D]) -> Callable[[httpx.Response], D]:
    """Build `cls` from the answer's members of the same names."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return lambda r: cls(**{k: v for k, v in r.json().items() if k in names})


def _revision(r: httpx.Response) -> int:
    return int(r.json()["revision"])


def _consistency(serializable: bool) -> dict[str, str] | None:
    return {"consistency": "serializable"} if serializable else None


# -- CP params and physics ------------------------------------------------------------------

def get_param(world: str, key: str, serializable: bool = False) -> Call[Param]:
    return Call("GET", f"{_w(world)}/params/{key}", lambda r: Param.from_doc(r.json()),
                params=_consistency(serializable))


def put_param(world: str, key: str, value: Any, if_revision: int | None, create_only: bool) -> Call[int]:
    return Call("PUT", f"{_w(world)}/params/{key}", _revision, json=value,
                headers=precondition(if_revision, create_only))


def delete_param(world: str, key: str, if_revision: int | None) -> Call[None]:
    return Call("DELETE", f"{_w(world)}/params/{key}", lambda r: None, headers=precondition(if_revision))


def list_params(world: str, prefix: str, serializable: bool, page: int = 1000) -> Flow[ParamList]:
    """Every page, all pinned to the first page's snapshot."""
    params: dict[str, Any] = {"prefix": prefix, "limit": page, **(_consistency(serializable) or {})}
    items: list[ParamItem] = []
    while True:
        doc = yield Call("GET", f"{_w(world)}/params", _doc, params=dict(params))
        items += [ParamItem(i["key"], i["value"], i["revision"], i.get("create_revision", 0), i.get("version", 0))
                  for i in doc["items"]]
        if doc["next"] is None:
            return ParamList(doc["revision"], items)
        params.update(doc["next"])


def update(world: str, key: str, fn: Callable[[Any], Any], attempts: int) -> Flow[int]:
    """Read, write fn(value) with If-Match; on a lost race (412, and only then) wait a random,
    growing moment and start again. Without the wait a writer far from the leader lost ten
    races in a row to a closer one and gave up (seen under load)."""
    for attempt in range(attempts):
        current: Param = yield get_param(world, key)
        try:
            revision: int = yield put_param(world, key, fn(current.value), current.revision, False)
            return revision
        except Conflict:
            if attempt == attempts - 1:
                raise
            yield Sleep(backoff(attempt, base=0.005, cap=0.2))
    raise AssertionError("unreachable")


def get_physics(world: str, serializable: bool) -> Call[Physics]:
    return Call("GET", f"{_w(world)}/physics", lambda r: Physics.from_doc(r.json()), params=_consistency(serializable))


def put_physics(world: str, physics: Mapping[str, Any] | Physics, if_revision: int | None,
                create_only: bool) -> Call[int]:
    doc = physics.constants() if isinstance(physics, Physics) else dict(physics)
    return Call("PUT", f"{_w(world)}/physics", _revision, json=doc, headers=precondition(if_revision, create_only))


# -- worlds -------------------------------------------------------------------------------

def create_world(world: str, meta: Mapping[str, Any] | None, if_revision: int | None,
                 create_only: bool) -> Call[int]:
    return Call("PUT", _w(world), _revision, json=dict(meta or {}), headers=precondition(if_revision, create_only))


def worlds() -> Flow[list[str]]:
    names: list[str] = []
    params: dict[str, Any] = {"limit": 1000}
    while True:
        page = yield Call("GET", "/v1/worlds", _doc, params=dict(params))
        names += page["worlds"]
        if page["next"] is None:
            return names
        params["after"] = page["next"]["after"]


# -- the AP tier ----------------------------------------------------------------------------

def _resending(call: Call[D], attempts: int) -> Flow[D]:
    """Send a write that is safe to repeat (it carries event ids) until it is answered:
    after 429 / 503 wait Retry-After (or a backoff), and after an unknown outcome send the
    same ids again: whatever was applied comes back as a duplicate. A 429 without
    Retry-After means the batch alone is over the quota: resending cannot help."""
    for attempt in range(attempts):
        try:
            return (yield call)  # type: ignore[no-any-return]
        except (RateLimited, Unavailable, OutcomeUnknown) as e:
            if attempt == attempts - 1 or (isinstance(e, RateLimited) and e.retry_after is None):
                raise
            yield Sleep(backoff(attempt, e.retry_after))
    raise AssertionError("unreachable")


def stamp(observations: Sequence[Mapping[str, Any]], source: str) -> list[dict[str, Any]]:
    """The batch as it will be sent every time: each observation gets its event id now, once."""
    return [{"source": source, **o, "event_id": o.get("event_id") or uuid.uuid4().hex} for o in observations]


def observe(world: str, batch: list[dict[str, Any]], attempts: int) -> Flow[Receipt]:
    return _resending(Call("POST", f"{_w(world)}/observations", lambda r: Receipt.from_doc(r.json()), json=batch),
                      attempts)


def delete_entity(world: str, entity: str, event_id: str, attempts: int) -> Flow[DeleteReceipt]:
    def parse(r: httpx.Response) -> DeleteReceipt:
        d = r.json()
        return DeleteReceipt(event_id, d["token"], bool(d.get("duplicate")), d.get("replica", ""), d.get("hlc", ""))

    return _resending(Call("DELETE", f"{_w(world)}/entities/{quote(entity, safe='')}", parse,
                           params={"event_id": event_id}), attempts)


def _reads(token: str | None, wait_ms: int | None) -> dict[str, Any]:
    return {k: v for k, v in (("token", token), ("wait_ms", wait_ms)) if v is not None}


def get_entity(world: str, entity: str, token: str | None, wait_ms: int | None) -> Call[Entity]:
    return Call("GET", f"{_w(world)}/entities/{quote(entity, safe='')}", lambda r: Entity.from_doc(r.json()),
                params=_reads(token, wait_ms) or None)


def list_entities(world: str, token: str | None, limit: int | None, page: int = 1000) -> Flow[list[Entity]]:
    params: dict[str, Any] = {"limit": min(page, limit or page), **_reads(token, None)}
    out: list[Entity] = []
    while True:
        doc = yield Call("GET", f"{_w(world)}/entities", _doc, params=dict(params))
        out += [Entity.from_doc({"world": world, **i}) for i in doc["items"]]
        if doc["next"] is None or (limit is not None and len(out) >= limit):
            return out[:limit] if limit is not None else out
        params["after"] = doc["next"]["after"]


# -- the world model ------------------------------------------------------------------------

def body_of(**members: Any) -> dict[str, Any]:
    return {k: v for k, v in members.items() if v is not None}


def predict(world: str, body: dict[str, Any], serializable: bool) -> Call[Prediction]:
    return Call("POST", f"{_w(world)}/predict", lambda r: Prediction.from_doc(r.json()), json=body,
                params=_consistency(serializable))


def surprise(world: str, body: dict[str, Any], serializable: bool) -> Call[Surprise]:
    return Call("POST", f"{_w(world)}/surprise", _pick(Surprise), json=body, params=_consistency(serializable))


def plan(world: str, body: dict[str, Any], serializable: bool) -> Call[Plan]:
    return Call("POST", f"{_w(world)}/plan", _pick(Plan), json=body, params=_consistency(serializable))


def manifest(serializable: bool) -> Call[Manifest]:
    return Call("GET", "/v1/models/manifest", lambda r: Manifest.from_doc(r.json()), params=_consistency(serializable))


def publish(doc: Mapping[str, Any], if_revision: int | None, create_only: bool) -> Call[int]:
    return Call("PUT", "/v1/models/manifest", _revision, json=dict(doc), headers=precondition(if_revision, create_only))


def serving() -> Call[dict[str, Any]]:
    return Call("GET", "/v1/models/current", _doc)

