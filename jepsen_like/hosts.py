"""Hosts and the links between them: where a process runs, and what a network mode lets the nemesis do.

Kept apart from cluster.py so that netns.py (which cluster.py builds) and the
nemesis can name hosts without importing the cluster: cluster -> netns -> hosts,
never back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol

from .proxy import Rule

_HOST_NUMBER = re.compile(r"(\d+)$")
# A node of a region's Redis Cluster: ``redis-r2-0`` runs on its region's host, n2 (not "n0").
_SHARD_NODE = re.compile(r"^redis-r(\d+)-\d+$")


def host_of(process: str) -> str:
    """``etcd2`` / ``redis-r2`` / ``api-r2`` / ``redis-r2-0`` (a cluster node) -> ``n2``."""
    m = _SHARD_NODE.match(process) or _HOST_NUMBER.search(process)
    if not m:
        raise ValueError(f"no host for process {process!r}")
    return f"n{m.group(1)}"


class Links(Protocol):
    """The network between processes, as partitions and link faults change it.

    Implemented by `proxy.Net` (a TCP proxy per link, no privileges) and
    `netns.NetnsNet` (namespaces and iptables, root). Pairs are process names
    (src, dst); a rule acts on the bytes src sends to dst.
    """

    def set(self, pairs: Iterable[tuple[str, str]], rule: Rule) -> None: ...

    def heal(self) -> None:
        """Every link back to `PASS_RULE`."""

    def active(self) -> dict[str, str]:
        """"src->dst" -> rule mode, for every link not passing (recorded with the heal)."""

    def alias(self, raw: str, name: str) -> None:
        """Name an etcd member by the id its peers send (proxy mode needs it to tell dialers apart)."""

    def describe(self) -> dict[str, object] | None:
        """What results.json records about the network (netns: namespaces, addresses); None: nothing."""

    def close(self) -> None: ...
