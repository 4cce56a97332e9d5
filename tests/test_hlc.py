"""Properties of the hybrid logical clock and its timestamp string."""

from __future__ import annotations

import time

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from consistency.hlc import (
    MAX_LOGICAL,
    MAX_WALL_MS,
    HLCTimestamp,
    HybridLogicalClock,
    InvalidTimestampError,
    LogicalOverflowError,
)

BASE = 1_700_000_000_000

timestamps = st.builds(HLCTimestamp, st.integers(0, MAX_WALL_MS), st.integers(0, MAX_LOGICAL))


class FakeWall:
    """A wall clock the test moves by hand, backwards included."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


# One step: the wall clock moves by `step` (possibly backwards or not at all),
# then either a local event or the receipt of a timestamp `offset` ms from the
# local wall clock (far ahead included: the clock follows it).
events = st.lists(
    st.tuples(
        st.integers(-300, 300) | st.just(0),
        st.none() | st.tuples(st.integers(-1500, 5000), st.integers(0, 50)),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(events)
def test_clock_is_monotonic_and_tracks_the_greatest_time_seen(steps: list) -> None:
    wall = FakeWall(BASE)
    clock = HybridLogicalClock("n1", now_ms=wall)
    issued: list[HLCTimestamp] = []
    highest_wall_seen = 0  # max of every wall reading and accepted remote wall
    for step, remote_spec in steps:
        wall.ms += step
        before = clock.last
        if remote_spec is None:
            result = clock.now()
        else:
            offset, logical = remote_spec
            remote = HLCTimestamp(wall.ms + offset, logical)
            result = clock.update(remote)
            assert result > remote
            highest_wall_seen = max(highest_wall_seen, remote.wall_ms)
        highest_wall_seen = max(highest_wall_seen, wall.ms)
        assert all(result > earlier for earlier in issued)
        assert result == clock.last
        # The HLC wall component is exactly the largest physical time seen:
        # never behind the local wall clock, never invented.
        assert result.wall_ms == highest_wall_seen
        if result.wall_ms > before.wall_ms and (remote_spec is None or result.wall_ms > remote.wall_ms):
            assert result.logical == 0
        issued.append(result)


def test_a_remote_stamp_far_ahead_is_followed() -> None:
    """No drift bound: the stamps a node receives are already merged into its
    replica; observations stamped too far ahead are refused at the API instead."""
    clock = HybridLogicalClock("n1", now_ms=FakeWall(BASE))
    assert clock.update(HLCTimestamp(BASE + 3_600_000, 3)) == HLCTimestamp(BASE + 3_600_000, 4)
    assert clock.now() == HLCTimestamp(BASE + 3_600_000, 5)


def test_wall_clock_standing_still_and_going_back_only_bumps_logical() -> None:
    wall = FakeWall(BASE)
    clock = HybridLogicalClock("n1", now_ms=wall)
    assert clock.now() == HLCTimestamp(BASE, 0)
    assert clock.now() == HLCTimestamp(BASE, 1)
    wall.ms -= 10_000
    assert clock.now() == HLCTimestamp(BASE, 2)
    wall.ms = BASE + 1
    assert clock.now() == HLCTimestamp(BASE + 1, 0)


def test_logical_overflow_refuses_and_leaves_clock_unchanged() -> None:
    wall = FakeWall(BASE)
    full = HLCTimestamp(BASE, MAX_LOGICAL)
    clock = HybridLogicalClock("n1", now_ms=wall, last=full)
    with pytest.raises(LogicalOverflowError):
        clock.now()
    with pytest.raises(LogicalOverflowError):
        clock.update(HLCTimestamp(BASE, 5))
    assert clock.last == full
    other = HybridLogicalClock("n2", now_ms=wall)
    with pytest.raises(LogicalOverflowError):
        other.update(full)  # the remote's own counter is exhausted
    assert other.last == HLCTimestamp(0, 0)
    wall.ms += 1  # once the wall clock moves on, the clock works again
    assert clock.now() == HLCTimestamp(BASE + 1, 0)
    nearly = HybridLogicalClock("n3", now_ms=wall, last=HLCTimestamp(BASE + 5, MAX_LOGICAL - 3))
    with pytest.raises(LogicalOverflowError):
        nearly.reserve(4)  # three stamps left
    assert nearly.last == HLCTimestamp(BASE + 5, MAX_LOGICAL - 3)
    assert nearly.reserve(3) == HLCTimestamp(BASE + 5, MAX_LOGICAL - 2)


def test_restored_watermark_is_never_reissued() -> None:
    last = HLCTimestamp(BASE + 60_000, 9)
    clock = HybridLogicalClock("n1", now_ms=FakeWall(BASE), last=last)
    assert clock.now() == HLCTimestamp(BASE + 60_000, 10)


def test_default_wall_clock_is_real_time() -> None:
    stamp = HybridLogicalClock("n1").now()
    assert abs(stamp.wall_ms - time.time() * 1000) < 5_000


@pytest.mark.parametrize("bad", [-1, 2.5, True, "5", None, MAX_WALL_MS + 1])
def test_bad_time_source_is_refused(bad: object) -> None:
    clock = HybridLogicalClock("n1", now_ms=lambda: bad)  # type: ignore[arg-type,return-value]
    with pytest.raises(InvalidTimestampError):
        clock.now()


def test_bad_clock_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        HybridLogicalClock("")
    with pytest.raises(TypeError):
        HybridLogicalClock("n1").update("000000000001-0000")  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(timestamps, timestamps)
def test_string_round_trips_and_byte_order_is_timestamp_order(a: HLCTimestamp, b: HLCTimestamp) -> None:
    for t in (a, b):
        assert HLCTimestamp.parse(t.to_string()) == t
    assert (a < b) == (a.to_string() < b.to_string())
    assert (a < b) == (a.to_string().encode() < b.to_string().encode())  # what the Lua merges compare
    assert (a == b) == (a.to_string() == b.to_string())


def test_string_encoding_is_fixed_width_hex() -> None:
    assert HLCTimestamp(0x18F3A2B4C5D, 3).to_string() == "018f3a2b4c5d-0003"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "018f3a2b4c5d",
        "018f3a2b4c5d-003",
        "018F3A2B4C5D-0003",  # upper case is not canonical
        " 018f3a2b4c5d-0003",
        "018f3a2b4c5d-0003\n",
        "018f3a2b4c5d_0003",
        "18f3a2b4c5d-00003",
        "ffffffffffff-0000",  # wall beyond MAX_WALL_MS
        "018f3a2b4c5g-0003",
    ],
)
def test_parse_refuses_malformed_strings(text: str) -> None:
    with pytest.raises(ValueError):
        HLCTimestamp.parse(text)


# One edit of a canonical string: a character replaced, inserted or deleted. The characters are the
# ones a lenient parser would take: hex digits of either case, the separator (twice as likely),
# whitespace, what int() also reads ("_", "+", "x", the Arabic-Indic digit three), a non-hex letter.
EDIT_CHARS = "0123456789abcdefABCDEF-- \t\n_+xg\u0663"
edits = st.tuples(st.sampled_from(["replace", "insert", "delete"]), st.integers(0, 17), st.sampled_from(EDIT_CHARS))


@st.composite
def near_canonical(draw: st.DrawFn) -> str:
    """A timestamp's string with up to three edits: a third or more still canonical, the rest almost."""
    chars = list(draw(timestamps).to_string())
    for op, at, char in draw(st.lists(edits, max_size=3)):
        at = min(at, len(chars))
        if op == "insert":
            chars.insert(at, char)
        elif at < len(chars):
            chars[at : at + 1] = [char] if op == "replace" else []
    return "".join(chars)


def _written_by_to_string(text: str) -> bool:
    """Whether some timestamp's to_string() is exactly `text`: decoded as leniently as int() allows,
    then compared, so it shares nothing with parse()'s pattern."""
    wall, _, logical = text.partition("-")
    try:
        return HLCTimestamp(int(wall, 16), int(logical, 16)).to_string() == text
    except ValueError:
        return False


@settings(max_examples=500, deadline=None)
@given(near_canonical())
def test_parse_accepts_only_what_to_string_writes(text: str) -> None:
    try:
        parsed = HLCTimestamp.parse(text)
    except ValueError:
        event("refused")
        assert not _written_by_to_string(text), f"{text!r} is canonical, yet refused"
    else:
        event("accepted")
        assert parsed.to_string() == text


@pytest.mark.parametrize(
    "args", [(-1, 0), (0, -1), (0, MAX_LOGICAL + 1), (MAX_WALL_MS + 1, 0), (1.0, 0), (True, 0)]
)
def test_timestamp_range_is_enforced(args: tuple) -> None:
    with pytest.raises(InvalidTimestampError):
        HLCTimestamp(*args)
