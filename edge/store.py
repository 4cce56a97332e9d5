"""What an edge holds, in SQLite (the standard library's): the world's params, its subset of
entities, the positions they reflect, and the outbox of observations not yet forwarded.

Params and entities are served from memory and written to disk in batches (`flush`), each
batch in one transaction with the positions it reflects, so a restarted edge resumes
exactly where its disk is. Observations are different: an edge acknowledges one only after
its outbox row is committed (synchronous=FULL), since that acknowledgement is a promise
that the core will get it.

Entities merge as the core's replicas do (consistency/ap_entity.py): a field is replaced
by one with a greater order key (hlc|node); a tombstone hides every field stamped before it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consistency.ap_entity import EntityState, FieldState

KEEP_FORWARDED = 100_000  # forwarded rows kept for the edge's own duplicate check

_SCHEMA = """
CREATE TABLE IF NOT EXISTS params (key TEXT PRIMARY KEY, value TEXT NOT NULL, revision INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS entities (entity TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE,
                                   body TEXT NOT NULL, accepted_ms INTEGER NOT NULL, forwarded_ms INTEGER,
                                   refused TEXT);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (forwarded_ms, seq);
"""


def _key(hlc: str, node: str) -> str:
    return f"{hlc}|{node}"


@dataclass
class Entity:
    """One entity as the edge holds it: fields with their stamps, and the newest tombstone."""

    fields: dict[str, FieldState] = field(default_factory=dict)
    tomb: str = ""  # order key of the newest delete ("": none)

    def put(self, name: str, f: FieldState) -> bool:
        key = _key(f.hlc, f.node)
        old = self.fields.get(name)
        if key <= self.tomb or (old is not None and key <= _key(old.hlc, old.node)):
            return False
        self.fields[name] = f
        return True

    def delete(self, hlc: str, node: str) -> None:
        self.tomb = max(self.tomb, _key(hlc, node))
        self.fields = {n: f for n, f in self.fields.items() if _key(f.hlc, f.node) > self.tomb}

    @property
    def visible(self) -> bool:
        return bool(self.fields)

    def state(self, world: str, entity: str) -> EntityState:
        return EntityState(world, entity, dict(sorted(self.fields.items())))

    def to_json(self) -> str:
        return json.dumps({"fields": {n: [f.value, f.hlc, f.node, f.source, f.event_id, f.observed_at_ms]
                                      for n, f in self.fields.items()}, "tomb": self.tomb})

    @classmethod
    def from_json(cls, text: str) -> "Entity":
        doc = json.loads(text)
        return cls({n: FieldState(*v) for n, v in doc["fields"].items()}, doc["tomb"])


class EdgeStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        self.params: dict[str, tuple[Any, int]] = {
            k: (json.loads(v), r) for k, v, r in self.db.execute("SELECT key, value, revision FROM params")}
        self.entities: dict[str, Entity] = {
            e: Entity.from_json(d) for e, d in self.db.execute("SELECT entity, doc FROM entities")}
        self.meta: dict[str, Any] = {n: json.loads(v) for n, v in self.db.execute("SELECT name, value FROM meta")}
        self._dirty_params: set[str] = set()
        self._dirty_entities: set[str] = set()
        self._dirty_meta: set[str] = set()
        self._replace = False  # the next flush rewrites params and entities whole (after a resync)

    def close(self) -> None:
        self.flush()
        self.db.close()

    # -- CP: the world's params (physics included) ---------------------------------------

    def put_param(self, key: str, value: Any, revision: int) -> None:
        old = self.params.get(key)
        if old is None or old[1] < revision:
            self.params[key] = (value, revision)
            self._dirty_params.add(key)

    def delete_param(self, key: str) -> None:
        if self.params.pop(key, None) is not None:
            self._dirty_params.add(key)

    def replace_params(self, items: Iterable[tuple[str, Any, int]]) -> None:
        self.params = {k: (v, r) for k, v, r in items}
        self._replace = True

    # -- AP: the subset of entities ------------------------------------------------------

    def apply_change(self, entity: str, fields: dict[str, Any], hlc: str, node: str, deleted: bool,
                     entities: dict[str, Entity] | None = None) -> None:
        """One change of the core's entity stream (into `entities`, a resync's new set, if given)."""
        target = self.entities if entities is None else entities
        e = target.setdefault(entity, Entity())
        if deleted:
            e.delete(hlc, node)
        for name, value in fields.items():
            e.put(name, FieldState(value, hlc, node, "", "", None))
        if entities is None:
            self._dirty_entities.add(entity)

    def replace_entities(self, entities: dict[str, Entity]) -> None:
        self.entities = entities
        self._replace = True

    # -- positions and other small state -------------------------------------------------

    def set_meta(self, name: str, value: Any) -> None:
        if self.meta.get(name) != value:
            self.meta[name] = value
            self._dirty_meta.add(name)

    def flush(self) -> None:
        """Write what changed since the last flush, with the positions it reflects, in one transaction."""
        if not (self._replace or self._dirty_params or self._dirty_entities or self._dirty_meta):
            return
        db = self.db
        db.execute("BEGIN")
        try:
            if self._replace:
                db.execute("DELETE FROM params")
                db.execute("DELETE FROM entities")
                self._dirty_params = set(self.params)
                self._dirty_entities = set(self.entities)
            for k in self._dirty_params:
                if k in self.params:
                    v, r = self.params[k]
                    db.execute("INSERT OR REPLACE INTO params VALUES (?, ?, ?)", (k, json.dumps(v), r))
                else:
                    db.execute("DELETE FROM params WHERE key = ?", (k,))
            for e in self._dirty_entities:
                db.execute("INSERT OR REPLACE INTO entities VALUES (?, ?)", (e, self.entities[e].to_json()))
            for n in self._dirty_meta:
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (n, json.dumps(self.meta[n])))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._replace = False
        self._dirty_params.clear()
        self._dirty_entities.clear()
        self._dirty_meta.clear()

    # -- the outbox ----------------------------------------------------------------------

    def enqueue(self, observations: list[tuple[str, str]], now_ms: int) -> list[str]:
        """Store (event_id, body) rows for forwarding, durably; the event ids already held are
        returned (duplicates: stored once, whatever their bodies)."""
        db = self.db
        duplicates = []
        db.execute("BEGIN IMMEDIATE")
        try:
            for event_id, body in observations:
                cur = db.execute("INSERT OR IGNORE INTO outbox (event_id, body, accepted_ms) VALUES (?, ?, ?)",
                                 (event_id, body, now_ms))
                if cur.rowcount == 0:
                    duplicates.append(event_id)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return duplicates

    def pending(self, limit: int) -> list[tuple[int, str]]:
        """The oldest observations not yet forwarded: (seq, body)."""
        return list(self.db.execute(
            "SELECT seq, body FROM outbox WHERE forwarded_ms IS NULL AND refused IS NULL ORDER BY seq LIMIT ?",
            (limit,)))

    def forwarded(self, seqs: list[int], now_ms: int) -> None:
        db = self.db
        db.execute("BEGIN")
        db.executemany("UPDATE outbox SET forwarded_ms = ? WHERE seq = ?", [(now_ms, s) for s in seqs])
        db.execute("DELETE FROM outbox WHERE forwarded_ms IS NOT NULL AND seq <= "
                   "(SELECT seq FROM outbox WHERE forwarded_ms IS NOT NULL ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                   (KEEP_FORWARDED,))
        db.execute("COMMIT")

    def reject(self, seq: int, reason: str) -> None:
        """Set a row the core refused aside, with why (kept, and counted in the edge's status)."""
        self.db.execute("UPDATE outbox SET refused = ? WHERE seq = ?", (reason, seq))

    def outbox_depth(self) -> int:
        return int(self.db.execute(
            "SELECT count(*) FROM outbox WHERE forwarded_ms IS NULL AND refused IS NULL").fetchone()[0])

    def refused(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM outbox WHERE refused IS NOT NULL").fetchone()[0])
