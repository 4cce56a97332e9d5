"""A short real jepsen_like run: every workload under every fault family, and the checkers pass.

About a minute: 25 s of load while the nemesis cycles through partition,
kill, pause and clock faults, then heal, a quiet period, final reads, and
the checks. The cluster is the project's own launcher with every link
through the harness's proxies.
"""

from __future__ import annotations

import json
from pathlib import Path

from jepsen_like import runner
from jepsen_like.history import pair, read_jsonl

KILL = ["etcd", "redis", "api"]
PAUSE = ["etcd", "redis", "api"]


def test_short_run_with_all_fault_families_is_valid(tmp_path: Path) -> None:
    o = runner.Options(
        workloads=["register", "observations", "watch"], nemeses=["partition", "kill", "pause", "clock"],
        time_limit_s=25, seed=7, store=tmp_path, kill_targets=KILL, pause_targets=PAUSE,
        gap_s=(0.5, 1.0), hold_s=(3.0, 4.0), order="cycle", quiet_s=3, final_wait_s=15,
        workload_options={"register": {"clients": 4}, "observations": {"clients": 4}})
    out = runner.run(o)
    print(out.summary)
    assert out.valid is True, out.summary

    for name in ("history.jsonl", "results.json", "final.json", "timeline.html", "latency.png", "rate.png"):
        assert (out.dir / name).stat().st_size > 0, name
    results = json.loads((out.dir / "results.json").read_text())
    checkers = results["checkers"]
    assert set(checkers) == {"linearizability", "staleness", "convergence", "causal", "watch", "availability"}
    assert all(c["valid"] for c in checkers.values()), {k: c["valid"] for k, c in checkers.items()}
    assert {w[2] for w in results["nemesis_windows"]} == {"partition", "kill", "pause", "clock"}

    # The history follows Jepsen's rules (pairing, no process reused after info) and has real load in it.
    ops = pair(read_jsonl(str(out.dir / "history.jsonl")), strict=True)
    by_f = {f: sum(1 for op in ops if op.f == f and op.type == "ok") for f in ("read", "write", "cas", "post")}
    assert all(n >= 50 for n in by_f.values()), by_f
    assert checkers["linearizability"]["ops"] > 200
    assert checkers["watch"]["stats"]["events"] > 0
    assert checkers["convergence"]["stats"]["acknowledged"] > 100
    assert checkers["causal"]["stats"]["causal_writes"] > 10
    tiers = checkers["availability"]["stats"]["tiers"]
    assert tiers["ap"]["inside"]["total"] > 0 and tiers["cp"]["inside"]["total"] > 0
    # The AP tier keeps answering through the faults (the CP tier may refuse).
    assert tiers["ap"]["all"]["ok_fraction"] > 0.8
