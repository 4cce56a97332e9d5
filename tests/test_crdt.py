"""Lattice laws, delivery-order independence and wire format of the CRDTs.

The stateful multi-replica test lives in test_crdt_stateful.py.
"""

from __future__ import annotations

import math
from functools import reduce
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consistency.crdt import (
    SAFE_INT,
    AWSet,
    CounterOverflowError,
    Entity,
    InvalidValueError,
    LWWRegister,
    PNCounter,
    WireFormatError,
    make_tag,
)
from consistency.hlc import HLCTimestamp

FAST = settings(max_examples=60, deadline=None)

# Few distinct keys so that generated states overlap and merges do real work;
# non-ASCII names check that sorting is by code point (= UTF-8 byte) order.
names = st.sampled_from(["a", "b", "B", "é", "z", "\u4e16"])
stamps = st.builds(HLCTimestamp, st.integers(0, 4), st.integers(0, 2))
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-SAFE_INT, SAFE_INT)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)


@st.composite
def write_universe(draw: st.DrawFn) -> list[LWWRegister]:
    """Writes with unique (stamp, node): a node's HLC never repeats a stamp,
    so one (stamp, node) is one write with one value."""
    writes = draw(st.dictionaries(st.tuples(stamps, names), scalars, min_size=1, max_size=8))
    return [LWWRegister(value, stamp, node) for (stamp, node), value in writes.items()]


counters = st.builds(
    PNCounter,
    st.dictionaries(names, st.integers(0, SAFE_INT) | st.integers(0, 5)),
    st.dictionaries(names, st.integers(0, SAFE_INT) | st.integers(0, 5)),
)
tag_sets = st.frozensets(st.sampled_from(["t1", "t2", "t3", "n:1"]))
awsets = st.builds(AWSet, st.dictionaries(names, st.tuples(tag_sets, tag_sets)))


def entities(universe: list[LWWRegister]) -> st.SearchStrategy[Entity]:
    return st.builds(
        Entity,
        st.dictionaries(names, st.sampled_from(universe)),
        st.dictionaries(names, counters, max_size=3),
        st.dictionaries(names, awsets, max_size=3),
    )


@st.composite
def states(draw: st.DrawFn, kind: str, count: int) -> list[Any]:
    """``count`` states of one CRDT type that could coexist in one system."""
    if kind == "register":
        return draw(st.lists(st.sampled_from(draw(write_universe())), min_size=count, max_size=count))
    if kind == "entity":
        return draw(st.lists(entities(draw(write_universe())), min_size=count, max_size=count))
    return draw(st.lists(counters if kind == "counter" else awsets, min_size=count, max_size=count))


KINDS = ["register", "counter", "awset", "entity"]


def same(x: Any, y: Any) -> bool:
    return x == y and x.canonical_bytes() == y.canonical_bytes()


def assert_lua_safe(wire: Any) -> None:
    """Only what survives cmsgpack unpack/pack in Redis Lua (see _wire.py)."""
    if isinstance(wire, list):
        for item in wire:
            assert item is not None
            assert_lua_safe(item)
    else:
        assert isinstance(wire, (str, bool, int)), wire
        if isinstance(wire, int) and not isinstance(wire, bool):
            assert -SAFE_INT <= wire <= SAFE_INT


@pytest.mark.parametrize("kind", KINDS)
@FAST
@given(data=st.data())
def test_merge_is_commutative_associative_idempotent(kind: str, data: st.DataObject) -> None:
    a, b, c = data.draw(states(kind, 3))
    assert same(a.merge(b), b.merge(a))
    assert same(a.merge(b).merge(c), a.merge(b.merge(c)))
    assert same(a.merge(a), a)
    assert same(a.merge(b).merge(b), a.merge(b))  # re-delivery changes nothing
    for x in (a, b, c, a.merge(b)):
        assert same(type(x).from_bytes(x.canonical_bytes()), x)
        assert same(type(x).from_wire(x.to_wire()), x)
        assert_lua_safe(x.to_wire())


@pytest.mark.parametrize("kind", KINDS)
@FAST
@given(data=st.data())
def test_any_delivery_order_with_duplicates_converges(kind: str, data: st.DataObject) -> None:
    deltas = data.draw(states(kind, data.draw(st.integers(1, 6))))
    extra = data.draw(st.lists(st.integers(0, len(deltas) - 1), max_size=6))
    schedule = data.draw(st.permutations(list(range(len(deltas))) + extra))
    in_order = reduce(lambda acc, d: acc.merge(d), deltas)
    shuffled = reduce(lambda acc, i: acc.merge(deltas[i]), schedule[1:], deltas[schedule[0]])
    assert in_order.canonical_bytes() == shuffled.canonical_bytes()
    # A replica that merges whole states pairwise (gossip) gets there too.
    half = len(schedule) // 2
    left = reduce(lambda acc, i: acc.merge(deltas[i]), schedule[:half], deltas[schedule[-1]])
    right = reduce(lambda acc, i: acc.merge(deltas[i]), schedule[half:], deltas[schedule[0]])
    assert left.merge(right).canonical_bytes() == in_order.canonical_bytes()


@FAST
@given(write_universe())
def test_register_winner_is_max_stamp_then_node(writes: list[LWWRegister]) -> None:
    winner = reduce(LWWRegister.merge, writes)
    best = max(writes, key=lambda w: (w.stamp, w.node_id.encode()))
    assert same(winner, best)


def test_register_equal_key_keeps_receiver_and_node_breaks_ties() -> None:
    t = HLCTimestamp(5, 1)
    mine, dup = LWWRegister("x", t, "a"), LWWRegister("x", t, "a")
    assert mine.merge(dup) is mine
    assert LWWRegister(1, t, "a").merge(LWWRegister(2, t, "b")).value == 2
    assert LWWRegister(1, t, "b").merge(LWWRegister(2, t, "a")).value == 1
    later = LWWRegister(0, HLCTimestamp(5, 2), "a")
    assert LWWRegister(9, t, "z").merge(later) is later


@FAST
@given(scalars, stamps, st.text(min_size=1, max_size=5))
def test_register_values_round_trip_with_their_type(value: Any, stamp: HLCTimestamp, node: str) -> None:
    reg = LWWRegister(value, stamp, node)
    back = LWWRegister.from_bytes(reg.canonical_bytes())
    assert type(back.value) is type(value)
    assert back.value == value or (isinstance(value, float) and math.isnan(value))
    assert (back.stamp, back.node_id) == (stamp, node)
    assert_lua_safe(reg.to_wire())


def test_numbers_of_different_types_are_different_values() -> None:
    t = HLCTimestamp(1, 0)
    values = [LWWRegister(v, t, "n") for v in (1, 1.0, True, "1")]
    assert len({v.canonical_bytes() for v in values}) == 4
    assert LWWRegister(1, t, "n") != LWWRegister(1.0, t, "n")


@FAST
@given(st.lists(st.tuples(names, st.integers(-5, 5).filter(bool)), max_size=20))
def test_counter_value_is_sum_of_applied_amounts(ops: list[tuple[str, int]]) -> None:
    counter = PNCounter()
    for source, amount in ops:
        counter = counter.increment(source, amount) if amount > 0 else counter.decrement(source, -amount)
    assert counter.value == sum(amount for _, amount in ops)
    assert counter.value == sum(counter.p.values()) - sum(counter.n.values())


def test_counter_delta_carries_the_source_total() -> None:
    counter = PNCounter().increment("a", 2).decrement("b")
    delta = counter.increment_delta("a", 3)
    assert delta.to_wire() == [["a", 5, 0]]
    assert counter.merge(delta).merge(delta).value == 4
    assert counter.slot("b").to_wire() == [["b", 0, 1]]
    assert counter.slot("nobody").is_empty()


def test_counter_refuses_bad_amounts_and_overflow() -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidValueError):
            PNCounter().increment("a", bad)  # type: ignore[arg-type]
    with pytest.raises(CounterOverflowError):
        PNCounter({"a": SAFE_INT}).increment("a")


def test_awset_concurrent_add_wins_and_remove_is_observed_only() -> None:
    base = AWSet().add("red", "t1")
    removed = base.remove("red")  # replica 1 saw t1 and removes it
    readded = base.add("red", "t2")  # replica 2 concurrently adds again
    assert "red" not in removed
    assert "red" in removed.merge(readded) and "red" in readded.merge(removed)
    assert removed.merge(readded).tags("red") == {"t2"}
    # A remove delivered before the add it observed still cancels that add.
    early = AWSet().merge(base.remove_delta("red")).merge(base.add_delta("red", "t1"))
    assert "red" not in early and not early.is_empty()
    assert removed.remove_delta("red").is_empty()  # nothing left to observe
    assert AWSet().remove_delta("absent").is_empty()
    assert make_tag("node:x", 7) == "node:x:7"


def test_entity_merge_takes_missing_keys_and_merges_present_ones() -> None:
    t1, t2 = HLCTimestamp(10, 0), HLCTimestamp(11, 0)
    left = Entity().write("x", 1.5, t1, "a").increment("hits", "a", 2).add("tags", "red", "a:1")
    right = Entity().write("x", 2.5, t2, "b").write("y", "up", t1, "b").decrement("hits", "b")
    merged = left.merge(right)
    assert merged.to_plain() == {
        "registers": {"x": 2.5, "y": "up"},
        "counters": {"hits": 1},
        "sets": {"tags": ["red"]},
    }
    assert merged.max_stamp() == t2
    assert Entity().max_stamp() is None
    assert Entity(counters={"c": PNCounter()}, sets={"s": AWSet()}) == Entity()


def test_golden_bytes() -> None:
    """Pinned bytes: the exact format the Lua merge must reproduce."""
    entity = Entity(
        registers={"x": LWWRegister(1.5, HLCTimestamp(1000, 2), "n1"), "k": LWWRegister(None, HLCTimestamp(7, 0), "n2")},
        counters={"hits": PNCounter({"b": 3, "a": 200}, {"b": 1})},
        sets={"tags": AWSet({"red": ({"t2", "t1"}, {"t0"})})},
    )
    assert entity.to_wire() == [
        [["k", [7, 0, "n2", 0, 0]], ["x", [1000, 2, "n1", 3, "1.5"]]],
        [["hits", [["a", 200, 0], ["b", 3, 1]]]],
        [["tags", [["red", ["t1", "t2"], ["t0"]]]]],
    ]
    assert entity.canonical_bytes().hex() == (
        "93"  # [registers, counters, sets]
        "92" "92a16b" "950700a26e320000" "92a178" "95cd03e802a26e3103a3312e35"
        "91" "92a468697473" "92" "93a161ccc800" "93a1620301"
        "91" "92a474616773" "91" "93a3726564" "92a27431a27432" "91a27430"
    )


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, SAFE_INT + 1, -SAFE_INT - 1, b"x", [1], "\ud800"]
)
def test_unrepresentable_values_are_refused(value: Any) -> None:
    with pytest.raises(InvalidValueError):
        LWWRegister(value, HLCTimestamp(1, 0), "n")


@pytest.mark.parametrize(
    "kind, wire",
    [
        (LWWRegister, [1, 0, "n", 3, "1.50"]),  # not the repr of 1.5
        (LWWRegister, [1, 0, "n", 3, 1.5]),  # raw float
        (LWWRegister, [1, 0, "n", 9, 0]),
        (LWWRegister, [1, 0, "n", 0, None]),
        (LWWRegister, [1, 0, "", 2, 1]),
        (LWWRegister, [1, 0, "n", 2, 2**60]),
        (LWWRegister, [1, 70000, "n", 2, 1]),
        (LWWRegister, {"wall": 1}),
        (PNCounter, [["b", 1, 0], ["a", 1, 0]]),
        (PNCounter, [["a", 1, 0], ["a", 2, 0]]),
        (PNCounter, [["a", 0, 0]]),
        (PNCounter, [["a", -1, 0]]),
        (AWSet, [["e", ["t2", "t1"], []]]),
        (AWSet, [["e", [], []]]),
        (AWSet, [["e", ["t1"], ["t1"]]]),
        (AWSet, [["f", ["t1"], []], ["e", ["t1"], []]]),
        (Entity, [[], []]),
        (Entity, [[], [["c", []]], []]),
        (Entity, [[["y", [1, 0, "n", 2, 1]], ["x", [1, 0, "n", 2, 1]]], [], []]),
    ],
)
def test_non_canonical_wire_is_refused(kind: Any, wire: Any) -> None:
    with pytest.raises(WireFormatError):
        kind.from_wire(wire)


def test_non_canonical_bytes_are_refused() -> None:
    wide = msgpack.packb([["a", 1, 0]]).replace(b"\x01", b"\xcd\x00\x01")  # uint16 for 1
    assert PNCounter.from_wire(msgpack.unpackb(wide)) == PNCounter({"a": 1})
    with pytest.raises(WireFormatError):
        PNCounter.from_bytes(wide)
    with pytest.raises(WireFormatError):
        PNCounter.from_bytes(b"\xc1")
