"""The reference model (consistency/crdt) on its own: replicas converge to one
state, whatever the delivery order and duplication, and that state is the one
the design asks for. test_crdt_lua.py holds the scripts on Redis to the model.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from consistency.crdt import Compensated, Observed, Register, ReplicaModel, anti_entropy, byte_lt
from consistency.hlc import HybridLogicalClock

WORLD = "w"
# Byte order puts "r-b" before "ra" and "node-b" before "nodea"; en_US.UTF-8
# collation (Lua's `<` in a Redis started under it) says the opposite of both.
REGIONS = ("r-b", "ra")
NODES = {"r-b": "node-b", "ra": "nodea"}
BASE_MS = 1_700_000_000_000

values = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
          | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=6))
# Few entities, events and sources, so duplicates within and across regions are common.
ENTITIES = ["e1", "e2"]
observations = st.tuples(
    st.sampled_from(ENTITIES), st.sampled_from([f"ev{i}" for i in range(6)]), st.sampled_from(["cam", "lidar"]),
    st.dictionaries(st.sampled_from(["x", "y", "label"]), values, max_size=3), st.none() | st.integers(0, 2**40))
regions = st.sampled_from(REGIONS)
operations = st.lists(st.one_of(
    st.tuples(st.just("ingest"), regions, st.lists(observations, min_size=1, max_size=3)),
    st.tuples(st.just("tick"), st.integers(-3, 3)),  # both nodes' wall clock: equal stamps are common
    # a batch of the source's log entries, by index: any order, any duplicates
    st.tuples(st.just("ship"), regions, st.lists(st.integers(0, 40), max_size=8)),
    st.tuples(st.just("anti_entropy"), regions),
), max_size=25)
final_syncs = st.sampled_from(["streams", "anti_entropy"])

Accepted = tuple[str, str, str, str, dict[str, Register]]  # world, entity, event id, source, registers


def other(region: str) -> str:
    return REGIONS[1 - REGIONS.index(region)]


def expected(accepted: Iterable[Accepted]) -> dict[tuple[str, str], tuple[dict[str, Register], dict[str, int]]]:
    """The converged state the design asks for, from the observations some region
    accepted: each field's write with the greatest order key, and per source the
    number of distinct events (one posted to both regions counts once)."""
    registers: dict[tuple[str, str], dict[str, Register]] = {}
    events: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for world, entity, event_id, source, regs in accepted:
        mine = registers.setdefault((world, entity), {})
        for name, reg in regs.items():
            if name not in mine or byte_lt(mine[name].order_key, reg.order_key):
                mine[name] = reg
        events.setdefault((world, entity), set()).add((event_id, source))
    out = {}
    for key, evs in events.items():
        counters: dict[str, int] = {}
        for _, source in evs:
            counters[source] = counters.get(source, 0) + 1
        out[key] = (registers[key], dict(sorted(counters.items())))
    return out


def view(model: ReplicaModel) -> dict[tuple[str, str], tuple[dict[str, Register], dict[str, int]]]:
    return {key: (dict(ent.registers), ent.counters()) for key, ent in model.entities.items()}


def strict(x: Any) -> Any:
    """Values compared by type too: 1, 1.0 and True are different writes, as are 0.0 and -0.0."""
    if isinstance(x, dict):
        return {k: strict(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(strict(v) for v in x) if not hasattr(x, "_fields") else (type(x).__name__, *map(strict, x))
    return (type(x).__name__, repr(x))


def run_model(ops: list[Any], final: str) -> tuple[dict[str, ReplicaModel], list[Accepted]]:
    wall = [BASE_MS]
    clocks = {r: HybridLogicalClock(NODES[r], now_ms=lambda: wall[0]) for r in REGIONS}
    models = {r: ReplicaModel(r) for r in REGIONS}
    accepted: list[Accepted] = []
    for op in ops:
        if op[0] == "ingest":
            _, region, batch = op
            for entity, event_id, source, fields, at in batch:
                key = f"{clocks[region].now().to_string()}|{NODES[region]}"
                if models[region].ingest(WORLD, entity, event_id, source, fields, key, at):
                    accepted.append((WORLD, entity, event_id, source,
                                     {n: Register(key, v, source, event_id, at) for n, v in fields.items()}))
        elif op[0] == "tick":
            wall[0] += op[1]
        elif op[0] == "ship":
            _, src, picks = op
            log = models[src].log
            if log:
                models[other(src)].apply(src, [log[i % len(log)] for i in picks])
        else:
            anti_entropy(models[op[1]], models[other(op[1])])
    for _ in range(3):  # a compensation made while applying needs one more round to travel back
        for src in REGIONS:
            if final == "streams":
                models[other(src)].apply(src, list(models[src].log))
            else:
                anti_entropy(models[src], models[other(src)])
    return models, accepted


@settings(max_examples=300, deadline=None)
@given(operations, final_syncs)
def test_model_converges_to_the_expected_state(ops: list[Any], final: str) -> None:
    models, accepted = run_model(ops, final)
    a, b = (models[r] for r in REGIONS)
    assert strict(view(a)) == strict(view(b))
    assert strict(view(a)) == strict(expected(accepted))


def test_byte_order_is_not_collation_order() -> None:
    assert byte_lt("node-b", "nodea") and byte_lt("Z", "a") and byte_lt("r-b", "ra")
    assert byte_lt("00ff-0000|n", "00ff-0000|n2")  # a node id that extends another sorts after it
    assert byte_lt("\u00e9", "\u4e16") and not byte_lt("\u4e16", "\u00e9")


def test_equal_stamps_are_ordered_by_node_bytes() -> None:
    a = ReplicaModel("r-b")
    a.ingest(WORLD, "e", "ev1", "cam", {"x": 1}, "000000000001-0000|nodea")
    a.ingest(WORLD, "e", "ev2", "cam", {"x": 2}, "000000000001-0000|node-b")
    assert a.entities[(WORLD, "e")].registers["x"].value == 1  # "nodea" > "node-b" byte-wise


def test_event_accepted_at_both_regions_counts_once() -> None:
    a, b = ReplicaModel("r-b"), ReplicaModel("ra")
    assert a.ingest(WORLD, "e", "ev1", "cam", {"x": 1}, "000000000001-0000|node-b")
    assert b.ingest(WORLD, "e", "ev1", "cam", {"x": 2}, "000000000001-0001|nodea")
    assert not b.ingest(WORLD, "e", "ev1", "cam", {"x": 3}, "000000000001-0002|nodea")  # seen here
    b.apply("r-b", a.log)
    b.apply("r-b", a.log)  # a duplicate delivery changes nothing
    assert b.log[-1] == Compensated(WORLD, "e", "cam", 1)  # "ra" sorts after "r-b": it takes its count back
    a.apply("ra", reversed(b.log))
    assert a.entities[(WORLD, "e")].counters() == b.entities[(WORLD, "e")].counters() == {"cam": 1}
    assert a.entities[(WORLD, "e")].registers == b.entities[(WORLD, "e")].registers
    assert isinstance(a.log[0], Observed) and len(a.log) == 1  # the region that sorts first keeps its count
