"""HTTP preconditions mapped onto the service's compare-and-swap.

ETag = the key's mod revision, as a strong entity tag ("12").
  If-Match: "12"     -> write only if the key is at revision 12
  If-Match: *        -> write only if the key exists
  If-None-Match: *   -> create only
"""

from __future__ import annotations

import re

from api.problems import Problem, etag
from service.versioned import MAX_REVISION, Precondition

__all__ = ["etag", "parse"]

_ETAG = re.compile(r'"?([1-9][0-9]{0,18})"?')


def parse(if_match: str | None, if_none_match: str | None) -> Precondition:
    if if_match is not None and if_none_match is not None:
        raise Problem("invalid-precondition", "send either If-Match or If-None-Match, not both")
    if if_none_match is not None:
        if if_none_match.strip() != "*":
            raise Problem("invalid-precondition", "If-None-Match supports only * (create only)")
        return Precondition(create_only=True)
    if if_match is None:
        return Precondition()
    value = if_match.strip()
    if value == "*":
        return Precondition(must_exist=True)
    m = _ETAG.fullmatch(value)
    if not m or value.count('"') not in (0, 2):
        raise Problem("invalid-precondition",
                      f'If-Match {if_match!r} is not a revision entity tag like "12" (lists and weak tags are not supported)')
    revision = int(m.group(1))
    if revision > MAX_REVISION:  # 19 digits reach past etcd's int64 revisions
        raise Problem("invalid-precondition", f"If-Match {if_match!r}: a revision is at most {MAX_REVISION}")
    return Precondition(if_revision=revision)
