"""Where a region's AP replica lives: one Redis, or a Redis Cluster (docs/ap-cluster.md §2, §4).

The choice is the URL's: `redis://host:port/db` is one Redis (today's path, untouched);
`redis+cluster://host:port[,host:port...]` names a cluster's startup nodes, from which redis-py's
asyncio `RedisCluster` discovers the rest. `ReplicaStore(..., cluster=True)` also forces a cluster
for a plain `redis://` URL naming one node of it.

A node reached at another address than the one it advertises (CLUSTER SLOTS), behind a proxy
or a NAT, is written `advertised>reached`: `redis+cluster://10.0.0.5:6379>127.0.0.1:40001,...`
dials 127.0.0.1:40001 as a startup node and wherever the cluster names 10.0.0.5:6379 (redis-py's
`address_remap`). A node the URL does not list is dialed where it says it is.

On a cluster, script calls go through `ClusterScripts`: redis-py's cluster pipeline refuses
EVALSHA, and a `WAIT` must follow the writes on the connection that sent them, so the calls are
grouped per master and each group is written as one pipeline on one connection of that master.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import traceback
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, NodesManager, PipelineCommand, RedisCluster
from redis.exceptions import (AskError, ClusterDownError, MovedError, NoScriptError, RedisError, SlotNotCoveredError,
                              TryAgainError)

from consistency.errors import OutcomeUnknown, Unavailable

__all__ = ["CLUSTER_SCHEME", "ClusterScripts", "cluster_client", "cluster_url", "credentials", "is_cluster_url",
           "remapped_nodes", "single_client", "startup_nodes", "transport_race"]

log = logging.getLogger("worldstate.ap_backend")


def transport_race(e: BaseException) -> bool:
    """redis-py 8.1's asyncio connection, written to just as another task drops it (a cluster node
    killed under load), raises AttributeError or TypeError from its own code instead of
    ConnectionError (redis/redis-py#3546, #4287; seen here as `'NoneType' object has no attribute
    'writelines'` under jepsen_like's shard nemesis). A lost connection as far as a read goes."""
    if not isinstance(e, (AttributeError, TypeError)):
        return False
    frames = traceback.extract_tb(e.__traceback__)
    return any(f.filename.replace("\\", "/").endswith("redis/asyncio/connection.py") for f in frames)
CLUSTER_SCHEME = "redis+cluster"
# Redirections a call may meet while the slot map moves (failover, resharding): each costs a
# map refresh and a resend of the redirected calls only. A script is idempotent (event ids
# dedupe), so resending a call whose redirection proved it did not run is safe.
_REDIRECTS = 5
# A partition whose slot is being migrated answers ASK or TRYAGAIN until the move is over; its
# calls are resent for this long (at most) before they answer Unavailable.
_MIGRATION_WAIT_S = 2.0


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme == CLUSTER_SCHEME


Address = tuple[str, int]
_ADDRESS = re.compile(r"([^\s:>,/@]*):([0-9]{1,5})")  # host:port, host may be empty (127.0.0.1)
REMAP = ">"  # advertised>reached


def _address(text: str, item: str) -> Address:
    m = _ADDRESS.fullmatch(text)
    if m is None or not 0 < int(m.group(2)) < 65536:
        # the item only, never the whole URL: its user part may hold a password
        raise ValueError(f"redis+cluster URL: node {item!r} is not HOST:PORT or ADVERTISED_HOST:PORT>HOST:PORT")
    return m.group(1) or "127.0.0.1", int(m.group(2))


def remapped_nodes(url: str) -> list[tuple[Address, Address]]:
    """Each node of a `redis+cluster://` (or plain `redis://h:p`) URL as (advertised, reached):
    the same address unless written `advertised>reached`. ValueError, saying which node, if malformed."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    if is_cluster_url(url) and (parts.path not in ("", "/", "/0") or parts.query or parts.fragment):
        raise ValueError("redis+cluster URL: only /0 may follow the node list (a cluster has one database)")
    out: list[tuple[Address, Address]] = []
    for item in netloc.split(","):
        if REMAP in item:
            advertised, _, reached = item.partition(REMAP)
            out.append((_address(advertised, item), _address(reached, item)))
        elif ":" in item:
            out.append((_address(item, item),) * 2)
        else:  # redis://host with no port, as before
            out.append(((item or "127.0.0.1", 6379),) * 2)
    seen: dict[Address, Address] = {}
    for advertised, reached in out:
        if seen.setdefault(advertised, reached) != reached:
            raise ValueError(f"redis+cluster URL: node {advertised[0]}:{advertised[1]} is remapped to two addresses")
    return out


def credentials(url: str) -> dict[str, str]:
    """`username`/`password` of `redis+cluster://user:password@h:p,h:p` (percent-decoded), as redis-py's
    keywords: every node of a cluster takes the same ACL user, so one pair serves the startup nodes and
    every node discovered from them. Empty when the URL carries none."""
    parts = urlsplit(url)
    out = {}
    if parts.username:
        out["username"] = unquote(parts.username)
    if parts.password:
        out["password"] = unquote(parts.password)
    return out


def startup_nodes(url: str) -> list[Address]:
    """The addresses to dial first, of `redis+cluster://h:p,h:p` (a remapped node's reached one)
    or of a plain `redis://h:p` URL."""
    return [reached for _, reached in remapped_nodes(url)]


def cluster_url(nodes: Mapping[Address, Address] | Sequence[Address]) -> str:
    """The `redis+cluster://` URL of these nodes: a list of addresses, or advertised -> reached."""
    pairs = nodes.items() if isinstance(nodes, Mapping) else [(n, n) for n in nodes]
    return "redis+cluster://" + ",".join(
        f"{a[0]}:{a[1]}" if a == r else f"{a[0]}:{a[1]}{REMAP}{r[0]}:{r[1]}" for a, r in pairs)


def single_client(url: str, timeout_s: float, max_connections: int) -> aioredis.Redis:
    """One Redis. A connection idle for a second is PINGed before use, so a Redis restart is
    noticed before a write is sent on a dead socket (whose outcome would be unknown).
    A blocking pool: past `max_connections` a command waits up to `timeout_s` for a free
    connection. redis-py's default pool refuses at once past 100, which at 128 concurrent
    HTTP requests failed about one in five with "Too many connections"."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout_s, socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s, health_check_interval=1)
    return aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes it


def cluster_client(url: str, timeout_s: float, max_connections: int) -> RedisCluster:
    """A RedisCluster client over the URL's startup nodes; it follows MOVED/ASK for plain commands
    and its own pipelines (which ClusterScripts does not use for scripts). ValueError for a bad URL."""
    nodes = remapped_nodes(url)
    remap = {a: r for a, r in nodes if a != r}
    rc = RedisCluster(startup_nodes=[ClusterNode(h, p) for _, (h, p) in nodes], **credentials(url),
                      socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                      max_connections=max_connections, health_check_interval=1,
                      address_remap=(lambda address: remap.get(address, address)) if remap else None)
    if remap:
        _remap_moved(rc)
    return rc


class _RemappingNodes(NodesManager):
    """redis-py 8.1 remaps the addresses CLUSTER SLOTS names but not the one a MOVED answer names
    (redis/redis-py#3382): after a failover, its plain commands and pipelines would record the new
    master where it says it is and dial it there, past the proxy. This remaps a redirection's
    address before redis-py records it. (An ASK answer to a plain command, met only while a slot
    migrates, is still looked up unremapped by redis-py: resharding through a proxy is untested.)"""

    __slots__ = ()  # the same layout as NodesManager's, so a client's manager can take this class

    async def move_slot(self, e: AskError | MovedError) -> None:
        e.host, e.port = self.remap_host_port(e.host, e.port)
        await super().move_slot(e)


def _remap_moved(rc: RedisCluster) -> None:
    # RedisCluster builds its NodesManager itself and NodesManager has __slots__ (no method can be
    # set on one instance): this client's manager becomes the remapping subclass.
    rc.nodes_manager.__class__ = _RemappingNodes


class _NotSent(ConnectionError):
    """A pipeline that failed before any of it was written."""


def _sent(e: BaseException) -> bool:
    """Whether a pipeline that raised `e` had been written: it had if the failure came while reading
    answers. Seen with redis-py 8.1.0's asyncio cluster client during a slot move: a connection
    closed under a task that was opening it (most likely its topology refresh closing connections
    in the background), failing with an AttributeError on the closed socket's writer before any of
    the pipeline was sent (docs/ap-cluster.md §9)."""
    return any(f.name in ("read_response", "parse_response", "_read_response")
               for f in traceback.extract_tb(e.__traceback__))


class ClusterScripts:
    """Script calls on a Redis Cluster, one pipeline per master; after a master's writes, `WAIT
    ack_replicas` on the same connection (fewer replicas in time: those calls' outcome is unknown)."""

    def __init__(self, rc: RedisCluster, region: str, ack_replicas: int | None, wait_ms: int) -> None:
        self.rc = rc
        self.region = region
        self._ack_replicas = ack_replicas
        self.wait_ms = wait_ms
        self._stale = False

    async def ack_replicas(self) -> int:
        """The replicas a write waits for: as configured, else 1 when the cluster has any replica.
        Asked of CLUSTER NODES, not the slot map: Redis 7.0 leaves out of CLUSTER SLOTS a replica that
        has synced nothing yet (offset 0), which every replica of a fresh cluster is."""
        if self._ack_replicas is None:
            await self.rc.initialize()
            listing = await self.rc.get_random_node().execute_command("CLUSTER", "NODES")
            text = listing.decode() if isinstance(listing, bytes) else str(listing)
            roles = [set(line.split()[2].split(",")) for line in text.splitlines() if line.strip()]
            self._ack_replicas = 1 if any("slave" in r for r in roles) else 0
        return self._ack_replicas

    async def run(self, sha: str, source: str, calls: Sequence[tuple[list[str], list[Any]]], *,
                  write: bool) -> list[Any]:
        """EVALSHA each (keys, args) on the master of its keys' slot; answers in order, errors as values."""
        await self.rc.initialize()
        if self._stale:
            self._stale = False
            await self.rc.nodes_manager.initialize()
        wait_for = await self.ack_replicas() if write else 0
        out: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        migration_ends = asyncio.get_running_loop().time() + _MIGRATION_WAIT_S
        for attempt in itertools.count():
            groups: dict[str, tuple[ClusterNode, list[int]]] = {}
            for j in todo:
                try:
                    node = self.rc.get_node_from_key(calls[j][0][0])
                except SlotNotCoveredError as e:  # no master for it now (mid-failover): this call is not sent
                    out[j] = e
                    continue
                groups.setdefault(node.name, (node, []))[1].append(j)
            results = await asyncio.gather(*(self._pipeline(node, sha, calls, js, wait_for)
                                             for node, js in groups.values()), return_exceptions=True)
            retry: list[int] = []  # redirected or refused before running: safe to send again
            missing: dict[str, list[int]] = {}
            refresh = migrating = False
            for (node, js), got in zip(groups.values(), results):
                if isinstance(got, _NotSent):  # nothing of this group was written: send it again
                    log.warning("%s; sending its %d calls again", got, len(js))
                    refresh = True
                    retry += js
                    continue
                if isinstance(got, BaseException):
                    # a master gone: the next call asks the cluster for its slot map again
                    self._stale = True
                answers = [got] * len(js) if isinstance(got, BaseException) else got
                for j, a in zip(js, answers):
                    if isinstance(a, NoScriptError):  # a restarted or promoted node forgot it: nothing ran
                        missing.setdefault(node.name, []).append(j)
                        retry.append(j)
                    elif isinstance(a, (MovedError, ClusterDownError)):
                        refresh = True
                        retry.append(j)
                    elif isinstance(a, (AskError, TryAgainError)):
                        # Its slot is being migrated. Not followed with ASKING: a script run on the
                        # importing node would merge into the keys not moved yet as if they were
                        # absent. Wait for the move to end (common.lua refuses the migrating side).
                        refresh = migrating = True
                        retry.append(j)
                    else:
                        out[j] = a
            waited_out = asyncio.get_running_loop().time() >= migration_ends
            if not retry or (attempt >= _REDIRECTS and (not migrating or waited_out)):
                for j in retry:  # every answer it got said it did not run
                    out[j] = Unavailable(f"redis {self.region}: the cluster kept redirecting a call"
                                         + (" (its partition was being migrated)" if migrating else ""))
                break
            for name, js in missing.items():
                node = self.rc.get_node(node_name=name)
                try:
                    if node is not None:
                        await node.execute_command("SCRIPT", "LOAD", source)
                except (RedisError, OSError) as e:  # those calls never ran: report, do not resend
                    for j in js:
                        out[j] = e
                        retry.remove(j)
            if refresh:
                await self.rc.nodes_manager.initialize()
                await asyncio.sleep(0.05 * min(attempt, 4))
            todo = retry
        return out

    async def _pipeline(self, node: ClusterNode, sha: str, calls: Sequence[tuple[list[str], list[Any]]],
                        js: list[int], wait_for: int) -> list[Any]:
        commands: list[PipelineCommand] = []
        for j in js:
            keys, args = calls[j]
            commands.append(PipelineCommand(j, "EVALSHA", sha, len(keys), *keys, *args))
        if wait_for:
            commands.append(PipelineCommand(-2, "WAIT", wait_for, self.wait_ms))
        try:
            await node.execute_pipeline(commands)
        except AttributeError as e:
            if _sent(e):
                raise
            raise _NotSent(f"redis {self.region}: a connection to {node.name} was closed under the call: {e}") from e
        answers = [c.result for c in commands if c.position >= 0]
        if wait_for:
            held = commands[-1].result
            if isinstance(held, BaseException) or int(held) < wait_for:
                # Applied on the master, maybe not on a replica a failover would promote: not a success.
                unknown = OutcomeUnknown(f"redis {self.region}: {held} of {wait_for} replicas acknowledged "
                                         f"the write within {self.wait_ms} ms on {node.name}")
                answers = [a if isinstance(a, BaseException) else unknown for a in answers]
        return answers
