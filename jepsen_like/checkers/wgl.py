"""The Wing-Gong-Lowe search behind the linearizability checker, shaped as Porcupine's checkSingle.

The input is one sub-history as a list of entries, ``(CALL or RETURN, op
index)`` in time order. The search keeps the entries not yet linearized in
a linked list (`Entries`) and walks it from the head: an operation whose
call comes before the first remaining return entry is a candidate; if the
model accepts it in the current state, it is linearized (`lift`: its call
and return leave the list) and the walk restarts from the head. When no
candidate is left, the last choice is undone (`unlift`) and the walk goes
on after it. Reaching an empty list means the sub-history is linearizable.

Lowe's refinement memoises (linearized set, state): reaching the same set
with the same state again cannot succeed where it failed before. Two
dominance rules extend it (`Memo`):

- floating operations (outcome unknown, returning after every call) can
  always be linearized last, since the model accepts an unknown output in
  any state. So the search is done once all other operations are
  linearized, and having linearized fewer floating ones is never worse.
- read-only operations (`Model.read_only`) leave the state alone, so having
  linearized more of them is never worse.

A configuration (changing set, read-only set, floating set, state) is
skipped when one with the same changing set and state, at least its
read-only set and at most its floating set was seen. Without this each
timed-out operation doubles the search, and exhausting a failing single-key
history explores every order of concurrent reads. Candidates are tried
read-only first and floating last (`Search.candidates`), so the dominating
configuration of a pair is usually met first. Floating operations live
outside the linked list (they would otherwise sit at its head for the rest
of the history): one is a candidate when its call precedes the list's first
return entry.

Sets are Python ints used as bitsets, the list is two int arrays, and
nothing recurses: the stack of choices is a list.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..history import UNKNOWN
from ..models import Model
from .result import Verdict

CALL, RETURN = 0, 1                       # the two kinds of entry
CHANGING, READ_ONLY, FLOATING = 0, 1, 2   # how an operation takes part in the search
_CHECK_EVERY = 1023                       # candidates tried between clock reads (a mask)

Order = list[tuple[int, int]]             # (CALL or RETURN, op index), in time order


# A set of operations as one bitset per role, (changing, read-only, floating): those linearized
# so far, or one operation's own bit. Plain tuples: they are built once per step tried.
Linearized = tuple[int, int, int]


@dataclass
class Roles:
    """How each operation takes part, and its bit among the operations of its role."""

    role: dict[int, int]                 # op index -> CHANGING / READ_ONLY / FLOATING; absent: left out
    mask: dict[int, Linearized]          # op index -> its bit, in the set of its role
    floating: list[tuple[int, int]]      # (call position, op index), earliest call first
    return_position: dict[int, int]      # op index -> position of its return entry (from 1)
    to_linearize: int                    # CHANGING and READ_ONLY operations


def assign_roles(model: Model, inputs: list[Any], outputs: list[Any], order: Order) -> Roles:
    """Floating: unknown outcome and returning after the last call. A floating read-only
    operation constrains nothing at all and is left out."""
    call_position: dict[int, int] = {}
    return_position: dict[int, int] = {}
    for position, (kind, i) in enumerate(order, 1):
        (return_position if kind == RETURN else call_position)[i] = position
    last_call = max(call_position.values(), default=0)
    role: dict[int, int] = {}
    mask: dict[int, Linearized] = {}
    counts = [0, 0, 0]
    for i, position in return_position.items():
        floating = position > last_call and outputs[i] is UNKNOWN
        read_only = model.read_only(inputs[i], outputs[i])
        if floating and read_only:
            continue
        r = FLOATING if floating else READ_ONLY if read_only else CHANGING
        bit = 1 << counts[r]
        role[i], mask[i] = r, (bit if r == CHANGING else 0, bit if r == READ_ONLY else 0, bit if r == FLOATING else 0)
        counts[r] += 1
    floating_ops = sorted((call_position[i], i) for i, r in role.items() if r == FLOATING)
    return Roles(role, mask, floating_ops, return_position, counts[CHANGING] + counts[READ_ONLY])


class Entries:
    """The entries still to linearize: a circular doubly linked list in int arrays.

    Node ids are positions in the order, counted from 1; node 0 is the head.
    Floating and left-out operations have no nodes. `lift` and `unlift` are
    dancing links: undoing in reverse order restores the list exactly.
    """

    def __init__(self, order: Order, roles: Roles) -> None:
        size = len(order) + 1
        self.next, self.prev = [0] * size, [0] * size
        self.op = [0] * size               # node -> its operation
        self.role = [0] * size             # node -> its operation's role (CHANGING or READ_ONLY)
        self.return_of = [0] * size        # call node -> its return node; 0 on return nodes and the head
        last = 0
        for position, (kind, i) in enumerate(order, 1):
            if roles.role.get(i, FLOATING) == FLOATING:
                continue
            self.next[last], self.prev[position], self.op[position] = position, last, i
            self.role[position] = roles.role[i]
            if kind == CALL:
                self.return_of[position] = roles.return_position[i]
            last = position
        self.next[last], self.prev[0] = 0, last

    def lift(self, call: int) -> None:
        """Take a linearized operation's call and return entries out of the list."""
        nxt, prv = self.next, self.prev
        for node in (call, self.return_of[call]):
            before, after = prv[node], nxt[node]
            nxt[before] = after
            prv[after] = before

    def unlift(self, call: int) -> None:
        """Put them back where they were (the reverse of `lift`)."""
        nxt, prv = self.next, self.prev
        for node in (self.return_of[call], call):
            nxt[prv[node]] = node
            prv[nxt[node]] = node


class Memo:
    """Configurations already explored, with the dominance rules of the module docstring.

    Models whose states are compared with ``==`` get a dict keyed by (changing
    set, state); one that overrides `Model.equal` (e.g. unhashable states) is
    compared with it, one entry at a time.
    """

    def __init__(self, model: Model) -> None:
        self._seen: dict[Any, list[Any]] = {}
        self._equal = model.equal
        self.fresh = self._fresh_hashed if type(model).equal is Model.equal else self._fresh_compared

    def _fresh_hashed(self, done: Linearized, state: Any) -> bool:
        """True, and remembered, unless a dominating configuration was seen."""
        changing, reads, floats = done
        seen = self._seen.get((changing, state))
        if seen is None:
            self._seen[(changing, state)] = [(reads, floats)]
            return True
        if any(r & reads == reads and f & floats == f for r, f in seen):
            return False
        seen.append((reads, floats))
        return True

    def _fresh_compared(self, done: Linearized, state: Any) -> bool:
        changing, reads, floats = done
        seen = self._seen.setdefault(changing, [])
        if any(r & reads == reads and f & floats == f and self._equal(state, s) for s, r, f in seen):
            return False
        seen.append((state, reads, floats))
        return True


class Choice(NamedTuple):
    """A linearized operation on the stack, with what undoing it restores."""

    node: int                                  # its call node, or -1 - its index among floating ops
    state: Any                                 # the model's state before it
    done: Linearized                           # the sets before it
    candidates: Iterator[tuple[int, int, int]]  # the walk it was chosen from, to resume after it


class Search:
    """One sub-history's search; `run` is the loop, the rest its named steps."""

    def __init__(self, model: Model, inputs: list[Any], outputs: list[Any], order: Order, roles: Roles) -> None:
        self.model, self.inputs, self.outputs = model, inputs, outputs
        self.size = len(order)
        self.roles = roles
        self.entries = Entries(order, roles)
        self.floating_done = [False] * len(roles.floating)
        self.frontier = 0  # furthest first remaining return entry: every op returning before it was linearized

    def candidates(self) -> Iterator[tuple[int, int, int]]:
        """(node, op, role) of each operation that may be linearized next, in the order tried.

        Read-only operations called before the first remaining return entry,
        then state-changing ones, then floating ones called before it.
        """
        nxt, op, return_of, role = self.entries.next, self.entries.op, self.entries.return_of, self.entries.role
        first_return = 0
        for wanted in (READ_ONLY, CHANGING):
            node = nxt[0]
            while return_of[node]:
                if role[node] == wanted:
                    yield node, op[node], wanted
                node = nxt[node]
            first_return = node  # its operation was never linearized: nothing called later can go first
            self.frontier = max(self.frontier, node)
        for k, (call, i) in enumerate(self.roles.floating):
            if call >= first_return:
                break
            if not self.floating_done[k]:
                yield -1 - k, i, FLOATING

    def lift(self, node: int) -> None:
        if node > 0:
            self.entries.lift(node)
        else:
            self.floating_done[-1 - node] = True

    def unlift(self, node: int) -> None:
        if node > 0:
            self.entries.unlift(node)
        else:
            self.floating_done[-1 - node] = False

    def ops_of(self, stack: list[Choice]) -> list[int]:
        return [self.entries.op[c.node] if c.node > 0 else self.roles.floating[-1 - c.node][1] for c in stack]

    def could_go_last(self, previous: Choice, i: int, state: Any) -> bool:
        """Whether floating op `i`, right after floating op G (`previous`), ends in `state` without G:
        then G could have gone last instead, and that sibling configuration (fewer floating ops) is
        explored anyway."""
        ok, without = self.model.step(previous.state, self.inputs[i], self.outputs[i])
        return ok and self.model.equal(without, state)

    def run(self, deadline: float | None, track: bool) -> tuple[Verdict, list[int] | None, int]:
        step, inputs, outputs, mask = self.model.step, self.inputs, self.outputs, self.roles.mask
        memo = Memo(self.model)
        state: Any = self.model.init()
        done: Linearized = (0, 0, 0)  # nothing linearized yet
        to_linearize = self.roles.to_linearize
        stack: list[Choice] = []
        longest: list[int] | None = [] if track else None
        candidates = self.candidates()
        tried = 0
        while True:
            for node, i, role in candidates:
                tried += 1
                if not tried & _CHECK_EVERY and deadline is not None and time.monotonic() > deadline:
                    return Verdict.UNKNOWN, longest, self.frontier
                ok, new_state = step(state, inputs[i], outputs[i])
                if ok and role == FLOATING and stack and stack[-1].node < 0:
                    ok = not self.could_go_last(stack[-1], i, new_state)
                if not ok:
                    continue
                changing, read_only, floating = mask[i]
                new_done = (done[0] | changing, done[1] | read_only, done[2] | floating)  # done plus i
                if not memo.fresh(new_done, new_state):
                    continue
                stack.append(Choice(node, state, done, candidates))
                self.lift(node)
                state, done = new_state, new_done
                if role != FLOATING:
                    to_linearize -= 1
                    if not to_linearize:  # what is left floats: it can all go last
                        return Verdict.OK, (self.ops_of(stack) if track else None), self.size
                candidates = self.candidates()
                break
            else:  # no candidate left: undo the last choice and go on after it
                if longest is not None and len(stack) > len(longest):
                    longest = self.ops_of(stack)
                if not stack:
                    return Verdict.ILLEGAL, longest, self.frontier
                choice = stack.pop()
                self.unlift(choice.node)
                if choice.node > 0:
                    to_linearize += 1
                state, done, candidates = choice.state, choice.done, choice.candidates


def search(model: Model, inputs: list[Any], outputs: list[Any], order: Order, deadline: float | None,
           track: bool) -> tuple[Verdict, list[int] | None, int]:
    """WGL over the entries in `order`.

    Returns the verdict, the longest partial linearization (op indices, when
    `track`), and the frontier: the furthest position of a first remaining
    return entry, i.e. every operation returning before it was linearized at once.
    """
    roles = assign_roles(model, inputs, outputs, order)
    if roles.to_linearize == 0:
        return Verdict.OK, ([] if track else None), 0
    return Search(model, inputs, outputs, order, roles).run(deadline, track)
