"""The partitioned AP layout is recorded in each replica (ws:layout), and a node refuses a Redis
holding another: the unpartitioned keys of an older version, or another number of partitions.
There is no migration: run directories are disposable (docs/ap-cluster.md, step 3)."""

from __future__ import annotations

import asyncio
import json

import pytest

from consistency import ap_keys as K
from consistency.ap_store import ReplicaStore
from consistency.errors import LayoutMismatch
from deploy.launcher import Deployment
from service.config import Settings
from service.node import Node
from tests.ap_helpers import fresh, keys, ob, raw, replicas, url  # noqa: F401 (fixtures)


def test_a_fresh_replica_is_marked_with_the_layout(fresh: Deployment) -> None:  # noqa: F811
    async def scenario() -> None:
        store = ReplicaStore(url(fresh, "r1"), "r1", "node-r1")
        assert (await store.ingest([ob("a", "e1", x=1)])).accepted == [True]
        await store.close()

    asyncio.run(scenario())
    held = raw(fresh, "r1").get(K.LAYOUT)
    assert held is not None and json.loads(held) == {"partitions": 64, "version": 2}


@pytest.mark.parametrize("old", ["unpartitioned", "other-partitions"])
def test_a_node_refuses_a_redis_of_another_layout(fresh: Deployment, old: str) -> None:  # noqa: F811
    r = raw(fresh, "r1")
    if old == "unpartitioned":  # what an older worldstate left: its one stream, no ws:layout
        r.xadd("ws:stream", {"d": b"x", "p": 1})
    else:
        r.set(K.LAYOUT, json.dumps({"partitions": 16, "version": 2}))
    before = keys(fresh, "r1")
    settings = Settings(region="r1", node_id="api-r1", redis_url=url(fresh, "r1"), peers={})

    async def scenario() -> None:
        node = Node(settings)
        with pytest.raises(LayoutMismatch) as refused:
            await node.start()  # before anything else: etcd is not even asked
        assert ("unpartitioned" in str(refused.value)) == (old == "unpartitioned"), refused.value
        assert url(fresh, "r1") in str(refused.value)
        with pytest.raises(LayoutMismatch):  # and a store used without a node writes nothing either
            await node.ap.ingest([ob("a", "e1", x=1)])
        await node.ap.close()

    asyncio.run(scenario())
    assert keys(fresh, "r1") == before
