"""The async client against the real deployment: the same calls as the sync one, answered the same."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from client import AsyncClient, Client, Conflict, NotFound
from deploy.launcher import Deployment
from tests.client_cuts import AsyncCutting


async def _eventually(check, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "not true in time"
        await asyncio.sleep(0.02)


def test_async_parity_for_params_worlds_observations_and_entities(cluster: Deployment, world: str) -> None:
    async def scenario() -> None:
        async with AsyncClient(cluster.api["r1"].url, cluster.admin_key) as ws, \
                AsyncClient(cluster.api["r2"].url, cluster.admin_key) as far:
            await ws.create_world(world)
            rev = await ws.put_param(world, "counter", 0)
            with pytest.raises(Conflict) as lost:
                await ws.put_param(world, "counter", 5, if_revision=rev - 1)
            assert lost.value.current_revision == rev
            # Two regions' read-modify-writes interleaved on one loop: none lost.
            await asyncio.gather(*(c.update(world, "counter", lambda v: v + 1) for _ in range(8) for c in (ws, far)))
            assert (await ws.get_param(world, "counter")).value == 16
            assert [i.key for i in (await ws.list_params(world)).items] == ["counter"]
            await ws.delete_param(world, "counter")
            with pytest.raises(NotFound):
                await ws.get_param(world, "counter")

            async with ws.observer(world, batch=2, source="cam") as w:
                ids = [await w.add(f"e{i}", {"x": float(i)}) for i in range(5)]
            assert w.accepted == 5 and len(w.receipts) == 3
            assert (await ws.observe(world, [{"entity": "e0", "event_id": ids[0], "fields": {"x": 0.0}}])
                    ).duplicates == [ids[0]]
            far.token = ws.token  # read-your-writes in the other region
            assert (await far.entity(world, "e4")).values() == {"x": 4.0}
            assert sorted(e.entity for e in await far.entities(world)) == [f"e{i}" for i in range(5)]
            assert world in await ws.worlds()

    asyncio.run(scenario())
    with Client(cluster.api["r1"].url, cluster.admin_key) as sync:  # what the async client wrote, read by the sync one
        assert sync.entity(world, "e2").values() == {"x": 2.0}


def test_async_watch_from_now_resumes_without_gaps_or_duplicates(cluster: Deployment, world: str) -> None:
    """A watch from now whose first connection is cut before its first event completes: the
    reconnect starts where the first connection started (not at the new now), so the
    changes written meanwhile all arrive, once."""
    cut = AsyncCutting("/watch", [45, 200, 130])

    async def scenario() -> tuple[list[int], list[int]]:
        async with AsyncClient(cluster.api["r1"].url, cluster.admin_key, transport=cut) as ws:
            await ws.create_world(world)
            seen: list[int] = []

            async def watch() -> None:
                async with contextlib.aclosing(ws.watch(world, "k/")) as changes:
                    async for change in changes:
                        if change.key == "k/end":
                            return
                        seen.append(change.revision)

            watcher = asyncio.create_task(watch())
            # Answered means the node fixed the stream's start revision: later writes are in it.
            await _eventually(lambda: cut.resumed_from)
            written = [await ws.put_param(world, f"k/{i}", i) for i in range(12)]
            await ws.put_param(world, "k/end", True)
            await asyncio.wait_for(watcher, 60)
            return seen, written

    seen, written = asyncio.run(scenario())
    assert seen == written
    assert len(cut.resumed_from) == 4 and not cut.cuts
