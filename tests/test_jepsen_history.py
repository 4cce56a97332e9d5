"""History records, history.jsonl, and pairing invocations with completions."""

from __future__ import annotations

import math

import pytest

from jepsen_like import synth
from jepsen_like.history import (FAIL, INFO, INVOKE, OK, UNKNOWN, Event, HistoryError, dumps, loads,
                                 nemesis_intervals, pair, read_jsonl, write_jsonl)


def test_jsonl_round_trip_keeps_optional_and_extra_fields(tmp_path) -> None:
    evs = [
        Event(INVOKE, 3, "cas", "g", [1, 2], 100, consistency="linearizable", extra={"tier": "cp"}),
        Event(OK, 3, "cas", "g", {"cas_ok": False}, 180, revision=41, extra={"tier": "cp", "node": "r1"}),
        Event("info", "nemesis", "start", None, "partition r1|r2", 190),
    ]
    path = str(tmp_path / "history.jsonl")
    write_jsonl(path, evs)
    assert read_jsonl(path) == evs
    assert loads(dumps(evs)) == evs
    first = dumps(evs).splitlines()[1]
    assert '"revision":41' in first and '"node":"r1"' in first and '"consistency"' not in first
    assert evs[1].get("node") == "r1" and evs[1].get("revision") == 41 and evs[0].get("error", "-") == "-"


def test_bad_lines_are_reported() -> None:
    with pytest.raises(HistoryError, match="line 2"):
        loads('{"type":"invoke","process":0,"f":"read","time":1}\nnot json\n')
    with pytest.raises(HistoryError, match="type"):
        loads('{"type":"done","process":0,"f":"read","time":1}')
    with pytest.raises(HistoryError, match="time"):
        loads('{"type":"invoke","process":0,"f":"read"}')


def test_pairing_ok_fail_info_and_pending() -> None:
    evs = [
        Event(INVOKE, 0, "write", "x", 1, 0), Event(INVOKE, 1, "read", "x", None, 1),
        Event(OK, 1, "read", "x", None, 5, revision=3), Event(OK, 0, "write", "x", 1, 6),
        Event(INVOKE, 0, "write", "x", 2, 7), Event(FAIL, 0, "write", "x", 2, 8, error="503"),
        Event(INVOKE, 0, "write", "x", 3, 9), Event(INFO, 0, "write", "x", 3, 10, error="timeout"),
        Event(INVOKE, 1, "read", "x", None, 11),  # never completes
    ]
    ops = pair(evs)
    assert [(o.process, o.f, o.type) for o in ops] == [
        (0, "write", OK), (1, "read", OK), (0, "write", FAIL), (0, "write", INFO), (1, "read", INFO)]
    w, r, failed, info, pending = ops
    assert (w.call, w.ret, r.output, r.revision) == (0, 6, None, 3)
    assert failed.get("error") == "503" and failed.ret == 8
    assert info.ret == math.inf and info.output is UNKNOWN and info.complete is not None
    assert pending.ret == math.inf and pending.output is UNKNOWN and pending.complete is None
    assert [o.id for o in ops] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("evs,message", [
    ([Event(INVOKE, 0, "write", "x", 1, 0), Event(INFO, 0, "write", "x", 1, 1),
      Event(INVOKE, 0, "read", "x", None, 2)], "reused after an info"),
    ([Event(INVOKE, 0, "write", "x", 1, 0), Event(INVOKE, 0, "read", "x", None, 1)], "while its event 0 is pending"),
    ([Event(OK, 0, "read", "x", 1, 0)], "no pending invocation"),
    ([Event(INVOKE, 0, "write", "x", 1, 0), Event(OK, 0, "read", "x", 1, 1)], "completes invocation"),
    ([Event(INVOKE, 0, "write", "x", 1, 5), Event(OK, 0, "write", "x", 1, 4)], "before its invocation"),
])
def test_recording_rules(evs: list[Event], message: str) -> None:
    with pytest.raises(HistoryError, match=message):
        pair(evs)
    pair(evs, strict=False)  # lenient mode keeps going


def test_nemesis_events_are_not_operations() -> None:
    evs = [
        Event(INVOKE, "nemesis", "start", None, None, 10), Event(INFO, "nemesis", "start", None, "cut", 11),
        Event(INVOKE, 0, "read", "x", None, 12), Event(OK, 0, "read", "x", None, 13),
        Event(INFO, "nemesis", "stop", None, None, 20), Event(INFO, "nemesis", "start", None, None, 30),
    ]
    assert len(pair(evs)) == 1
    assert nemesis_intervals(evs) == [(10, 20), (30, math.inf)]


def test_generated_histories_follow_the_rules() -> None:
    evs = synth.generate(2000, keys=3, processes=8, seed=1, info_rate=0.02)
    ops = pair(evs)  # strict: would raise on process reuse after info
    assert len(ops) == 2000 and any(o.type == INFO for o in ops) and any(o.type == FAIL for o in ops)
    assert all(o.ret > o.call for o in ops)
    assert all(evs[i].time <= evs[i + 1].time for i in range(len(evs) - 1))
