"""An edge node's settings, from `worldstate edge`'s options."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class EdgeConfig:
    core: list[str]  # API URLs of the core, tried in order; one region's nodes, or any (a resync follows)
    world: str
    key: str | None  # the key the edge uses with the core: read, observe and predict on the world
    data_dir: Path
    entities: str = ""  # entity id prefix of the subset held ("": every entity of the world)
    max_staleness_s: float = 5.0  # past it, answers are 503 unless the client accepts more
    probe_s: float = 0.5  # how often the edge asks the core where it is (its staleness resolution)
    progress_s: float = 0.5  # how often the core's streams say how far they have sent
    forward_batch: int = 500
    name: str = "edge"
    # Clients of the edge authenticate with this token (default: the core key it was given).
    access_key: str | None = None
    device: str = "auto"  # cuda when present, else cpu: as a core node
    torch_threads: int = 1
    allowed_hosts: list[str] = field(default_factory=lambda: ["localhost"])

    def __post_init__(self) -> None:
        if not self.core:
            raise ValueError("an edge needs at least one core URL (--core)")
        self.core = [u.rstrip("/") for u in self.core]
        if self.max_staleness_s <= 0 or self.probe_s <= 0 or self.progress_s <= 0:
            raise ValueError("--max-staleness, --probe-s and --progress-s must be positive")
