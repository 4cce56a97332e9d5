"""Several replicas take writes, exchange deltas and states in any order (with
duplicates), and are checked against a reference model that knows nothing of
CRDTs: it only records which events each replica has heard of."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from consistency.crdt import Entity, LWWRegister, make_tag
from consistency.hlc import HybridLogicalClock

REPLICAS = ("r0", "r1", "r2")
FIELDS = ("x", "y")
ELEMENTS = ("red", "blue")

replicas = st.sampled_from(REPLICAS)
fields = st.sampled_from(FIELDS)
values = st.none() | st.booleans() | st.integers(-3, 3) | st.floats(-1e3, 1e3) | st.text(max_size=3)


@dataclass(frozen=True)
class Knowledge:
    """The events a replica (or a delta) has heard of."""

    writes: frozenset[tuple[str, LWWRegister]] = frozenset()
    counts: tuple[tuple[tuple[str, str], int], ...] = ()  # ((field, source), events seen)
    adds: frozenset[tuple[str, str, str]] = frozenset()  # (field, element, tag)
    removes: frozenset[tuple[str, str, str]] = frozenset()

    def union(self, other: Knowledge) -> Knowledge:
        counts = dict(self.counts)
        for key, seen in other.counts:
            counts[key] = max(counts.get(key, 0), seen)
        return Knowledge(
            self.writes | other.writes,
            tuple(sorted(counts.items())),
            self.adds | other.adds,
            self.removes | other.removes,
        )


@dataclass
class World:
    """Every event that happened anywhere, for turning knowledge into values."""

    amounts: dict[tuple[str, str], list[int]] = field(default_factory=dict)

    def expected(self, known: Knowledge) -> tuple[dict, dict, dict]:
        registers: dict[str, LWWRegister] = {}
        for name, write in known.writes:
            if name not in registers or write.order_key > registers[name].order_key:
                registers[name] = write
        counters: dict[str, int] = {}
        for (name, source), seen in known.counts:
            counters[name] = counters.get(name, 0) + sum(self.amounts[(name, source)][:seen])
        sets: dict[str, set[str]] = {}
        for name, element, tag in known.adds - known.removes:
            sets.setdefault(name, set()).add(element)
        return registers, counters, sets


class Replicas(RuleBasedStateMachine):
    deltas = Bundle("deltas")

    def __init__(self) -> None:
        super().__init__()
        self.walls = {r: 1_000 for r in REPLICAS}
        self.clocks = {
            r: HybridLogicalClock(r, max_drift_ms=10**9, now_ms=lambda r=r: self.walls[r]) for r in REPLICAS
        }
        self.states = {r: Entity() for r in REPLICAS}
        self.known = {r: Knowledge() for r in REPLICAS}
        self.world = World()
        self.tag_counter = 0

    def _apply(self, replica: str, delta: Entity, knowledge: Knowledge) -> None:
        stamp = delta.max_stamp()
        if stamp is not None:
            self.clocks[replica].update(stamp)
        self.states[replica] = self.states[replica].merge(delta)
        self.known[replica] = self.known[replica].union(knowledge)

    @rule(replica=replicas, step=st.integers(-40, 40))
    def move_wall_clock(self, replica: str, step: int) -> None:
        self.walls[replica] = max(0, self.walls[replica] + step)  # backwards too

    @rule(target=deltas, replica=replicas, name=fields, value=values)
    def write(self, replica: str, name: str, value: object) -> tuple[Entity, Knowledge]:
        stamp = self.clocks[replica].now()
        seen = self.states[replica].max_stamp()
        assert seen is None or stamp > seen  # a write beats everything it has seen
        delta = Entity.write_delta(name, value, stamp, replica)
        knowledge = Knowledge(writes=frozenset({(name, delta.registers[name])}))
        self._apply(replica, delta, knowledge)
        return delta, knowledge

    @rule(target=deltas, replica=replicas, name=fields, amount=st.sampled_from([-3, -2, -1, 1, 2, 3]))
    def count(self, replica: str, name: str, amount: int) -> tuple[Entity, Knowledge]:
        state = self.states[replica]
        if amount > 0:
            delta = state.increment_delta(name, replica, amount)
        else:
            delta = state.decrement_delta(name, replica, -amount)
        events = self.world.amounts.setdefault((name, replica), [])
        events.append(amount)
        knowledge = Knowledge(counts=(((name, replica), len(events)),))
        self._apply(replica, delta, knowledge)
        return delta, knowledge

    @rule(target=deltas, replica=replicas, name=fields, element=st.sampled_from(ELEMENTS))
    def add(self, replica: str, name: str, element: str) -> tuple[Entity, Knowledge]:
        self.tag_counter += 1
        tag = make_tag(replica, self.tag_counter)
        delta = self.states[replica].add_delta(name, element, tag)
        knowledge = Knowledge(adds=frozenset({(name, element, tag)}))
        self._apply(replica, delta, knowledge)
        return delta, knowledge

    @rule(target=deltas, replica=replicas, name=fields, element=st.sampled_from(ELEMENTS))
    def remove(self, replica: str, name: str, element: str) -> tuple[Entity, Knowledge]:
        known = self.known[replica]
        observed = {a for a in known.adds - known.removes if a[:2] == (name, element)}
        delta = self.states[replica].remove_delta(name, element)
        assert delta.tag_set(name).to_wire() == (
            [[element, [], sorted(a[2] for a in observed)]] if observed else []
        )
        knowledge = Knowledge(removes=frozenset(observed))
        self._apply(replica, delta, knowledge)
        return delta, knowledge

    @rule(sent=deltas, replica=replicas, times=st.integers(1, 2))
    def deliver_delta(self, sent: tuple[Entity, Knowledge], replica: str, times: int) -> None:
        for _ in range(times):  # duplicates; the bundle also redelivers old deltas
            self._apply(replica, *sent)

    @rule(source=replicas, target_replica=replicas)
    def sync_state(self, source: str, target_replica: str) -> None:
        self._apply(target_replica, self.states[source], self.known[source])

    @rule()
    def heal_and_converge(self) -> None:
        for _ in range(2):  # two rounds of all-to-all gossip
            for source in REPLICAS:
                for target_replica in REPLICAS:
                    self.sync_state(source, target_replica)
        first = self.states[REPLICAS[0]].canonical_bytes()
        assert all(self.states[r].canonical_bytes() == first for r in REPLICAS)
        everything = self.known[REPLICAS[0]]
        for r in REPLICAS:
            assert self.known[r] == everything
        # Counters: every event anywhere counted exactly once.
        for name in FIELDS:
            applied = sum(sum(e) for (f, _), e in self.world.amounts.items() if f == name)
            assert self.states[REPLICAS[0]].counter(name).value == applied

    @invariant()
    def replicas_match_their_knowledge(self) -> None:
        for r in REPLICAS:
            state = self.states[r]
            registers, counters, sets = self.world.expected(self.known[r])
            assert dict(state.registers) == registers  # the max (stamp, node) write
            assert {k: c.value for k, c in state.counters.items()} == counters
            assert {k: s.elements for k, s in state.sets.items() if s.elements} == sets
            assert Entity.from_bytes(state.canonical_bytes()) == state
            assert state.merge(state) == state

    def teardown(self) -> None:
        self.heal_and_converge()


Replicas.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestReplicas = Replicas.TestCase
