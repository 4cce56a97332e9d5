"""Hybrid logical clock (Kulkarni, Demirbas et al., "Logical Physical Clocks", 2014).

The AP tier orders last-writer-wins registers by HLC timestamps. A plain wall
clock is not enough: clocks of different regions disagree and can step
backwards (NTP), which would let an older write beat a newer one. A pure
Lamport clock would fix causality but says nothing about real time, so a
timestamp could no longer be read as "about when". The HLC's wall component
is the greatest physical time it has seen, and a logical counter breaks ties
and absorbs backwards steps.

It bounds nothing: a stamp from a clock running ahead is followed, because the
stamps it receives are already merged into its own replica (refusing them would
protect nothing, and following them orders a write made after a read after what
was read). Observations stamped too far ahead are refused at the API instead
(Settings.max_drift_ms).

Thread safety: none. A clock belongs to one node and is driven from a single
asyncio event loop; ``now()`` and ``update()`` never await, so they are atomic
with respect to other coroutines. Sharing one clock across OS threads needs an
external lock.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Callable

__all__ = [
    "LOGICAL_BITS",
    "MAX_LOGICAL",
    "MAX_WALL_MS",
    "HLCError",
    "HLCTimestamp",
    "HybridLogicalClock",
    "InvalidTimestampError",
    "LogicalOverflowError",
    "wall_clock_ms",
]

LOGICAL_BITS = 16
MAX_LOGICAL = (1 << LOGICAL_BITS) - 1
# 47 bits of milliseconds (until the year 6429): fits the 12 hex digits of the
# string form, and stays exact in a double (Lua 5.1's only number type).
WALL_BITS = 47
MAX_WALL_MS = (1 << WALL_BITS) - 1

_WALL_HEX = 12  # 48 bits of hex digits; fixed width so strings sort like timestamps
_LOGICAL_HEX = 4
_STRING_RE = re.compile(r"[0-9a-f]{%d}-[0-9a-f]{%d}" % (_WALL_HEX, _LOGICAL_HEX))


class HLCError(Exception):
    """Base class of every error raised by this module."""


class InvalidTimestampError(HLCError, ValueError):
    """A timestamp (or its encoding) is out of range or malformed."""


class LogicalOverflowError(HLCError):
    """The logical counter would pass MAX_LOGICAL.

    Wrapping would reorder events and borrowing a millisecond from the future
    would run the clock ahead of real time, so it refuses instead. It happens
    only when more than 65535 events share one wall millisecond, or the local wall
    clock lags far behind the HLC (after a big backwards step) under heavy load;
    the caller should retry once the wall clock has moved on.
    """

    def __init__(self, wall_ms: int) -> None:
        super().__init__(
            f"HLC logical counter exhausted at wall_ms={wall_ms}: more than "
            f"{MAX_LOGICAL} events in one millisecond; retry when the wall clock advances"
        )
        self.wall_ms = wall_ms


def _check_int(name: str, value: object, upper: int) -> int:
    # bool is an int subclass; True as a wall time is always a bug.
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidTimestampError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= value <= upper:
        raise InvalidTimestampError(f"{name}={value} outside [0, {upper}]")
    return value


@dataclass(frozen=True, order=True, slots=True)
class HLCTimestamp:
    """An HLC reading; ordered by (wall_ms, logical), immutable and hashable."""

    wall_ms: int
    logical: int = 0

    def __post_init__(self) -> None:
        _check_int("wall_ms", self.wall_ms, MAX_WALL_MS)
        _check_int("logical", self.logical, MAX_LOGICAL)

    def __str__(self) -> str:
        return self.to_string()

    def to_string(self) -> str:
        """Fixed-width lowercase hex ``wwwwwwwwwwww-llll``.

        Byte-wise (and code point) string order equals timestamp order: the
        Lua merges compare order keys "<this>|<node>" as bytes (common.lua)."""
        return f"{self.wall_ms:0{_WALL_HEX}x}-{self.logical:0{_LOGICAL_HEX}x}"

    @classmethod
    def parse(cls, text: str) -> HLCTimestamp:
        """Inverse of to_string(); only the canonical form is accepted.

        Upper-case hex is refused so that each timestamp has exactly one string
        and string comparison stays a faithful stand-in for timestamp order.
        """
        if not isinstance(text, str) or _STRING_RE.fullmatch(text) is None:
            raise InvalidTimestampError(f"malformed HLC timestamp string: {text!r}")
        wall_hex, logical_hex = text.split("-")
        return cls(int(wall_hex, 16), int(logical_hex, 16))


def wall_clock_ms() -> int:
    """Milliseconds since the Unix epoch from the system clock."""
    return time.time_ns() // 1_000_000


class HybridLogicalClock:
    """One node's HLC. See the module docstring for the threading contract."""

    def __init__(
        self,
        node_id: str,
        now_ms: Callable[[], int] = wall_clock_ms,
        *,
        last: HLCTimestamp | None = None,
    ) -> None:
        """``last`` restores a persisted watermark so that a restarted node never
        issues a timestamp at or below one it issued before the restart."""
        if not isinstance(node_id, str) or not node_id:
            raise ValueError("node_id must be a non-empty string")
        if last is not None and not isinstance(last, HLCTimestamp):
            raise TypeError(f"last must be an HLCTimestamp, got {type(last).__name__}")
        self._node_id = node_id
        self._now_ms = now_ms
        self._last = last if last is not None else HLCTimestamp(0, 0)

    @property
    def node_id(self) -> str:
        return self._node_id

    @property
    def last(self) -> HLCTimestamp:
        """The greatest timestamp issued or absorbed so far (the watermark)."""
        return self._last

    def _read_wall(self) -> int:
        # Validate through HLCTimestamp so a broken time source (float,
        # negative, absurdly large) fails loudly instead of corrupting order.
        return HLCTimestamp(self._now_ms(), 0).wall_ms

    @staticmethod
    def _bump(wall_ms: int, logical: int) -> HLCTimestamp:
        if logical > MAX_LOGICAL:
            raise LogicalOverflowError(wall_ms)
        return HLCTimestamp(wall_ms, logical)

    def now(self) -> HLCTimestamp:
        """Timestamp for a local or send event: strictly greater than every
        timestamp this clock issued or absorbed before, whatever the wall clock
        did meanwhile."""
        wall = self._read_wall()
        last = self._last
        if wall > last.wall_ms:
            result = HLCTimestamp(wall, 0)
        else:
            result = self._bump(last.wall_ms, last.logical + 1)
        self._last = result
        return result

    def reserve(self, n: int) -> HLCTimestamp:
        """The first of ``n`` consecutive timestamps (same wall, logical + 0..n-1),
        all greater than every earlier one; the clock's last becomes the final one.

        A batch of writes gets strictly increasing stamps without building a
        timestamp object per write. On LogicalOverflowError the clock is left
        exactly as it was, so a smaller batch may still fit."""
        if n < 1:
            raise ValueError("reserve at least one timestamp")
        before = self._last
        first = self.now()
        if first.logical + n - 1 > MAX_LOGICAL:
            self._last = before  # nothing was handed out
            raise LogicalOverflowError(first.wall_ms)
        self._last = HLCTimestamp(first.wall_ms, first.logical + n - 1)
        return first

    def update(self, remote: HLCTimestamp) -> HLCTimestamp:
        """Timestamp for a receive event: greater than ``remote`` and than every
        earlier timestamp of this clock. On LogicalOverflowError the clock is
        left exactly as it was."""
        if not isinstance(remote, HLCTimestamp):
            raise TypeError(f"expected HLCTimestamp, got {type(remote).__name__}")
        wall = self._read_wall()
        last = self._last
        top = max(wall, last.wall_ms, remote.wall_ms)
        if top == last.wall_ms and top == remote.wall_ms:
            result = self._bump(top, max(last.logical, remote.logical) + 1)
        elif top == last.wall_ms:
            result = self._bump(top, last.logical + 1)
        elif top == remote.wall_ms:
            result = self._bump(top, remote.logical + 1)
        else:
            result = HLCTimestamp(top, 0)
        self._last = result
        return result
