"""The model at the edge: the manifest the core serves, its blob fetched by hash from the
core (GET /v1/models/blobs/{hash}), its sha256 checked before it is stored, then loaded and
hot-swapped by the same ModelHost a core node uses. The blob and manifest stay on disk, so a
restarted edge serves its model before it hears from the core."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.models import ModelHost

if TYPE_CHECKING:
    from edge.core import Core
    from edge.store import EdgeStore

log = logging.getLogger("worldstate.edge")


class BlobRefused(Exception):
    pass


class EdgeModels:
    def __init__(self, store: "EdgeStore", checkpoint_dir: Path, device: str, torch_threads: int) -> None:
        self.store = store
        self.checkpoint_dir = checkpoint_dir
        # No CP store: the edge never watches etcd; it calls load() itself.
        self.host = ModelHost(None, str(checkpoint_dir), device, torch_threads=torch_threads)  # type: ignore[arg-type]
        self.fetched_bytes = 0

    async def restore(self) -> None:
        """Serve the model this edge last loaded, from its own disk."""
        saved = self.store.meta.get("manifest")
        if saved:
            await self.host.load(saved["doc"], saved["revision"])

    async def follow(self, core: "Core", revision: int) -> None:
        """Load the manifest the core serves at `revision` (or later); a refused blob leaves the
        model in service as it is and is reported in the edge's status."""
        from world_model.checkpoints import CheckpointStore

        r = await core.http.get(f"{core.url}/v1/models/manifest")
        r.raise_for_status()
        doc = r.json()
        manifest: dict[str, Any] = doc["manifest"]
        digest = str(manifest.get("hash", ""))
        store = CheckpointStore(self.checkpoint_dir)
        if not store.exists(digest):
            blob = await core.http.get(f"{core.url}/v1/models/blobs/{digest}", timeout=120)
            blob.raise_for_status()
            actual = hashlib.sha256(blob.content).hexdigest()
            if actual != digest:
                self.host.last_error = f"blob {digest} from {core.url} hashes to {actual}: refused"
                log.error(self.host.last_error)
                return
            self.fetched_bytes += len(blob.content)
            await asyncio.to_thread(store.put_bytes, blob.content)
        if await self.host.load(manifest, doc["revision"]):
            self.store.set_meta("manifest", {"doc": manifest, "revision": doc["revision"]})
