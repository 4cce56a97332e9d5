"""A session's causal token: the merge of its writes' tokens.

A write's token names the region that took it and, per partition the write touched, how far
that partition's stream had to get (`REGION:v2.<p>-<ms>-<seq>...`, the server's
consistency/ap_positions.py). A session that wrote two entities must wait for both on a read:
the partitions of the two tokens are merged, each at the later id. A token of another region,
or one this client cannot read, replaces the session's (the server says what it accepts).
"""

from __future__ import annotations

__all__ = ["merged_token"]


def _parse(token: str) -> tuple[str, dict[int, tuple[int, int]]] | None:
    region, sep, rest = token.partition(":")
    if not sep or not (rest == "v2" or rest.startswith("v2.")):
        return None
    out: dict[int, tuple[int, int]] = {}
    for part in rest.split(".")[1:]:
        pieces = part.split("-")
        if len(pieces) != 3 or not all(p.isdigit() for p in pieces):
            return None
        out[int(pieces[0])] = (int(pieces[1]), int(pieces[2]))
    return region, out


def merged_token(session: str | None, new: str) -> str:
    """The session's token after a write that answered `new`."""
    old, fresh = (_parse(session) if session else None), _parse(new)
    if old is None or fresh is None or old[0] != fresh[0]:
        return new
    both = dict(old[1])
    for p, sid in fresh[1].items():
        both[p] = max(both.get(p, sid), sid)
    return f"{fresh[0]}:v2" + "".join(f".{p}-{ms}-{seq}" for p, (ms, seq) in sorted(both.items()))
