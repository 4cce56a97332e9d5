"""Failover recovery of a home replica on a Redis Cluster (docs/ap-cluster.md §4, §9).

A cluster master answers a write before its replica has it (unless the store WAITs for one,
WORLDSTATE_AP_ACK_REPLICAS). When it dies and the replica is promoted, or it restarts, what it
acknowledged and had not passed on is gone from home: entity state, seen event ids, counter
increments, and the tail of T:stream, which may now end below ids a peer recorded as applied
(T:applied[home]) or that our own T:acked / T:consumers name.

The signal: the run id of the master serving each partition's slot. A promoted replica, or a
restarted master, is another process with another run id, while a slot map can name the same
host:port before and after a loss (a master killed and restarted before the cluster noticed).
One `CLUSTER SLOTS` and one `INFO server replication` per master a look, nothing per partition
unless a run id changed. The run id a partition was last recovered on is kept in the partition
itself (T:master): a failover while no node ran is still seen at the next start, and a mark lost
with the writes it followed is seen as a change too. A manual failover that lost nothing also
changes it: recovering then finds nothing to do, at the cost of the digests.

Recovery of a partition, in order: raise T:stream's last id past every id anyone recorded of it
(lua/raise_id.lua), so new entries never hide below a peer's applied mark or an offset; set the
changes log's cap again (a plain SET, lost as easily); anti-entropy with every peer, theirs into
ours first (acknowledged writes that reached a peer come back home), then ours into theirs; then
the mark. A peer unreachable, or its shipper paused (a cut link), leaves the mark unset: the
whole recovery runs again at the next look, and every step of it is idempotent. An unreachable
peer's marks cannot be read either: the raise then covers only what the others and our own
offsets say, and the next look raises again once the peer answers.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from consistency import ap_keys as K
from consistency.ap_anti_entropy import anti_entropy
from consistency.ap_positions import ZERO, stream_id
from consistency.ap_store import ALL, ReplicaStore
from consistency.errors import OutcomeUnknown, Unavailable

__all__ = ["FailoverStatus", "FailoverWatch"]
log = logging.getLogger("worldstate.failover")
_FAILED = (Unavailable, OutcomeUnknown, RedisError, OSError, RuntimeError)


def _s(b: bytes | str) -> str:
    return b.decode() if isinstance(b, bytes) else b


@dataclass
class FailoverStatus:
    checks: int = 0
    recoveries: int = 0  # recoveries completed (partitions marked), each of one or more partitions
    partitions_recovered: int = 0
    buckets_from_peers: int = 0  # anti-entropy, peers into home
    buckets_to_peers: int = 0
    raised: dict[int, str] = field(default_factory=dict)  # partition -> its stream's last id after the last raise
    pending: list[int] = field(default_factory=list)  # recovered but not marked: a peer was out of reach
    watched: int = 0  # partitions whose serving master answered at the last look (64 when all is well)
    last_error: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"checks": self.checks, "watched": self.watched, "recoveries": self.recoveries,
                "partitions_recovered": self.partitions_recovered, "pending": self.pending,
                "last_error": self.last_error}


class FailoverWatch:
    """Looks for partitions whose master changed and recovers them (see the module's docstring)."""

    def __init__(self, home: ReplicaStore, peers: list[ReplicaStore],
                 blocked: Callable[[str], bool] = lambda region: False) -> None:
        if not home.cluster:
            raise ValueError("a failover watch needs a home replica on a Redis Cluster")
        self.home = home
        self.peers = peers
        # A peer whose shipper is paused (Replicator: a cut link): its marks are read, but no state is
        # shipped either way until the link is back.
        self.blocked = blocked
        self.status = FailoverStatus()
        self._known: dict[int, str] = {}  # partition -> the run id it is known recovered on

    def settled(self) -> bool:
        """Every partition known recovered on the master serving it at the last look, none pending."""
        return len(self._known) == K.PARTITIONS and not self.status.pending

    def recovered_on(self, p: int) -> str | None:
        """The run id partition p was last recovered (or found recovered) on by this watch."""
        return self._known.get(p)

    async def masters(self) -> dict[int, str]:
        """Partition -> the run id of the master serving its slot now; a partition whose master did not
        answer, or no longer says it is one (a view not yet updated by gossip), is left out."""
        rc: Any = self.home.redis
        await rc.initialize()
        nodes = rc.get_nodes()
        random.shuffle(nodes)
        ranges = None
        for node in nodes:
            try:
                ranges = await node.execute_command("CLUSTER", "SLOTS")
                break
            except (RedisError, OSError):
                continue
        if ranges is None:
            raise Unavailable(f"redis {self.home.region}: no node of the cluster answered CLUSTER SLOTS")
        owners: dict[int, tuple[str, int]] = {}
        for p in ALL:
            slot = rc.keyslot(K.stream(p))
            for lo, hi, master, *_ in ranges:
                if int(lo) <= slot <= int(hi):
                    owners[p] = (_s(master[0]) or "127.0.0.1", int(master[1]))
        run_ids: dict[tuple[str, int], str] = {}
        for host, port in set(owners.values()):
            # The client knows a node by the address it dials: through a proxy (an `advertised>reached`
            # URL) that is not the one CLUSTER SLOTS names, and unmapped, no node would ever be found.
            node = rc.get_node(*rc.nodes_manager.remap_host_port(host, port))
            if node is None:  # a node the client has not met yet: ask the cluster for its map again
                await rc.nodes_manager.initialize()
                node = rc.get_node(*rc.nodes_manager.remap_host_port(host, port))
            if node is None:
                continue
            try:
                info = await node.execute_command("INFO", "server", "replication")
            except (RedisError, OSError):
                continue
            if info.get("role") == "master":
                run_ids[(host, port)] = str(info["run_id"])
        return {p: run_ids[o] for p, o in owners.items() if o in run_ids}

    async def check(self) -> list[int]:
        """One look: recover every partition whose master is not the one it was last recovered on;
        returns the partitions recovered (marked or pending)."""
        self.status.checks += 1
        now = await self.masters()
        self.status.watched = len(now)
        changed = [p for p, rid in now.items() if self._known.get(p) != rid]
        if not changed:
            return []
        marks = await self.home._each(lambda pipe, p: pipe.get(K.master_mark(p)), changed)
        todo = []
        for p in changed:
            if isinstance(marks[p], bytes) and _s(marks[p]) == now[p]:
                self._known[p] = now[p]  # recovered already (by us earlier, or another node of the region)
            else:
                todo.append(p)
        if todo:
            await self.recover(todo, now)
        return todo

    async def recover(self, parts: list[int], run_ids: dict[int, str]) -> None:
        home = self.home
        reachable, complete = [], True
        targets = dict.fromkeys(parts, ZERO)
        for peer in self.peers:
            try:
                got = (await peer.applied(home.region, parts)).get(home.region, {})
            except _FAILED as e:
                complete = False
                self.status.last_error = f"{peer.region}: {type(e).__name__}: {e}"
                continue
            if self.blocked(peer.region):  # its marks count; shipping state to it waits for the link
                complete = False
            else:
                reachable.append(peer)
            for p, sid in got.items():
                if stream_id(targets[p]) < stream_id(sid):
                    targets[p] = sid
        calls = [([K.stream(p), K.acked(p), K.consumers(p)], [targets[p]]) for p in parts]
        for p, answer in zip(parts, await home._call_many("raise_id", calls)):
            if isinstance(answer, Exception):
                raise answer
            self.status.raised[p] = _s(answer)
        if home.changes_maxlen is not None:
            await home._each(lambda pipe, p: pipe.set(K.changes_maxlen(p), str(home.changes_maxlen)), parts)
        for peer in reachable:
            try:
                for p in parts:
                    self.status.buckets_from_peers += await anti_entropy(peer, home, p)
                    self.status.buckets_to_peers += await anti_entropy(home, peer, p)
            except _FAILED as e:
                complete = False
                self.status.last_error = f"{peer.region}: {type(e).__name__}: {e}"
        if complete:
            self.status.recoveries += 1
            self.status.partitions_recovered += len(parts)
            await home._each(lambda pipe, p: pipe.set(K.master_mark(p), run_ids[p]), parts)
            self._known.update({p: run_ids[p] for p in parts})
        self.status.pending = sorted(set(self.status.pending) - set(parts) | (set() if complete else set(parts)))
        log.info("failover recovery of %s: %d partitions, last ids raised to %s, %s", home.region, len(parts),
                 {p: self.status.raised[p] for p in parts[:4]}, "done" if complete else "pending (a peer out of reach)")
