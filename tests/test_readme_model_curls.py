"""The README's world-model curls, run as written against `worldstate up` started as a user starts it.

`up` publishes the model that ships with the package, so the curls of the
README's "### Query" section must answer 2xx, with the keys the README shows
in the comment under each, from the first start of a fresh deployment.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.up_output import admin_key, until_up

from world_model import shipped

ROOT = Path(__file__).resolve().parent.parent
WORLDSTATE = Path(sys.executable).with_name("worldstate")
SECTION = ("### Query\n", "### How well it works\n")

# Runs a README block unchanged; only curl is wrapped so each answer's status and body can be checked.
# The wrapper calls the real curl with the README's arguments.
WRAPPER = """set -e
n=0
curl() {
  local i=$n
  n=$((n + 1))
  command curl -sS -o "$CURL_OUT/$i.body" -w '%{http_code}' "$@" > "$CURL_OUT/$i.status"
}
"""


@dataclass
class Curl:
    command: str
    documented: str  # the comment lines under it: the answer the README shows


def query_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION[0])
    return text[start:text.index(SECTION[1], start)]


def sh_blocks(section: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def _complete(command: str) -> bool:
    if command.rstrip().endswith("\\"):
        return False
    try:
        shlex.split(command)
    except ValueError:  # an open quote: the -d body goes on over more lines
        return False
    return True


def curls(block: str) -> list[Curl]:
    found: list[Curl] = []
    lines = iter(block.splitlines())
    for line in lines:
        if line.startswith("curl "):
            command = line
            while not _complete(command):
                command += "\n" + next(lines)
            found.append(Curl(command, ""))
        elif line.startswith("#") and found:
            found[-1].documented += line.lstrip("# ") + "\n"
    return found


def documented_keys(comment: str) -> set[str]:
    return set(re.findall(r'"([^"\s]+)":', comment))


def keys_of(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value).union(*(keys_of(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(keys_of(v) for v in value))
    return set()


def test_the_query_section_shows_every_query() -> None:
    """The parser finds what the running test checks; a section it misread would check nothing."""
    commands = [c.command for block in sh_blocks(query_section()) for c in curls(block)]
    for path in (r"PUT \$API/v1/worlds/lab ", "/physics", "/observations", "/predict", "/surprise", "/plan"):
        assert any(re.search(path, c) for c in commands), path
    for c in commands:
        if re.search("/(predict|surprise|plan)", c):
            assert "-H 'Content-Type: application/json'" in c, c
    answers = [c for block in sh_blocks(query_section()) for c in curls(block) if c.documented]
    assert len(answers) >= 4 and all(documented_keys(c.documented) for c in answers)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """`worldstate up` as a user runs it: the default topology, a run directory of its own."""
    run_dir = tmp_path_factory.mktemp("readme-up")
    proc = subprocess.Popen([str(WORLDSTATE), "up", "--run-dir", str(run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        out = until_up(proc)
        assert "Ctrl-C stops everything" in out, out
        api = json.loads((run_dir / "deployment.json").read_text())["api"]["r1"]
        yield api, out
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_up_publishes_the_shipped_model(up: tuple[str, str]) -> None:
    _, out = up
    manifest = shipped.default_manifest()
    assert f"published the default model {manifest['hash'][:12]} (version {manifest['version']})" in out, out


def test_the_readme_query_curls_run_as_written(up: tuple[str, str], tmp_path: Path) -> None:
    api, printed = up
    digest = shipped.default_manifest()["hash"]
    ran = 0
    for b, block in enumerate(sh_blocks(query_section())):
        expected = curls(block)
        out = tmp_path / f"block{b}"
        out.mkdir()
        # The two variables the README tells a user to set from `up`'s output.
        env = {"PATH": os.environ["PATH"], "API": api, "WORLDSTATE_KEY": admin_key(printed), "CURL_OUT": str(out)}
        done = subprocess.run(["bash", "-c", WRAPPER + block], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"block {b} failed:\n{block}\n{done.stderr}"
        assert len(list(out.glob("*.status"))) == len(expected), "the block ran other curls than were parsed"
        for i, c in enumerate(expected):
            status = int((out / f"{i}.status").read_text())
            body = json.loads((out / f"{i}.body").read_text())
            shown = re.match(r"(\d{3}) ", c.documented)
            assert (status == int(shown.group(1))) if shown else 200 <= status < 300, f"{c.command}\n{status} {body}"
            missing = documented_keys(c.documented) - keys_of(body)
            assert not missing, f"{c.command}\nanswer lacks {sorted(missing)} that the README shows: {body}"
            if re.search("/(predict|surprise|plan)", c.command):
                assert body["provenance"]["model"]["hash"] == digest, "answered by the shipped model"
            ran += 1
    assert ran >= 6
