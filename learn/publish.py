"""Publish a candidate the gate accepted: store its blob, then compare-and-swap the manifest.

The swap is conditioned on the manifest revision the learner started from (If-Match). If
someone published in between, the swap loses (412) and this says so: the candidate was measured
against a parent that no longer serves, so retrying blindly would overwrite a model nobody
gated it against. A refused candidate publishes nothing and stores nothing.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Any

from client import Client
from client.errors import Conflict
from world_model.checkpoints import CheckpointStore, make_manifest

from .finetune import Candidate
from .gate import Verdict

PUBLISHED, REFUSED, LOST_RACE = "published", "refused-by-gate", "lost-race"


@dataclass
class Outcome:
    status: str  # PUBLISHED, REFUSED or LOST_RACE
    hash: str
    parent: str
    base_revision: int
    revision: int | None = None  # the manifest's new revision, when published
    current_revision: int | None = None  # the manifest's revision now, when the race was lost
    manifest: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def finite(value: Any) -> Any:
    """JSON the API accepts: it refuses NaN and Infinity (a ratio over a zero error is one)."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def lineage(candidate: Candidate, verdict: Verdict, *, world: str, learner: str, base_revision: int,
            data_offsets: dict[str, Any]) -> dict[str, Any]:
    """What the manifest records about where the model came from."""
    return {"parent": candidate.base_hash, "parent_manifest_revision": base_revision, "learner": learner,
            "world": world, "data_offsets": data_offsets, "gate": verdict.figures,
            "seconds": candidate.seconds, **{k: v for k, v in candidate.lineage.items() if k != "parent"}}


def build_manifest(candidate: Candidate, base_manifest: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    doc = make_manifest(candidate.hash, candidate.config.portable(), candidate.metrics, base_manifest.get("physics_revision"),
                        size_bytes=len(candidate.blob), physics=base_manifest.get("physics"))
    # A version only has to increase; the clock may sit behind a parent published from elsewhere.
    doc["version"] = max(doc["version"], int(base_manifest.get("version", 0)) + 1)
    doc["lineage"] = record
    return finite(doc)


def publish(ws: Client, candidate: Candidate, verdict: Verdict, *, base_manifest: dict[str, Any], base_revision: int,
            checkpoint_dir: str | os.PathLike[str], world: str, learner: str,
            data_offsets: dict[str, Any] | None = None) -> Outcome:
    """Store the blob where the nodes load blobs from and CAS the manifest over `base_revision`."""
    out = Outcome(REFUSED, candidate.hash, candidate.base_hash, base_revision)
    if not verdict.accept:
        return out
    CheckpointStore(checkpoint_dir).put_bytes(candidate.blob)
    record = lineage(candidate, verdict, world=world, learner=learner, base_revision=base_revision,
                     data_offsets=data_offsets or {})
    doc = build_manifest(candidate, base_manifest, record)
    try:
        out.revision = ws.publish(doc, if_revision=base_revision)
    except Conflict as e:
        out.status, out.current_revision = LOST_RACE, e.current_revision
        return out
    out.status, out.manifest = PUBLISHED, doc
    return out
