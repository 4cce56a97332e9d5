"""Training shards: content-addressed files of samples, and a per-world index naming them.

    <shard_dir>/<world>/index.json        the index, replaced atomically (write, fsync, rename)
    <shard_dir>/<world>/shards/<sha>.pt   a shard, named by the sha256 of its bytes
    <shard_dir>/<world>/state/<sha>.json  the learner's open trajectories and frontiers

A shard holds Rollouts-shaped frames (one entity per rollout) and its provenance: world,
region, consumer, the stream offsets it covers (after, through], time_step and physics, and
each sample's entity, first instant and event ids. The index lists the shards and names the
learner state that goes with them, so one rename commits both: a learner that dies before
it leaves the previous index, whose frontiers still cover every listed sample. A shard or
state file no index names (written by a learner that died) is ignored.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from consistency.cp_keys import check_world
from learn.scenes import scenes
from learn.trajectories import Sample
from world_model.checkpoints import CheckpointStore, from_bytes, sha256_hex, to_bytes
from world_model.config import OBS_DIM, PRESENT, Physics
from world_model.simulator import Rollouts

__all__ = ["Index", "NoShards", "ShardDir", "load_rollouts", "load_samples", "load_scenes"]

FORMAT = 1


class NoShards(FileNotFoundError):
    """The shard directory has no index for that world: no learner has written it."""


@dataclass
class Index:
    world: str
    frames: int  # frames per sample: every shard of a world has the same
    shards: list[dict[str, Any]] = field(default_factory=list)  # provenance of each, oldest first
    state: str | None = None  # hash of the learner state that goes with these shards
    offsets: dict[str, str] = field(default_factory=dict)  # "<region>/<consumer>" -> last id covered
    format: int = FORMAT

    @property
    def samples(self) -> int:
        return sum(int(s["samples"]) for s in self.shards)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)  # the rename itself survives a crash once the folder is synced
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class ShardDir:
    """One world's shards, state and index under `shard_dir`."""

    def __init__(self, shard_dir: str | os.PathLike[str], world: str) -> None:
        self.world = check_world(world)
        self.root = Path(shard_dir) / world
        self.blobs = CheckpointStore(self.root / "shards")
        self.index_path = self.root / "index.json"

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One learner at a time per world and folder: two would each commit an index without the other's shards."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def index(self, frames: int | None = None) -> Index:
        """The committed index; a new empty one (of `frames`) if none, NoShards if none and no `frames`."""
        try:
            doc = json.loads(self.index_path.read_text())
        except FileNotFoundError:
            if frames is None:
                raise NoShards(f"no shards of world {self.world} in {self.root.parent}") from None
            return Index(self.world, frames)
        return Index(**doc)

    def put_shard(self, samples: list[Sample], physics: Physics, provenance: dict[str, Any]) -> str:
        frames = torch.zeros(len(samples), len(samples[0].rows), 1, OBS_DIM)
        for i, s in enumerate(samples):
            frames[i, :, 0, :PRESENT] = torch.as_tensor(s.rows, dtype=torch.float32)
        frames[..., PRESENT] = 1.0
        body = {"format": FORMAT, **provenance, "samples": len(samples), "time_step": physics.time_step,
                "physics": physics.as_list(), "frames": frames, "entities": [s.entity for s in samples],
                "start_ms": torch.tensor([s.start_ms for s in samples], dtype=torch.int64),
                "events": [list(s.events) for s in samples]}
        return self.blobs.put_bytes(to_bytes(body))

    def state(self, index: Index) -> dict[str, Any] | None:
        if index.state is None:
            return None
        data = (self.root / "state" / f"{index.state}.json").read_bytes()
        if sha256_hex(data) != index.state:
            raise ValueError(f"learner state {index.state} of world {self.world} was altered")
        return json.loads(data)  # type: ignore[no-any-return]

    def commit(self, index: Index, state: dict[str, Any]) -> None:
        """Store `state` and make `index` (naming it) the current one, in that order."""
        data = json.dumps(state, sort_keys=True, separators=(",", ":")).encode()
        previous, index.state = index.state, sha256_hex(data)
        target = self.root / "state" / f"{index.state}.json"
        if not target.exists():
            _write_atomically(target, data)
        _write_atomically(self.index_path, json.dumps(asdict(index), indent=1, sort_keys=True).encode())
        if previous and previous != index.state:
            (self.root / "state" / f"{previous}.json").unlink(missing_ok=True)

    def load_shard(self, digest: str) -> dict[str, Any]:
        return from_bytes(self.blobs.get_bytes(digest))  # checks the bytes still hash to the name


def load_rollouts(world: str, shard_dir: str | os.PathLike[str]) -> Rollouts:
    """Every sample the index of `world` lists, once each, as Rollouts: frames (R, T+1, 1, OBS_DIM),
    actions zero (R, T, 1, 2), physics (R, 4) of the world when each was cut. NoShards if none."""
    return load_samples(world, shard_dir)[0]


def load_samples(world: str, shard_dir: str | os.PathLike[str]) -> tuple[Rollouts, list[str]]:
    """`load_rollouts` and the entity of each sample: the groups to split train from held-out by
    (learn/gate.py's split), so no entity's trajectory lands on both sides."""
    data, entities, _ = _read(world, shard_dir)
    return data, entities


def load_scenes(world: str, shard_dir: str | os.PathLike[str], max_bodies: int) -> tuple[Rollouts, list[str]]:
    """Every sample the index lists, the bodies that met in one window put together
    (learn/scenes.py): frames (S, T+1, max_bodies, OBS_DIM), and each scene's split group."""
    data, entities, starts = _read(world, shard_dir)
    return scenes(data, entities, starts, max_bodies)


def _read(world: str, shard_dir: str | os.PathLike[str]) -> tuple[Rollouts, list[str], list[int]]:
    d = ShardDir(shard_dir, world)
    index = d.index()
    frames, physics, entities, starts, seen = [], [], [], [], set()
    for entry in index.shards:
        shard = d.load_shard(entry["hash"])
        # (entity, first instant) names a sample; the learner never writes one twice, and this
        # keeps a hand-merged index from counting one twice either
        keep = [i for i, key in enumerate(zip(shard["entities"], shard["start_ms"].tolist())) if key not in seen]
        seen.update((shard["entities"][i], int(shard["start_ms"][i])) for i in keep)
        entities += [shard["entities"][i] for i in keep]
        starts += [int(shard["start_ms"][i]) for i in keep]
        frames.append(shard["frames"][keep])
        physics.append(torch.tensor([shard["physics"]] * len(keep), dtype=torch.float32).reshape(len(keep), 4))
    if not frames:
        return Rollouts(torch.zeros(0, index.frames, 1, OBS_DIM), torch.zeros(0, index.frames - 1, 1, 2),
                        torch.zeros(0, 4)), [], []
    all_frames = torch.cat(frames)
    r, f = all_frames.shape[:2]
    return Rollouts(all_frames, torch.zeros(r, f - 1, 1, 2), torch.cat(physics)), entities, starts
