"""The AP tier's key layout in each region's Redis.

The Lua scripts in consistency/lua/ derive the same names (single-instance Redis
per region, so keys need not be declared to the script).

    ws:stream                 this replica's delta log (entries it originated): d = the observation
                              as msgpack [world, entity, event id, source, field, order key, register, ...]
                              with p = its counter slot's total; or c = [world, entity, source] with
                              n = a compensation total
    ws:stream:trimmed         newest stream id removed by trimming
    ws:consumers              registered consumer of ws:stream (a learner, learn/log.py) -> last id it
                              consumed; trimming below the peers' floor never passes the smallest
                              (consistency/ap_consumers.py, lua/trim.lua), the cap still may
    ws:changes                this replica's changes log (consistency/ap_changes.py), local, never shipped:
                              one entry per merge that changed what readers see, w = world, e = entity,
                              k = order key, o = origin region, then f:<field> = register per visible
                              winning field (f:~deleted for a tombstone); capped by XADD MAXLEN ~
    ws:changes:maxlen         STRING the cap of ws:changes (WORLDSTATE_CHANGES_MAXLEN, set by the node)
    ws:applied                origin region -> last stream id applied from it
    ws:acked                  peer region -> last id of ws:stream the peer applied
    ws:clock                  the greatest order key merged here; a node starts its HLC past it
    ws:dedup:<minute>         LIST "<seen key>\\n<event id>" first seen in that minute (the dedup window)
    ws:dedup:minutes          ZSET the minutes that have a list
    ws:e:{world}:{entity}     HASH  t:<field> order key "<hlc>|<node>" (compared as bytes),
                                    f:<field> msgpack [value, source, event_id, observed_at_ms],
                                    (t:~deleted / f:~deleted: the tombstone of a delete, consistency/ap_entity.py)
                                    p:<source>@<region> / n:<source>@<region> counter slots
    ws:s:{world}:{entity}     HASH  event id -> "<region that accepted it>|<source>" ("!" appended once compensated)
    ws:b:<bucket>             SET   entity keys in one of 256 buckets (first byte of sha1 of the key)
    ws:w:{world}              ZSET  entity ids, for paging
    ws:worlds                 SET   worlds with observations
    ws:quota:<key id>:<kind>  STRING a rate quota's theoretical arrival time (us), expiring when idle
    ws:fed:{world}            HASH  federated updates announced by this region's learners: update hash -> JSON
                                    record (learn/updates.py); local, never shipped, never trimmed
"""

from __future__ import annotations

import re
import zlib

from consistency.errors import InvalidKey

STREAM = "ws:stream"
TRIMMED = "ws:stream:trimmed"
CONSUMERS = "ws:consumers"
CHANGES = "ws:changes"
CHANGES_MAXLEN = "ws:changes:maxlen"
APPLIED = "ws:applied"
ACKED = "ws:acked"
CLOCK = "ws:clock"
WORLDS = "ws:worlds"
BUCKETS = 256

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
    return f"ws:e:{world}:{entity}"


def seen_key(world: str, entity: str) -> str:
    return f"ws:s:{world}:{entity}"


def bucket_key(bucket: int) -> str:
    return f"ws:b:{bucket:02x}"


def quota_key(bucket: str) -> str:
    """A rate quota's counter; replica-local, never replicated (the stream carries observations only)."""
    return f"ws:quota:{bucket}"


def world_index(world: str) -> str:
    return f"ws:w:{world}"


def parse_entity_key(ekey: str) -> tuple[str, str]:
    _, _, world, entity = ekey.split(":", 3)
    return world, entity

