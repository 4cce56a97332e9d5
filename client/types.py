"""What the client returns: one frozen dataclass per kind of answer, built from the
service's JSON by `from_doc`. `doc` keeps the whole answer for members not named here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["DeleteReceipt", "Entity", "EntityChange", "FieldValue", "Manifest", "Param", "ParamChange",
           "ParamItem", "ParamList", "Physics", "Plan", "Prediction", "Receipt", "Surprise", "Trajectory"]


@dataclass(frozen=True)
class Param:
    """A CP value as read. Pass `revision` as `if_revision` to compare-and-swap."""

    value: Any
    revision: int  # the key's mod revision
    consistency: str  # "linearizable", or "serializable" when asked for (possibly stale)
    create_revision: int = 0
    version: int = 0
    store_revision: int = 0  # etcd's revision when it was read

    @classmethod
    def from_doc(cls, doc: dict[str, Any], value_name: str = "value") -> "Param":
        return cls(doc[value_name], doc["revision"], doc["consistency"], doc.get("create_revision", 0),
                   doc.get("version", 0), doc.get("store_revision", 0))


@dataclass(frozen=True)
class Physics:
    """A world's physics constants and the revision of the document holding them."""

    gravity: float
    restitution: float
    drag: float
    time_step: float
    revision: int = 0
    consistency: str = "linearizable"

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> "Physics":
        p = doc["physics"]
        return cls(p["gravity"], p["restitution"], p["drag"], p["time_step"], doc["revision"], doc["consistency"])

    def constants(self) -> dict[str, float]:
        return {"gravity": self.gravity, "restitution": self.restitution, "drag": self.drag,
                "time_step": self.time_step}


@dataclass(frozen=True)
class ParamItem:
    key: str
    value: Any
    revision: int
    create_revision: int = 0
    version: int = 0


@dataclass(frozen=True)
class ParamList:
    """Every key under a prefix, all read from one snapshot: etcd's `revision`."""

    revision: int
    items: list[ParamItem]


@dataclass(frozen=True)
class ParamChange:
    """One event of a watch: `type` is "put" or "delete" (then `value` is None)."""

    type: str
    key: str
    value: Any
    revision: int


@dataclass(frozen=True)
class Receipt:
    """The answer to a batch of observations."""

    accepted: int
    duplicates: list[str]  # event ids already applied: a resend found them, nothing applied twice
    token: str  # read-your-writes: the client hands it to its next reads itself
    replica: str = ""
    hlc: str = ""

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> "Receipt":
        return cls(doc["accepted"], list(doc["duplicates"]), doc["token"], doc.get("replica", ""), doc.get("hlc", ""))


@dataclass(frozen=True)
class DeleteReceipt:
    """The answer to deleting an entity: a tombstone, merged like any write."""

    event_id: str
    token: str
    duplicate: bool  # this event id was applied before (a resend): nothing applied twice
    replica: str = ""
    hlc: str = ""


@dataclass(frozen=True)
class FieldValue:
    """One field of an entity: a last-writer-wins register and where its value came from."""

    value: Any
    hlc: str = ""
    node: str = ""
    source: str = ""
    event_id: str = ""
    observed_at_ms: int | None = None


@dataclass(frozen=True)
class Entity:
    """An entity's merged state at the `replica` that answered, and what that reflects."""

    entity: str
    fields: dict[str, FieldValue]
    replica: str = ""
    hlc: str = ""
    doc: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> "Entity":
        fields = {name: FieldValue(**f) for name, f in doc.get("fields", {}).items()}
        return cls(doc["entity"], fields, doc.get("replica", ""), doc.get("hlc", ""), doc)

    def values(self) -> dict[str, Any]:
        """The fields' values alone: {"x": 1.25, ...}."""
        return {name: f.value for name, f in self.fields.items()}

    @property
    def observations(self) -> int:
        return int(self.doc.get("counters", {}).get("observations", {}).get("total", 0))


@dataclass(frozen=True)
class EntityChange:
    """One event of an entity subscription; `id` is the replica's stream position (resume after it)."""

    id: str
    entity: str
    fields: dict[str, Any]
    deleted: bool
    hlc: str
    origin: str  # the region whose write this was
    node: str = ""  # the API node that stamped it


@dataclass(frozen=True)
class Trajectory:
    positions: list[list[float]]
    velocities: list[list[float]]


@dataclass(frozen=True)
class Prediction:
    world: str
    horizon: int
    time_step: float
    trajectories: dict[str, Trajectory]
    skipped: dict[str, list[str]]
    provenance: dict[str, Any]

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> "Prediction":
        trajectories = {e: Trajectory(t["positions"], t["velocities"]) for e, t in doc["trajectories"].items()}
        return cls(doc["world"], doc["horizon"], doc["time_step"], trajectories, doc["skipped"], doc["provenance"])


@dataclass(frozen=True)
class Surprise:
    world: str
    scores: dict[str, float]
    most_surprising: str
    score: float
    threshold: float
    surprising: bool
    bodies: list[str]
    skipped: dict[str, list[str]]
    provenance: dict[str, Any]


@dataclass(frozen=True)
class Plan:
    world: str
    entity: str
    actions: list[list[float]]
    predicted_path: list[list[float]]
    final_energy: float
    reaches_goal: bool
    bodies: list[str]
    skipped: dict[str, list[str]]
    provenance: dict[str, Any]


@dataclass(frozen=True)
class Manifest:
    """The published model manifest and its CP revision (pass it as `if_revision` to publish over it)."""

    manifest: dict[str, Any]
    revision: int
    consistency: str

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> "Manifest":
        return cls(doc["manifest"], doc["revision"], doc["consistency"])
