"""Linearizability checker speed on realistic generated histories.

    python bench/linearizability.py                      # 10,000 ops, 10 keys, 10 processes
    python bench/linearizability.py --ops 20000 --seed 3
    python bench/linearizability.py --stress             # also single-key and 1%-timeout rows

Histories come from jepsen_like.synth: clients against a simulated ideal
store where each operation takes effect at one instant inside its
[call, return] interval (random latencies, ~0.5% failed and ~0.2% timed-out
operations, unique written values). Each valid history is checked as is,
then with one read changed to a definitely overwritten value (an invalid
history; its time includes narrowing the failing window). Prints one row
per check; "seconds" is the check alone, not generation.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jepsen_like import synth  # noqa: E402
from jepsen_like.checkers.linearizability import check  # noqa: E402
from jepsen_like.history import INFO, pair  # noqa: E402


def measure(events: list, repeat: int, time_limit: float) -> tuple[str, float]:
    times, verdict = [], ""
    for _ in range(repeat):
        t0 = time.perf_counter()
        verdict = check(events, time_limit=time_limit).verdict
        times.append(time.perf_counter() - t0)
    return verdict, statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=10_000)
    ap.add_argument("--keys", type=int, default=10)
    ap.add_argument("--processes", type=int, default=10)
    ap.add_argument("--info-rate", type=float, default=0.002)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="median of this many checks")
    ap.add_argument("--time-limit", type=float, default=120.0)
    ap.add_argument("--stress", action="store_true", help="add single-key and high-timeout rows")
    a = ap.parse_args()

    configs = [(a.ops, a.keys, a.processes, a.info_rate)]
    if a.stress:
        configs += [(a.ops, 1, a.processes, a.info_rate), (a.ops, a.keys, 50, a.info_rate),
                    (a.ops, a.keys, a.processes, 0.01)]
    print(f"{'ops':>7} {'keys':>5} {'procs':>6} {'info':>5} {'history':>8} {'verdict':>8} {'seconds':>8}")
    for ops, keys, procs, info in configs:
        events = synth.generate(ops, keys=keys, processes=procs, seed=a.seed, info_rate=info)
        n_info = sum(o.type == INFO for o in pair(events))
        bad, _ = synth.make_stale_read(events, seed=a.seed)
        for name, h in (("valid", events), ("stale", bad)):
            verdict, secs = measure(h, a.repeat, a.time_limit)
            print(f"{ops:>7} {keys:>5} {procs:>6} {n_info:>5} {name:>8} {verdict:>8} {secs:>8.3f}", flush=True)


if __name__ == "__main__":
    main()
