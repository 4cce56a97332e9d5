"""The partitioned AP layout is recorded in each replica (ws:layout), and a node refuses a Redis
holding another: the unpartitioned keys of an older version, or another number of partitions.
There is no migration: run directories are disposable (docs/ap-cluster.md, step 3)."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis

from consistency import ap_keys as K
from consistency.ap_store import ReplicaStore
from consistency.errors import LayoutMismatch
from deploy.launcher import Deployment
from service.config import Settings
from service.node import Node
from tests.ap_helpers import fresh, ob, replicas  # noqa: F401 (fixtures)


def test_a_fresh_replica_is_marked_with_the_layout(fresh: Deployment) -> None:  # noqa: F811
    async def scenario() -> None:
        store = ReplicaStore(fresh.redis["r1"].url, "r1", "node-r1")
        assert (await store.ingest([ob("a", "e1", x=1)])).accepted == [True]
        await store.close()

    asyncio.run(scenario())
    raw = redis.Redis(port=fresh.redis["r1"].port).get(K.LAYOUT)
    assert raw is not None and json.loads(raw) == {"partitions": 64, "version": 2}


@pytest.mark.parametrize("old", ["unpartitioned", "other-partitions"])
def test_a_node_refuses_a_redis_of_another_layout(fresh: Deployment, old: str) -> None:  # noqa: F811
    r = redis.Redis(port=fresh.redis["r1"].port)
    if old == "unpartitioned":  # what an older worldstate left: its one stream, no ws:layout
        r.xadd("ws:stream", {"d": b"x", "p": 1})
    else:
        r.set(K.LAYOUT, json.dumps({"partitions": 16, "version": 2}))
    before = sorted(r.keys("*"))
    settings = Settings(region="r1", node_id="api-r1", redis_url=fresh.redis["r1"].url, peers={})

    async def scenario() -> None:
        node = Node(settings)
        with pytest.raises(LayoutMismatch) as refused:
            await node.start()  # before anything else: etcd is not even asked
        assert ("unpartitioned" in str(refused.value)) == (old == "unpartitioned"), refused.value
        assert fresh.redis["r1"].url in str(refused.value)
        with pytest.raises(LayoutMismatch):  # and a store used without a node writes nothing either
            await node.ap.ingest([ob("a", "e1", x=1)])
        await node.ap.close()

    asyncio.run(scenario())
    assert sorted(r.keys("*")) == before
