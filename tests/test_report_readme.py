"""The README's commands for reading a run, run as a user runs them: a short real run writes its
index page, `serve store/` lists it and serves it, and the served index opens in a real browser.

About 30 s: a 10 s run on a real cluster (proxy mode), then the browser. The README block is:

    .venv/bin/python -m jepsen_like run --time-limit 10 --seed 7
    .venv/bin/python -m jepsen_like serve store/
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.chromium import artifacts_dir, browser, missing

ROOT = Path(__file__).resolve().parent.parent
RUN = ".venv/bin/python -m jepsen_like run --time-limit 10 --seed 7"
SERVE = ".venv/bin/python -m jepsen_like serve store/"
DEFAULT_PORT = 8080


def argv(command: str) -> list[str]:
    """The README's command with this interpreter for .venv/bin/python (the test may run from another venv)."""
    words = command.split()
    assert words[0] == ".venv/bin/python"
    return [sys.executable, *words[1:]]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read().decode("utf-8", "replace")
    conn.close()
    return r.status, body


def test_a_run_writes_its_index_and_serve_shows_it(tmp_path: Path) -> None:
    # The README runs these in the repository; here in a scratch folder (its store/ is the run's), with
    # the repository importable as it is from there.
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(argv(RUN), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode in (0, 1, 2) and "\nverdict: " in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    runs = [p for p in (tmp_path / "store").glob("*/*") if p.is_dir() and not p.is_symlink()]
    assert len(runs) == 1, runs
    run = runs[0]
    results = json.loads((run / "results.json").read_text())
    shown = {"ok": "valid", "illegal": "INVALID", "unknown": "unknown"}[results["verdict"]]
    index = (run / "index.html").read_text()
    assert f">{shown}<" in index and "href=timeline.html" in index and "src=plot.png" in index
    for name in ("timeline.html", "latency.png", "rate.png", "plot.png"):
        assert (run / name).stat().st_size > 0, name

    # `serve store/` as shown; if something else holds its default port here, the same with --port 0
    command = argv(SERVE) + ([] if port_free(DEFAULT_PORT) else ["--port", "0"])
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("serving store on http://127.0.0.1:"), line
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        status, listing = get(port, "/")
        href = f"{run.parent.name}/{run.name}/"
        assert status == 200 and href in listing and f">{shown}<" in listing
        status, served = get(port, "/" + href)
        assert status == 200 and served == index
        assert get(port, "/../" + href)[0] == 404

        if missing() is not None:
            pytest.skip(f"no browser for the served page: {missing()}")
        shots = artifacts_dir(ROOT)
        with browser() as b:
            tab = b.new_page(viewport={"width": 1280, "height": 1400})
            tab.goto(f"http://127.0.0.1:{port}/{href}")
            assert tab.locator("header .verdict.big").inner_text() == shown
            assert tab.locator("img[src='plot.png']").evaluate("i => i.complete && i.naturalWidth") > 1000
            tab.screenshot(path=str(shots / "report-real-index.png"))
            tab.goto(f"http://127.0.0.1:{port}/{href}timeline.html")
            first = tab.locator(".op").first.bounding_box()
            assert first and first["y"] < 900
            tab.screenshot(path=str(shots / "report-real-timeline.png"))
        print(f"screenshots: {shots / 'report-real-index.png'}, {shots / 'report-real-timeline.png'}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_readme_shows_these_commands() -> None:
    """The commands above are the README's, as written there (a changed README must change them)."""
    readme = (ROOT / "README.md").read_text()
    assert f"```sh\n{RUN}\n{SERVE}\n```" in readme
