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

Serializable reads (``consistency`` "serializable") are any etcd member's
local read, so they promise more: given the fault windows with what each
acted on (`faults`, from `fault_windows(events)`), a serializable read
invoked while a pause or kill (`judged`) left at least one etcd member and
the client's own API node running must be answered; each that was not is a
``serializable-unavailable`` violation. Their ok fraction is reported per
phase ("no fault", "pause etcd 2/3", "partition", ...) in
``stats["serializable"]``.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from ..history import FAIL, INFO, INVOKE, OK, Event, Operation, as_operations
from .result import Result, Violation

WHERE = ("inside", "outside", "all")
NO_FAULT = "no fault"


@dataclass(frozen=True)
class FaultWindow:
    """One fault, from its start's invocation to its stop's completion, and the processes it
    acted on (kill and pause name them; other families act on links or clocks)."""

    start: float
    end: float
    fault: str
    targets: tuple[str, ...] = ()


def default_tier(op: Operation) -> str:
    return str(op.get("tier", "default"))


def check(history: Iterable[Event] | Iterable[Operation],
          intervals: Iterable[tuple[float, float]] = (),
          tier_of: Callable[[Operation], str] = default_tier,
          minimum: Mapping[tuple[str, str], float] | None = None,
          faults: Iterable[FaultWindow] | None = None, etcd_members: int = 3,
          judged: tuple[str, ...] = ("pause", "kill")) -> Result:
    """`faults` (with `etcd_members`, the cluster's size): judge serializable reads under the
    `judged` families, as the module says; None: do not."""
    ops = as_operations(history)
    spans = _merge(intervals)
    starts = [s for s, _ in spans]
    counts: dict[str, dict[str, dict[str, int]]] = {}
    res = Result("availability")
    for op in ops:
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
    res.stats["server_errors"] = len(res.violations)  # the only violations so far
    res.stats["intervals"] = spans
    for (tier, where), least in (minimum or {}).items():
        frac = table.get(tier, {}).get(where, {}).get("ok_fraction")
        if frac is not None and frac < least:
            res.violations.append(Violation(
                "unavailable", f"tier {tier!r} {where} faults: ok fraction {frac:.3f} < {least}",
                {"tier": tier, "where": where, "ok_fraction": frac, "minimum": least}))
    if faults is not None:
        phases, violations = serializable_reads(ops, list(faults), etcd_members, judged)
        res.stats["serializable"] = phases
        res.violations += violations
    return res


def fault_windows(events: Iterable[Event]) -> list[FaultWindow]:
    """Every nemesis fault in the history (a fault never stopped runs to the history's end)."""
    out: list[FaultWindow] = []
    opened: dict[str, tuple[float, tuple[str, ...]]] = {}
    end = 0
    for e in events:
        end = max(end, e.time)
        if e.process != "nemesis" or e.f not in ("start", "stop") or not isinstance(e.value, dict):
            continue
        fault = str(e.value.get("fault", "?"))
        if e.f == "start" and e.type == INVOKE:
            opened[fault] = (e.time, ())
        elif e.f == "start" and fault in opened:  # the completion names what was acted on
            targets = e.value.get("targets") or ()
            opened[fault] = (opened[fault][0], tuple(str(t) for t in targets))
        elif e.f == "stop" and e.type != INVOKE and fault in opened:
            start, targets = opened.pop(fault)
            out.append(FaultWindow(start, e.time, fault, targets))
    out += [FaultWindow(start, math.inf if end <= start else end, f, t) for f, (start, t) in opened.items()]
    return sorted(out, key=lambda w: w.start)


def _phase(w: FaultWindow, etcd_members: int) -> str:
    etcd = [t for t in w.targets if t.startswith("etcd")]
    if etcd:
        return f"{w.fault} etcd {len(etcd)}/{etcd_members}"
    kinds = sorted({t.split("-")[0] for t in w.targets})
    return " ".join([w.fault, *kinds])


def _leaves_a_server(w: FaultWindow, region: Any, etcd_members: int) -> bool:
    """Whether the fault left a live etcd member and the client's own API node to answer."""
    etcd = [t for t in w.targets if t.startswith("etcd")]
    return bool(w.targets) and len(etcd) < etcd_members and f"api-{region}" not in w.targets


def serializable_reads(ops: list[Operation], faults: list[FaultWindow], etcd_members: int = 3,
                       judged: tuple[str, ...] = ("pause", "kill"), harmless: tuple[str, ...] = ("clock",)
                       ) -> tuple[dict[str, Any], list[Violation]]:
    """Serializable reads' outcomes per phase, and a violation for each one that a live member
    should have answered and did not: one invoked only inside `judged` faults that each left a
    server (clock skew, `harmless`, does not matter to an etcd read)."""
    phases: dict[str, dict[str, int]] = {}
    judged_counts = {OK: 0, FAIL: 0, INFO: 0}
    violations: list[Violation] = []
    for op in ops:
        if op.f != "read" or op.consistency != "serializable":
            continue
        inside = [w for w in faults if w.start <= op.call < w.end]
        acting = [w for w in inside if w.fault not in harmless]
        phase = ", ".join(sorted({_phase(w, etcd_members) for w in acting or inside})) or NO_FAULT
        phases.setdefault(phase, {OK: 0, FAIL: 0, INFO: 0})[op.type] += 1
        region = op.get("region")
        if not acting or not all(w.fault in judged and _leaves_a_server(w, region, etcd_members) for w in acting):
            continue
        judged_counts[op.type] += 1
        if op.type != OK:
            error = op.complete.error if op.complete is not None else None
            violations.append(Violation(
                "serializable-unavailable", f"{op}: {error} during {phase}, with a live etcd member",
                {"op": op.id, "phase": phase, "error": error}))
    table = {p: _fractions(c) for p, c in sorted(phases.items())}
    return {"phases": table, "judged": _fractions(judged_counts)}, violations


def _fractions(c: dict[str, int]) -> dict[str, Any]:
    total = sum(c.values())
    return dict(c, total=total, ok_fraction=(c[OK] / total if total else None))


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
    serializable = result.stats.get("serializable")
    if serializable:
        lines.append("serializable reads by phase (judged: the pause or kill left a live member):")
        for phase, c in [*serializable["phases"].items(), ("judged", serializable["judged"])]:
            frac = "-" if c["ok_fraction"] is None else f"{100 * c['ok_fraction']:.1f}"
            lines.append(f"  {phase:<24}{c[OK]:>7}{c[FAIL]:>7}{c[INFO]:>7}{frac:>8}")
    return "\n".join(lines)
