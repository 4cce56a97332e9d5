"""Moving one slot of a region's Redis Cluster to another master, safely for the AP tier's scripts.

The usual resharding (`redis-cli --cluster reshard`) marks the slot migrating, then moves its keys
a few at a time. The AP tier's scripts declare one key of their partition and derive the rest
(consistency/lua/common.lua), and Redis checks each derived key only when the script reaches it
(Redis 7.0: a key the source does not hold in a migrating slot is "non local"). Seen here: once
the slot is migrating, an ingest that creates a key (a new entity, the changes log's cap read
when absent) stops with "Script attempted to access a non local key" part way, after what it
wrote before (tests/test_ap_failover.py found it). And once keys move a few at a time, a script
sent to the target after ASK (its declared key moved) would find the keys still on the source
absent and write fresh ones. So `migrate_keys` marks the slot migrating *and* moves every one of
its keys in one script on the source: no call runs between. Before it, every call runs on the
source as usual; after it, the source holds none of the slot and sends every call to the target
(ASK), which holds the whole partition. A large partition blocks the source for one transfer; a
MIGRATE that fails part way leaves the slot split, which this does not repair.
"""

from __future__ import annotations

from deploy.redis_cluster import RedisCluster, ShardNode

__all__ = ["begin_migration", "finish_migration", "migrate_keys", "move_slot"]

# Marks the slot migrating, lists its keys and moves them, in one script (the source runs nothing
# else meanwhile); MIGRATEs of 1000 keys: Lua's unpack() refuses a few thousand values at once.
_MOVE_ALL = """
redis.call('CLUSTER', 'SETSLOT', ARGV[3], 'MIGRATING', ARGV[5])
local keys = redis.call('CLUSTER', 'GETKEYSINSLOT', ARGV[3], 1000000000)
for i = 1, #keys, 1000 do
  redis.call('MIGRATE', ARGV[1], ARGV[2], '', 0, ARGV[4], 'KEYS', unpack(keys, i, math.min(i + 999, #keys)))
end
return #keys
"""


def owner_of(c: RedisCluster, slot: int) -> ShardNode:
    """The master serving `slot` now, as a live node says (CLUSTER SLOTS)."""
    live = next(n for n in c.nodes if n.running and not n.paused)
    with live.admin() as r:
        for lo, hi, master, *_ in r.execute_command("CLUSTER", "SLOTS"):
            if int(lo) <= slot <= int(hi):
                return c.node_on(int(master[1]))
    raise LookupError(f"slot {slot} has no master")


def begin_migration(c: RedisCluster, slot: int, target: ShardNode) -> ShardNode:
    """Mark `slot` importing on `target` (which changes nothing for clients yet: the target still
    answers MOVED to the owner) and return its owner."""
    source = owner_of(c, slot)
    if source is target:
        raise ValueError(f"{target.name} already serves slot {slot}")
    with target.admin() as r:
        r.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id())
    return source


def migrate_keys(source: ShardNode, target: ShardNode, slot: int, timeout_ms: int = 10_000) -> int:
    """Mark `slot` migrating on `source` and move every key of it to `target` in one script (see the
    module docstring); returns how many moved. From here calls for the slot are answered ASK."""
    with source.admin() as r:
        return int(r.eval(_MOVE_ALL, 0, target.host, target.port, slot, timeout_ms, target.node_id()))


def finish_migration(c: RedisCluster, slot: int, target: ShardNode, source: ShardNode) -> None:
    """Give `slot` to `target`: told to the target first, then the source, then every other master,
    as redis-cli does, so no node sends a client back to the source."""
    ident = target.node_id()
    others = [m for m in c.current_masters() if m is not target and m is not source]
    for node in (target, source, *others):
        with node.admin() as r:
            r.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ident)


def move_slot(c: RedisCluster, slot: int, target: ShardNode) -> int:
    """The three steps in a row; returns the number of keys moved."""
    source = begin_migration(c, slot, target)
    moved = migrate_keys(source, target, slot)
    finish_migration(c, slot, target, source)
    return moved
