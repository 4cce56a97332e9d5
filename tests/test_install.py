"""A wheel built by `pip install .` (what the Dockerfile does) carries everything a node reads.

The checkout's editable install finds files next to the sources, so it cannot show
a file missing from the wheel: here the wheel is built from a copy of the tree,
installed into a fresh venv, and a deployment is started from that venv with the
checkout off sys.path.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.up_output import auth, until_up
from tests.conftest import repo_root

# What never enters a build: the same things .dockerignore keeps out of the image's context.
_NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "build", "dist", "store", "checkpoints", "results",
                                     "__pycache__", "*.pyc", ".pytest_cache", ".hypothesis", "*.egg-info", ".run")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy: setuptools reuses build/ in the source tree, where a file an
    # earlier build copied would reach this wheel whatever pyproject.toml says.
    src = tmp_path_factory.mktemp("src") / "worldstate"
    shutil.copytree(repo_root(), src, ignore=_NOT_SOURCE)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", "-w", str(out)], check=True, capture_output=True)
    (built,) = out.glob("worldstate-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel, its dependencies taken from the repo's venv (nothing downloaded)."""
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    py = root / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, capture_output=True)
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # Written after the install, or pip would take the repo venv's worldstate as installed. A .pth
    # line is appended to sys.path after the venv's own site-packages, so the wheel's packages win;
    # the repo venv's editable-install hook (itself a .pth there) is not run from a .pth line.
    Path(site, "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return root


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def test_wheel_carries_every_data_file_of_its_packages(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {n.split("/")[0] for n in names if "/" in n and not n.split("/")[0].endswith(".dist-info")}
    assert {"consistency", "world_model", "deploy", "api", "service"} <= packages
    data = sorted(
        p.relative_to(repo_root()).as_posix()
        for pkg in packages for p in (repo_root() / pkg).rglob("*")
        # Documentation stays in the repository; anything else next to the code is read at run time.
        if p.is_file() and p.suffix not in (".py", ".pyc", ".md") and "__pycache__" not in p.parts
    )
    assert any(d.startswith("consistency/lua/") for d in data) and any("default_model/" in d for d in data)
    assert [d for d in data if d not in names] == []


def test_installed_wheel_starts_a_deployment_that_serves(venv: Path, tmp_path: Path) -> None:
    cwd = tmp_path / "elsewhere"  # not the checkout, so `-m deploy` cannot import it from the cwd
    cwd.mkdir()
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import consistency, deploy, world_model; print(consistency.__file__, world_model.__file__)"],
                           cwd=cwd, env=_env(), check=True, capture_output=True, text=True).stdout.split()
    assert all(Path(f).is_relative_to(venv) for f in where), where

    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [str(venv / "bin" / "worldstate"), "up", "--etcd-members", "1", "--regions", "1", "--run-dir", str(run_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd, env=_env(),
    )
    try:
        out = until_up(proc)
        assert "worldstate is up" in out, out
        assert "published the default model" in out, out  # the packaged blob and manifest were found
        url = json.loads((run_dir / "deployment.json").read_text())["api"]["r1"]
        assert (run_dir / "admin.key").read_text().strip() == auth(out)["Authorization"].removeprefix("Bearer ")
        with httpx.Client(base_url=url, timeout=30, headers=auth(out)) as api:
            assert api.get("/readyz").status_code == 200
            assert api.put("/v1/worlds/installed", json={"description": "from the wheel"}).status_code == 200
            # The AP write runs ingest.lua: the scripts must have come with the wheel.
            r = api.post("/v1/worlds/installed/observations",
                         json={"event_id": "e1", "entity": "ball", "source": "cam", "fields": {"x": 1.5}})
            assert r.status_code == 202, r.text
            token, deadline = r.json()["token"], time.monotonic() + 30
            while (e := api.get("/v1/worlds/installed/entities/ball", params={"token": token})).status_code == 504:
                assert time.monotonic() < deadline, e.text
                time.sleep(0.2)
            assert e.status_code == 200, e.text
            assert e.json()["fields"]["x"]["value"] == 1.5
            assert api.get("/v1/models/current").json()["hash"][:12] in out
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
