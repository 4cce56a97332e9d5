"""API keys: bearer tokens with scopes per world, kept hashed in the CP tier.

A token reads `wsk_<id>_<secret>`. Only sha256(secret) is stored, under
/worldstate/v1/keys/<id>, so creating and revoking a key are linearizable etcd
writes; every node follows them through a watch (`service.keyring`).

Scopes:
    read          GET of params, physics, worlds, entities, watch, models
    observe       POST observations
    predict       predict, surprise, plan
    params:write  PUT and DELETE of params (not under physics/)
    admin         everything: physics, model manifest, worlds, keys, and every scope above
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from consistency import cp_keys
from consistency.cp_store import CPStore
from consistency.errors import Conflict
from service.errors import InvalidInput

__all__ = ["ADMIN", "ALL_WORLDS", "KEYS_PREFIX", "SCOPES", "Key", "Keys", "acting", "hash_secret", "new_key",
           "bootstrap_admin", "parse_token", "record_of"]

SCOPES = ("read", "observe", "predict", "params:write", "admin")
ADMIN = "admin"
ALL_WORLDS = "*"
KEYS_PREFIX = f"{cp_keys.ROOT}/keys/"
# Each key also has an optional rate per second for each of these (`quotas`); absent is unlimited.
QUOTAS = ("observations_per_s", "queries_per_s")
_TOKEN = re.compile(r"wsk_([0-9a-f]{16})_([A-Za-z0-9_-]{32,64})")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,63}")
MAX_KEYS = 10_000

# The key a request is made with, for the CP writes it makes (`service.versioned` records it).
acting: ContextVar["Key | None"] = ContextVar("acting", default=None)


@dataclass(frozen=True)
class Key:
    id: str
    name: str
    scopes: frozenset[str]
    worlds: frozenset[str]
    secret_hash: str
    quotas: dict[str, float] = field(default_factory=dict)
    created_at_ms: int = 0
    created_by: str | None = None

    def allows(self, scope: str, world: str | None) -> bool:
        """Whether this key may act in `scope` on `world` (None: not about one world, e.g. the
        model manifest, which any world's key may read but only an all-worlds admin may write)."""
        if scope not in self.scopes and ADMIN not in self.scopes:
            return False
        return ALL_WORLDS in self.worlds or (world is not None and world in self.worlds) or \
            (world is None and scope != ADMIN)

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(self.secret_hash, hash_secret(secret))

    def public(self) -> dict[str, Any]:
        """What listing a key shows: never the hash."""
        return {"id": self.id, "name": self.name, "scopes": sorted(self.scopes), "worlds": sorted(self.worlds),
                "quotas": self.quotas, "created_at_ms": self.created_at_ms, "created_by": self.created_by}


def hash_secret(secret: str) -> str:
    # A token carries 192 random bits, so one sha256 suffices (as GitHub's tokens): a slow
    # password hash would only cost every request its time.
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def parse_token(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed token, else None."""
    m = _TOKEN.fullmatch(token)
    return (m.group(1), m.group(2)) if m else None


def record_of(key: Key) -> dict[str, Any]:
    """The document stored in etcd for `key`."""
    return {"id": key.id, "name": key.name, "scopes": sorted(key.scopes), "worlds": sorted(key.worlds),
            "hash": key.secret_hash, "quotas": key.quotas, "created_at_ms": key.created_at_ms,
            "created_by": key.created_by}


def key_of(doc: Any) -> Key | None:
    """A stored document as a Key; None for one this version cannot read (it grants nothing)."""
    try:
        return Key(str(doc["id"]), str(doc["name"]), frozenset(doc["scopes"]), frozenset(doc["worlds"]),
                   str(doc["hash"]), {k: float(v) for k, v in (doc.get("quotas") or {}).items() if k in QUOTAS},
                   int(doc.get("created_at_ms", 0)), doc.get("created_by"))
    except (KeyError, TypeError, ValueError):
        return None


def _invalid(field_: str, msg: str) -> InvalidInput:
    return InvalidInput(f"{field_}: {msg}", [{"loc": ["body", field_], "msg": msg, "type": "value_error"}])


def new_key(name: str, scopes: list[str], worlds: list[str], quotas: dict[str, float] | None = None,
            created_by: str | None = None) -> tuple[Key, str]:
    """A new key and its token (shown once: only its hash is kept)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise _invalid("name", f"must match {_NAME.pattern}")
    if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) and s in SCOPES for s in scopes):
        raise _invalid("scopes", f"a non-empty list of {', '.join(SCOPES)}")
    if not isinstance(worlds, list) or not worlds or not all(isinstance(w, str) for w in worlds):
        raise _invalid("worlds", "a non-empty list of world names, or [\"*\"] for every world")
    for w in worlds:
        if w != ALL_WORLDS:
            try:
                cp_keys.check_world(w)
            except ValueError as e:
                raise _invalid("worlds", str(e)) from None
    quotas = quotas or {}
    if not isinstance(quotas, dict) or any(k not in QUOTAS for k in quotas) or \
            not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1e6
                    for v in quotas.values()):
        raise _invalid("quotas", f"an object of {', '.join(QUOTAS)}, each a rate per second in (0, 1e6]")
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    key = Key(key_id, name, frozenset(scopes), frozenset(worlds), hash_secret(secret),
              {k: float(v) for k, v in quotas.items()}, int(time.time() * 1000), created_by)
    return key, f"wsk_{key_id}_{secret}"


class Keys:
    """Creating, listing and revoking keys: CP writes, linearizable."""

    def __init__(self, cp: CPStore) -> None:
        self.cp = cp

    async def create(self, name: str, scopes: list[str], worlds: list[str],
                     quotas: dict[str, float] | None = None) -> tuple[Key, str]:
        by = acting.get()
        key, token = new_key(name, scopes, worlds, quotas, by.id if by else None)
        await self.cp.put(KEYS_PREFIX + key.id, record_of(key), create_only=True)
        return key, token

    async def list(self) -> list[Key]:
        listing = await self.cp.list(KEYS_PREFIX, limit=MAX_KEYS)
        return [k for k in (key_of(e.value) for e in listing.entries) if k is not None]

    async def revoke(self, key_id: str) -> int:
        """Delete the key; every node drops it as its watch delivers the delete. Returns the revision."""
        if not re.fullmatch(r"[0-9a-f]{16}", key_id):
            raise InvalidInput(f"key id {key_id!r} is 16 hex digits",
                               [{"loc": ["path", "key_id"], "msg": "16 hex digits", "type": "value_error"}])
        return (await self.cp.delete(KEYS_PREFIX + key_id)).revision


async def bootstrap_admin(cp: CPStore, name: str = "admin") -> str | None:
    """Make the first admin key, once per CP cluster: its token, or None when one was made before.

    A marker written create-only in the same transaction makes "first start" a
    fact of etcd, not of whichever process asks."""
    key, token = new_key(name, [ADMIN], [ALL_WORLDS], created_by="bootstrap")
    try:
        await cp.put(f"{cp_keys.ROOT}/keys-bootstrapped", {"key_id": key.id}, create_only=True,
                     also=[(KEYS_PREFIX + key.id, record_of(key))])
    except Conflict:
        return None
    return token
