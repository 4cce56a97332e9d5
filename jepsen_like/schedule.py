"""The nemesis's schedule: one fault at a time, in a thread, and the heal that undoes them all.

The schedule runs in its own thread: a quiet gap, one fault for a while,
stop it, and again, until the time limit; every start and stop is recorded
in the history as the ``nemesis`` process (invoke, then info once done), so
reports can shade the fault windows. At the end `heal_all` undoes every
fault, whatever state the schedule was in.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

from .cluster import Cluster
from .nemesis import HEALTH_TIMEOUT_S, Fault, reset_clocks, restore_processes
from .recorder import Recorder


class Schedule:
    """Faults one at a time, in a thread, until `stop()` or the deadline.

    `order` "random" draws each fault's family; "cycle" takes the families in
    turn (each fault's details are still drawn), and its first round always
    runs whole, past the deadline if it must: a short run on a slow machine
    still covers every family. `finish` waits for that round, then stops.
    """

    def __init__(self, faults: list[Fault], rec: Recorder, seed: int, *, gap_s: tuple[float, float] = (1.0, 3.0),
                 hold_s: tuple[float, float] = (3.0, 6.0), order: str = "random") -> None:
        if order not in ("random", "cycle"):
            raise ValueError("order is random or cycle")
        self.order = order
        self.faults = faults
        self.rec = rec
        self.rng = random.Random(seed)
        self.gap_s, self.hold_s = gap_s, hold_s
        self._stop = threading.Event()
        self._round = threading.Event()  # set once the first round (cycle order) is over
        if order == "random":
            self._round.set()  # nothing to wait for
        self._thread: threading.Thread | None = None
        self.log: list[dict[str, Any]] = []

    def start(self, duration_s: float) -> None:
        self._thread = threading.Thread(target=self._run, args=(time.monotonic() + duration_s,),
                                        name="nemesis", daemon=True)
        self._thread.start()

    def _run(self, deadline: float) -> None:
        drawn = 0
        try:
            while self.faults and not self._stop.is_set():
                whole = self.order == "cycle" and drawn < len(self.faults)  # the first round: not cut short
                if self._sleep(self.rng.uniform(*self.gap_s), whole):
                    return
                hold = self.rng.uniform(*self.hold_s)
                if not whole and time.monotonic() + hold > deadline:
                    return
                fault = self.faults[drawn % len(self.faults)] if self.order == "cycle" else self.rng.choice(self.faults)
                drawn += 1
                self.apply("start", fault, lambda: fault.start(self.rng))
                self._sleep(hold, whole)
                self.apply("stop", fault, fault.stop)
                if drawn == len(self.faults):
                    self._round.set()
        finally:
            self._round.set()

    def _sleep(self, seconds: float, whole: bool) -> bool:
        """True when `stop` cut the sleep short, which it may not when `whole`."""
        if whole:
            time.sleep(seconds)
            return False
        return self._stop.wait(seconds)

    def apply(self, f: str, fault: Fault, action: Callable[[], dict[str, Any]]) -> None:
        """Run `action` (a start or stop of `fault`) as one nemesis operation in the history."""
        self.rec.nemesis(f, {"fault": fault.name}, type="invoke")
        try:
            desc = {"fault": fault.name, **action()}
        except Exception as e:  # a fault that cannot be applied is logged, never fatal
            desc = {"fault": fault.name, "error": f"{type(e).__name__}: {e}"}
        self.rec.nemesis(f, desc)
        self.log.append({"f": f, **desc})

    def bound_s(self) -> float:
        """The longest one fault can take, gap to healthy again: what waits on the thread allow."""
        return self.gap_s[1] + self.hold_s[1] + HEALTH_TIMEOUT_S + 30

    def finish(self) -> None:
        """At the time limit: let the first round end (cycle order), then `stop`."""
        if self._thread is not None:
            self._round.wait(self.bound_s() * max(1, len(self.faults)))
        self.stop()

    def stop(self) -> None:
        """Stop drawing faults; the one in force is stopped by its own thread before it exits."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.bound_s())


def heal_all(faults: list[Fault], cluster: Cluster, rec: Recorder) -> None:
    """Undo every fault: links, processes, clocks; recorded as one nemesis operation.

    Each family heals itself first; then every link, process and clock is
    restored whatever the families did, so a heal that raised half-way (or a
    fault outside the list, like the fixed clock skew) leaves nothing behind.
    """
    rec.nemesis("heal", None, type="invoke")
    for fault in faults:
        try:
            fault.heal()
        except Exception:  # keep healing the rest
            pass
    cluster.net.heal()
    restore_processes(cluster)
    reset_clocks(cluster)
    rec.nemesis("heal", {"net": cluster.net.active()})
