"""The SDK's CLI verbs, run as a user runs them: the installed `worldstate` entry point as a
subprocess against the session deployment. JSON on stdout, problem JSON on stderr, and the
exit status by outcome (client/cli.py EXIT_CODES). 503 and 504 are not provoked here
(they need a broken cluster): their statuses are checked through the mapping function,
which the subprocess runs for every error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from client.cli import EXIT_CODES, exit_code
from client.errors import error_for
from deploy.launcher import Deployment

ROOT = Path(__file__).resolve().parent.parent
WORLDSTATE = Path(sys.executable).with_name("worldstate")


def env_for(cluster: Deployment, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORLDSTATE_")}
    return {**env, "WORLDSTATE_URL": cluster.api["r1"].url, "WORLDSTATE_KEY": cluster.admin_key or "", **extra}


def ws(cluster: Deployment, *argv: str, stdin: str | None = None, expect: int = 0,
       env: dict[str, str] | None = None) -> Any:
    """Run `worldstate ARGV`; its stdout as JSON (a list for several lines), or its problem on error."""
    done = subprocess.run([str(WORLDSTATE), *argv], input=stdin, capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env=env or env_for(cluster))
    assert done.returncode == expect, f"{argv} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    if expect != 0:
        return json.loads(done.stderr.strip().splitlines()[-1])
    docs = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return docs[0] if len(docs) == 1 else docs


def test_params_and_worlds_verbs(cluster: Deployment, world: str) -> None:
    assert ws(cluster, "worlds", "create", world, '{"description": "cli"}')["world"] == world
    rev = ws(cluster, "params", "put", world, "sim/max_bodies", "64")["revision"]
    lost = ws(cluster, "params", "put", world, "sim/max_bodies", "1", "--create-only", expect=4)
    assert lost["type"] == "/problems/precondition-failed" and lost["current_revision"] == rev
    assert ws(cluster, "params", "put", world, "sim/max_bodies", "--if-revision", str(rev - 1), stdin="2",
              expect=4)["status"] == 412
    rev2 = ws(cluster, "params", "put", world, "sim/max_bodies", "-", "--if-revision", str(rev),
              stdin="128")["revision"]
    got = ws(cluster, "params", "get", world, "sim/max_bodies", "--serializable")
    assert (got["value"], got["revision"], got["consistency"]) == (128, rev2, "serializable")
    assert [i["key"] for i in ws(cluster, "params", "list", world, "--prefix", "sim/")["items"]] == ["sim/max_bodies"]
    changes = ws(cluster, "params", "watch", world, "--prefix", "sim/", "--start-revision", str(rev), "--count", "2")
    assert [(c["type"], c["value"], c["revision"]) for c in changes] == [("put", 64, rev), ("put", 128, rev2)]
    assert ws(cluster, "params", "delete", world, "sim/max_bodies")["deleted"] is True
    missing = ws(cluster, "params", "get", world, "sim/max_bodies", expect=3)
    assert missing["type"] == "/problems/not-found"
    # --url/--key, and WORLDSTATE_API (what `worldstate keys` reads) in place of WORLDSTATE_URL
    bare = {k: v for k, v in env_for(cluster).items() if k not in ("WORLDSTATE_URL", "WORLDSTATE_KEY")}
    listed = ws(cluster, "worlds", "list", "--url", cluster.api["r2"].url, "--key", cluster.admin_key or "", env=bare)
    assert world in listed["worlds"]
    assert world in ws(cluster, "worlds", "list", env={**bare, "WORLDSTATE_API": cluster.api["r1"].url,
                                                        "WORLDSTATE_KEY": cluster.admin_key or ""})["worlds"]
    assert ws(cluster, "worlds", "list", "--key", "wsk_0123456789abcdef_" + "x" * 43, expect=7)["status"] == 401
    assert ws(cluster, "params", "put", world, "k", "{not json", expect=2)["title"] == "Bad command-line input"


def test_physics_observe_and_entity_verbs(cluster: Deployment, world: str) -> None:
    ws(cluster, "worlds", "create", world)
    rev = ws(cluster, "physics", "put", world, '{"gravity":9.81,"restitution":0.8,"drag":0.1,"time_step":0.05}',
             "--create-only")["revision"]
    assert ws(cluster, "physics", "get", world)["gravity"] == 9.81
    assert ws(cluster, "physics", "put", world, '{"gravity":-99,"restitution":0.8,"drag":0.1,"time_step":0.05}',
              "--if-revision", str(rev), expect=8)["type"] == "/problems/validation-error"
    lines = "".join(json.dumps({"entity": f"ball-{i}", "event_id": f"cli-{i}", "fields": {"x": float(i)}}) + "\n"
                    for i in range(5))
    first = ws(cluster, "observe", world, "--batch", "2", "--source", "cam", stdin=lines)
    assert (first["accepted"], first["batches"], first["duplicates"]) == (5, 3, [])
    again = ws(cluster, "observe", world, stdin=lines)  # a replay applies nothing twice
    assert again["accepted"] == 0 and sorted(again["duplicates"]) == [f"cli-{i}" for i in range(5)]
    far = env_for(cluster, WORLDSTATE_URL=cluster.api["r2"].url)  # read-your-writes in the other region
    got = ws(cluster, "entity", "get", world, "ball-3", "--token", first["token"], env=far)
    assert got["fields"]["x"]["value"] == 3.0 and got["replica"] == "r2"
    assert [e["entity"] for e in ws(cluster, "entity", "list", world)["items"]] == [f"ball-{i}" for i in range(5)]
    deleted = ws(cluster, "entity", "delete", world, "ball-4", "--event-id", "cli-del")
    assert deleted["duplicate"] is False and deleted["token"]
    assert ws(cluster, "entity", "delete", world, "ball-4", "--event-id", "cli-del")["duplicate"] is True
    # a subscription prints the first change it sees, then (with --count 1) exits
    watch = subprocess.Popen([str(WORLDSTATE), "entity", "watch", world, "--prefix", "ball-", "--count", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_for(cluster))
    try:
        for i in range(600):  # keep writing until it has connected and seen one
            ws(cluster, "observe", world, stdin=json.dumps({"entity": "ball-9", "fields": {"x": float(i)}}))
            if watch.poll() is not None:
                break
            time.sleep(0.1)
        out, err = watch.communicate(timeout=60)
    finally:
        watch.kill()
    assert watch.returncode == 0, err
    change = json.loads(out)
    assert change["entity"] == "ball-9" and change["deleted"] is False and change["id"]


def test_model_verbs(cluster: Deployment, world: str) -> None:
    cluster.publish_default_model()  # kept if another test published one first
    current = ws(cluster, "model", "current")
    assert ws(cluster, "model", "current", "--serving")["hash"] == current["manifest"]["hash"]
    stale = ws(cluster, "model", "publish", "--if-revision", str(current["revision"] - 1),
               stdin=json.dumps(current["manifest"]), expect=4)
    assert stale["current_revision"] == current["revision"]
    ws(cluster, "worlds", "create", world)
    ws(cluster, "physics", "put", world, '{"gravity":9.81,"restitution":0.9,"drag":0.1,"time_step":0.05}')
    ws(cluster, "observe", world, stdin="\n".join(json.dumps(
        {"entity": e, "fields": {"x": x, "y": 5.0, "vx": 0.0, "vy": 0.0}}) for e, x in (("b1", 2.0), ("b2", 7.0))))
    p = ws(cluster, "predict", world, '{"horizon": 5, "actions": {"b1": [[0.5, 0.0]]}}')
    assert len(p["trajectories"]["b1"]["positions"]) == 5
    s = ws(cluster, "surprise", world, stdin='{"observed": {"b1": [{"x": 2.0, "y": 5.0, "vx": 0.0, "vy": 0.0}]}}')
    assert s["most_surprising"] == "b1"
    plan = ws(cluster, "plan", world, '{"entity": "b1", "goal": {"x": 5, "y": 5, "radius": 1}, "horizon": 5, '
                                      '"budget": 64}')
    assert len(plan["actions"]) == 5
    assert ws(cluster, "predict", world, '{"horizon": 0}', expect=8)["type"] == "/problems/validation-error"
    assert ws(cluster, "predict", "no-such-world-cli", '{"horizon": 5}', expect=3)["status"] == 404


@pytest.mark.parametrize("status,slug,code", [
    (412, "precondition-failed", 4), (404, "not-found", 3), (503, "unavailable", 5), (503, "model-unavailable", 5),
    (429, "rate-limited", 5), (504, "outcome-unknown", 6), (504, "not-yet-consistent", 5), (401, "unauthorized", 7),
    (403, "forbidden", 7), (422, "validation-error", 8), (410, "compacted", 9), (500, "internal", 1),
])
def test_exit_codes_by_outcome(status: int, slug: str, code: int) -> None:
    """What `worldstate` exits with for each problem, 503 and 504 included (the subprocess
    tests above see 412, 404, 401 and 422 end to end)."""
    assert exit_code(error_for(status, {"type": f"/problems/{slug}", "status": status})) == code
    assert len({EXIT_CODES[c] for c in EXIT_CODES if c.__name__ in ("Conflict", "Unavailable", "OutcomeUnknown")}) == 3
