"""The model that ships with the package: content-addressed, safe to load, installable, tamper-evident."""

from __future__ import annotations

import hashlib
import io
import json
import math
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from deploy.cli import build_parser, main as cli_main
from deploy.launcher import Deployment, Topology
from service.models import check_manifest
from tests.conftest import auth_headers
from world_model import shipped
from world_model.checkpoints import CheckpointIntegrityError, CheckpointStore, make_manifest
from world_model.inference import WorldModel

PHYSICS = {"gravity": 9.81, "restitution": 0.9, "drag": 0.1, "time_step": 0.05}


def _no_nan(text: str) -> object:
    def refuse(name: str) -> float:
        raise AssertionError(f"manifest.json holds {name}, which the API refuses")
    return json.loads(text, parse_constant=refuse)


def test_the_blob_is_named_by_its_sha256() -> None:
    manifest = shipped.default_manifest()
    blobs = sorted(shipped.DEFAULT_DIR.glob("*.pt"))
    assert [b.stem for b in blobs] == [manifest["hash"]], "exactly one blob, the one the manifest names"
    assert hashlib.sha256(blobs[0].read_bytes()).hexdigest() == blobs[0].stem == manifest["hash"]
    assert manifest["size_bytes"] == blobs[0].stat().st_size


def test_the_blob_loads_weights_only_into_a_world_model() -> None:
    manifest = shipped.default_manifest()
    state = torch.load(io.BytesIO(shipped.blob_path().read_bytes()), map_location="cpu", weights_only=True)
    assert state["kind"] == "worldstate-jepa"
    assert json.loads(json.dumps(state["config"])) == manifest["config"], "the manifest describes this blob"
    model = WorldModel.load(manifest["hash"], str(shipped.DEFAULT_DIR), "cpu")
    assert model.hash == manifest["hash"]
    states = np.array([[2.0, 5.0, 1.0, 0.5, 0.4, 1.0], [6.0, 5.0, -1.0, 0.5, 0.4, 1.0]])
    p = model.predict(states, PHYSICS, horizon=5)
    assert p.positions.shape == (5, 2, 2) and np.isfinite(p.positions).all()


def test_the_manifest_is_one_a_node_accepts_with_its_metrics() -> None:
    manifest = _no_nan((shipped.DEFAULT_DIR / shipped.MANIFEST_NAME).read_text())
    assert manifest == shipped.default_manifest()
    assert check_manifest(manifest, str(shipped.DEFAULT_DIR)) is manifest
    metrics = manifest["metrics"]
    assert isinstance(metrics, dict) and metrics, "the manifest records how well the model does"
    numbers = [v for v in metrics.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    assert numbers and all(math.isfinite(v) for v in numbers)
    assert isinstance(manifest["version"], int) and manifest["format"] == 1


def test_install_is_idempotent(tmp_path: Path) -> None:
    ck = tmp_path / "checkpoints"
    first = shipped.install(ck)
    blob = ck / f"{first['hash']}.pt"
    stat = blob.stat()
    again = shipped.install(ck)
    assert again == first == shipped.default_manifest()
    assert CheckpointStore(ck).list() == [first["hash"]]
    assert blob.stat().st_ino == stat.st_ino and blob.stat().st_mtime_ns == stat.st_mtime_ns, "rewritten"
    assert CheckpointStore(ck).get_bytes(first["hash"]) == shipped.blob_path().read_bytes()
    check_manifest(first, str(ck))


def test_a_tampered_packaged_blob_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "default_model"
    shutil.copytree(shipped.DEFAULT_DIR, source)
    blob = shipped.blob_path(source)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    ck = tmp_path / "checkpoints"
    with pytest.raises(CheckpointIntegrityError):
        shipped.install(ck, source)
    assert CheckpointStore(ck).list() == [], "nothing was installed"


def test_a_tampered_installed_copy_is_replaced(tmp_path: Path) -> None:
    ck = tmp_path / "checkpoints"
    digest = shipped.install(ck)["hash"]
    (ck / f"{digest}.pt").write_bytes(b"not the model")
    with pytest.raises(CheckpointIntegrityError):
        CheckpointStore(ck).get_bytes(digest)
    shipped.install(ck)
    assert CheckpointStore(ck).get_bytes(digest) == shipped.blob_path().read_bytes()


def test_write_replaces_the_old_blob(tmp_path: Path) -> None:
    """What the ship script does: the new blob and manifest in, the old blob out, no NaN in JSON."""
    out = tmp_path / "default_model"
    for content in (b"model one", b"model two"):
        digest = hashlib.sha256(content).hexdigest()
        manifest = make_manifest(digest, {"model": {}}, {"final_loss": math.nan, "r2": 0.9}, None,
                                 size_bytes=len(content))
        shipped.write(manifest, content, out)
    assert sorted(p.name for p in out.glob("*.pt")) == [f"{digest}.pt"]
    written = _no_nan((out / shipped.MANIFEST_NAME).read_text())
    assert written["hash"] == digest and written["metrics"] == {"final_loss": None, "r2": 0.9}
    with pytest.raises(ValueError):
        shipped.write(manifest, b"other bytes", out)


def test_up_publishes_by_default_and_can_be_told_not_to() -> None:
    parse = build_parser().parse_args
    assert parse(["up"]).default_model is True
    assert parse(["up", "--no-default-model"]).default_model is False


def test_a_published_manifest_is_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A programmatic Deployment publishes nothing; publishing the default later keeps what is there."""
    with Deployment(Topology(etcd_members=1, regions=1, run_dir=tmp_path,
                             api_env={"WORLDSTATE_DEVICE": "cpu"})) as d:
        api = httpx.Client(base_url=d.api["r1"].url, timeout=30, headers=auth_headers(d))
        assert api.get("/v1/models/current").json()["state"] == "none"
        assert api.get("/v1/models/manifest").status_code == 404
        ours = {**shipped.install(d.run_dir / "checkpoints"), "version": 7}
        assert api.put("/v1/models/manifest", json=ours, headers={"If-None-Match": "*"}).status_code == 200
        outcome, manifest = d.publish_default_model()
        assert outcome == "kept" and manifest["version"] == 7
        assert api.get("/v1/models/manifest").json()["manifest"]["version"] == 7
        assert api.get("/v1/models/current").json()["version"] == 7, "publish waits until nodes serve it"
        # What docker-compose users run: the same publish, from the command line.
        assert d.admin_key
        assert cli_main(["publish-default", "--api", d.api["r1"].url, "--checkpoint-dir",
                         str(d.run_dir / "checkpoints"), "--key", d.admin_key]) == 0
        assert f"kept the published model {ours['hash'][:12]} (version 7)" in capsys.readouterr().out


def test_the_shipped_model_is_the_default_config() -> None:
    """`worldstate train` with no options trains this config: the shipped model is its result."""
    from world_model.config import default_config

    assert shipped.default_manifest()["config"] == json.loads(json.dumps(default_config().portable()))


def test_the_shipped_model_keeps_physics_on_held_out_scenarios() -> None:
    """A small evaluation on seeds training never saw (the full one is `worldstate eval`): at every
    horizon of every family no worse than constant velocity, no plausibility violation, and far
    bodies change nothing."""
    from world_model.evaluate import evaluate

    model = WorldModel.load(shipped.default_manifest()["hash"], str(shipped.DEFAULT_DIR), "cpu")
    res = evaluate(model, seed=4321, cases=16, mlp_steps=0, sections=("rollout", "plausibility", "invariance"),
                   progress=False)
    checked = {k: v for k, v in res["targets"].items()
               if k.startswith(("model_le_cv.", "overall@10.vs_cv", "collisions@10", "plausibility.", "invariance."))}
    assert len(checked) >= 14
    failed = {k: v for k, v in checked.items() if not v["pass"]}
    assert not failed, failed


def test_the_shipped_blob_is_what_train_makes() -> None:
    """Replays the shipped run's first snapshot with the default config and seed and compares hashes:
    code that no longer trains the shipped model fails here. Floats depend on the thread count and
    the CPU's vector instructions, so the replay runs where those match what the manifest records."""
    import dataclasses
    import tempfile

    from world_model.config import default_config
    from world_model.train import train

    training = shipped.default_manifest()["training"]
    first = training["first_snapshot"]
    if (training["torch"], training["cpu_capability"]) != (torch.__version__, torch.backends.cpu.get_cpu_capability()):
        pytest.skip(f"shipped with torch {training['torch']} on {training['cpu_capability']}: floats differ here")
    cfg = default_config()
    before = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as d:
        cfg.train = dataclasses.replace(cfg.train, threads=training["threads"], checkpoint_dir=d)
        try:
            res = train(cfg, progress=False, stop_at=first["step"])
        finally:
            torch.set_num_threads(before)
    assert res.resume_hash == first["hash"]
