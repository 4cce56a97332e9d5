"""Sequential specifications for the linearizability checker.

The interface is Porcupine's: `init`, `step`, `equal`, `partition`, plus
`io` (how the model reads an Operation) and descriptions for reports.

`step(state, input, output) -> (ok, new_state)` says whether the object in
`state` could have answered `output` to `input`, and what it becomes. It
must not mutate `state`, and must accept any input whose output is
UNKNOWN (an info operation linearized late must always be placeable).
States must be hashable: the checker memoises (linearized set, state)
pairs in a dict. `equal` defaults to ``==``; a model that overrides it
(e.g. for unhashable states) is checked with a slower cache that calls it.

`read_only(input, output)` (optional) marks operations that leave the
state alone; the search uses it to prune.

`partition` is P-compositionality (Herlihy & Wing): a history is
linearizable iff each sub-history is, so a key-value store is checked as
one register per key, and the search stays small.
"""

from __future__ import annotations

import json
from typing import Any, Hashable

from .history import UNKNOWN, Operation

CAS_FAILED_KEY = "cas_ok"
# The CP tier's encode format (compact, sorted keys); one encoder, not one per value as json.dumps would build.
_JSON_TEXT = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode


def freeze(value: Any) -> Hashable:
    """JSON value -> hashable equivalent (lists -> tuples, objects -> frozensets of items)."""
    if isinstance(value, list) or isinstance(value, tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, dict):
        return frozenset((k, freeze(v)) for k, v in value.items())
    return value


class JsonValue:
    """A register value, equal to another exactly when the service would store the same JSON text.

    Python's ``==`` says ``1 == 1.0 == True`` and ``0 == False``; a register
    compared that way lets ``write 1; read -> true`` pass as linearizable and
    calls ``write 1; cas(true -> 0) failed`` impossible. Here values are
    compared by their canonical JSON text, the format the CP tier's `encode`
    (in consistency/) writes to etcd: ``json.dumps``, compact, keys sorted.
    So ``true`` is not ``1`` and key order does not matter. And ``1.0`` is not
    ``1``, on purpose: the service keeps the difference end to end (the API
    parses bodies with orjson and answers with ``json.dumps``; both, like
    ``encode`` and the store's ``json.loads``, keep ``1`` an int and ``1.0``
    a float: checked by round-tripping both), so a write of ``1`` read back
    as ``1.0`` is a value the service changed. ``-0.0`` and ``0.0`` differ
    for the same reason.
    """

    __slots__ = ("value", "text", "_hash")

    def __init__(self, value: Any) -> None:
        self.value = value
        self.text = _JSON_TEXT(value)
        self._hash = hash(self.text)  # states are hashed at every step of the search: once is enough

    def __eq__(self, other: object) -> bool:
        return type(other) is JsonValue and other.text == self.text

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return repr(thaw(freeze(self.value)))  # as the plain value always printed, e.g. in anomaly reports


def json_value(value: Any) -> JsonValue | None:
    """A register value as the model compares it; None (absent, or JSON null) stays None."""
    return None if value is None else JsonValue(value)


def thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    if isinstance(value, frozenset):
        return {k: thaw(v) for k, v in sorted(value, key=lambda kv: str(kv[0]))}
    return value


def cas_succeeded(output: Any) -> bool:
    """An ok CAS completion means success unless it says ``{"cas_ok": false}``.

    Jepsen echoes the invocation value on success, so anything else
    (None, [expected, new], {"cas_ok": true}, True) counts as success; a
    bare False is accepted as failure too.
    """
    if output is False:
        return False
    if isinstance(output, dict):
        return output.get(CAS_FAILED_KEY, True) is not False
    if isinstance(output, frozenset):
        return dict(output).get(CAS_FAILED_KEY, True) is not False
    return True


class Model:
    """A sequential object. Subclass and override `init` and `step`."""

    def init(self) -> Hashable:
        raise NotImplementedError

    def step(self, state: Any, input: Any, output: Any) -> tuple[bool, Any]:
        raise NotImplementedError

    def equal(self, a: Any, b: Any) -> bool:
        return a == b

    def partition(self, ops: list[Operation]) -> list[list[Operation]]:
        return [ops]

    def read_only(self, input: Any, output: Any) -> bool:
        """True if `step` never changes the state for this input and output.

        Optional (default False); it lets the search prefer configurations
        that have linearized more such operations.
        """
        return False

    def io(self, op: Operation) -> tuple[Any, Any]:
        """(input, output) handed to `step` for this operation."""
        out = op.output if op.output is UNKNOWN else freeze(op.output)
        return (op.f, freeze(op.key), freeze(op.value)), out

    def partition_key(self, part: list[Operation]) -> Any:
        """A label for a sub-history in reports."""
        return None

    def describe_op(self, input: Any, output: Any) -> str:
        return f"{input!r} -> {output!r}"

    def describe_state(self, state: Any) -> str:
        return repr(thaw(state))


class Register(Model):
    """One register: read, write, cas, delete. Initial value None (absent).

    read   value=None        -> ok with the value read (None: absent)
    write  value=v           -> ok (output ignored)
    cas    value=[exp, new]  -> ok; output {"cas_ok": false} when the
                                register did not hold `exp` (no change)
    delete                   -> ok; the register becomes None

    CAS compares values. When the system's CAS is on a revision (If-Match),
    record it with the value read at that revision as `expected`: with
    unique written values, "the key is still at revision r" and "the key
    still holds the value written at r" are the same condition.

    Values are compared as JSON (`JsonValue`): ``true`` is not ``1``.
    """

    FS = frozenset(("read", "write", "cas", "delete"))

    def __init__(self, initial: Any = None) -> None:
        self.initial = json_value(initial)

    def io(self, op: Operation) -> tuple[Any, Any]:
        """Written, expected and read values as `JsonValue`s; other outputs (a CAS's answer) frozen."""
        if op.f == "cas":
            expected, new = op.value
            arg: Any = (json_value(expected), json_value(new))
        elif op.f == "write":
            arg = json_value(op.value)
        else:
            arg = freeze(op.value)
        if op.output is UNKNOWN:
            out = UNKNOWN
        else:
            out = json_value(op.output) if op.f == "read" else freeze(op.output)
        return (op.f, freeze(op.key), arg), out

    def partition(self, ops: list[Operation]) -> list[list[Operation]]:
        return [[op for op in ops if _relevant(op, self.FS)]]

    def init(self) -> Hashable:
        return self.initial

    def step(self, state: Any, input: Any, output: Any) -> tuple[bool, Any]:
        f, _key, arg = input
        if f == "read":
            return (output is UNKNOWN or output == state), state
        if f == "write":
            return True, arg
        if f == "cas":
            expected, new = arg
            if output is UNKNOWN:
                return True, (new if state == expected else state)
            if cas_succeeded(output):
                return state == expected, new
            return state != expected, state
        if f == "delete":
            return True, None
        raise ValueError(f"register has no operation {f!r}")

    def read_only(self, input: Any, output: Any) -> bool:
        f = input[0]
        return f == "read" or (f == "cas" and output is not UNKNOWN and not cas_succeeded(output))

    def describe_op(self, input: Any, output: Any) -> str:
        f, key, arg = input
        k = "" if key is None else f"[{thaw(key)!r}]"
        if f == "read":
            return f"read{k} -> {'?' if output is UNKNOWN else repr(thaw(output))}"
        if f == "write":
            return f"write{k}({thaw(arg)!r})"
        if f == "cas":
            res = "?" if output is UNKNOWN else ("ok" if cas_succeeded(output) else "precondition failed")
            exp, new = arg
            return f"cas{k}({thaw(exp)!r} -> {thaw(new)!r}) -> {res}"
        return f"{f}{k}({thaw(arg)!r})"


class KV(Register):
    """A map of independent registers, checked one key at a time.

    Only register operations (read/write/cas/delete) are kept; watches and
    posts belong to other checkers; reads with unknown output are dropped.
    """

    def partition(self, ops: list[Operation]) -> list[list[Operation]]:
        by_key: dict[Any, list[Operation]] = {}
        for op in ops:
            if not _relevant(op, self.FS):
                continue
            by_key.setdefault(freeze(op.key), []).append(op)
        return list(by_key.values())

    def partition_key(self, part: list[Operation]) -> Any:
        return part[0].key if part else None


def _relevant(op: Operation, fs: frozenset[str]) -> bool:
    # A read whose answer is unknown constrains nothing, and every pending
    # operation widens the search: leave such reads out.
    return op.f in fs and not (op.f == "read" and op.output is UNKNOWN)
