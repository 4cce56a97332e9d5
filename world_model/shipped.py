"""The default world model that ships inside the package.

A fresh deployment has no model until someone trains and publishes one; the
package carries one trained blob (`default_model/<sha256>.pt`) and the manifest
that names it, so `worldstate up` can publish it at once and predict, surprise
and plan answer from the first start. The blob is an ordinary content-addressed
checkpoint: installing it copies it into a checkpoint directory under the same
name, after checking its bytes still hash to that name.

Rebuild it with `scripts/ship-default-model.py --config default|tiny`.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from .checkpoints import CheckpointIntegrityError, CheckpointStore, sha256_hex
from .config import Config

DEFAULT_DIR = Path(__file__).with_name("default_model")
MANIFEST_NAME = "manifest.json"


def default_manifest(directory: str | os.PathLike[str] = DEFAULT_DIR) -> dict[str, Any]:
    """The manifest of the packaged model (what `install` returns for publishing)."""
    doc: dict[str, Any] = json.loads((Path(directory) / MANIFEST_NAME).read_text())
    return doc


def blob_path(directory: str | os.PathLike[str] = DEFAULT_DIR) -> Path:
    return CheckpointStore(directory).path(default_manifest(directory)["hash"])


def default_blob(directory: str | os.PathLike[str] = DEFAULT_DIR) -> bytes:
    """The packaged blob's bytes, refused if they no longer hash to the manifest's hash."""
    manifest = default_manifest(directory)
    data = blob_path(directory).read_bytes()
    actual = sha256_hex(data)
    if actual != manifest["hash"]:
        raise CheckpointIntegrityError(f"shipped model {manifest['hash']} has hash {actual}: blob was altered")
    return data


def install(checkpoint_dir: str | os.PathLike[str], source: str | os.PathLike[str] = DEFAULT_DIR) -> dict[str, Any]:
    """Copy the packaged blob into `checkpoint_dir` under its content-addressed name
    and return the manifest to publish. Idempotent; a copy already there whose bytes
    were altered is replaced (a node would refuse it)."""
    manifest = default_manifest(source)
    data = default_blob(source)
    store = CheckpointStore(checkpoint_dir)
    if store.exists(manifest["hash"]):
        try:
            store.get_bytes(manifest["hash"])
            return manifest
        except CheckpointIntegrityError:
            store.delete(manifest["hash"])  # put_bytes keeps an existing name, so clear it first
    store.put_bytes(data)
    return manifest


def _finite(value: Any) -> Any:
    """JSON the API accepts: it refuses NaN and Infinity, which training metrics can hold."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write(manifest: dict[str, Any], blob: bytes, directory: str | os.PathLike[str] = DEFAULT_DIR) -> Path:
    """Make `blob` and `manifest` the packaged model, removing the blob it replaces."""
    if sha256_hex(blob) != manifest["hash"]:
        raise ValueError("the manifest does not name this blob")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    store = CheckpointStore(directory)
    store.put_bytes(blob)
    for old in store.list():
        if old != manifest["hash"]:
            store.delete(old)
    text = json.dumps(_finite(manifest), indent=2, sort_keys=True, allow_nan=False, default=float) + "\n"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, directory / MANIFEST_NAME)
    return directory / MANIFEST_NAME


def ship(cfg: Config, directory: str | os.PathLike[str] = DEFAULT_DIR, progress: bool = True) -> dict[str, Any]:
    """Train a model with `cfg` (in a scratch checkpoint directory) and make it the packaged one."""
    from .train import train  # training code is needed only here, never to install

    with tempfile.TemporaryDirectory(prefix="worldstate-ship-") as scratch:
        cfg.train.checkpoint_dir = scratch
        res = train(cfg, progress=progress)
        assert res.manifest is not None and res.hash is not None
        write(res.manifest, CheckpointStore(scratch).get_bytes(res.hash), directory)
    return default_manifest(directory)
