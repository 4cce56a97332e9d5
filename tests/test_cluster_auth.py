"""A clustered region with backend auth (`worldstate up --ap-shards 3 --ap-replicas 1 --backend-auth`):
every node takes only the ACL user, replicas log in to their masters as it, the launcher's own
connections use it, and the store reaches the cluster through `redis+cluster://user:password@...`.
Real redis-server nodes in cluster mode, started by the launcher; no API node, no etcd."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.cluster
from redis.backoff import NoBackoff
from redis.retry import Retry

from consistency.ap_backend import credentials
from consistency.ap_store import ReplicaStore
from deploy.launcher import Deployment, Topology
from deploy.redis_cluster import RedisCluster, wait_role
from learn.federated import region_urls
from learn.updates import Update, announce, announced, forget
from tests.ap_helpers import SCENARIO_S, ob

ONCE = Retry(NoBackoff(), 0)  # redis-py retries a refused login 10 times with backoff by default


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    d = Deployment(Topology(etcd_members=0, regions=1, api=False, ap_shards=3, ap_replicas=1, backend_auth=True,
                            run_dir=tmp_path_factory.mktemp("cluster-auth")))
    d.start()  # forms the cluster through the launcher's authenticated admin connections
    try:
        yield d
    finally:
        d.stop()


def _cluster(d: Deployment) -> RedisCluster:
    return d.clusters["r1"]


def test_every_node_refuses_clients_without_the_password(secured: Deployment) -> None:
    creds = secured.credentials
    assert creds is not None
    for node in _cluster(secured).nodes:
        with pytest.raises(redis.AuthenticationError):  # NOAUTH: the default user is off
            redis.Redis(port=node.port, retry=ONCE).ping()
        with pytest.raises(redis.AuthenticationError, match="invalid username-password"):  # WRONGPASS
            redis.Redis(port=node.port, username=creds.redis_user, password="not-the-password", retry=ONCE).ping()
        assert redis.Redis(port=node.port, username=creds.redis_user, password=creds.redis_password).ping()
    # A cluster client without credentials cannot even read the slot map.
    with pytest.raises((redis.RedisError, redis.cluster.RedisClusterException)):
        redis.cluster.RedisCluster(host="127.0.0.1", port=_cluster(secured).nodes[0].port, retry=ONCE)


def test_replicas_log_in_to_their_masters(secured: Deployment) -> None:
    c = _cluster(secured)
    replicas = c.nodes[c.masters:]
    assert len(replicas) == 3
    for node in replicas:
        wait_role(node, "slave", 30)  # role slave and master_link_status up, asked as the ACL user
        with node.admin() as r:
            assert r.info("replication")["master_link_status"] == "up"
    assert sorted(n.role() for n in c.nodes) == ["master"] * 3 + ["slave"] * 3


def test_the_store_works_through_the_authenticated_url_and_no_password_is_shown(secured: Deployment) -> None:
    c, creds = _cluster(secured), secured.credentials
    assert creds is not None
    url = c.client_store_url
    assert url.startswith(f"redis+cluster://{creds.redis_user}:") and creds.redis_password in url
    assert credentials(url) == {"username": creds.redis_user, "password": creds.redis_password}
    shown = json.dumps(secured.describe())
    assert creds.redis_password not in shown and secured.describe()["redis"] == {"r1": c.store_url}

    async def scenario() -> None:
        s = ReplicaStore(url, "r1", "node-r1")
        try:
            # With replicas, every write waits for one (WAIT 1): accepted means a replica logged
            # in to its master and holds it.
            res = await s.ingest([ob(f"e{i}", f"auth-{i}", x=float(i)) for i in range(30)])
            assert res.accepted == [True] * 30
            e = await s.get_entity("w", "e7")
            assert e is not None and e.fields["x"].value == 7.0
            assert (await s.ingest([ob("e7", "auth-7", x=7.0)])).accepted == [False]  # a duplicate
        finally:
            await s.close()

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_S))
    # Every master holds some partitions' keys, read as the ACL user.
    holding = []
    for node in c.current_masters():
        with node.admin() as r:
            holding.append(r.dbsize())
    assert len(holding) == 3 and all(n > 0 for n in holding)


def test_learning_announcements_go_through_the_cluster_url(secured: Deployment) -> None:
    """`worldstate up --ap-shards N --learn`: a learner announces its update in its region's cluster, and
    the aggregator reads and forgets it there, through the same authenticated `redis+cluster://` URL."""
    c = _cluster(secured)
    url = c.client_store_url
    update = Update("ab" * 32, "lab", "r1", "cd" * 32, 3, 100, 0.5, "learner-r1", created_ms=1)
    announce(url, update)
    assert announced(url, "lab") == [update]
    # The aggregator's --region-redis, where a cluster URL's startup nodes are commas too.
    regions = region_urls(f"r1={url},r2=redis://127.0.0.1:1/0")
    assert regions == {"r1": url, "r2": "redis://127.0.0.1:1/0"}
    assert forget(regions["r1"], "lab", [update.hash]) == 1 and announced(url, "lab") == []
    # Without the password the region is unreachable this round (a RedisError), not a crash.
    with pytest.raises(redis.RedisError):
        announced(c.store_url, "lab", timeout_s=1.0)


def test_the_launcher_hands_every_role_the_credentialed_cluster_url(tmp_path: Path) -> None:
    """Planned, not started: API nodes, learners and the aggregator all get `redis+cluster://user:password@`."""
    d = Deployment(Topology(etcd_members=1, regions=2, run_dir=tmp_path, ap_shards=3, backend_auth=True, learn=True))
    assert d.credentials is not None
    urls = {r: c.client_store_url for r, c in d.clusters.items()}
    assert all(credentials(u) == {"username": d.credentials.redis_user, "password": d.credentials.redis_password}
               for u in urls.values())
    for region, api in d.api.items():
        assert api.env["WORLDSTATE_REDIS_URL"] == urls[region]
    learner = next(p for p in d.learners if p.region == "r1")
    assert learner.argv[learner.argv.index("--from-log") + 1] == urls["r1"]
    assert learner.argv[learner.argv.index("--announce") + 1] == urls["r1"]
    aggregator = next(p for p in d.learners if p.region is None)
    assert region_urls(aggregator.argv[aggregator.argv.index("--region-redis") + 1]) == urls
