"""One API node's wiring: the stores it talks to, opened and closed with the app."""

from __future__ import annotations

from dataclasses import dataclass, field

from consistency.cp_store import CPStore
from service.config import Settings


@dataclass
class Node:
    settings: Settings
    cp: CPStore = field(init=False)

    def __post_init__(self) -> None:
        self.cp = CPStore(self.settings.etcd_endpoints, self.settings.cp_timeout_s)

    async def start(self) -> None:
        await self.cp.connect()

    async def stop(self) -> None:
        await self.cp.close()

    async def readiness(self) -> dict[str, dict[str, object]]:
        return {"cp": await self.cp.health()}
