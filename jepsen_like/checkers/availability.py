"""Availability: the fraction of operations answered ok, per tier, inside and outside faults.

An operation is "inside" when it was invoked during a nemesis interval
``[start, end)`` (same clock as the history; `history.nemesis_intervals`
extracts them from nemesis events). ``ok`` counts any definite answer the
client asked for, including a CAS whose precondition failed; ``fail`` is a
refusal (e.g. 503 from a minority), ``info`` a timeout or lost answer.

The tier of an operation is ``tier_of(op)``; by default its ``tier`` field
("cp"/"ap"), else "default". `minimum` maps (tier, "inside"|"outside"|"all")
to the least acceptable ok fraction: falling below is a violation, so a run
can assert that the AP tier kept answering during a partition while the CP
tier is allowed to refuse.

Whatever the faults, a refusal must say what it is: 503 (nothing changed),
504 (outcome unknown) or a 4xx. A 500 is a failure the service did not
classify, so the client cannot know whether to retry; each is a
``server-error`` violation.
"""

from __future__ import annotations

import bisect
from typing import Any, Callable, Iterable, Mapping

from ..history import FAIL, INFO, OK, Event, Operation, as_operations
from .result import Result, Violation

WHERE = ("inside", "outside", "all")


def default_tier(op: Operation) -> str:
    return str(op.get("tier", "default"))


def check(history: Iterable[Event] | Iterable[Operation],
          intervals: Iterable[tuple[float, float]] = (),
          tier_of: Callable[[Operation], str] = default_tier,
          minimum: Mapping[tuple[str, str], float] | None = None) -> Result:
    spans = _merge(intervals)
    starts = [s for s, _ in spans]
    counts: dict[str, dict[str, dict[str, int]]] = {}
    res = Result("availability")
    for op in as_operations(history):
        error = op.complete.error if op.complete is not None else None
        if isinstance(error, str) and error.startswith("500"):
            res.violations.append(Violation("server-error", f"{op}: {error}", {"op": op.id}))
        tier = tier_of(op)
        by_where = counts.setdefault(tier, {w: {OK: 0, FAIL: 0, INFO: 0} for w in WHERE})
        i = bisect.bisect_right(starts, op.call) - 1
        inside = i >= 0 and op.call < spans[i][1]
        for where in ("inside" if inside else "outside", "all"):
            by_where[where][op.type] += 1

    table: dict[str, dict[str, dict[str, Any]]] = {}
    for tier, by_where in sorted(counts.items()):
        table[tier] = {}
        for where, c in by_where.items():
            total = sum(c.values())
            table[tier][where] = dict(c, total=total, ok_fraction=(c[OK] / total if total else None))
    res.stats["tiers"] = table
    res.stats["intervals"] = spans
    for (tier, where), least in (minimum or {}).items():
        frac = table.get(tier, {}).get(where, {}).get("ok_fraction")
        if frac is not None and frac < least:
            res.violations.append(Violation(
                "unavailable", f"tier {tier!r} {where} faults: ok fraction {frac:.3f} < {least}",
                {"tier": tier, "where": where, "ok_fraction": frac, "minimum": least}))
    return res


def _merge(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for s, e in sorted((float(s), float(e)) for s, e in intervals):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def table(result: Result) -> str:
    """The availability stats as a small text table."""
    lines = [f"{'tier':<10}{'where':<9}{'ok':>7}{'fail':>7}{'info':>7}{'ok %':>8}"]
    for tier, by_where in result.stats["tiers"].items():
        for where, c in by_where.items():
            frac = "-" if c["ok_fraction"] is None else f"{100 * c['ok_fraction']:.1f}"
            lines.append(f"{tier:<10}{where:<9}{c[OK]:>7}{c[FAIL]:>7}{c[INFO]:>7}{frac:>8}")
    return "\n".join(lines)
