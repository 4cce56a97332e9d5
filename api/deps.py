"""Dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from service.node import Node
from service.versioned import CONSISTENCIES, Consistency

__all__ = ["CONSISTENCIES", "Consistency", "ConsistencyQuery", "NodeDep", "node"]

ConsistencyQuery = Query(
    "linearizable",
    description="linearizable (default) or serializable: a possibly stale local read, labelled as such, "
    "that still answers without quorum",
)


async def node(request: Request) -> Node:
    return request.app.state.node  # type: ignore[no-any-return]


NodeDep = Annotated[Node, Depends(node)]
