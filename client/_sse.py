"""Server-sent events, free of I/O: a line parser, and the state of a stream that resumes
where it left off (`Resumable`), specialised for the CP watch and the entity stream.

The sync and async iterators in client/watch.py only move lines from a connection into
`Resumable.feed` and ask it, when the connection drops, what to send next time.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from client._transport import world_path as _w
from client.errors import SlowConsumer, Unavailable, WorldstateError, error_for
from client.types import EntityChange, ParamChange

T = TypeVar("T")
# The CP watch's first line: the revision it delivers from, even before any event has an id.
_WATCHING_FROM = re.compile(r"watching from revision ([0-9]+)")
# The entity stream's first line: the position it delivers after.
_SUBSCRIBED_AFTER = re.compile(r"subscribed after (\S+)")


@dataclass(frozen=True)
class Event:
    id: str | None
    event: str
    data: str


class Parser:
    """SSE lines in, events out (https://html.spec.whatwg.org/#event-stream-interpretation);
    comments (heartbeats) go to `comments`."""

    def __init__(self) -> None:
        self._id: str | None = None
        self._event = ""
        self._data: list[str] = []
        self.comments: list[str] = []

    def feed(self, line: str) -> Event | None:
        if line == "":
            if not self._data and not self._event:
                return None
            ev = Event(self._id, self._event or "message", "\n".join(self._data))
            self._event, self._data = "", []
            return ev
        if line.startswith(":"):
            self.comments.append(line[1:].strip())
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None


class Resumable(Generic[T]):
    """Where a stream is, so a new connection continues right after the last event delivered;
    and how many connections in a row have failed, so reconnecting gives up at some point."""

    path = ""

    def __init__(self, params: dict[str, Any], last_id: str | None, max_failures: int) -> None:
        self.params = params
        self.last_id = last_id
        self.max_failures = max_failures
        self.failures = 0

    def request(self) -> tuple[dict[str, Any], dict[str, str]]:
        headers = {"Last-Event-ID": self.last_id} if self.last_id is not None else {}
        return dict(self.params), headers

    def feed(self, parser: Parser, line: str) -> T | None:
        """One line of the stream; the item it completes, if any. Raises what the stream reports."""
        ev = parser.feed(line)
        for comment in parser.comments:
            self.on_comment(comment)
        parser.comments.clear()
        if ev is None:
            return None
        item = self.decode(ev)
        if ev.id is not None:
            self.last_id = ev.id
        self.failures = 0  # an event came through: the connection worked
        return item

    def dropped(self, error: BaseException | None) -> int:
        """The connection ended (error None: the server closed it, as a node stopping does).
        Returns the attempt number to back off by; raises once `max_failures` in a row failed."""
        self.failures += 1
        if self.failures > self.max_failures:
            if isinstance(error, WorldstateError):
                raise error
            raise Unavailable(0, {"type": "/problems/unavailable",
                                  "detail": f"stream lost {self.failures} times in a row: {error!r}"}) from error
        return self.failures - 1

    def on_comment(self, text: str) -> None:
        pass

    def decode(self, ev: Event) -> T | None:
        raise NotImplementedError


def _problem(ev: Event) -> WorldstateError:
    try:
        doc = json.loads(ev.data)
    except ValueError:
        doc = {"detail": ev.data}
    if not isinstance(doc, dict):
        doc = {"detail": str(doc)}
    return error_for(int(doc.get("status", 0) or 0), doc)


class ParamWatch(Resumable[ParamChange]):
    """GET /v1/worlds/{w}/watch: ids are revisions."""

    def __init__(self, world: str, prefix: str, start_revision: int, max_failures: int) -> None:
        super().__init__({"prefix": prefix, "start_revision": start_revision}, None, max_failures)
        self.path = f"{_w(world)}/watch"

    def on_comment(self, text: str) -> None:
        # Before the first event, a reconnect must start where the first connection did,
        # not at "now": changes in between would be lost.
        m = _WATCHING_FROM.fullmatch(text)
        if m and self.last_id is None:
            self.params["start_revision"] = int(m.group(1))

    def decode(self, ev: Event) -> ParamChange | None:
        if ev.event == "error":
            raise _problem(ev)
        if ev.event not in ("put", "delete"):
            return None
        d = json.loads(ev.data)
        return ParamChange(ev.event, d["key"], d.get("value"), int(d["revision"]))


class EntityStream(Resumable[EntityChange]):
    """GET /v1/worlds/{w}/entities/stream: ids are the replica's stream positions."""

    def __init__(self, world: str, entity: str | None, prefix: str | None, after: str | None,
                 max_failures: int) -> None:
        params = {k: v for k, v in (("entity", entity), ("prefix", prefix)) if v is not None}
        super().__init__(params, after, max_failures)
        self.path = f"{_w(world)}/entities/stream"

    def on_comment(self, text: str) -> None:
        m = _SUBSCRIBED_AFTER.fullmatch(text)  # so a reconnect before the first event loses nothing
        if m and self.last_id is None:
            self.last_id = m.group(1)

    def decode(self, ev: Event) -> EntityChange | None:
        if ev.event == "error":
            raise _problem(ev)
        if ev.event == "slow-consumer":
            try:
                doc = json.loads(ev.data) if ev.data else {}
            except ValueError:
                doc = {"detail": ev.data}
            raise SlowConsumer(0, doc if isinstance(doc, dict) else {"detail": str(doc)})
        if ev.event != "change":
            return None
        d = json.loads(ev.data)
        return EntityChange(ev.id or "", d["entity"], d.get("fields", {}), bool(d.get("deleted")), d.get("hlc", ""),
                            d.get("origin", ""), d.get("node", ""))
