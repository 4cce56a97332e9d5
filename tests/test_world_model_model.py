"""The JEPA learns, does not collapse, beats constant velocity, and survives
a checkpoint round trip. One tiny model is trained once for the module."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from world_model import metrics as M
from world_model.baselines import constant_velocity
from world_model.checkpoints import CheckpointIntegrityError, CheckpointNotFound, CheckpointStore
from world_model.config import Config, Physics, tiny_config
from world_model.inference import WorldModel
from world_model.simulator import generate, sample_windows
from world_model.train import main as train_main, train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    cfg = tiny_config()
    cfg.train.checkpoint_dir = str(tmp_path_factory.mktemp("ckpt"))
    res = train(cfg, progress=False)
    return cfg, res


def test_training_lowers_the_loss(trained):
    _, res = trained
    first, last = res.history[0], res.history[-1]
    assert last["loss"] < 0.8 * first["loss"]
    assert last["state"] < 0.5 * first["state"]


def test_latents_do_not_collapse(trained):
    cfg, res = trained
    model = WorldModel.load(res.hash, cfg.train.checkpoint_dir, "cpu")
    val = generate(128, 20, cfg.sim, seed=99)
    spread = M.latent_spread(model.jepa, val, cfg, n=512)
    assert spread["latent_std_min"] > 0.3  # every dimension keeps spread
    assert spread["latent_dims_above_0.1"] == cfg.model.latent_dim - 4  # the learned features
    assert res.metrics["latent_std_min"] > 0.3


def test_trained_model_beats_constant_velocity(trained):
    cfg, res = trained
    model = WorldModel.load(res.hash, cfg.train.checkpoint_dir, "cpu")
    w, h = cfg.model.window, 10
    test = generate(128, 30, cfg.sim, seed=1234)
    frames, actions, phys = sample_windows(test, w + h, 256, torch.Generator().manual_seed(0))
    mask = frames[:, w - 1, :, 6] > 0
    true = frames[:, w - 1 + h, :, 0:2]
    with torch.no_grad():
        jepa = M.jepa_predict(model.jepa, frames, actions, phys, cfg, h)[:, -1, :, 0:2]
    cv = constant_velocity(frames[:, w - 1], phys, h)[:, -1]
    err_jepa = (jepa - true).norm(dim=-1)[mask].mean()
    err_cv = (cv - true).norm(dim=-1)[mask].mean()
    assert err_jepa < err_cv, (float(err_jepa), float(err_cv))


def test_manifest_names_the_blob(trained):
    cfg, res = trained
    m = res.manifest
    assert m["hash"] == res.hash and len(m["hash"]) == 64
    assert Config.from_dict(m["config"]) == Config.from_dict(cfg.portable())
    assert m["config"]["train"]["checkpoint_dir"] == "checkpoints"  # where it ran is not part of the model
    assert {"pos_err@10", "latent_std_min", "train_seconds"} <= set(m["metrics"])
    assert "physics_revision" in m and isinstance(m["version"], int)


def test_checkpoint_refuses_a_tampered_blob(trained, tmp_path):
    cfg, res = trained
    store = CheckpointStore(tmp_path)
    digest = store.put_bytes(CheckpointStore(cfg.train.checkpoint_dir).get_bytes(res.hash))
    assert digest == res.hash
    WorldModel.load(digest, str(tmp_path), "cpu")  # intact: loads
    path = store.path(digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointIntegrityError):
        store.load(digest)
    with pytest.raises(CheckpointIntegrityError):
        WorldModel.load(digest, str(tmp_path), "cpu")
    with pytest.raises(CheckpointNotFound):
        store.load("0" * 64)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    cfg = tiny_config()
    cfg.data = dataclasses.replace(cfg.data, train_rollouts=64, val_rollouts=32)
    cfg.train = dataclasses.replace(cfg.train, steps=8, resume_every=4,
                                    checkpoint_dir=str(tmp_path / "a"))
    straight = train(cfg, progress=False)
    cfg.train.checkpoint_dir = str(tmp_path / "b")
    part = train(cfg, progress=False, stop_at=4)
    assert part.hash is None and part.resume_hash is not None
    resumed = train(cfg, progress=False, resume="latest")
    a = CheckpointStore(tmp_path / "a").load(straight.hash)["jepa"]
    b = CheckpointStore(tmp_path / "b").load(resumed.hash)["jepa"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_the_same_config_and_seed_give_the_same_blob(tmp_path):
    """Reproducible to the byte on one machine, wherever the checkpoints go: the hash names the training."""
    cfg = tiny_config()
    cfg.data = dataclasses.replace(cfg.data, train_rollouts=32, val_rollouts=16)
    cfg.train = dataclasses.replace(cfg.train, steps=4, resume_every=2, checkpoint_dir=str(tmp_path / "a"))
    a = train(cfg, progress=False)
    cfg.train.checkpoint_dir = str(tmp_path / "b")
    b = train(cfg, progress=False)
    assert a.hash == b.hash and a.manifest["training"]["first_snapshot"] == b.manifest["training"]["first_snapshot"]
    cfg.train = dataclasses.replace(cfg.train, seed=1, checkpoint_dir=str(tmp_path / "c"))
    assert train(cfg, progress=False).hash != a.hash


def test_train_cli_writes_a_manifest(tmp_path):
    out = tmp_path / "manifest.json"
    rc = train_main(["--config", "tiny", "--steps", "3", "--checkpoint-dir", str(tmp_path / "c"),
                     "--physics", '{"gravity": 9.81, "restitution": 0.9, "drag": 0.1, "time_step": 0.05}',
                     "--physics-revision", "42",
                     "--threads", "1", "--no-progress", "--manifest-out", str(out)])
    assert rc == 0
    manifest = json.loads(out.read_text())
    assert manifest["physics_revision"] == 42 and manifest["physics"]["gravity"] == 9.81
    assert CheckpointStore(tmp_path / "c").exists(manifest["hash"])


def test_evaluate_reports_every_section(trained, tmp_path):
    from world_model.evaluate import SECTIONS, evaluate, format_table, plot
    from world_model.scenarios import FAMILIES

    cfg, res = trained
    model = WorldModel.load(res.hash, cfg.train.checkpoint_dir, "cpu")
    out = evaluate(model, cases=4, surprise_cases=16, episodes=2, budget=16, plan_steps=10, mlp_steps=10,
                   progress=False)
    assert set(SECTIONS) <= set(out) and set(out["rollout"]["families"]) == set(FAMILIES)
    cv = out["rollout"]["families"]["free_flight"]["constant_velocity"]
    assert 0 < cv["1"] < cv["20"]  # constant velocity misses gravity more the longer it runs
    assert 0.0 <= out["surprise"]["auroc"]["teleport"] <= 1.0
    assert set(out["planning"]["success_rate"]) >= {"cem_model", "cem_simulator", "random_impulses", "no_action"}
    assert out["targets"] and isinstance(out["all_pass"], bool)
    table = format_table(out)
    assert all(name in table for name in out["targets"])
    plot(out, tmp_path / "eval.png")
    assert (tmp_path / "eval.png").stat().st_size > 0


def test_train_refuses_physics_outside_its_ranges(tmp_path):
    cfg = tiny_config()
    cfg.train.checkpoint_dir = str(tmp_path)
    with pytest.raises(ValueError):
        train(cfg, physics=Physics(gravity=-3.0), progress=False)


def test_surprise_is_higher_for_a_teleport_than_for_normal_motion(trained):
    from world_model.simulator import physics_tensor, random_worlds, rollout

    cfg, res = trained
    model = WorldModel.load(res.hash, cfg.train.checkpoint_dir, "cpu")
    phys = Physics(gravity=9.81, restitution=0.9, drag=0.1, time_step=0.05)
    s0 = random_worlds(12, cfg.sim, torch.Generator().manual_seed(7))
    frames = rollout(s0, physics_tensor(phys).repeat(12, 1), torch.zeros(12, 8, cfg.sim.max_bodies, 2), cfg.sim.box)
    normal, odd = [], []
    for i in range(12):
        n = int(frames[i, 0, :, 6].sum())
        f = frames[i, :, :n, :6].numpy()
        ctx, obs = f[:2], f[2:].copy()
        normal.append(model.surprise(ctx, obs, phys).score)
        obs[:, 0, 0:2] = 10.0 - obs[:, 0, 0:2]  # body 0 jumps to the mirrored spot and stays there
        odd.append(model.surprise(ctx, obs, phys).score)
    assert sum(o > n for o, n in zip(odd, normal)) >= 10
