"""The AP tier's key layout in each region's Redis: P partitions (docs/ap-cluster.md §2).

An entity lives in partition `partition(world, entity)`; every key of partition p begins with
`tag(p)` = `ws:{pXX}` (XX: p in two hex digits), written T below, so on a Redis Cluster all of a
partition's keys share one slot. The Lua scripts in consistency/lua/ derive the names of their
partition from KEYS[1]'s tag. Per partition:

    T:stream                  the partition's delta log (entries this replica originated): d = the
                              observation as msgpack [world, entity, event id, source, field, order key,
                              register, ...] with p = its counter slot's total; or c = [world, entity,
                              source] with n = a compensation total
    T:stream:trimmed          newest id removed from T:stream by trimming
    T:consumers               registered consumer of the streams (a learner, learn/log.py) -> last id of
                              T:stream it consumed; trimming below the peers' floor never passes the
                              smallest (consistency/ap_consumers.py, lua/trim.lua), the cap still may
    T:changes                 the partition's changes log (consistency/ap_changes.py), local, never
                              shipped: one entry per merge that changed what readers see, w = world,
                              e = entity, k = order key, o = origin region, then f:<field> = register
                              per visible winning field (f:~deleted for a tombstone); capped by XADD MAXLEN ~
    T:changes:maxlen          STRING the cap of T:changes (WORLDSTATE_CHANGES_MAXLEN, set by the node)
    T:applied                 origin region -> last id of *its* T:stream applied here
    T:acked                   peer region -> last id of T:stream the peer applied
    T:fence                   peer region -> last id of T:stream the shipper read for it (or that anti-
                              entropy found, after dumping the buckets it ships), written after the
                              read and waited for on a cluster with replicas (ap_logs.fence): what
                              ships is on a replica first
    T:master                  STRING run id of the master this partition was last recovered on after a
                              failover (consistency/ap_failover.py): another run id serving it now means
                              its master changed or restarted, and what it acknowledged may be gone
    T:clock                   the greatest order key merged in the partition; a node starts its HLC past
                              the greatest of all partitions'
    T:dedup:<minute>          LIST "<seen key>\\n<event id>" first seen in that minute (the dedup window)
    T:dedup:minutes           ZSET the minutes that have a list
    T:e:{world}:{entity}      HASH  t:<field> order key "<hlc>|<node>" (compared as bytes),
                                    f:<field> msgpack [value, source, event_id, observed_at_ms],
                                    (t:~deleted / f:~deleted: the tombstone of a delete, consistency/ap_entity.py)
                                    p:<source>@<region> / n:<source>@<region> counter slots
    T:s:{world}:{entity}      HASH  event id -> "<region that accepted it>|<source>" ("!" appended once compensated)
    T:b:<x>                   SET   entity keys in one of 16 buckets (first hex digit of sha1 of the key)
    T:w:{world}               ZSET  entity ids, for paging (a listing merges the P of them)
    T:worlds                  SET   worlds with observations in the partition

Outside the partitions, each its own slot:

    ws:layout                 STRING {"partitions": P, "version": 2}, written at first start; a node refuses
                              a Redis with another, or with the old unpartitioned keys (ws:stream)
    ws:quota:<key id>:<kind>  STRING a rate quota's theoretical arrival time (us), expiring when idle
    ws:fed:{world}            HASH  federated updates announced by this region's learners: update hash -> JSON
                              record (learn/updates.py); local, never shipped, never trimmed
"""

from __future__ import annotations

import re
import zlib

from consistency.errors import InvalidKey

ENTITY_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
EVENT_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
SOURCE_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
FIELD_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
REGION_RE = re.compile(r"[a-z0-9-]{1,32}")
CONSUMER_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
STREAM_ID_RE = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")


# The partitioned layout (docs/ap-cluster.md §2): every key of partition p begins with tag(p), so on a
# Redis Cluster all of them hash to one slot and one script call may touch them together.
# Never change PARTITIONS or partition(): every region must put an entity in the same partition
# (replication pairs partition with partition), and a replica records P in LAYOUT at first start.
PARTITIONS = 64
BUCKETS_PER_PARTITION = 16  # anti-entropy buckets: first hex digit of sha1 of the entity key
LAYOUT = "ws:layout"  # STRING {"partitions": P, "version": 2}, its own slot
LAYOUT_VERSION = 2


def share(total: int) -> int:
    """One partition's part of a replica-wide cap: a replica then holds about what one log held."""
    return -(-total // PARTITIONS)


def partition(world: str, entity: str) -> int:
    """The partition of an entity: crc32, not hash(), so every process and region agrees."""
    return zlib.crc32(f"{world}\n{entity}".encode()) % PARTITIONS


def tag(p: int) -> str:
    """The prefix of every key of partition `p`, e.g. `ws:{p07}`: the braces are the cluster hash tag.
    No user string can hold `{` or `}` (ENTITY_RE, EVENT_RE, SOURCE_RE, FIELD_RE, world names)."""
    return f"ws:{{p{p:02x}}}"


def stream(p: int) -> str:
    return f"{tag(p)}:stream"


def trimmed(p: int) -> str:
    return f"{tag(p)}:stream:trimmed"


def consumers(p: int) -> str:
    return f"{tag(p)}:consumers"


def changes(p: int) -> str:
    return f"{tag(p)}:changes"


def changes_maxlen(p: int) -> str:
    return f"{tag(p)}:changes:maxlen"


def applied(p: int) -> str:
    return f"{tag(p)}:applied"


def acked(p: int) -> str:
    return f"{tag(p)}:acked"


def fence(p: int) -> str:
    """Peer -> the last stream id the shipper read for it and saw on a replica (ap_logs.fence)."""
    return f"{tag(p)}:fence"


def master_mark(p: int) -> str:
    return f"{tag(p)}:master"


def clock(p: int) -> str:
    return f"{tag(p)}:clock"


def dedup_minutes(p: int) -> str:
    return f"{tag(p)}:dedup:minutes"


def worlds(p: int) -> str:
    return f"{tag(p)}:worlds"


def entity_key_in(p: int, world: str, entity: str) -> str:
    return f"{tag(p)}:e:{world}:{entity}"


def seen_key_in(p: int, world: str, entity: str) -> str:
    return f"{tag(p)}:s:{world}:{entity}"


def bucket_key_in(p: int, bucket: int) -> str:
    return f"{tag(p)}:b:{bucket:x}"


def world_index_in(p: int, world: str) -> str:
    return f"{tag(p)}:w:{world}"


def check(pattern: re.Pattern[str], what: str, value: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidKey(f"{what} {value!r} must match {pattern.pattern}")
    return value


def entity_key(world: str, entity: str) -> str:
    return entity_key_in(partition(world, entity), world, entity)


def seen_key(world: str, entity: str) -> str:
    return seen_key_in(partition(world, entity), world, entity)


def quota_key(bucket: str) -> str:
    """A rate quota's counter; replica-local, never replicated (the stream carries observations only)."""
    return f"ws:quota:{bucket}"


def parse_entity_key(ekey: str) -> tuple[str, str]:
    """(world, entity) of an entity key `T:e:{world}:{entity}` (neither holds a colon)."""
    _, _, _, world, entity = ekey.split(":", 4)
    return world, entity

