"""A batching writer of observations: `add` one at a time, posted `batch` at a time.

Each observation gets its event id in `add`, once: a batch resent after a 429, a 503
or an unanswered POST carries the same ids, and the service reports whatever it had
already applied as duplicates instead of applying it twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from client.types import Receipt

__all__ = ["AsyncObserver", "Observer"]

Send = Callable[[list[dict[str, Any]]], Receipt]
AsyncSend = Callable[[list[dict[str, Any]]], Awaitable[Receipt]]


class _Batch:
    def __init__(self, batch: int, source: str) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self.batch = batch
        self.source = source
        self.pending: list[dict[str, Any]] = []  # stamped, not yet acknowledged
        self.receipts: list[Receipt] = []

    def stamp(self, entity: str, fields: Mapping[str, Any], event_id: str | None, observed_at: float | None,
              source: str | None) -> str:
        event_id = event_id or uuid.uuid4().hex
        obs: dict[str, Any] = {"event_id": event_id, "entity": entity, "source": source or self.source,
                               "fields": dict(fields)}
        if observed_at is not None:
            obs["observed_at"] = observed_at
        self.pending.append(obs)
        return event_id

    @property
    def full(self) -> bool:
        return len(self.pending) >= self.batch

    @property
    def accepted(self) -> int:
        """Observations the service applied, over every batch so far."""
        return sum(r.accepted for r in self.receipts)

    @property
    def duplicates(self) -> list[str]:
        """Event ids the service had applied before: resends, never applied twice."""
        return [d for r in self.receipts for d in r.duplicates]


class Observer(_Batch):
    """From `Client.observer`:

        with ws.observer("lab", batch=500, source="cam1") as w:
            for frame in frames:
                w.add(frame.entity, {"x": frame.x, "y": frame.y})
        print(w.accepted, w.duplicates)

    Leaving the block posts what is left, unless it is left by an exception: then what
    was not posted stays in `pending` (with its event ids: posting it later is safe)."""

    def __init__(self, send: Send, batch: int, source: str) -> None:
        super().__init__(batch, source)
        self._send = send

    def add(self, entity: str, fields: Mapping[str, Any], event_id: str | None = None,
            observed_at: float | None = None, source: str | None = None) -> str:
        """Queue one observation; posts the batch once it is full. Returns its event id."""
        event_id = self.stamp(entity, fields, event_id, observed_at, source)
        if self.full:
            self.flush()
        return event_id

    def flush(self) -> Receipt | None:
        """Post what is pending now (in batches of `batch`)."""
        last = None
        while self.pending:
            chunk = self.pending[:self.batch]
            last = self._send(chunk)
            self.receipts.append(last)
            del self.pending[:len(chunk)]
        return last

    def __enter__(self) -> "Observer":
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.flush()


class AsyncObserver(_Batch):
    """`Observer` for `AsyncClient.observer`: `async with`, and `await w.add(...)`."""

    def __init__(self, send: AsyncSend, batch: int, source: str) -> None:
        super().__init__(batch, source)
        self._send = send

    async def add(self, entity: str, fields: Mapping[str, Any], event_id: str | None = None,
                  observed_at: float | None = None, source: str | None = None) -> str:
        event_id = self.stamp(entity, fields, event_id, observed_at, source)
        if self.full:
            await self.flush()
        return event_id

    async def flush(self) -> Receipt | None:
        last = None
        while self.pending:
            chunk = self.pending[:self.batch]
            last = await self._send(chunk)
            self.receipts.append(last)
            del self.pending[:len(chunk)]
        return last

    async def __aenter__(self) -> "AsyncObserver":
        return self

    async def __aexit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            await self.flush()
