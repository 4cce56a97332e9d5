"""Serializable reads answer while any etcd member lives; linearizable ones still refuse.

A serializable read is a member's local read: with two of three members
paused (SIGSTOP) the third can still answer it. A paused member accepts TCP
but never answers, so a client that waits on whichever member its channel
picks waits out the bound and answers 503; these tests catch that.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest

from consistency import cp_keys
from consistency.cp_members import hedge
from consistency.cp_store import CPStore
from consistency.errors import Unavailable
from deploy.launcher import Deployment, EtcdMember, wait_until
from tests.conftest import run

READS = 8  # each one may draw a paused member: enough draws that one would hit it


def _applied(member: EtcdMember, revision: int) -> bool:
    try:
        return int(member.status()["header"]["revision"]) >= revision
    except OSError:
        return False


@dataclass
class Written:
    url: str
    revision: int
    kept: EtcdMember  # the member left running: it has applied the write

    def pause_others(self, cluster: Deployment) -> None:
        for m in cluster.etcd:
            if m is not self.kept:
                m.pause()


@pytest.fixture
def written(healthy_cluster: Deployment, api: httpx.Client, world: str) -> Written:
    """A key written, and the member to keep running: not the leader, and it has applied the
    write, so its local answer is the value written. `healthy_cluster` resumes what is paused."""
    url = f"/v1/worlds/{world}/params/sr/k"
    w = api.put(url, json={"v": 1})
    assert w.status_code in (200, 201), w.text
    revision = w.json()["revision"]
    leader = healthy_cluster.etcd_leader()
    assert leader is not None
    kept = next(m for m in healthy_cluster.etcd if m is not leader)
    assert wait_until(lambda: _applied(kept, revision), 10), "the member kept never applied the write"
    return Written(url, revision, kept)


def test_serializable_reads_answer_with_two_of_three_members_paused(written: Written, healthy_cluster: Deployment,
                                                                    api: httpx.Client, world: str) -> None:
    url, revision = written.url, written.revision
    written.pause_others(healthy_cluster)
    answers = [api.get(url, params={"consistency": "serializable"}) for _ in range(READS)]
    statuses = [r.status_code for r in answers]
    assert statuses == [200] * READS, [f"{r.status_code} {r.text[:120]}" for r in answers]
    for r in answers:
        body = r.json()
        assert body["value"] == {"v": 1} and body["revision"] == revision
        assert body["consistency"] == "serializable" and r.headers["x-worldstate-consistency"] == "serializable"

    listing = api.get(f"/v1/worlds/{world}/params", params={"prefix": "sr/", "consistency": "serializable"})
    assert listing.status_code == 200, listing.text
    assert listing.json()["consistency"] == "serializable"
    assert [(i["key"], i["value"]) for i in listing.json()["items"]] == [("sr/k", {"v": 1})]

    # Without a quorum a linearizable read refuses rather than answer what may be stale.
    lin = api.get(url)
    assert lin.status_code == 503, lin.text
    assert lin.headers["content-type"] == "application/problem+json"


def test_store_serializable_reads_with_two_of_three_members_paused(written: Written, healthy_cluster: Deployment,
                                                                   world: str) -> None:
    """The same through CPStore itself, on a client connected to every member before the pause
    (as a running node's is), and the linearizable read still refused."""
    prefix = cp_keys.params_prefix(world, "sr/")

    async def reads() -> tuple[list[tuple[int, str]], Exception | None]:
        store: CPStore = healthy_cluster.cp_store()
        await store.connect()
        try:
            for _ in range(6):  # every member answers once: the channel holds a connection to each
                await store.list(prefix, consistency="serializable")
            written.pause_others(healthy_cluster)
            got = []
            for _ in range(READS):
                got += [(e.mod_revision, e.consistency)
                        for e in (await store.list(prefix, consistency="serializable")).entries]
            try:
                await store.list(prefix)
                refused = None
            except Exception as e:  # noqa: BLE001 - what was raised is the assertion's subject
                refused = e
            return got, refused
        finally:
            await store.close()

    got, refused = run(reads())
    assert got == [(written.revision, "serializable")] * READS, got
    assert isinstance(refused, Unavailable), repr(refused)


# --- the hedge itself, on stand-in calls (no etcd) ------------------------------------

class Unanswered(Exception):
    pass


Call = Callable[[float], Awaitable[str]]


def _hedge(first: Call, others: list[Call]) -> str:
    return run(hedge(first, others, deadline=time.monotonic() + 30, delay_s=0.01,
                     unanswered=lambda e: isinstance(e, Unanswered)))


def _paused(name: str, cancelled: list[str]) -> Call:
    async def call(timeout: float) -> str:
        try:
            await asyncio.sleep(timeout)  # accepts the call, never answers
        except asyncio.CancelledError:
            cancelled.append(name)
            raise
        raise Unanswered(name)
    return call


def _answers(value: str) -> Call:
    async def call(timeout: float) -> str:
        return value
    return call


def _fails(error: Exception) -> Call:
    async def call(timeout: float) -> str:
        raise error
    return call


def test_hedge_takes_a_live_member_and_cancels_the_paused() -> None:
    cancelled: list[str] = []
    got = _hedge(_paused("rr", cancelled), [_paused("m1", cancelled), _answers("m2"), _paused("m3", cancelled)])
    assert got == "m2" and sorted(cancelled) == ["m1", "m3", "rr"]


def test_hedge_after_a_quick_failure_and_raises_a_refusal_at_once() -> None:
    cancelled: list[str] = []
    assert _hedge(_fails(Unanswered("refused")), [_answers("m1")]) == "m1"
    with pytest.raises(ValueError, match="compacted"):  # a refusal is every member's answer
        _hedge(_fails(ValueError("compacted")), [_paused("m1", cancelled)])
    with pytest.raises(Unanswered):
        _hedge(_fails(Unanswered("a")), [_fails(Unanswered("b")), _fails(Unanswered("c"))])
    assert cancelled == []
