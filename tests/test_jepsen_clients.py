"""The SDK and gRPC clients through partitions: every acknowledged write is there after the heal.

The README's jepsen_like command whose only clients are `sdk-observations` (the
Python SDK, with its own resends) and `grpc-observations` (Observe streams and
GetEntity), run as shown while the nemesis partitions the cluster. Each
workload's convergence checker then asks that every replica holds the same
state and that no write the client was told was accepted is missing from it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from jepsen_like.history import OK, pair, read_jsonl
from tests.conftest import repo_root


def readme_command() -> list[str]:
    text = (repo_root() / "README.md").read_text()
    m = re.search(r"\.venv/bin/python -m jepsen_like run --workload sdk-observations,grpc-observations[^`]*?\n(?=\S|$)",
                  text)
    assert m, "the README shows no jepsen_like run of the SDK and gRPC workloads"
    argv = shlex.split(m.group(0).replace("\\\n", " "))
    return [sys.executable, *argv[1:]]


def test_sdk_and_grpc_clients_lose_no_acknowledged_write_through_partitions(tmp_path: Path) -> None:
    argv = readme_command() + ["--store", str(tmp_path), "--no-plots"]
    done = subprocess.run(argv, cwd=repo_root(), capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(repo_root())})
    print(done.stdout[-3000:], done.stderr[-3000:])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    [results_path] = tmp_path.rglob("results.json")
    results = json.loads(results_path.read_text())
    checkers = results["checkers"]
    for via in ("sdk", "grpc"):
        conv = checkers[f"{via}-convergence"]
        assert conv["valid"], conv
        assert conv["stats"]["acknowledged"] > 0, conv["stats"]
    windows = results["nemesis_windows"]
    assert any(w[2] == "partition" for w in windows), windows
    # Both clients were answered while a partition was in force, each through its own path.
    ops = pair(read_jsonl(str(results_path.parent / "history.jsonl")), strict=True)
    for via in ("sdk", "grpc"):
        inside = [op for op in ops if op.get("via") == via and op.f == "post" and op.type == OK
                  and any(s <= op.call < e for s, e, f in windows if f == "partition")]
        assert inside, f"no {via} post acknowledged during a partition"
