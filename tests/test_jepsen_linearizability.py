"""The WGL linearizability checker on hand-made, classic and generated histories."""

from __future__ import annotations

import functools
import math
import random
import re
from dataclasses import replace

import pytest

from jepsen_like import synth
from jepsen_like.checkers.linearizability import check
from jepsen_like.checkers.result import Verdict
from jepsen_like.history import FAIL, INFO, INVOKE, OK, UNKNOWN, Event, Operation, pair
from jepsen_like.models import Model, Register


def op(p: int, f: str, value, call: float, ret: float, output=None, key=None, type: str = OK) -> Operation:
    if type == INFO:
        ret, output = math.inf, UNKNOWN
    return Operation(p, f, key, value, call, ret, output, type)


def W(p, v, call, ret, key=None, type=OK):
    return op(p, "write", v, call, ret, None, key, type)


def R(p, v, call, ret, key=None):
    return op(p, "read", None, call, ret, v, key)


def CAS(p, exp, new, call, ret, ok=True, key=None, type=OK):
    return op(p, "cas", [exp, new], call, ret, None if ok else {"cas_ok": False}, key, type)


# --- Porcupine's register tests (6.824 2017 quiz, section VII) -----------------

def test_porcupine_register_linearizable() -> None:
    ops = [W(0, 100, 0, 100), R(1, 100, 25, 75), R(2, 0, 30, 60)]
    assert check(ops, Register(0)).verdict == Verdict.OK


def test_porcupine_register_not_linearizable() -> None:
    ops = [W(0, 200, 0, 100), R(1, 200, 10, 30), R(2, 0, 40, 90)]
    res = check(ops, Register(0))
    assert res.verdict == Verdict.ILLEGAL and res.valid is False
    (a,) = res.anomalies
    assert a.op.process == 2 and a.op.output == 0  # the read of 0 after 200 was seen
    assert "cannot linearize: p2 read -> 0" in res.describe()


def test_porcupine_events_form_same_verdicts() -> None:
    # The same two examples recorded as Jepsen events, times = positions.
    def run(rows):
        evs = [Event(t, p, f, None, v, i) for i, (t, p, f, v) in enumerate(rows)]
        return check(evs, Register(0)).verdict
    assert run([(INVOKE, 0, "write", 100), (INVOKE, 1, "read", None), (INVOKE, 2, "read", None),
                (OK, 2, "read", 0), (OK, 1, "read", 100), (OK, 0, "write", 100)]) == Verdict.OK
    assert run([(INVOKE, 0, "write", 200), (INVOKE, 1, "read", None), (OK, 1, "read", 200),
                (INVOKE, 2, "read", None), (OK, 2, "read", 0), (OK, 0, "write", 200)]) == Verdict.ILLEGAL


# --- Knossos cas-register histories (data/cas-register/**.edn) ---------------

_PAIR = re.compile(r':(process|type|f|value)\s+(\[[^\]]*\]|"[^"]*"|:?[\w-]+)')


def edn(text: str) -> list[Event]:
    """Knossos' one-map-per-line EDN, in order (time = position)."""
    out = []
    for line in text.splitlines():
        d = dict(_PAIR.findall(line.split(";")[0]))
        if "type" not in d:
            continue
        p, v = d["process"], d.get("value", "nil")
        val = None if v == "nil" else [int(x) for x in v[1:-1].split()] if v.startswith("[") else \
            v.strip('"') if v.startswith('"') else int(v)
        out.append(Event(d["type"][1:], p[1:] if p.startswith(":") else int(p), d["f"][1:], None, val, len(out)))
    return out


KNOSSOS_BAD_ANALYSIS = """
[{:process 4, :type :invoke, :f :write, :value 2}
 {:process 4, :type :ok, :f :write, :value 2}
 {:process 6, :type :invoke, :f :read, :value nil}
 {:process 1, :type :invoke, :f :write, :value 4}
 {:process 1, :type :ok, :f :write, :value 4}
 {:process 14, :type :invoke, :f :read, :value 4}
 {:process 14, :type :ok, :f :read, :value 4}
 {:process 9, :type :invoke, :f :write, :value 0}
 {:process 9, :type :ok, :f :write, :value 0}
 ; Value is 0, pending crashed read by process 6
 {:process 19, :type :invoke, :f :read, :value 0}
 {:process 20, :type :invoke, :f :write, :value 1}
 {:process 19, :type :ok, :f :read, :value 0}
 ; Read of 0 linearized, 20 write 1 pending (and crashes)
 ; Two spurious concurrent reads of 3 and 2
 {:process 22  :type :invoke, :f :read, :value 3}
 {:process 21, :type :invoke, :f :read, :value 2}
 {:process 21, :type :ok, :f :read, :value 2}
 {:process 22, :type :ok, :f :read, :value 3}]
"""

KNOSSOS_CAS_REGISTER_BUG = "\n".join(KNOSSOS_BAD_ANALYSIS.strip().splitlines()[:9]) + """
 {:process 19, :type :invoke, :f :read, :value 0}
 {:process 19, :type :ok, :f :read, :value 0}]
"""

KNOSSOS_IMMEDIATE_FAILURE = """
[{:type :invoke, :process 1, :f :read, :value nil}
{:type :invoke, :process 101, :f :write, :value 3}
{:type :fail, :process 101, :f :write, :value 3, :error [:temporarily-unavailable nil]}
{:type :ok, :process 1, :f :read, :value 3}]
"""

KNOSSOS_RETHINK_FAIL_MINIMAL = """
({:type :invoke, :f :write, :value 0, :process 0}
 {:type :ok, :f :write, :value 0, :process 0}
 {:type :invoke, :f :read, :value nil, :process 1}
 {:type :invoke, :f :write, :value 4, :process 2}
 {:type :ok, :f :read, :value 3, :process 1}
 {:type :ok, :f :write, :value 4, :process 2}
 {:type :invoke, :f :read, :value nil, :process 3}
 {:type :ok, :f :read, :value 4, :process 3})
"""

# The annotated window of data/cas-register/bad/cas-failure.edn (Knossos:
# :fail means the op did not happen), after a write of 0 that set the value.
KNOSSOS_CAS_FAILURE_WINDOW = """
 {:process 79, :type :invoke, :f :write, :value 0}
 {:process 79, :type :ok, :f :write, :value 0}
 {:process 71, :type :invoke, :f :read, :value nil}
 {:process 71, :type :ok, :f :read, :value 0}
; Value is 0
 {:process 70, :type :invoke, :f :read, :value nil}
 {:process 78, :type :invoke, :f :cas, :value [1 3]}
; Start crashed cas 1->1
 {:process 77, :type :invoke, :f :cas, :value [1 1]}
; Start write 2
 {:process 76, :type :invoke, :f :write, :value 2}
 {:process 75, :type :invoke, :f :cas, :value [0 0]}
 {:process 79, :type :invoke, :f :cas, :value [2 1]}
 {:process 72, :type :invoke, :f :read, :value nil}
 {:process 73, :type :invoke, :f :read, :value nil}
 {:process 74, :type :invoke, :f :read, :value nil}
 {:process 71, :type :invoke, :f :read, :value nil}
 {:process :nemesis, :type :info, :f :start, :value "Cut off"}
; Write of 2 done (last linearized op)
 {:process 76, :type :ok, :f :write, :value 2}
 {:process 75, :type :fail, :f :cas, :value [0 0]}
 {:process 79, :type :fail, :f :cas, :value [2 1]}
 {:process 78, :type :fail, :f :cas, :value [1 3]}
 {:process 70, :type :ok, :f :read, :value 0}
 {:process 73, :type :ok, :f :read, :value 0}
 {:process 74, :type :ok, :f :read, :value 0}
 {:process 71, :type :fail, :f :read, :value nil}
 {:process 76, :type :invoke, :f :write, :value 1}
 {:process 76, :type :fail, :f :write, :value 1}
 {:process 77, :type :info, :f :cas, :value [1 1]}
 {:process 72, :type :fail, :f :read, :value nil}
 {:process 75, :type :invoke, :f :cas, :value [2 2]}
 {:process 75, :type :fail, :f :cas, :value [2 2]}
 {:process 79, :type :invoke, :f :cas, :value [0 4]}
 {:process 78, :type :invoke, :f :cas, :value [1 3]}
; Start of stale read
 {:process 70, :type :invoke, :f :read, :value nil}
 {:process 79, :type :fail, :f :cas, :value [0 4]}
 {:process 78, :type :fail, :f :cas, :value [1 3]}
; Nonlinearizable
 {:process 70, :type :ok, :f :read, :value 0}
 {:process 73, :type :invoke, :f :read, :value nil}
 {:process 73, :type :ok, :f :read, :value 0}
"""


def test_knossos_cas_register_bug_is_linearizable() -> None:
    assert check(edn(KNOSSOS_CAS_REGISTER_BUG), Register()).verdict == Verdict.OK


def test_knossos_bad_analysis() -> None:
    res = check(edn(KNOSSOS_BAD_ANALYSIS), Register())
    assert res.verdict == Verdict.ILLEGAL
    assert (res.anomalies[0].op.process, res.anomalies[0].op.output) == (21, 2)  # first impossible read


def test_knossos_immediate_failure_drops_failed_write() -> None:
    assert check(edn(KNOSSOS_IMMEDIATE_FAILURE), Register()).verdict == Verdict.ILLEGAL


def test_knossos_rethink_blames_the_concurrent_read_not_the_later_one() -> None:
    (a,) = check(edn(KNOSSOS_RETHINK_FAIL_MINIMAL), Register()).anomalies
    assert (a.op.process, a.op.output, a.prefix_ops, a.minimal) == (1, 3, 3, True)
    assert [o.process for o in a.concurrent] == [2]


def test_knossos_cas_failure_window() -> None:
    evs = edn(KNOSSOS_CAS_FAILURE_WINDOW)
    assert any(e.process == "nemesis" for e in evs)  # skipped by pairing
    (a,) = check(evs, Register()).anomalies
    assert a.op.process == 70 and a.op.output == 0 and a.op.call == 31  # the "Nonlinearizable" read


# --- Hand-made anomalies and the info rule -------------------------------------

@pytest.mark.parametrize("name,ops,blamed", [
    ("stale read", [W(0, 1, 0, 10), W(1, 2, 20, 30), R(2, 1, 40, 50)], 2),
    ("lost write", [W(0, 1, 0, 10), R(1, None, 20, 30)], 1),
    ("both CAS won", [W(0, 0, 0, 10), CAS(1, 0, 1, 20, 40), CAS(2, 0, 2, 25, 45)], 2),
    ("CAS refused though it held", [W(0, 1, 0, 10), CAS(1, 1, 2, 20, 30, ok=False)], 1),
    ("CAS won though it did not hold", [W(0, 1, 0, 10), CAS(1, 5, 2, 20, 30), R(2, 2, 40, 50)], 1),
    ("read of a value never written", [W(0, 1, 0, 10), R(1, 7, 5, 15)], 1),
    ("read from the future", [R(0, 1, 0, 10), W(1, 1, 20, 30)], 0),
])
def test_anomalies(name: str, ops: list[Operation], blamed: int) -> None:
    res = check(ops, Register())
    assert res.verdict == Verdict.ILLEGAL, name
    assert res.anomalies[0].op is ops[blamed], res.describe()


def test_info_is_applied_at_most_once() -> None:
    # The timed-out write of 2 took effect before the first read; 1 cannot come back.
    ops = [W(0, 1, 0, 10), W(1, 2, 5, 0, type=INFO), R(2, 2, 20, 30), R(3, 1, 40, 50)]
    assert check(ops, Register()).verdict == Verdict.ILLEGAL


def test_info_write_may_have_happened() -> None:
    ops = [W(0, 1, 0, 10), W(1, 2, 15, 0, type=INFO), R(2, 2, 20, 30)]
    assert check(ops, Register()).verdict == Verdict.OK
    failed = [ops[0], replace(ops[1], type=FAIL, ret=16, output=None), ops[2]]
    assert check(failed, Register()).verdict == Verdict.ILLEGAL  # fail: it definitely did not happen


def test_info_write_may_land_much_later() -> None:
    ops = [W(0, 1, 0, 10), W(1, 2, 15, 0, type=INFO), R(2, 1, 20, 30), R(3, 2, 100, 110), R(4, 2, 120, 130)]
    assert check(ops, Register()).verdict == Verdict.OK


def test_info_write_may_never_happen() -> None:
    ops = [W(0, 1, 0, 10), W(1, 2, 15, 0, type=INFO), R(2, 1, 20, 30), R(3, 1, 100, 110)]
    assert check(ops, Register()).verdict == Verdict.OK


def test_info_cas_and_fail_cas() -> None:
    base = [W(0, 1, 0, 10)]
    assert check(base + [CAS(1, 1, 5, 15, 0, type=INFO), R(2, 5, 20, 30)], Register()).verdict == Verdict.OK
    assert check(base + [CAS(1, 2, 5, 15, 0, type=INFO), R(2, 5, 20, 30)], Register()).verdict == Verdict.ILLEGAL


def test_events_with_info_and_fail_completions() -> None:
    evs = [Event(INVOKE, 0, "write", "x", 1, 0), Event(OK, 0, "write", "x", 1, 10),
           Event(INVOKE, 1, "write", "x", 2, 12), Event(INFO, 1, "write", "x", 2, 14),
           Event(INVOKE, 2, "write", "x", 3, 15), Event(FAIL, 2, "write", "x", 3, 16),
           Event(INVOKE, 2, "read", "x", None, 20), Event(OK, 2, "read", "x", 2, 30)]
    assert check(evs).verdict == Verdict.OK
    evs[-1] = replace(evs[-1], value=3)
    assert check(evs).verdict == Verdict.ILLEGAL


def test_unknown_under_a_tiny_time_limit() -> None:
    evs = synth.generate(3000, keys=1, processes=10, seed=3)
    res = check(evs, time_limit=0.0)
    assert res.verdict == Verdict.UNKNOWN and res.valid is None
    assert check(evs, time_limit=30).verdict == Verdict.OK


# --- P-compositionality, explanation, other models -----------------------------

def test_kv_partitions_by_key_and_names_the_bad_one() -> None:
    ops = [W(0, 1, 0, 10, "a"), W(1, 2, 20, 30, "b"), R(2, 2, 40, 50, "a"), R(3, 2, 40, 50, "b")]
    res = check(ops)
    assert res.verdict == Verdict.ILLEGAL and len(res.partitions) == 2
    assert [p.key for p in res.partitions if p.verdict == Verdict.ILLEGAL] == ["a"]
    assert res.anomalies[0].key == "a"
    # Seen as one register the keys blur together and the history passes.
    assert check(ops, Register()).verdict == Verdict.OK


def test_generated_history_valid_and_planted_stale_read_found() -> None:
    evs = synth.generate(10_000, keys=10, processes=10, seed=11)
    res = check(evs, time_limit=60)
    assert res.verdict == Verdict.OK and len(res.partitions) == 10
    bad, what = synth.make_stale_read(evs, seed=11)
    res = check(bad, time_limit=60)
    (a,) = res.anomalies
    assert res.verdict == Verdict.ILLEGAL and a.minimal
    assert f"p{a.op.process} read {a.op.key!r} at {a.op.call} " in what


def test_failing_prefix_is_minimal() -> None:
    evs = synth.generate(400, keys=1, processes=6, seed=5, info_rate=0.02)
    bad, _ = synth.make_stale_read(evs, seed=5)
    ops = [o for o in pair(bad) if o.type != FAIL]
    (a,) = check(ops).anomalies
    cut = a.op.ret
    # Truncate right before the blamed completion: what is still open becomes pending.
    before = [o if o.ret < cut else replace(o, ret=math.inf, output=UNKNOWN, type=INFO)
              for o in ops if o.call <= cut]
    assert check(before).verdict == Verdict.OK


class _ListRegister(Model):
    """Unhashable states and a custom `equal`: exercises the slow cache."""

    def init(self):
        return [None]

    def step(self, state, input, output):
        f, _, arg = input
        if f == "write":
            return True, [arg]
        return output is UNKNOWN or output == state[0], state

    def equal(self, a, b) -> bool:
        return a == b


def test_custom_equal_model() -> None:
    assert check([W(0, 100, 0, 100), R(1, 100, 25, 75), R(2, None, 30, 60)], _ListRegister()).verdict == Verdict.OK
    assert check([W(0, 200, 0, 100), R(1, 200, 10, 30), R(2, None, 40, 90)], _ListRegister()).verdict == Verdict.ILLEGAL


# --- Differential check against a brute-force search ---------------------------

def _brute(ops: list[Operation], model: Model) -> bool:
    ops = [o for o in ops if o.type != FAIL]
    io = [model.io(o) for o in ops]

    @functools.lru_cache(maxsize=None)
    def go(done: int, state) -> bool:
        rest = [i for i in range(len(ops)) if not done >> i & 1]
        if all(ops[i].ret == math.inf for i in rest):
            return True  # what is left may never have happened
        bound = min(ops[i].ret for i in rest)
        return any(ok and go(done | 1 << i, s) for i in rest if ops[i].call <= bound
                   for ok, s in [model.step(state, *io[i])])
    return go(0, model.init())


def test_agrees_with_brute_force_on_random_small_histories() -> None:
    rng = random.Random(7)
    seen = {True: 0, False: 0}
    for trial in range(400):
        evs = synth.generate(rng.randint(3, 12), keys=1, processes=rng.randint(2, 5), seed=trial,
                             info_rate=0.3, fail_rate=0.05, think_ms=0.3)
        ops = []
        for o in pair(evs):
            if o.type == OK and rng.random() < 0.15:  # perturb some answers
                if o.f == "read":
                    o = replace(o, output=rng.choice([None, 1, 2, 3, 4]))
                elif o.f == "cas":
                    o = replace(o, output={"cas_ok": False} if o.output is None else None)
            ops.append(o)
        expected = _brute(ops, Register())
        seen[expected] += 1
        assert (check(ops, Register()).verdict == Verdict.OK) == expected, [str(o) for o in ops]
    assert min(seen.values()) > 50  # both outcomes exercised


def _random_ops(rng: random.Random) -> list[Operation]:
    """Free-form histories over a tiny value domain: repeated values, overlapping everything."""
    ops = []
    for p in range(rng.randint(1, 8)):
        call = rng.randint(0, 20)
        ret, f = call + rng.randint(0, 10), rng.choice(["read", "write", "cas", "cas"])
        value, out = {"read": (None, rng.choice([None, 0, 1, 2])),
                      "write": (rng.choice([0, 1, 2]), None),
                      "cas": ([rng.choice([None, 0, 1, 2]), rng.choice([0, 1, 2])],
                              rng.choice([None, {"cas_ok": False}]))}[f]
        ops.append(op(p, f, value, call, ret, out, type=rng.choice([OK, OK, OK, INFO])))
    return ops


def test_agrees_with_brute_force_and_blames_the_first_impossible_completion() -> None:
    rng = random.Random(13)
    invalid = 0
    for _ in range(1500):
        ops = _random_ops(rng)
        expected = _brute(ops, Register())
        res = check(ops, Register())
        assert (res.verdict == Verdict.OK) == expected, [str(o) for o in ops]
        if expected:
            continue
        invalid += 1
        # The blamed op's completion is the first after which no linearization exists.
        cut = res.anomalies[0].op.ret
        def upto(t: float, strict: bool) -> list[Operation]:
            return [o if (o.ret < t if strict else o.ret <= t) else
                    replace(o, ret=math.inf, output=UNKNOWN, type=INFO) for o in ops if o.call <= t]
        assert not _brute(upto(cut, strict=False), Register())
        assert _brute(upto(cut, strict=True), Register()) or \
            sum(o.ret == cut for o in ops) > 1  # simultaneous completions: one of them is named
    assert invalid > 300
