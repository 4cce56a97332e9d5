"""The model a node serves: named by a manifest in the CP tier, hot-swapped on change.

The manifest (hash, version, config, metrics, physics revision) lives at one
etcd key and changes only by compare-and-swap. Every node watches it; on a
change it loads the content-addressed blob from its checkpoint directory,
verifies the sha256, and swaps the model in. Queries already running finish
on the model they started with; a blob that fails its hash is refused and the
old model keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from consistency import cp_keys
from consistency.cp_store import CPStore
from consistency.errors import Compacted, NotFound, StoreError
from service.errors import ManifestInvalid, ModelUnavailable
from service.versioned import Consistency, Precondition, Versioned, Written, read, write

# world_model is imported inside the functions that load a model: torch takes
# seconds to import, and a node that serves no model (or not yet) never pays it.

log = logging.getLogger("worldstate.models")
MANIFEST_KEY = f"{cp_keys.ROOT}/models/manifest"
_HASH = re.compile(r"[0-9a-f]{64}")
MODEL_KIND = "worldstate-jepa"  # what world_model.train writes for a model; snapshots are "resume"


@dataclass
class Serving:
    model: Any  # world_model.inference.WorldModel
    batcher: Any  # world_model.batching.MicroBatcher
    manifest: dict[str, Any]
    revision: int  # the manifest's mod revision in etcd
    loaded_at: float


def check_manifest(doc: Any, checkpoint_dir: str) -> dict[str, Any]:
    """A manifest is published only if this node holds its blob, the blob's hash matches and
    the blob is a model this node can build."""
    from world_model.checkpoints import CheckpointError, CheckpointStore, from_bytes
    from world_model.inference import WorldModel

    if not isinstance(doc, dict):
        raise ManifestInvalid("a manifest is a JSON object")
    digest = doc.get("hash")
    if not isinstance(digest, str) or not _HASH.fullmatch(digest):
        raise ManifestInvalid("hash: 64 lowercase hex characters (the blob's sha256)")
    if not isinstance(doc.get("version"), int) or isinstance(doc.get("version"), bool):
        raise ManifestInvalid("version: an integer")
    for name in ("config", "metrics"):
        if not isinstance(doc.get(name, {}), dict):
            raise ManifestInvalid(f"{name}: an object")
    rev = doc.get("physics_revision")
    if rev is not None and (not isinstance(rev, int) or isinstance(rev, bool) or rev < 0):
        raise ManifestInvalid("physics_revision: a non-negative integer or null")
    try:
        blob = from_bytes(CheckpointStore(checkpoint_dir).get_bytes(digest))  # verifies the sha256
    except CheckpointError as e:
        raise ManifestInvalid(f"blob {digest}: {e}") from None
    except Exception as e:  # noqa: BLE001 - torch.load's errors have no common base
        raise ManifestInvalid(f"blob {digest} is not a checkpoint: {type(e).__name__}") from None
    # A training snapshot (kind "resume") hashes fine but no node can serve it: published, it
    # left every restarted node without a model. Building the model checks weights and config.
    kind = blob.get("kind") if isinstance(blob, dict) else None
    if kind != MODEL_KIND:
        raise ManifestInvalid(f"blob {digest} is a {kind!r} checkpoint, not a model ({MODEL_KIND!r})")
    try:
        WorldModel(blob, "cpu", digest)
    except Exception as e:  # noqa: BLE001 - a bad config or state dict fails in many ways
        raise ManifestInvalid(f"blob {digest} does not build a model: {type(e).__name__}: {str(e)[:300]}") from None
    return doc


class ModelHost:
    def __init__(self, cp: CPStore, checkpoint_dir: str, device: str = "auto",
                 max_batch: int = 32, max_wait_ms: float = 0.0, torch_threads: int = 1,
                 predict_memo: int = 256) -> None:
        self.cp = cp
        self.checkpoint_dir = checkpoint_dir
        self.device = device
        self.max_batch = max_batch
        self.max_wait_ms = max_wait_ms
        self.predict_memo = predict_memo  # answers kept per model for queries asked again (0: none)
        self.torch_threads = torch_threads  # as configured; 0: one per CPU
        self.torch_threads_used: int | None = None  # as applied, at the first load
        self.serving: Serving | None = None
        self.last_error = ""
        self._task: asyncio.Task[None] | None = None

    async def manifest(self, consistency: Consistency = "linearizable") -> Versioned:
        return await read(self.cp, MANIFEST_KEY, consistency)

    async def publish(self, manifest: Any, pre: Precondition) -> Written:
        """Publish a model: compare-and-swap on the manifest's revision, like any CP value.
        Refused (ManifestInvalid) unless this node holds the blob and its hash matches."""
        await asyncio.to_thread(check_manifest, manifest, self.checkpoint_dir)
        return await write(self.cp, MANIFEST_KEY, manifest, pre)

    async def blob(self, digest: str) -> bytes:
        """A model blob's bytes, their sha256 checked (an edge node fetches the model this way)."""
        from world_model.checkpoints import CheckpointIntegrityError, CheckpointNotFound, CheckpointStore

        try:
            return await asyncio.to_thread(CheckpointStore(self.checkpoint_dir).get_bytes, digest)
        except CheckpointNotFound:
            raise NotFound(f"model blob {digest}") from None
        except CheckpointIntegrityError as e:
            raise ModelUnavailable(f"model blob {digest} is damaged on this node: {e}") from None

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="model-manifest-watch")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.serving:
            await self.serving.batcher.close()

    def require(self) -> Serving:
        if self.serving is None:
            raise ModelUnavailable(self.last_error or "no model has been published yet")
        return self.serving

    def status(self) -> dict[str, Any]:
        s = self.serving
        if s is None:
            return {"state": "none", "error": self.last_error, "torch_threads": self.torch_threads_used}
        return {"state": "ok", "hash": s.manifest["hash"], "version": s.manifest["version"],
                "manifest_revision": s.revision, "device": str(s.model.device),
                "loaded_at": s.loaded_at, "error": self.last_error,
                "batches": s.batcher.stats.batches, "queries": s.batcher.stats.queries,
                "batch_sizes": dict(s.batcher.stats.sizes), "inference_s": s.batcher.stats.inference_s,
                "queue_depth": s.batcher.depth(), "torch_threads": self.torch_threads_used,
                "memo": {"size": s.batcher.memo.size, "held": len(s.batcher.memo), "hits": s.batcher.memo.hits}}

    async def _follow(self) -> None:
        """Load the current manifest, then every change to it; survive CP outages."""
        while True:
            try:
                start = await self.cp.current_revision() + 1
                try:
                    entry = await self.cp.get(MANIFEST_KEY)
                    await self.load(entry.value, entry.mod_revision)
                except NotFound:
                    pass
                async for ev in self.cp.watch(MANIFEST_KEY, start):
                    if ev.type == "put" and ev.key == MANIFEST_KEY:
                        await self.load(ev.value, ev.mod_revision)
            except (StoreError, Compacted) as e:
                self.last_error = f"manifest watch: {e}"
                await asyncio.sleep(1.0)

    async def load(self, manifest: Any, revision: int) -> bool:
        """Swap to the model `manifest` names; False (old model kept) if its blob is refused."""
        from world_model.batching import MicroBatcher, set_torch_threads
        from world_model.checkpoints import CheckpointError
        from world_model.inference import WorldModel

        if self.serving and self.serving.revision >= revision:
            return True
        if self.torch_threads_used is None:  # once, before this process's first model work
            self.torch_threads_used = set_torch_threads(self.torch_threads)
        try:
            check_manifest(manifest, self.checkpoint_dir)
            model = await asyncio.to_thread(WorldModel.load, manifest["hash"], self.checkpoint_dir, self.device)
        except (ManifestInvalid, CheckpointError, OSError, KeyError, RuntimeError) as e:
            self.last_error = f"manifest revision {revision} refused: {e}"
            log.error(self.last_error)
            return False
        batcher = MicroBatcher(model, self.max_batch, self.max_wait_ms, memo_size=self.predict_memo)
        old, self.serving = self.serving, Serving(model, batcher, manifest, revision, time.time())
        self.last_error = ""
        if old is not None:
            asyncio.create_task(old.batcher.close())  # queued queries still finish on the old model
        return True
