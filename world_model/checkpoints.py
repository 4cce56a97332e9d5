"""Content-addressed checkpoint blobs.

A blob's name is the sha256 of its bytes, so a manifest that names a hash
names exactly one model, and a blob that was altered on disk is detected on
load. The manifest itself is only built here; storing it (in etcd, with
compare-and-swap) is the caller's job.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 1
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")


class CheckpointError(Exception):
    """Base class for checkpoint-store failures."""


class CheckpointNotFound(CheckpointError):
    pass


class CheckpointIntegrityError(CheckpointError):
    """The blob's bytes do not hash to the name it was asked for by."""


class InvalidCheckpointHash(CheckpointError, ValueError):
    pass


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def to_bytes(obj: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def from_bytes(data: bytes, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    # weights_only: a blob from elsewhere cannot run code when loaded.
    return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)


class CheckpointStore:
    """A directory of blobs named `<sha256>.pt`."""

    def __init__(self, directory: str | os.PathLike[str]):
        self.dir = Path(directory)

    def path(self, digest: str) -> Path:
        if not _HASH_RE.match(digest):
            raise InvalidCheckpointHash(f"not a sha256 hex digest: {digest!r}")
        return self.dir / f"{digest}.pt"

    def put_bytes(self, data: bytes) -> str:
        digest = sha256_hex(data)
        target = self.path(digest)
        if target.exists():
            return digest  # same bytes, same name: nothing to do
        self.dir.mkdir(parents=True, exist_ok=True)
        # Write then rename so a reader never sees half a blob.
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        return digest

    def save(self, obj: dict[str, Any]) -> str:
        """Serialise `obj` with torch.save and store it; returns its hash."""
        return self.put_bytes(to_bytes(obj))

    def get_bytes(self, digest: str) -> bytes:
        p = self.path(digest)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise CheckpointNotFound(f"no checkpoint {digest} in {self.dir}") from None
        actual = sha256_hex(data)
        if actual != digest:
            raise CheckpointIntegrityError(f"checkpoint {digest} has hash {actual}: blob was altered")
        return data

    def load(self, digest: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """Load a blob after checking that its bytes still hash to `digest`."""
        return from_bytes(self.get_bytes(digest), map_location)

    def exists(self, digest: str) -> bool:
        return self.path(digest).exists()

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def list(self) -> list[str]:
        if not self.dir.exists():
            return []
        return sorted(p.stem for p in self.dir.glob("*.pt") if _HASH_RE.match(p.stem))


def make_manifest(digest: str, config: dict[str, Any], metrics: dict[str, Any],
                  physics_revision: int | None, version: int | None = None,
                  size_bytes: int | None = None, physics: dict[str, float] | None = None) -> dict[str, Any]:
    """The record that names the current model. `version` defaults to the
    creation time in ms, which only has to increase; the CP tier's CAS decides
    which manifest wins."""
    return {
        "hash": digest,
        "version": version if version is not None else int(time.time() * 1000),
        "format": FORMAT_VERSION,
        "config": config,
        "metrics": metrics,
        "physics_revision": physics_revision,
        "physics": physics,
        "size_bytes": size_bytes,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
