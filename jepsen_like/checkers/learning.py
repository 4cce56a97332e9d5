"""Learning under faults: what the model manifest's history must show however learners and the
aggregator were killed and restarted (jepsen_like/learning.py records it).

The history is every version the manifest key ever held, oldest first, each with the etcd
revision that wrote it (`Published(revision, manifest)`). Every publish after the first is a
compare-and-swap over the revision its publisher read (`lineage.parent_manifest_revision`), so:

- ``double-publish``: no two publishes were made over the same revision (a round, or a
  restarted copy of it, published at most once), and each was made over the revision just
  before it (``broken-chain``: a publish not over its predecessor overwrote a model it never
  gated against);
- ``consumed-twice``: the ``lineage.federated.consumed`` sets are disjoint across publishes, so
  no region's update counted in two rounds;
- ``gate-not-passed``: every published model's recorded gate figures pass the thresholds the
  run gave (not the ones recorded: a publisher that lowered its own bar is caught too), world
  error ratio at most 1 - min_improvement and suite ratio at most 1 + max_suite_regression;
- ``no-lineage``: a publish after the first that names no lineage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .result import Result, Violation


@dataclass(frozen=True)
class Published:
    revision: int  # the etcd revision that wrote this version of the manifest
    manifest: dict[str, Any]


@dataclass(frozen=True)
class Thresholds:
    min_improvement: float
    max_suite_regression: float


def _ratio(figures: dict[str, Any], part: str) -> float | None:
    value = (figures.get(part) or {}).get("ratio")
    return None if value is None else float(value)  # None: recorded as not finite (publish.finite)


def _gate(p: Published, t: Thresholds) -> list[Violation]:
    figures = (p.manifest.get("lineage") or {}).get("gate") or {}
    world, suite = _ratio(figures, "world"), _ratio(figures, "suite")
    problems = []
    if world is None or not world <= 1 - t.min_improvement:
        problems.append(f"world error ratio {world} > {1 - t.min_improvement:g}")
    if suite is None or not suite <= 1 + t.max_suite_regression:
        problems.append(f"suite error ratio {suite} > {1 + t.max_suite_regression:g}")
    return [Violation("gate-not-passed", f"revision {p.revision} ({p.manifest.get('hash', '?')[:12]}): "
                      + "; ".join(problems), {"revision": p.revision, "figures": figures})] if problems else []


def check(history: list[Published], thresholds: Thresholds) -> Result:
    res = Result("learning")
    over: dict[int, int] = {}  # parent revision -> the publish made over it
    consumed: dict[str, int] = {}  # update hash -> the publish that consumed it
    federated = 0
    for i, p in enumerate(history):
        lineage = p.manifest.get("lineage")
        if i == 0 and not lineage:
            continue  # the packaged model, published create-only
        if not lineage:
            res.violations.append(Violation("no-lineage", f"revision {p.revision} names no lineage",
                                            {"revision": p.revision}))
            continue
        parent = int(lineage.get("parent_manifest_revision", -1))
        if parent in over:
            res.violations.append(Violation("double-publish", f"revisions {over[parent]} and {p.revision} were both "
                                            f"published over revision {parent}",
                                            {"parent": parent, "revisions": [over[parent], p.revision]}))
        over.setdefault(parent, p.revision)
        if i and parent != history[i - 1].revision:
            res.violations.append(Violation("broken-chain", f"revision {p.revision} was published over {parent}, "
                                            f"not over its predecessor {history[i - 1].revision}",
                                            {"revision": p.revision, "parent": parent}))
        fed = lineage.get("federated")
        if fed is not None:
            federated += 1
            for u in fed.get("consumed", []):
                if u in consumed:
                    res.violations.append(Violation("consumed-twice", f"update {u[:12]} consumed by revisions "
                                                    f"{consumed[u]} and {p.revision}",
                                                    {"update": u, "revisions": [consumed[u], p.revision]}))
                consumed.setdefault(u, p.revision)
        res.violations += _gate(p, thresholds)
    res.stats = {"publishes": len(history), "federated": federated, "consumed": len(consumed)}
    return res
