"""The synchronous Python client of a worldstate node, on httpx.

    from client import Client

    with Client("http://127.0.0.1:8000", key="wsk_...") as ws:
        ws.put_param("lab", "sim/max_bodies", 64)
        ws.update("lab", "sim/max_bodies", lambda v: v * 2)   # read, apply, CAS; retried on 412 only
        ws.observe("lab", [{"entity": "ball-3", "fields": {"x": 1.25, "y": 0.5}}])
        ws.entity("lab", "ball-3")                            # reads its own writes, on any region

Writes are never resent once sent: a write whose outcome is unknown raises
OutcomeUnknown, as the service answers it. Observations are the exception that
proves the rule: `observe` gives each one an event id before the first try, so
resending a batch can only find duplicates.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from client.errors import Conflict, OutcomeUnknown, RateLimited, Unavailable, error_for

__all__ = ["Client", "Param", "Receipt"]


@dataclass(frozen=True)
class Param:
    value: Any
    revision: int  # the key's mod revision: pass it as `if_revision` to compare-and-swap
    consistency: str


@dataclass(frozen=True)
class Receipt:
    accepted: int
    duplicates: list[str]
    token: str  # read-your-writes: the client hands it to its next reads itself


class Client:
    def __init__(self, url: str | None = None, key: str | None = None, *, timeout: float = 30.0,
                 source: str | None = None) -> None:
        """`url` and `key` default to $WORLDSTATE_URL and $WORLDSTATE_KEY; `source` names this
        client in the observations it sends (default: a random one per client)."""
        url = url or os.environ.get("WORLDSTATE_URL")
        key = key or os.environ.get("WORLDSTATE_KEY")
        if not url:
            raise ValueError("give url= or set WORLDSTATE_URL")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)
        self.source = source or f"sdk-{uuid.uuid4().hex[:12]}"
        self.token: str | None = None  # the last write's causal token, sent with reads

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None,
              headers: Mapping[str, str] | None = None) -> httpx.Response:
        r = self.http.request(method, path, json=json, params=params, headers=headers)
        if r.status_code >= 400:
            try:
                body = r.json()
            except ValueError:
                body = r.text
            raise error_for(r.status_code, body, r.headers.get("retry-after"))
        return r

    # -- CP params ----------------------------------------------------------------------

    def get_param(self, world: str, key: str, *, serializable: bool = False) -> Param:
        params = {"consistency": "serializable"} if serializable else None
        doc = self._call("GET", f"/v1/worlds/{world}/params/{key}", params=params).json()
        return Param(doc["value"], doc["revision"], doc["consistency"])

    def put_param(self, world: str, key: str, value: Any, *, if_revision: int | None = None,
                  create_only: bool = False) -> int:
        """Write `value`; with `if_revision` only if the key is still at it (Conflict otherwise),
        with `create_only` only if absent. Returns the new revision."""
        headers = {"If-Match": f'"{if_revision}"'} if if_revision is not None else {}
        if create_only:
            headers["If-None-Match"] = "*"
        return int(self._call("PUT", f"/v1/worlds/{world}/params/{key}", json=value, headers=headers)
                   .json()["revision"])

    def delete_param(self, world: str, key: str, *, if_revision: int | None = None) -> None:
        headers = {"If-Match": f'"{if_revision}"'} if if_revision is not None else None
        self._call("DELETE", f"/v1/worlds/{world}/params/{key}", headers=headers)

    def update(self, world: str, key: str, fn: Callable[[Any], Any], *, attempts: int = 50) -> int:
        """Read the key, write `fn(value)` if nobody wrote in between; on a lost race wait a
        random moment, read again and retry (only then: any other error is raised). Returns
        the new revision. The wait grows with each loss: without it a writer far from the
        leader lost ten races in a row to a closer one and gave up (seen under load)."""
        for attempt in range(attempts):
            current = self.get_param(world, key)
            try:
                return self.put_param(world, key, fn(current.value), if_revision=current.revision)
            except Conflict:
                if attempt == attempts - 1:
                    raise
                time.sleep(random.uniform(0, min(0.005 * 2 ** attempt, 0.2)))
        raise AssertionError("unreachable")

    # -- worlds and observations ----------------------------------------------------------

    def create_world(self, world: str, meta: Mapping[str, Any] | None = None) -> int:
        return int(self._call("PUT", f"/v1/worlds/{world}", json=dict(meta or {})).json()["revision"])

    def worlds(self) -> list[str]:
        """Every world this client's key may read."""
        names: list[str] = []
        params: dict[str, Any] = {"limit": 1000}
        while True:
            page = self._call("GET", "/v1/worlds", params=params).json()
            names += page["worlds"]
            if page["next"] is None:
                return names
            params["after"] = page["next"]["after"]

    def observe(self, world: str, observations: Iterable[Mapping[str, Any]], *, attempts: int = 5) -> Receipt:
        """Post a batch. Each observation without an `event_id` gets one now, once, and `source`
        defaults to this client's: so the batch is resent as it is (the same ids) after a 429,
        503 or 504, waiting Retry-After (or a backoff), and a resend can only find duplicates."""
        batch = [{"source": self.source, **o, "event_id": o.get("event_id") or uuid.uuid4().hex}
                 for o in observations]
        for attempt in range(attempts):
            try:
                doc = self._call("POST", f"/v1/worlds/{world}/observations", json=batch).json()
                break
            except (RateLimited, Unavailable, OutcomeUnknown) as e:
                if attempt == attempts - 1:
                    raise
                time.sleep(e.retry_after or min(0.1 * 2 ** attempt, 2.0) * (0.5 + random.random()))
        self.token = doc["token"]
        return Receipt(doc["accepted"], doc["duplicates"], doc["token"])

    def entity(self, world: str, entity: str) -> dict[str, Any]:
        """An entity's merged state, reflecting at least this client's last write."""
        params = {"token": self.token} if self.token else None
        return dict(self._call("GET", f"/v1/worlds/{world}/entities/{entity}", params=params).json())

    # -- the world model ----------------------------------------------------------------

    def predict(self, world: str, horizon: int, **query: Any) -> dict[str, Any]:
        return dict(self._call("POST", f"/v1/worlds/{world}/predict", json={"horizon": horizon, **query}).json())
