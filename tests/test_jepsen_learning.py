"""Learning faults (jepsen_like/learning.py): the checker over a manifest's history, on histories made
to break each promise, and one short run that kills a learner and the aggregator mid-round."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from jepsen_like.checkers.learning import Published, Thresholds, check
from jepsen_like.checkers.learning_samples import check as check_samples, expected_samples
from tests.conftest import repo_root

T = Thresholds(min_improvement=0.2, max_suite_regression=0.1)
GOOD_GATE = {"world": {"ratio": 0.7}, "suite": {"ratio": 1.05}}


def _pub(revision: int, parent: int, consumed: list[str], gate: dict[str, Any] = GOOD_GATE) -> Published:
    return Published(revision, {"hash": f"h{revision}", "lineage": {
        "parent_manifest_revision": parent, "gate": gate, "federated": {"consumed": consumed}}})


DEFAULT = Published(3, {"hash": "default"})


def test_a_clean_history_is_valid() -> None:
    res = check([DEFAULT, _pub(9, 3, ["a", "b"]), _pub(14, 9, ["c"])], T)
    assert res.valid and res.stats == {"publishes": 3, "federated": 2, "consumed": 3}, res.describe()


def test_each_broken_promise_is_named() -> None:
    assert check([DEFAULT, _pub(9, 3, ["a"]), _pub(14, 9, ["a"])], T).kinds() == {"consumed-twice"}
    assert check([DEFAULT, _pub(9, 3, ["a"]), _pub(14, 3, ["b"])], T).kinds() == {"double-publish", "broken-chain"}
    assert check([DEFAULT, _pub(9, 5, ["a"])], T).kinds() == {"broken-chain"}
    worse = {"world": {"ratio": 0.9}, "suite": {"ratio": 1.05}}  # fell by 10%, the gate asks 20%
    assert check([DEFAULT, _pub(9, 3, ["a"], worse)], T).kinds() == {"gate-not-passed"}
    lax = {"world": {"ratio": 0.7}, "suite": {"ratio": None}}  # not finite: never a pass
    assert check([DEFAULT, _pub(9, 3, ["a"], lax)], T).kinds() == {"gate-not-passed"}
    assert check([DEFAULT, Published(9, {"hash": "x"})], T).kinds() == {"no-lineage"}


def test_the_sample_checker_names_lost_doubled_and_foreign_samples() -> None:
    obs = [{"entity": "ball", "event_id": f"e{t}", "observed_at": 1000.0 + t * 0.05,
            "fields": {"x": 1.0 + t * 0.01, "y": 5.0, "vx": 0.2, "vy": 0.0}} for t in range(40)]
    want = expected_samples(obs, 0.05)
    assert len(want) == 2, want  # 40 steps hold two whole aligned 16-step windows (one at most is cut short)
    first, second = sorted(want)
    assert check_samples({"r1": want}, {"r1": [first, second]}).valid
    assert check_samples({"r1": want}, {"r1": [first]}).kinds() == {"sample-lost"}
    assert check_samples({"r1": want}, {"r1": [first, second, second]}).kinds() == {"sample-twice"}
    assert check_samples({"r1": want, "r2": set()}, {"r1": [first, second], "r2": [first]}).kinds() == {
        "sample-unexpected"}


def test_killing_a_learner_and_the_aggregator_mid_round_breaks_no_promise(tmp_path: Path) -> None:
    """Two cycles of: new observations in both regions, kill -9 of learner-r1 inside its fine-tune and
    of the aggregator once an update is announced, restart; in the second, r2 is cut off (its Redis, API
    node and learner) from r1, etcd and the aggregator while that happens, then healed. Exit 0 valid, 2
    when no federated publish happened (nothing to judge: the test says so rather than pass), 1 a
    violation. Every sample each region's acknowledged observations make is in its shards, once."""
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "jepsen_like.learning", "--cycles", "2", "--seed", "7",
                           "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=repo_root())
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    print(done.stdout, done.stderr[-3000:])
    assert results.get("valid") is True, (done.stdout, done.stderr[-3000:], results.get("violations"))
    kills = [e for e in results["events"] if "kill" in e]
    assert {e["kill"] for e in kills} == {"learner-r1", "aggregator"} and len(kills) == 4
    assert [e for e in results["events"] if "partition" in e] and results["r2_unreachable_rounds"] >= 1
    samples = results["samples"]
    assert samples["valid"] is True, samples["violations"]
    assert all(samples["stats"][r]["expected"] == samples["stats"][r]["listed"] > 0 for r in ("r1", "r2")), samples
    assert done.returncode in (0, 2), done.stdout
    if done.returncode == 2:
        import pytest

        pytest.xfail("no federated publish in this run: every update was rejected (see the aggregator's log), "
                     "so the history had nothing to judge")
