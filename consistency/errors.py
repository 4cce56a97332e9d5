"""The store errors every tier raises; the API maps each to one problem type."""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error a store raises on purpose."""


class NotFound(StoreError):
    def __init__(self, key: str) -> None:
        super().__init__(f"{key} not found")
        self.key = key


class UnknownWorld(NotFound):
    def __init__(self, world: str) -> None:
        super().__init__(f"world {world}")
        self.world = world


class Conflict(StoreError):
    """A conditional write lost: `current_revision` is the key's mod revision now (0: absent)."""

    def __init__(self, key: str, current_revision: int) -> None:
        super().__init__(f"{key} is at revision {current_revision}")
        self.key = key
        self.current_revision = current_revision


class Unavailable(StoreError):
    """No quorum or no member reachable within the bound; nothing was changed."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class OutcomeUnknown(StoreError):
    """A write was sent but never answered: it may or may not have been applied.

    The caller must read before deciding to try again; the store never retries
    a write itself, because a blindly retried write can apply twice.
    """


class InvalidKey(StoreError, ValueError):
    pass


class Compacted(StoreError):
    """The requested revision is older than etcd's compaction point."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted; the oldest available is {compact_revision}")
        self.compact_revision = compact_revision


class StorageFull(StoreError):
    """etcd refused a write because its space quota is reached (the cluster-wide
    NOSPACE alarm). Nothing was changed and reads still answer; writes stay refused
    until an operator compacts, defragments and disarms the alarm."""


class ReplicaFull(Unavailable):
    """This region's Redis is at maxmemory (noeviction) and refused a write before it
    changed anything. An Unavailable: retried later by whoever retries those (the
    shippers), answered with its own problem type by the API."""

    def __init__(self, message: str, retry_after_s: float = 5.0) -> None:
        super().__init__(message, retry_after_s)



class LayoutMismatch(StoreError):
    """A replica's Redis holds another AP key layout than this node writes (the unpartitioned
    one of an older version, or another number of partitions): the node refuses to start."""
