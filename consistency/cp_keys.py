"""The CP tier's key layout in etcd, and the validation of names put into it.

    /worldstate/v1/worlds/{world}/params/{key}

A key is one or more `/`-separated segments of [A-Za-z0-9._-]; physics
constants are params under `physics/`.
"""

from __future__ import annotations

import re

from consistency.errors import InvalidKey

ROOT = "/worldstate/v1"
PHYSICS_KEY = "physics/constants"
MAX_KEY_LEN = 256
_WORLD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SEGMENT = re.compile(r"[A-Za-z0-9._-]{1,64}")


def check_world(world: str) -> str:
    if not _WORLD.fullmatch(world):
        raise InvalidKey(f"world {world!r} must match {_WORLD.pattern}")
    return world


def check_key(key: str, *, prefix: bool = False) -> str:
    """Validate a param key; with prefix=True an empty key or a trailing `/` is allowed."""
    if len(key) > MAX_KEY_LEN:
        raise InvalidKey(f"key longer than {MAX_KEY_LEN} characters")
    if prefix and key == "":
        return key
    segments = key.split("/")
    if prefix and segments[-1] == "":
        segments = segments[:-1]
    for seg in segments:
        if not _SEGMENT.fullmatch(seg) or seg in (".", ".."):
            raise InvalidKey(f"key {key!r}: each '/'-separated segment must match {_SEGMENT.pattern}")
    return key


def world_root(world: str) -> str:
    return f"{ROOT}/worlds/{check_world(world)}"


def param_path(world: str, key: str) -> str:
    return f"{world_root(world)}/params/{check_key(key)}"


def params_prefix(world: str, key_prefix: str = "") -> str:
    return f"{world_root(world)}/params/{check_key(key_prefix, prefix=True)}"
