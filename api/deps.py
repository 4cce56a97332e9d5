"""Dependencies shared by the routers."""

from __future__ import annotations

from typing import Literal, get_args

from fastapi import Query, Request

from service.node import Node

Consistency = Literal["linearizable", "serializable"]
CONSISTENCIES = get_args(Consistency)
ConsistencyQuery = Query(
    "linearizable",
    description="linearizable (default) or serializable: a possibly stale local read, labelled as such, "
    "that still answers without quorum",
)


async def node(request: Request) -> Node:
    return request.app.state.node  # type: ignore[no-any-return]
