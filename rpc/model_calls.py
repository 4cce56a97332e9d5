"""Predict, Surprise and Plan over gRPC: the HTTP body in, validated by the same schemas
(`api.schemas`), the same answer document out, each as a google.protobuf.Struct.

A call the client cancels stops its surprise or plan work, as a closed HTTP connection does.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from api.schemas import PlanIn, PredictIn, SurpriseIn, plan_document, predict_document, surprise_document
from rpc import worldstate_pb2 as pb
from rpc.values import fill_struct, from_struct
from service.errors import InvalidInput
from service.node import Node

__all__ = ["plan", "predict", "surprise"]

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def _query(model: type[M], request: pb.ModelQuery) -> M:
    try:
        return model.model_validate(from_struct(request.query, "query"))
    except ValidationError as e:
        errors = [{"loc": ["query", *e_["loc"]], "msg": e_["msg"], "type": e_["type"]} for e_ in e.errors()]
        raise InvalidInput("request failed validation", errors) from None


def _answer(doc: dict[str, Any]) -> pb.ModelAnswer:
    out = pb.ModelAnswer()
    fill_struct(out.answer, doc)
    return out


async def _cancellable(query: Callable[[threading.Event], Awaitable[T]]) -> T:
    cancel = threading.Event()  # read by the model thread
    try:
        return await query(cancel)
    except asyncio.CancelledError:
        cancel.set()
        raise


async def predict(node: Node, request: pb.ModelQuery, consistency: Any) -> pb.ModelAnswer:
    body = _query(PredictIn, request)
    world = request.world
    a = await node.queries.predict(world, body.horizon, body.entities, body.actions, consistency)
    return _answer(predict_document(world, body.horizon, a))


async def surprise(node: Node, request: pb.ModelQuery, consistency: Any) -> pb.ModelAnswer:
    body = _query(SurpriseIn, request)
    world = request.world
    observed = {ent: [f.model_dump() for f in frames] for ent, frames in body.observed.items()}
    a = await _cancellable(lambda cancel: node.queries.surprise(world, observed, body.entities, consistency, cancel))
    return _answer(surprise_document(world, body.observed, a))


async def plan(node: Node, request: pb.ModelQuery, consistency: Any) -> pb.ModelAnswer:
    body = _query(PlanIn, request)
    world = request.world
    goal = (body.goal.x, body.goal.y, body.goal.radius)
    a = await _cancellable(lambda cancel: node.queries.plan(world, body.entity, goal, body.horizon, body.budget,
                                                            body.entities, consistency, cancel))
    return _answer(plan_document(world, body.entity, a))
