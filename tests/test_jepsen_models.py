"""The register model compares values as JSON does: `true` is not `1`, `1.0` is not `1`."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jepsen_like.checkers.linearizability import check
from jepsen_like.checkers.result import Verdict
from jepsen_like.history import OK, Operation
from jepsen_like.models import KV, JsonValue, Register, json_value


def W(p: int, v: Any, call: float, ret: float) -> Operation:
    return Operation(p, "write", "k", v, call, ret, None, OK)


def R(p: int, v: Any, call: float, ret: float) -> Operation:
    return Operation(p, "read", "k", None, call, ret, v, OK)


def CAS(p: int, exp: Any, new: Any, call: float, ret: float, ok: bool = True) -> Operation:
    return Operation(p, "cas", "k", [exp, new], call, ret, None if ok else {"cas_ok": False}, OK)


def test_read_of_true_after_write_of_1_is_not_linearizable() -> None:
    # Python says True == 1: a model comparing with == let this pass.
    res = check([W(0, 1, 0, 10), R(1, True, 20, 30)])
    assert res.verdict == Verdict.ILLEGAL
    assert "cannot linearize: p1 read['k'] -> True" in res.describe()


def test_failed_cas_from_true_after_write_of_1_is_linearizable() -> None:
    # The register holds 1, not true, so cas(true -> 0) must fail; == called this history impossible.
    assert check([W(0, 1, 0, 10), CAS(1, True, 0, 20, 30, ok=False)]).verdict == Verdict.OK
    assert check([W(0, 1, 0, 10), CAS(1, True, 0, 20, 30, ok=True)]).verdict == Verdict.ILLEGAL


# (written, read back, same register value?) -- the service stores what json.dumps writes.
SAME = [
    (1, 1, True),
    (1, True, False),
    (0, False, False),
    (1, 1.0, False),          # "1" and "1.0": the service keeps int and float apart end to end
    (0.0, -0.0, False),       # "0.0" and "-0.0"
    (1.5, 1.5, True),
    ("1", 1, False),
    (None, None, True),       # absent (or null)
    (None, 0, False),
    (None, False, False),
    ([1, 2], [1, 2], True),
    ([1], [True], False),
    ([1, 2], [2, 1], False),
    ({"a": 1, "b": 2}, {"b": 2, "a": 1}, True),   # key order is not part of the value
    ({"a": 1}, {"a": 1.0}, False),
    ({"a": [0]}, {"a": [False]}, False),
]


@pytest.mark.parametrize("written,read,same", SAME)
def test_value_equality_table(written: Any, read: Any, same: bool) -> None:
    assert (json_value(written) == json_value(read)) is same
    verdict = check([W(0, written, 0, 10), R(1, read, 20, 30)]).verdict
    assert verdict == (Verdict.OK if same else Verdict.ILLEGAL)
    after = "next" if same else written
    cas = check([W(0, written, 0, 10), CAS(1, read, "next", 20, 30, ok=same), R(2, after, 40, 50)])
    assert cas.verdict == Verdict.OK


def _json_values() -> st.SearchStrategy[Any]:
    halves = st.floats(-3, 3, allow_nan=False).map(lambda x: math.floor(x * 2) / 2) | st.just(-0.0)  # 1.0, 0.5, -0.0
    scalars = st.none() | st.booleans() | st.integers(-3, 3) | halves | st.sampled_from(["", "1", "a"])
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.sampled_from("abc"), inner, max_size=3), max_leaves=6)


@settings(max_examples=300, deadline=None)
@given(_json_values(), _json_values())
def test_values_are_equal_exactly_when_their_json_text_is(a: Any, b: Any) -> None:
    """Equality is that of the text the service writes to etcd (the CP tier's encode: compact, sorted keys)."""
    def text(v: Any) -> str:
        return json.dumps(v, separators=(",", ":"), sort_keys=True)

    same = text(a) == text(b)
    assert (json_value(a) == json_value(b)) is same
    if same:
        assert hash(json_value(a)) == hash(json_value(b))
    # A round trip through JSON (the history file, the service) changes nothing.
    assert json_value(json.loads(json.dumps(a))) == json_value(a)
    # And the checker agrees: a write of a, then a read of b.
    want = Verdict.OK if same else Verdict.ILLEGAL
    assert check([W(0, a, 0, 10), R(1, b, 20, 30)], KV()).verdict == want


def test_values_print_as_plain_json_values() -> None:
    assert repr(JsonValue({"b": [1, True], "a": None})) == "{'a': None, 'b': [1, True]}"
    assert Register().describe_op(*Register().io(CAS(0, True, 1.0, 0, 1))) == "cas['k'](True -> 1.0) -> ok"
