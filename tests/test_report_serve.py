"""`python -m jepsen_like serve <store>` run as a user runs it: the run list, a run's pages, and nothing
outside the store."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import report_fixtures as rf


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("serve")
    store = tmp_path / "store"
    rf.write_run(store, verdict="illegal", stamp="20261201T120000")
    newer = rf.write_run(store, verdict="ok", stamp="20261201T130000")
    (newer / "index.html").unlink()  # a run from before index pages: the browser builds one
    (newer.parent / "latest").symlink_to(newer.name)
    (tmp_path / "secret.txt").write_text("outside the store\n")
    (store / "leak").symlink_to(tmp_path)  # a link leading out of the store
    return store


@pytest.fixture(scope="module")
def served(store: Path) -> Iterator[tuple[str, int]]:
    proc = subprocess.Popen([sys.executable, "-m", "jepsen_like", "serve", str(store), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith(f"serving {store} on http://127.0.0.1:"), line + proc.stderr.read()  # type: ignore[union-attr]
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def get(where: tuple[str, int], path: str) -> tuple[int, str, str]:
    """GET `path` as written (no client-side normalising of `..`): status, content type, body."""
    conn = http.client.HTTPConnection(*where, timeout=10)
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read().decode("utf-8", "replace")
    conn.close()
    return r.status, r.getheader("Content-Type") or "", body


def test_the_listing_shows_runs_newest_first_with_verdicts(served: tuple[str, int]) -> None:
    status, kind, body = get(served, "/")
    assert status == 200 and kind.startswith("text/html")
    newer, older = body.index("20261201T130000/"), body.index("20261201T120000/")
    assert newer < older  # newest first
    assert ">valid<" in body and ">INVALID<" in body
    assert "2026-12-01 13:00:00" in body and "register · nemesis partition, kill" in body
    assert "latest/" not in body and "leak/" not in body


def test_a_run_is_served_with_its_pages(served: tuple[str, int]) -> None:
    run = "/register-partition+kill/20261201T120000/"
    status, _, index = get(served, run)
    assert status == 200 and ">INVALID<" in index and "href=timeline.html" in index
    for name, kind in (("timeline.html", "text/html"), ("plot.png", "image/png"),
                       ("history.jsonl", "text/plain"), ("cluster/logs/etcd1.log", "text/plain")):
        status, got, _ = get(served, run + name)
        assert (status, got.split(";")[0]) == (200, kind), name
    assert get(served, run.rstrip("/"))[0] == 301  # relative links need the trailing slash
    status, _, built = get(served, "/register-partition+kill/latest/")  # no index.html on disk: built
    assert status == 200 and ">valid<" in built


@pytest.mark.parametrize("path", ["/../secret.txt", "/../../etc/passwd", "/%2e%2e/secret.txt",
                                  "/register-partition+kill/../../secret.txt", "/leak/secret.txt",
                                  "/nothing-here/index.html"])
def test_nothing_outside_the_store_is_served(served: tuple[str, int], path: str) -> None:
    status, _, body = get(served, path)
    assert status == 404 and "outside the store" not in body and "root:" not in body


def test_serve_refuses_a_missing_store(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "jepsen_like", "serve", str(tmp_path / "nope"), "--port", "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "is not a directory" in done.stderr
