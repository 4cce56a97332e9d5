"""The partitioned key layout (docs/ap-cluster.md §2): partition() is part of the data format.

Every region must put an entity in the same partition, and a replica's data is laid out by it,
so its values are pinned here: a change that moves any of them is a layout change, not a refactor."""

from __future__ import annotations

import zlib

import pytest

from consistency import ap_keys as K

# (world, entity) -> partition, computed once with zlib.crc32 and never to change
PINNED = {("w", "a"): 3, ("w", "e0"): 33, ("lab", "rover"): 59, ("bench", "body0"): 60,
          ("bench", "body999"): 3, ("w", "x" * 128): 42, ("a.b_c-d", "Z9._-"): 48}


@pytest.mark.parametrize(("world", "entity"), sorted(PINNED))
def test_partition_is_pinned(world: str, entity: str) -> None:
    assert K.partition(world, entity) == PINNED[(world, entity)]


def test_partition_is_crc32_of_world_newline_entity() -> None:
    assert K.PARTITIONS == 64
    # the separator keeps ("ab", "c") and ("a", "bc") apart
    assert K.partition("ab", "c") == zlib.crc32(b"ab\nc") % 64 != K.partition("a", "bc")


def test_partitions_are_spread() -> None:
    hit = {K.partition("w", f"e{i}") for i in range(2000)}
    assert hit == set(range(K.PARTITIONS))


def test_every_key_of_a_partition_carries_its_tag() -> None:
    assert K.tag(7) == "ws:{p07}" and K.tag(63) == "ws:{p3f}"
    p = K.partition("w", "a")
    keys = [K.stream(p), K.trimmed(p), K.consumers(p), K.changes(p), K.changes_maxlen(p), K.applied(p),
            K.acked(p), K.clock(p), K.dedup_minutes(p), K.worlds(p), K.entity_key_in(p, "w", "a"),
            K.seen_key_in(p, "w", "a"), K.bucket_key_in(p, 15), K.world_index_in(p, "w")]
    assert all(k.startswith(K.tag(p) + ":") for k in keys)
    assert len(set(keys)) == len(keys)
    assert K.bucket_key_in(p, 15) == f"ws:{{p{p:02x}}}:b:f"
