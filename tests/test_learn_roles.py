"""`worldstate up --learn`: a learner per region and an aggregator as long-lived roles (learn/loop.py).

Real processes all the way: `worldstate up --learn` as a user runs it (the README's block), agents'
observations posted to a world through the API, then each role's log read as the JSON lines it
writes: the region's learner catches up on its replica's log, fine-tunes (tiny, through
--learner-args) and announces its update in the region's Redis; the aggregator's round reports it
(accepted or rejected by name). A later round with no new observations skips the fine-tune. Bad
values of the loop's flags exit 2 and change nothing.
"""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.learn import unseen_world
from learn.finetune import base_config
from learn.updates import announced
from tests.conftest import repo_root
from learn.observed import as_observations
from tests.test_readme_streams import blocks, section
from tests.up_output import auth, until_up
from world_model import shipped

WORLDSTATE = str(Path(sys.executable).parent / "worldstate")
# The README's command, as a user runs it: tiny sizes so a round takes seconds on 2 busy cores
# (the defaults fine-tune 300 steps and run the whole suite), a lenient gate, a round every 2 s.
UP = (".venv/bin/worldstate up --etcd-members 1 --learn --learn-world lab --learn-every 2 "
      "--learner-args '--steps 2 --no-calibrate --suite-cases 2 --replay-rollouts 8 --threads 1 "
      "--min-new-samples 4 --min-improvement -10 --max-suite-regression 99' "
      "--aggregator-args '--suite-cases 2 --windows 8 --threads 1 --min-improvement -10 "
      "--max-suite-regression 99 --max-update-regression 99'")
SETTLE_S = 240.0  # how long a role may take to get to its line on a loaded machine (not a timing claim)


def _lines(log: Path) -> list[dict[str, Any]]:
    out = []
    for text in log.read_text(errors="replace").splitlines() if log.exists() else []:
        if text.startswith("{"):
            try:
                out.append(json.loads(text))
            except ValueError:
                pass
    return out


def _wait_line(log: Path, what: str, match: Any, proc: subprocess.Popen[str]) -> dict[str, Any]:
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, "worldstate up exited"
        for line in _lines(log):
            if match(line):
                return line
        time.sleep(0.5)
    raise AssertionError(f"no {what} in {log}:\n{log.read_text(errors='replace')[-4000:] if log.exists() else ''}")


def _observations(p: dict[str, float]) -> list[dict[str, Any]]:
    """Four boxes of a lossy world, 40 steps each, as agents would post them (60 s ago)."""
    world = unseen_world("lossy", base_config(shipped.default_blob()), 4, 40, seed=5)
    return as_observations(world, p["time_step"], "lab", time.time() - 60)


def test_the_readme_command_is_the_one_tested() -> None:
    text = section("### Learning as long-running roles: `--every` and `worldstate up --learn`")
    assert [b.replace("\\\n    ", "").strip() for b in blocks(text, "sh")] == [UP]


def _redis_url(state: dict[str, Any], region: str) -> str:
    """The region's Redis (or cluster) URL from deployment.json, with the ACL user when there is one."""
    url = str(state["redis"][region])
    if not state["backend_auth"]:
        return url
    creds = json.loads(Path(state["backend_auth"]["credentials"]).read_text())
    return url.replace("://", f"://{creds['redis_user']}:{creds['redis_password']}@", 1)


def test_up_learn_runs_a_learner_per_region_and_an_aggregator() -> None:
    _up_learn(UP)


def test_up_learn_on_clustered_regions_with_backend_auth() -> None:
    """The same roles when each region is a 3-master Redis Cluster requiring the ACL user: the learner
    reads its log and announces through `redis+cluster://user:password@...`, the aggregator reads there."""
    _up_learn(f"{UP} --ap-shards 3 --backend-auth", clustered=True)


def _up_learn(command: str, clustered: bool = False) -> None:
    proc = subprocess.Popen(["bash", "-c", f"exec {command}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=repo_root())
    try:
        out = until_up(proc)
        roles = dict(re.findall(r"^\s*learn\s+(\S+)\s+world lab, .*; log (\S+)$", out, re.M))
        assert set(roles) == {"learner-r1", "learner-r2", "aggregator"}, out
        state = json.loads((Path(out.split("run dir ")[1].split(")")[0]) / "deployment.json").read_text())
        assert all(url.startswith("redis+cluster://") == clustered for url in state["redis"].values()), state
        assert set(state["learn"]) == set(roles) and all(state["pids"][r] for r in roles)
        api, headers = state["api"]["r1"], auth(out)
        lossy = {"gravity": 9.81, "restitution": 0.0, "drag": 0.1, "time_step": 0.05}
        httpx.put(f"{api}/v1/worlds/lab", json={}, headers=headers).raise_for_status()
        httpx.put(f"{api}/v1/worlds/lab/physics", json=lossy, headers=headers).raise_for_status()
        batch = _observations(lossy)
        for i in range(0, len(batch), 500):
            httpx.post(f"{api}/v1/worlds/lab/observations", json=batch[i:i + 500], headers=headers,
                       timeout=60).raise_for_status()

        # r1's learner: caught up on its replica's log, fine-tuned, announced its update in r1's Redis.
        learned = _wait_line(Path(roles["learner-r1"]), "announced update",
                             lambda l: l.get("status") == "announced", proc)
        assert learned["exit"] == 0 and learned["report"]["region"] == "r1"
        update = learned["report"]["update"]
        # announced in r1's Redis (a round that consumed it and published forgets it later: then the
        # aggregator's log below names it)
        in_redis = update in {u.hash for u in announced(_redis_url(state, "r1"), "lab")}
        # The aggregator's round names that update (accepted, or rejected with a reason).
        agg = _wait_line(Path(roles["aggregator"]), "round that saw the update", lambda l: "report" in l and any(
            u["hash"] == update for u in l["report"].get("accepted", []) + l["report"].get("rejected", [])), proc)
        assert agg["status"] in ("published", "refused-by-gate", "lost-race", "too-few-updates"), agg
        assert in_redis or agg["status"] == "published", "the update was announced, or already consumed"
        assert agg["exit"] in (0, 3, 4, 5)
        # Nothing new posted since: a later round of r1's learner skips the fine-tune.
        skipped = _wait_line(Path(roles["learner-r1"]), "idle round", lambda l: l.get("status") == "skipped"
                             and l.get("round", 0) > learned["round"], proc)
        assert skipped["report"]["new_samples"] < 4 and skipped["exit"] is None
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        for log in roles.values():  # SIGTERM from up ended each loop: its last line says so
            assert _lines(Path(log))[-1]["event"] == "stopped", log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("argv", [
    ["learn", "--every", "0"], ["learn", "--every", "-5"], ["learn", "--every", "5", "--min-new-samples", "-1"],
    ["learn", "--min-new-samples", "3"], ["aggregate", "--every", "0"], ["aggregate", "--every", "nan"],
    ["up", "--learn", "--learn-every", "0"], ["up", "--learn", "--learn-every", "-1"], ["learn", "--sample-frames", "1"]])
def test_bad_loop_flags_exit_2_and_change_nothing(argv: list[str], tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoints"
    rest = [] if argv[0] == "up" else ["--world", "lab", "--checkpoint-dir", str(ckpt), "--shard-dir",
                                       str(tmp_path / "shards"), "--api", "http://127.0.0.1:9"]
    if argv[0] == "aggregate":
        rest = [*rest, "--region-redis", "r1=redis://127.0.0.1:9"]
    if argv[0] == "up":
        rest = ["--run-dir", str(tmp_path / "run")]
    done = subprocess.run([WORLDSTATE, *argv, *rest], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert re.search(r"(--every|--min-new-samples|--learn-every|--sample-frames).*(> 0|0 or more|2 or more|goes with "
                     r"--every)", done.stderr), \
        done.stderr
    assert done.stdout == "" and list(tmp_path.iterdir()) == []
