"""A short real jepsen_like run: every workload under every fault family, and the checkers pass.

About a minute: 25 s of load while the nemesis cycles through partition,
kill, pause and clock faults, then heal, a quiet period, final reads, and
the checks. The cluster is the project's own launcher with every link
through the harness's proxies.

Nothing here counts on the machine's speed: the cycle's first round always
runs whole, so every family is applied however slow the run; the checks ask
that each operation kind and each checker saw something (more than nothing),
and hold the tiers only to what the system promises.
"""

from __future__ import annotations

import json
from pathlib import Path

from jepsen_like import runner
from jepsen_like.history import OK, Operation, pair, read_jsonl

KILL = ["etcd", "redis", "api"]
PAUSE = ["etcd", "redis", "api"]


def refused_ap_ops_during_partitions(ops: list[Operation], windows: list[tuple[float, float, str]]) -> list[str]:
    """AP operations invoked while a partition was in force that were not answered ok, other than timeouts.

    The AP tier serves from the node's own Redis on its own host, which no partition cuts (only the
    `net` family touches that link), so it has no reason to refuse. A timeout ("no answer") is a
    slow machine's and is let be; a refusal (503, 4xx, a connection not made) is the tier failing
    its promise.
    """
    cuts = [(s, e) for s, e, fault in windows if fault == "partition"]
    return [f"{op}: {op.complete.error if op.complete else None}" for op in ops
            if op.get("tier") == "ap" and op.type != OK and any(s <= op.call < e for s, e in cuts)
            and not str(op.complete.error if op.complete else "").startswith("no answer")]


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
    windows = results["nemesis_windows"]
    assert {w[2] for w in windows} == {"partition", "kill", "pause", "clock"}
    log = results["test"]["nemesis_log"]
    assert not [e for e in log if "error" in e], log  # every fault applied and undone (killed ones healthy again)
    assert results["clients_completed"] == {"before_faults": True, "after_faults": True}

    # The history follows Jepsen's rules (pairing, no process reused after info), and every part ran:
    # each operation kind was answered ok, and each checker had something to judge.
    ops = pair(read_jsonl(str(out.dir / "history.jsonl")), strict=True)
    by_f = {f: sum(1 for op in ops if op.f == f and op.type == OK)
            for f in ("read", "write", "cas", "post", "read-entity")}
    assert all(n > 0 for n in by_f.values()), by_f
    assert checkers["linearizability"]["ops"] > 0 and checkers["linearizability"]["partitions"]
    assert checkers["staleness"]["stats"]["levels"], checkers["staleness"]["stats"]
    assert checkers["watch"]["stats"]["events"] > 0
    assert checkers["convergence"]["stats"]["acknowledged"] > 0
    assert checkers["causal"]["stats"]["causal_writes"] > 0 and checkers["causal"]["stats"]["reads_after_writes"] > 0
    tiers = checkers["availability"]["stats"]["tiers"]
    assert tiers["ap"]["inside"]["total"] > 0 and tiers["cp"]["inside"]["total"] > 0
    # The AP tier keeps answering through partitions (the CP tier may refuse): nothing refused there,
    # and something was asked there.
    assert any(op.get("tier") == "ap" and op.type == OK and any(s <= op.call < e for s, e, f in windows
                                                                 if f == "partition") for op in ops)
    assert refused_ap_ops_during_partitions(ops, windows) == []
