"""Every command-line entry point the README shows, run as a user runs it: a subprocess.

`worldstate up` itself is run in test_launcher.py; here the rest: the
command's help, a tiny training run, its evaluation, and jepsen_like's CLI.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORLDSTATE = Path(sys.executable).with_name("worldstate")


def run(*argv: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in argv], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv} exited {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done


@pytest.mark.parametrize("argv", [[], ["up"], ["serve"], ["train"], ["eval"], ["learn"], ["edge"], ["publish-default"]],
                         ids=lambda a: " ".join(a) or "-")
def test_worldstate_help(argv: list[str]) -> None:
    out = run(WORLDSTATE, *argv, "--help").stdout
    assert out.startswith(f"usage: worldstate {' '.join(argv)}".rstrip())


@pytest.mark.parametrize("argv", [[], ["run"], ["check"]], ids=lambda a: " ".join(a) or "-")
def test_jepsen_like_help(argv: list[str]) -> None:
    out = run(sys.executable, "-m", "jepsen_like", *argv, "--help").stdout
    assert out.startswith("usage: python -m jepsen_like")


def test_train_then_eval(tmp_path: Path) -> None:
    """`worldstate train` writes a blob and its manifest; `worldstate eval` reads it back by 'latest'."""
    ck, manifest = tmp_path / "checkpoints", tmp_path / "manifest.json"
    run(WORLDSTATE, "train", "--config", "tiny", "--steps", "3", "--threads", "1",
        "--checkpoint-dir", ck, "--manifest-out", manifest)
    doc = json.loads(manifest.read_text())
    assert (ck / doc["hash"]).exists() or any(ck.rglob(f"*{doc['hash']}*")), "the manifest names a blob on disk"
    out = tmp_path / "results"
    run(WORLDSTATE, "eval", "--checkpoint", "latest", "--checkpoint-dir", ck, "--out-dir", out,
        "--quick", "--episodes", "1", "--budget", "8", "--mlp-steps", "0", "--threads", "1", "--no-progress")
    report = json.loads(next(out.glob("eval-*.json")).read_text())
    assert report and doc["hash"].startswith(next(out.glob("eval-*.json")).stem.removeprefix("eval-"))


def test_ship_script_writes_a_blob_and_its_manifest(tmp_path: Path) -> None:
    """scripts/ship-default-model.py, as the README shows it, into a scratch folder."""
    out = tmp_path / "shipped"
    run(sys.executable, ROOT / "scripts" / "ship-default-model.py", "--config", "tiny", "--threads", "1",
        "--steps", "10", "--out-dir", out, "--no-progress")
    doc = json.loads((out / "manifest.json").read_text())
    assert [p.name for p in out.glob("*.pt")] == [f"{doc['hash']}.pt"]
    assert doc["config"]["train"]["checkpoint_dir"] == "checkpoints" and doc["training"]["first_snapshot"]


def test_readme_eval_of_the_shipped_model(tmp_path: Path) -> None:
    """The README's `worldstate eval` of the shipped model, with --quick (its full run takes a minute)."""
    from world_model import shipped

    digest = shipped.default_manifest()["hash"]
    readme = (ROOT / "README.md").read_text()
    assert f"worldstate eval --checkpoint {digest}" in readme, "the README evaluates the model that ships"
    run(WORLDSTATE, "eval", "--checkpoint", digest, "--checkpoint-dir", "world_model/default_model",
        "--out-dir", tmp_path, "--threads", "1", "--quick", "--no-progress")
    report = json.loads((tmp_path / f"eval-{digest[:12]}.json").read_text())
    assert report["targets"]["plausibility.rises_in_free_fall"]["pass"]


def test_predict_benchmark_runs_as_the_readme_shows(tmp_path: Path) -> None:
    """bench/predict.py with the README's options on the shipped model, at a size that takes seconds."""
    from world_model import shipped

    out = run(sys.executable, ROOT / "bench" / "predict.py", "--checkpoint", shipped.default_manifest()["hash"],
              "--checkpoint-dir", "world_model/default_model", "--http", "--concurrency", "1", "4",
              "--queries", "8", "--rounds", "1", "--http-queries", "8", "--after-plan-queries", "4").stdout
    for mode in ("torch b=1", "micro-batched", "http micro-batched", "http one-by-one"):
        assert mode in out, out
    assert "target: http micro-batched >= 0.9x http one-by-one" in out


def test_plan_cost_benchmark_runs_as_the_readme_shows() -> None:
    out = run(sys.executable, ROOT / "bench" / "plan_cost.py", "--bodies", "2", "--horizon", "5").stdout
    assert "worst allowed plan:" in out and "plain torch s" in out, out


def test_cp_benchmark_reads_through_every_door_as_the_readme_shows() -> None:
    """bench/cp.py at a size that takes seconds: raw aetcd, etcd's gateway, the API over HTTP and gRPC."""
    out = run(sys.executable, ROOT / "bench" / "cp.py", "--requests", "60", "--rounds", "1",
              "--concurrency", "2").stdout
    for path in ("raw aetcd", "etcd gateway", "API gRPC", "PUT CAS (If-Match)"):
        assert path in out, out
    assert "etcd's HTTP gateway (target <= 1.0x" in out, out


def test_ingest_benchmark_runs_as_the_readme_shows() -> None:
    """bench/ingest.py at a size that takes seconds: gRPC streams, REST and raw ingest.lua in one run."""
    out = run(sys.executable, ROOT / "bench" / "ingest.py", "--seconds", "0.3", "--batch", "100",
              "--window", "2").stdout
    for path in ("gRPC Observe, 4 stream(s), window 2", "REST POST, concurrency 4", "raw ingest.lua"):
        assert path in out, out
    assert "best gRPC / raw:" in out, out


def test_edge_benchmark_runs_as_the_readme_shows(tmp_path: Path) -> None:
    """bench/edge.py at a size that takes seconds: the fan-out's looks, memory per edge, and predict
    at the core, at an edge and in plain torch, each with its target's verdict; --json as documented."""
    figures = tmp_path / "edge.json"
    done = run(sys.executable, ROOT / "bench" / "edge.py", "--edges", "2", "--changes", "4", "--queries", "12",
               "--rounds", "1", "--clients", "2", "--json", figures)
    out = done.stdout
    for line in ("fan-out: 2 edges (asked for 2", "raw floor: aetcd watch on the physics key",
                 "fan-out edges (no model, no torch)", "predict edge (model loaded)", "plain torch",
                 "every pair held the change by (an upper bound)", "edge/core p50"):
        assert line in out, out
    doc = json.loads(figures.read_text())
    fanout = doc["fanout"]
    assert doc["edges"] == 2 and fanout["never_arrived"] == 0 and fanout["arrived_by_ms"]["n"] == 2 * 4, fanout
    assert sum(n for _, n in fanout["held"].values()) == 2 * 4  # every (edge, change) pair looked at once
    assert fanout["applied_ms"]["n"] == 2 * 4  # and each edge recorded when it applied each change
    assert set(doc["predict"]) == {"new", "again"}
    assert all(row["failed"] == 0 and row["n"] > 0 for by_clients in doc["predict"].values()
               for rows in by_clients.values() for row in rows.values()), (doc["predict"], done.stderr[-2000:])
    # the edge was asked to answer however stale (a starved edge refuses past its bound: not a latency
    # sample), and the run says how stale its answers were, by their labels
    assert "the edge's answers were at most" in out, out
    assert all(rows["edge"]["stale_ms_max"] >= 0 for by_clients in doc["predict"].values() for rows in by_clients.values())
    assert doc["memory_model"][0]["rss"] > doc["memory_no_model"][0]["rss"] > 0


def test_posted_learn_benchmark_runs_as_the_readme_shows(tmp_path: Path) -> None:
    """bench/learn_posted.py --smoke: a deployment, the world posted, `worldstate learn --from-log` (tiny)."""
    out = run(sys.executable, ROOT / "bench" / "learn_posted.py", "--smoke", "--json", tmp_path / "posted.json").stdout
    for row in ("shipped model (before)", "fine-tuned (after)", "worldstate learn --from-log took", "learner's answer"):
        assert row in out, out
    doc = json.loads((tmp_path / "posted.json").read_text())
    assert doc["log"]["observations"] == doc["observations"] > 0 and doc["log"]["samples"] > 0, doc["log"]
    # the log's one-body samples, every one in a scene (learn/scenes.py): scenes are at most as many
    assert doc["sample_bodies"] == doc["log"]["samples"] >= doc["train_samples"] + doc["heldout_samples"]
    assert doc["status"] in ("published", "refused-by-gate") and doc["model_before"]


def test_learn_benchmark_runs_as_the_readme_shows(tmp_path: Path) -> None:
    """bench/learn.py --smoke: the whole before/after pipeline on a tiny world (numbers mean nothing)."""
    out = run(sys.executable, ROOT / "bench" / "learn.py", "--smoke", "--json", tmp_path / "learn.json").stdout
    for row in ("constant velocity", "shipped model (before)", "fine-tuned (after)", "suite after / before",
                "target: after/before at 10 steps <= 0.5"):
        assert row in out, out
    doc = json.loads((tmp_path / "learn.json").read_text())
    assert doc["smoke"] and set(doc["gate"]["figures"]["world"]["before"]) == {"1", "5", "10", "20"}
