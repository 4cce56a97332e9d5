"""Recording a history as it happens: one clock, one file, written line by line.

Events go to ``history.jsonl`` as they are recorded (and flushed), so a run
that dies halfway still leaves the history up to that point. Times are
monotonic nanoseconds since the recorder was made: the clock of the whole
test, nemesis included.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import IO, Any

from .history import INFO, INVOKE, Event


class Recorder:
    def __init__(self, path: Path | None = None) -> None:
        self.t0 = time.monotonic_ns()
        self.wall0 = time.time()
        self.events: list[Event] = []
        self._lock = threading.Lock()  # the nemesis records from worker threads too
        self._fh: IO[str] | None = open(path, "w", encoding="utf-8") if path else None

    def now(self) -> int:
        return time.monotonic_ns() - self.t0

    def record(self, type: str, process: int | str, f: str, key: Any = None, value: Any = None,
               **extra: Any) -> Event:
        first = {k: extra.pop(k) for k in ("consistency", "revision", "error") if k in extra}
        ev = Event(type, process, f, key, value, self.now(), extra=extra, **first)
        line = json.dumps(ev.to_dict(), separators=(",", ":"), default=str)
        with self._lock:
            self.events.append(ev)
            if self._fh is not None:
                self._fh.write(line + "\n")
                self._fh.flush()
        return ev

    def invoke(self, process: int, f: str, key: Any = None, value: Any = None, **extra: Any) -> Event:
        return self.record(INVOKE, process, f, key, value, **extra)

    def nemesis(self, f: str, value: Any, type: str = INFO) -> Event:
        return self.record(type, "nemesis", f, None, value)

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


class Process:
    """One client slot's process id: replaced after an `info`, as Jepsen does.

    An operation whose outcome is unknown may still be in flight; a new
    operation on the same process would make it concurrent with itself.
    """

    def __init__(self, slot: int, stride: int) -> None:
        self.slot = slot
        self.stride = stride
        self.id = slot

    def crashed(self) -> None:
        self.id += self.stride
