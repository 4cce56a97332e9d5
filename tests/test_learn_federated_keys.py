"""The announcements of federated updates (ws:fed:{world}) are a region's own: replication does not
ship them and housekeeping (trim to the stream cap, dedup expiry) does not touch them. On real Redis."""
from __future__ import annotations

import asyncio

from deploy.launcher import Deployment
from learn.updates import Update, announce, announced, fed_key
from tests.ap_helpers import (SCENARIO_S, client_url, fresh, ob, quiesce, raw, replicas,  # noqa: F401 (fixtures)
                              replication, stream_len)


def test_announcements_survive_housekeeping_and_stay_in_their_region(fresh: Deployment) -> None:  # noqa: F811
    update = Update("a" * 64, "w", "r1", "b" * 64, 3, 40, 1.25, "learner@r1")

    async def scenario() -> None:
        async with replication(fresh, stream_maxlen=2) as reps:
            announce(client_url(fresh, "r1"), update)
            for i in range(10):
                await reps["r1"].home.ingest([ob(f"e{i}", f"ev{i}", x=i)])
            await quiesce(reps)
            for rep in reps.values():
                await rep.housekeep()
            assert stream_len(fresh, "r1") <= 2, "the cap trimmed the stream (housekeeping ran)"

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_S))
    assert announced(client_url(fresh, "r1"), "w") == [update]
    for region in ("r2", "r3"):
        with raw(fresh, region) as r:
            assert not r.exists(fed_key("w")), f"shipped to {region}"
