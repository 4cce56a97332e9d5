"""The README's examples for entity deletes, entity subscriptions and gRPC, run as shown.

The sh blocks run under bash with $API and $WORLDSTATE_KEY set to the test deployment's;
the gRPC section's python block with its target and key replaced by the deployment's.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from deploy.launcher import Deployment
from tests.conftest import auth_headers

ROOT = Path(__file__).resolve().parent.parent


def section(heading: str) -> str:
    """From `heading` to the next heading of its level or above (a `#` line in a code block is no heading)."""
    lines = (ROOT / "README.md").read_text().splitlines(keepends=True)
    start = lines.index(heading + "\n")
    level = len(heading.split(" ")[0])
    fenced = False
    for i in range(start + 1, len(lines)):
        if lines[i].startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(rf"#{{1,{level}}} ", lines[i]):
            return "".join(lines[start:i])
    return "".join(lines[start:])


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def run_sh(code: str, cluster: Deployment) -> str:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("WORLDSTATE_")},
           "API": cluster.api["r1"].url, "WORLDSTATE_KEY": cluster.admin_key or ""}
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, f"{code}\nexited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@contextmanager
def lab(cluster: Deployment) -> Iterator[httpx.Client]:
    """A client of r1, world "lab" made (as the README's earlier examples make it)."""
    with httpx.Client(base_url=cluster.api["r1"].url, timeout=30, headers=auth_headers(cluster)) as api:
        assert api.put("/v1/worlds/lab", json={}).status_code in (200, 201)
        yield api


def test_the_delete_example_deletes_and_its_retry_is_a_duplicate(cluster: Deployment) -> None:
    with lab(cluster) as api:
        api.post("/v1/worlds/lab/observations", json={"event_id": "readme-b1", "entity": "ball-1",
                                                      "source": "cam1", "fields": {"x": 1.0}}).raise_for_status()
        [code] = blocks(section("### Delete"), "sh")
        first, again = run_sh(code, cluster), run_sh(code, cluster)
        assert '"duplicate":false' in first.replace(" ", "") or '"duplicate":true' in first.replace(" ", "")
        assert '"duplicate":true' in again.replace(" ", ""), again  # the same event id: changes nothing
        assert api.get("/v1/worlds/lab/entities/ball-1").status_code == 404


def test_the_subscribe_examples_stream_and_resume(cluster: Deployment) -> None:
    with lab(cluster) as api:
        for i in range(2):
            api.post("/v1/worlds/lab/observations", json={"event_id": f"readme-s{i}", "entity": f"ball-s{i}",
                                                          "source": "cam1", "fields": {"x": float(i)}})
        follow, resume = blocks(section("### Subscribe to entity changes"), "sh")
        assert ": subscribed after" in run_sh(follow, cluster)
        resumed = run_sh(resume, cluster)
        # resumed after the first ball- change of the log: the second one (at least) follows
        assert "event: change" in resumed and '"entity": "ball-' in resumed, resumed


def test_the_grpc_python_example_runs(cluster: Deployment, capsys) -> None:  # type: ignore[no-untyped-def]
    with lab(cluster):
        pass
    [code] = blocks(section("## gRPC"), "python")
    code = code.replace('"127.0.0.1:50051"', repr(cluster.api["r1"].grpc)).replace('"wsk_..."',
                                                                                 repr(cluster.admin_key))
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("{'max': 3.5}") and out[2] == "1.5" and "ball-7" in out[3], out
