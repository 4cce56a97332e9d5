"""The core as an edge node sees it: its URLs, the one in use, an authenticated HTTP client,
and when it was last heard from."""

from __future__ import annotations

import logging
import time

import httpx

from edge.config import EdgeConfig

log = logging.getLogger("worldstate.edge")
IDLE_S = 10.0  # a stream silent this long (its progress comments stopped) is dropped


class Core:
    """The core URLs, the one in use, and an authenticated HTTP client for them."""

    def __init__(self, cfg: EdgeConfig) -> None:
        self.urls = cfg.core
        self.index = 0
        headers = {"Authorization": f"Bearer {cfg.key}"} if cfg.key else {}
        self.http = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(10.0, read=IDLE_S))
        self.heard: float | None = None  # when the core last sent the edge anything

    @property
    def url(self) -> str:
        return self.urls[self.index]

    def failed(self, url: str) -> None:
        """`url` stopped answering: the next request goes to the next one (once per failure)."""
        if self.url == url and len(self.urls) > 1:
            self.index = (self.index + 1) % len(self.urls)
            log.warning("core %s unreachable; trying %s", url, self.url)

    def hear(self) -> None:
        self.heard = time.time()

    async def close(self) -> None:
        await self.http.aclose()
