"""The checkers can fail: each planted bug, on a real cluster, is flagged by the checker it breaks.

Each run is short (a few seconds of load) and built so the bug cannot hide:
reads on other nodes after writes (stale cache), replays of posted events
(no dedup), read-then-write on a node whose clock is 5 s behind (LWW by
wall clock), many one-write entities (dropped deltas), and api-r1 killed
while its clock runs an hour ahead (a fresh HLC after a restart).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jepsen_like import runner

FAST = dict(time_limit_s=6, quiet_s=1, final_wait_s=3, plots=False, seed=3)

CASES: dict[str, tuple[dict[str, Any], str, set[str]]] = {
    # sabotage: (options, checker that must fail, violation kinds it must report)
    "cp-stale-cache": ({"workloads": ["register"]}, "linearizability", set()),
    "no-dedup": ({"workloads": ["observations"],
                  "workload_options": {"observations": {"mix": (0.4, 0.3, 0.1)}}}, "convergence", {"counter"}),
    "wall-clock-lww": ({"workloads": ["observations"], "clock_skew": {"r1": -5000},
                        "workload_options": {"observations": {"mix": (0.3, 0.0, 0.5)}}},
                       "causal", {"lost-to-predecessor"}),
    "drop-deltas": ({"workloads": ["observations"]}, "convergence", {"diverged", "lost-write"}),
    # api-r1's clock runs an hour ahead, and only posts are sent (a read would move the HLC past what
    # it read). The kill is api-r1 itself (cycle order: at least once, however slow the machine);
    # it restarts without the offset and, with the bug, with an HLC an hour behind its own stamps.
    # The schedule ends that kill only once api-r1 is healthy, and the runner stops the clients
    # only after each has completed a post after that: r1's clients post to api-r1 after its
    # restart, below what it acknowledged before, within the hour.
    "fresh-hlc": ({"workloads": ["observations"], "clock_skew": {"r1": 3_600_000}, "nemeses": ["kill"],
                   "kill_targets": ["api-r1"], "order": "cycle", "gap_s": (0.5, 1.0), "hold_s": (1.0, 2.0),
                   "workload_options": {"observations": {"mix": (1.0, 0.0, 0.0)}}},
                  "causal", {"stamp-went-back"}),
}


@pytest.mark.parametrize("sabotage", sorted(CASES))
def test_sabotage_is_caught(sabotage: str, tmp_path: Path) -> None:
    opts, checker, kinds = CASES[sabotage]
    o = runner.Options(sabotage=[sabotage], store=tmp_path, **{"nemeses": [], **FAST, **opts})  # type: ignore[arg-type]
    out = runner.run(o)
    print(out.summary)
    result = out.results["checkers"][checker]
    assert result["valid"] is False, out.summary
    assert out.valid is False
    assert kinds <= set(result.get("kinds", [])), result.get("kinds")
    if sabotage == "cp-stale-cache":
        assert out.results["checkers"]["staleness"]["valid"] is False  # linearizable reads answered stale
    if sabotage == "fresh-hlc":
        log = out.results["test"]["nemesis_log"]
        assert {"f": "stop", "fault": "kill", "targets": ["api-r1"]} in log, log  # restarted, healthy again
        assert out.results["clients_completed"] == {"before_faults": True, "after_faults": True}
        went_back = [v["message"] for v in result["violations"] if v["kind"] == "stamp-went-back"]
        assert went_back and all(m.startswith("api-r1 stamped") for m in went_back), went_back
