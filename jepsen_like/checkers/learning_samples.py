"""Learning under faults, the data side: every acknowledged observation became training samples
once, in the region that accepted it, however the learners were killed and cut off.

A region's learner learns from the observations its own region accepted (its replica's delta
stream). So what its shards must hold is a function of what that region acknowledged: cut the
acknowledged observations into samples offline, with the learner's own grid (learn/trajectories.py
is order- and batch-independent: a sample is named by its entity and first instant), and compare
with the samples the region's shard index lists (each shard read whole, not deduplicated):

- ``sample-lost``: a sample the acknowledged observations make is in no listed shard;
- ``sample-twice``: a sample is listed more than once (in one shard or across shards);
- ``sample-unexpected``: a listed sample no acknowledged observation of that region makes (an
  observation counted in the wrong region, or a corrupted one).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from .result import Result, Violation

Key = tuple[str, int]  # (entity, first instant in ms): a sample's identity


def check(expected: dict[str, set[Key]], found: dict[str, list[Key]]) -> Result:
    res = Result("learning-samples")
    for region in sorted(set(expected) | set(found)):
        want, got = expected.get(region, set()), Counter(found.get(region, []))
        lost = sorted(want - set(got))
        twice = sorted(k for k, n in got.items() if n > 1)
        alien = sorted(set(got) - want)
        for kind, keys, what in (("sample-lost", lost, "made by acknowledged observations but in no shard"),
                                 ("sample-twice", twice, "listed more than once"),
                                 ("sample-unexpected", alien, "made by no acknowledged observation of the region")):
            if keys:
                res.violations.append(Violation(kind, f"{region}: {len(keys)} samples {what}, e.g. {keys[:3]}",
                                                {"region": region, "samples": [list(k) for k in keys[:20]]}))
        res.stats[region] = {"expected": len(want), "listed": sum(got.values())}
    return res


def expected_samples(observations: list[dict[str, Any]], time_step: float, frames: int = 16) -> set[Key]:
    """The samples a learner cuts from these observations (its defaults: `frames` frames, stride frames)."""
    from learn.trajectories import Grid, Observed, Trajectories

    t = Trajectories(Grid(time_step, frames, frames))
    # int(): the node's own conversion of observed_at (service/observation_input.py)
    obs = [Observed(o["entity"], o["event_id"], int(o["observed_at"] * 1000), o["fields"], (0, i))
           for i, o in enumerate(observations)]
    return {(s.entity, s.start_ms) for s in t.add(obs)}


def listed_samples(shard_dir: str, world: str) -> list[Key]:
    """Every sample the world's shard index lists, as often as it is listed."""
    from learn.shards import NoShards, ShardDir

    d = ShardDir(shard_dir, world)
    try:
        index = d.index()
    except NoShards:
        return []
    out: list[Key] = []
    for entry in index.shards:
        shard = d.load_shard(entry["hash"])
        out += list(zip(shard["entities"], (int(s) for s in shard["start_ms"].tolist())))
    return out
