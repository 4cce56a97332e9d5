"""A region's update: what its fine-tune changed, relative to the model it started from.

Instead of publishing a whole model to the manifest, a region's learner (`worldstate learn
--publish update`) stores the difference between its candidate's weights and its base's, only
the tensors that differ (whichever those are: the update does not know which ones trained), as a
content-addressed blob beside the model blobs:

    <checkpoint_dir>/updates/<sha256>.pt     {"kind": "worldstate-update", "delta": {name: tensor}, ...}

and announces it in its own region's Redis, where an aggregator that can reach the region finds
it (eventually consistent: a region it cannot reach this round is not in the round):

    ws:fed:{world}    HASH update hash -> JSON record (Update.as_record): base hash and manifest
                      revision, region, samples learned from, data offsets, the region's own gate
                      figures. Replica-local, never shipped by replication and never trimmed:
                      housekeeping trims the partitions' streams and expires their dedup lists only.

An announcement is idempotent (the same bytes are the same hash, the same field). Whether an
update was used is not kept here but in the manifest's lineage (learn/rounds.py), so what counts
as consumed changes only by compare-and-swap.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
import redis.cluster
import torch

from consistency.ap_backend import credentials, is_cluster_url, startup_nodes
from consistency.cp_keys import check_world
from world_model.checkpoints import CheckpointStore, from_bytes, to_bytes

from .finetune import load_jepa

__all__ = ["KIND", "Update", "UpdateStore", "announce", "announced", "apply_delta", "delta_norm", "delta_of",
           "fed_key", "make_update",
           "model_state", "offer"]

KIND = "worldstate-update"
FORMAT = 1
Delta = dict[str, torch.Tensor]


def fed_key(world: str) -> str:
    """The announcements of one world's updates in a region's Redis (see consistency/ap_keys.py)."""
    return f"ws:fed:{check_world(world)}"


@dataclass(frozen=True)
class Update:
    hash: str  # sha256 of the update blob's bytes
    world: str
    region: str
    base: str  # hash of the model the region fine-tuned
    base_revision: int  # the manifest revision it read
    samples: int  # training samples the delta learned from (the aggregator's weight)
    norm: float  # L2 norm of the delta, for a reader that has not fetched the blob
    learner: str = ""
    data_offsets: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)  # the region's own verdict and figures
    created_ms: int = 0

    def as_record(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_record(cls, text: str | bytes) -> "Update":
        doc = json.loads(text)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in doc.items() if k in known})

    def brief(self) -> dict[str, Any]:
        return {"hash": self.hash, "region": self.region, "samples": self.samples, "base": self.base}


def model_state(blob: bytes) -> Delta:
    """A blob's weights as the current model code loads them: tensors a blob saved before a term
    existed come filled in (world_model/adapt.py's fill_missing), so a delta against an old base
    starts from the same values every region's fine-tune started from, not from zero."""
    return {k: v.detach().clone() for k, v in load_jepa(blob)[0].full_state_dict().items()}


def delta_of(base: Delta, candidate: Delta) -> Delta:
    """candidate - base for every floating tensor that differs; a tensor new in the candidate
    counts whole (its base is zero). Integer buffers (counters) are not averaged."""
    out: Delta = {}
    for name, after in candidate.items():
        if not after.is_floating_point():
            continue
        before = base.get(name)
        if before is None:
            out[name] = after.detach().clone()
        elif before.shape != after.shape:
            raise ValueError(f"{name}: shape {tuple(after.shape)} in the candidate, {tuple(before.shape)} in the base")
        elif not torch.equal(before, after):
            out[name] = (after - before).detach().clone()
    return out


def apply_delta(base: Delta, delta: Delta, scale: float = 1.0) -> Delta:
    """base + scale * delta; a name the base lacks starts from zero."""
    out = {k: v.clone() for k, v in base.items()}
    for name, d in delta.items():
        start = out.get(name)
        out[name] = (torch.zeros_like(d) if start is None else start) + scale * d.to(
            start.dtype if start is not None else d.dtype)
    return out


def delta_norm(delta: Delta) -> float:
    return float(torch.sqrt(sum((d.double() ** 2).sum() for d in delta.values()))) if delta else 0.0


class UpdateStore:
    """Update blobs beside the model blobs: `<checkpoint_dir>/updates/<sha256>.pt`."""

    def __init__(self, checkpoint_dir: str | os.PathLike[str]) -> None:
        self.blobs = CheckpointStore(Path(checkpoint_dir) / "updates")

    def put(self, blob: bytes) -> str:
        return self.blobs.put_bytes(blob)

    def load(self, digest: str) -> dict[str, Any]:
        """The update's document; CheckpointNotFound if absent, CheckpointIntegrityError if altered."""
        doc = from_bytes(self.blobs.get_bytes(digest))
        if doc.get("kind") != KIND:
            raise ValueError(f"blob {digest} is not an update (kind {doc.get('kind')!r})")
        return doc


def make_update(base_blob: bytes, candidate_blob: bytes, *, world: str, region: str, base_revision: int,
                samples: int, learner: str = "", data_offsets: dict[str, Any] | None = None,
                gate: dict[str, Any] | None = None, fisher: Delta | None = None) -> tuple[Update, bytes]:
    """The update blob of a candidate against its base, and its record (not yet stored or announced).
    `fisher` (learn/fisher.py): where the region's data informs each weight, for the aggregator's merge."""
    from world_model.checkpoints import sha256_hex

    cand = from_bytes(candidate_blob)
    delta = delta_of(model_state(base_blob), model_state(candidate_blob))
    base_hash = sha256_hex(base_blob)
    # The candidate's physics ranges travel with the delta: a world outside the base's ranges
    # (restitution 0.0) is served only by a model whose ranges were widened to it.
    ranges = cand["config"]["sim"]["ranges"]
    blob = to_bytes({"kind": KIND, "format": FORMAT, "world": world, "region": region, "base": base_hash,
                     "base_revision": base_revision, "samples": samples, "delta": delta, "ranges": ranges,
                     **({"fisher": {k: v.detach().cpu() for k, v in fisher.items() if k in delta}} if fisher else {})})
    update = Update(sha256_hex(blob), world, region, base_hash, base_revision, samples, delta_norm(delta), learner,
                    dict(data_offsets or {}), dict(gate or {}), int(time.time() * 1000))
    return update, blob


@contextmanager
def _client(url: str, timeout_s: float) -> Iterator[Any]:
    """The region's Redis, whichever layout the URL names (consistency/ap_backend.py): a
    `redis+cluster://[user:password@]h:p,...` URL gets a cluster client with the URL's credentials
    (`ws:fed:<world>` is one key, on whichever master holds its slot), else one plain Redis.

    redis-py's cluster client raises RedisClusterException, not a RedisError, when no startup
    node answers; it is raised here as a ConnectionError, so a region whose cluster is down is
    unreachable this round, as a plain Redis that is down is (learn/federated.py)."""
    try:
        if is_cluster_url(url):
            r: Any = redis.cluster.RedisCluster(
                startup_nodes=[redis.cluster.ClusterNode(h, p) for h, p in startup_nodes(url)], **credentials(url),
                socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        else:
            r = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        with r:
            yield r
    except redis.cluster.RedisClusterException as e:
        raise redis.ConnectionError(f"redis cluster {startup_nodes(url)}: {e}") from e


def announce(redis_url: str, update: Update, timeout_s: float = 5.0) -> None:
    """Make the update visible in its region's Redis (idempotent)."""
    with _client(redis_url, timeout_s) as r:
        r.hset(fed_key(update.world), update.hash, update.as_record())


def forget(redis_url: str, world: str, hashes: list[str], timeout_s: float = 2.0) -> int:
    """Remove these announcements (updates a published round consumed: every later round skips them
    anyway); how many were there. The blobs stay, for the lineage's readers."""
    if not hashes:
        return 0
    with _client(redis_url, timeout_s) as r:
        return int(r.hdel(fed_key(world), *hashes))


def announced(redis_url: str, world: str, timeout_s: float = 2.0) -> list[Update]:
    """Every update of `world` announced in one region's Redis, oldest first. Raises
    redis.RedisError when the region cannot be reached (the caller leaves it out of the round)."""
    with _client(redis_url, timeout_s) as r:
        raw = r.hgetall(fed_key(world))
    found = []
    for digest, text in raw.items():
        try:
            u = Update.from_record(text)
        except (ValueError, TypeError):
            continue  # a record this version cannot read is not an update it can weigh
        if u.hash == digest.decode() and u.world == world:
            found.append(u)
    return sorted(found, key=lambda u: (u.created_ms, u.hash))


def offer(ws: Any, base_blob: bytes, candidate_blob: bytes, *, world: str, redis_url: str | None,
          region: str | None, base_revision: int, samples: int, checkpoint_dir: str | os.PathLike[str],
          learner: str, data_offsets: dict[str, Any], gate: dict[str, Any], fisher: Delta | None = None
          ) -> dict[str, Any]:
    """`worldstate learn --publish update`: store the candidate's update beside the model blobs and
    announce it in the region's Redis. `ws` (a client.Client) names the region when `region` is None."""
    if not redis_url:
        raise SystemExit("worldstate learn: --publish update needs the region's Redis: --announce REDIS_URL "
                         "(or --from-log REDIS_URL)")
    if not region:
        answer = ws.http.get(f"/v1/worlds/{world}/positions")
        answer.raise_for_status()
        region = str(answer.json()["region"])
    update, blob = make_update(base_blob, candidate_blob, world=world, region=region, base_revision=base_revision,
                               samples=samples, learner=learner, data_offsets=data_offsets, gate=gate,
                               fisher=fisher)
    UpdateStore(checkpoint_dir).put(blob)  # the blob first: an announcement never names a blob not yet there
    announce(redis_url, update)
    return {"status": "announced", "update": update.hash, "region": region, "samples": samples, "norm": update.norm,
            "tensors": len(from_bytes(blob)["delta"])}
