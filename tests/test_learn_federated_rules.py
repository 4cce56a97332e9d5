"""The federated round's pure parts: deltas, weighting, the rejection rules, the lineage walk, CLI parsing.

No process is started; these run in seconds (tests/test_learn_federated.py runs the round against
a real deployment)."""
from __future__ import annotations

import math

import pytest
import torch

from learn.aggregate import (Entry, Rules, combine, cosine, fisher_shares, screen_direction, screen_norm,
                             staleness_factor, weighted_mean)
from learn.federated import region_urls
from learn.rounds import ancestry
from learn.updates import Update, apply_delta, delta_of
from world_model.checkpoints import to_bytes


def _d(*values: float) -> dict[str, torch.Tensor]:
    return {"w": torch.tensor(values, dtype=torch.float32)}


def test_a_delta_holds_only_what_differs_and_applies_back() -> None:
    base = {"a": torch.ones(3), "b": torch.zeros(2), "steps": torch.tensor([5])}
    cand = {"a": torch.ones(3), "b": torch.tensor([0.5, -1.0]), "steps": torch.tensor([9]), "new": torch.ones(1)}
    d = delta_of(base, cand)
    assert set(d) == {"b", "new"}, "unchanged and integer tensors are not part of an update"
    back = apply_delta(base, d)
    assert torch.equal(back["b"], cand["b"]) and torch.equal(back["new"], cand["new"]) and torch.equal(back["a"], base["a"])
    with pytest.raises(ValueError, match="shape"):
        delta_of({"a": torch.ones(3)}, {"a": torch.ones(4)})


def test_weights_follow_samples_and_staleness() -> None:
    assert staleness_factor(0) == 1.0 and staleness_factor(1) == pytest.approx(1 / math.sqrt(2))
    with pytest.raises(ValueError):
        staleness_factor(-1)
    a, b = Entry("a", _d(1.0, 0.0), samples=100), Entry("b", _d(0.0, 1.0), samples=300)
    mean = weighted_mean([a, b])["w"]
    assert torch.allclose(mean, torch.tensor([0.25, 0.75], dtype=torch.float64))
    stale = Entry("b", _d(0.0, 1.0), samples=300, staleness=3)  # weight 300 / 2 = 150
    assert torch.allclose(weighted_mean([a, stale])["w"], torch.tensor([0.4, 0.6], dtype=torch.float64))
    # a tensor one update lacks counts zero there, and the server step scales the mean
    c = Entry("c", {"other": torch.ones(1)}, samples=100)
    out = combine({"w": torch.zeros(2), "other": torch.zeros(1)}, [a, c], server_lr=2.0)
    assert torch.allclose(out["w"], torch.tensor([1.0, 0.0])) and torch.allclose(out["other"], torch.tensor([1.0]))
    assert out["w"].dtype == torch.float32
    with pytest.raises(ValueError, match="no weight"):
        weighted_mean([Entry("z", _d(1.0), samples=0)])


def test_fisher_merge_keeps_each_region_where_its_data_informs_and_fedavg_dilutes_it() -> None:
    # two regions that taught different weights: a averaged with b's untouched zero is diluted by FedAvg
    a = Entry("a", _d(1.0, 0.0, 0.5), samples=100, fisher=_d(4.0, 0.0, 1.0))
    b = Entry("b", _d(0.0, 2.0, 1.5), samples=100, fisher=_d(0.0, 2.0, 1.0))
    assert torch.allclose(weighted_mean([a, b])["w"], torch.tensor([0.5, 1.0, 1.0], dtype=torch.float64))
    fisher = weighted_mean([a, b], "fisher")["w"]
    # w0 and w1: only one region's data reaches each, so its value is kept whole; w2: shares 1/5 vs 1/3
    assert torch.allclose(fisher, torch.tensor([1.0, 2.0, (0.2 * 0.5 + 1 / 3 * 1.5) / (0.2 + 1 / 3)],
                                               dtype=torch.float64))
    # a Fisher says where, not how much: inflating it buys nothing; samples still weigh
    loud = Entry("a", a.delta, samples=100, fisher={"w": a.fisher["w"] * 1e9})  # type: ignore[index]
    assert torch.allclose(weighted_mean([loud, b], "fisher")["w"], fisher)
    heavy = weighted_mean([Entry("a", a.delta, 300, fisher=a.fisher), b], "fisher")["w"]
    assert heavy[2] < fisher[2] and heavy[0] == 1.0
    # every merged weight lies between the updates' values for it
    lo, hi = torch.minimum(a.delta["w"], b.delta["w"]).double(), torch.maximum(a.delta["w"], b.delta["w"]).double()
    assert bool(((fisher >= lo - 1e-12) & (fisher <= hi + 1e-12)).all())
    # no Fisher: an even share over its delta; nobody informs a weight: the plain weighted mean there
    even = fisher_shares(Entry("c", _d(1.0, 1.0, 1.0, 1.0), 10))["w"]
    assert torch.allclose(even, torch.full((4,), 0.25, dtype=torch.float64))
    silent = [Entry("a", _d(1.0, 3.0), 10, fisher=_d(1.0, 0.0)), Entry("b", _d(0.0, 1.0), 10, fisher=_d(1.0, 0.0))]
    assert torch.allclose(weighted_mean(silent, "fisher")["w"], torch.tensor([0.5, 2.0], dtype=torch.float64))
    out = combine({"w": torch.zeros(3)}, [a, b], merge="fisher")
    assert out["w"].dtype == torch.float32 and torch.allclose(out["w"], fisher.float())
    with pytest.raises(ValueError, match="merge"):
        Rules(merge="median")


def test_the_norm_rule_rejects_an_update_far_above_the_others_median() -> None:
    honest = [Entry(f"h{i}", _d(1.0 + 0.1 * i, 0.5), samples=10) for i in range(3)]
    scaled = Entry("x100", {k: v * 100 for k, v in honest[1].delta.items()}, samples=10)
    kept, rejected = screen_norm([*honest, scaled], k=3.0)
    assert [e.id for e in kept] == ["h0", "h1", "h2"]
    assert [(r.id, r.rule) for r in rejected] == [("x100", "norm")] and "bound is 3x" in rejected[0].reason
    # leave-one-out: with two updates, each is judged against the other
    kept, rejected = screen_norm([honest[0], scaled], k=3.0)
    assert [e.id for e in kept] == ["h0"] and rejected[0].id == "x100"
    assert screen_norm([scaled], k=3.0) == ([scaled], [])  # alone: the held-out evaluation judges it


def test_the_direction_rule_rejects_a_reversed_update_and_keeps_the_honest() -> None:
    honest = [Entry("h1", _d(1.0, 0.2), 10), Entry("h2", _d(0.9, 0.4), 10), Entry("h3", _d(1.1, 0.0), 10)]
    reversed_ = Entry("rev", _d(-3.0, -0.6), 30)  # heavy enough to drag a naive mean below zero
    kept, rejected = screen_direction([*honest, reversed_], min_cosine=0.0)
    assert sorted(e.id for e in kept) == ["h1", "h2", "h3"]
    assert [(r.id, r.rule) for r in rejected] == [("rev", "direction")] and rejected[0].figures["cosine"] < 0
    assert cosine(_d(1.0, 0.0), _d(0.0, 1.0)) == 0.0 and cosine(_d(0.0), _d(1.0)) == 0.0
    kept, rejected = screen_direction(honest, min_cosine=0.0)
    assert len(kept) == 3 and not rejected


def test_rules_refuse_nonsense() -> None:
    for bad in ({"max_staleness": -1}, {"norm_factor": 0}, {"server_lr": 0}, {"min_cosine": 2}):
        with pytest.raises(ValueError):
            Rules(**bad)  # type: ignore[arg-type]


def test_region_urls_parse_and_name_what_is_wrong() -> None:
    assert region_urls("r1=redis://127.0.0.1:6379,eu-2=rediss://h:1") == {
        "r1": "redis://127.0.0.1:6379", "eu-2": "rediss://h:1"}
    for bad, says in (("r1:redis://x", "is not REGION=URL"), ("R1=redis://x", "is not REGION=URL"),
                      ("r1=http://x", "is not REGION=URL"), ("r1=redis://a,r1=redis://b", "named twice")):
        with pytest.raises(ValueError, match=says):
            region_urls(bad)


def test_the_lineage_walk_gives_staleness_and_what_earlier_rounds_consumed() -> None:
    """serving <- agg2 (consumed u3) <- agg1 (consumed u1, u2) <- shipped: depth 2 reaches agg1's round."""
    blobs = {
        "s": to_bytes({"lineage": {"parent": "a2", "federated": {"consumed": []}}}),
        "a2": to_bytes({"lineage": {"parent": "a1", "federated": {"consumed": ["u3"]}}}),
        "a1": to_bytes({"lineage": {"parent": "base", "federated": {"consumed": ["u1", "u2"]}}}),
        "base": to_bytes({}),
    }
    h = ancestry("s", blobs.__getitem__, depth=2)
    assert h.chain == ["s", "a2", "a1"] and h.consumed == {"u3": "a2", "u1": "a1", "u2": "a1"}
    assert h.staleness("a2") == 1 and h.staleness("base") is None  # three publishes behind: stale at depth 2
    short = ancestry("s", blobs.__getitem__, depth=0)
    assert short.chain == ["s"] and short.consumed == {}
    gone = ancestry("s", lambda d: blobs[d] if d == "s" else (_ for _ in ()).throw(FileNotFoundError(d)), depth=5)
    assert gone.chain == ["s", "a2"], "a missing ancestor ends the walk"


def test_an_update_record_round_trips_and_ignores_unknown_fields() -> None:
    u = Update("h" * 64, "lab", "r1", "b" * 64, 7, 120, 1.5, "learner@x", {"r1/learner": "1-0"}, {"accept": True}, 1)
    again = Update.from_record(u.as_record())
    assert again == u
    assert Update.from_record(u.as_record()[:-1] + ',"later":1}') == u


def test_a_round_screens_stale_consumed_invalid_and_regressing_updates() -> None:
    """learn/rounds.py's screen on the shipped model and a small lossy world: each kind of bad
    update is left out under its own rule, a consumed one is skipped, and a good one is kept."""
    from bench.learn import unseen_world
    from learn.finetune import base_config
    from learn.rounds import Ancestry, Offered, screen
    from learn.updates import model_state
    from world_model import shipped
    from world_model.checkpoints import sha256_hex

    blob = shipped.default_blob()
    serving = sha256_hex(blob)
    heldout = unseen_world("lossy", base_config(blob), 6, 24, seed=5)
    state = model_state(blob)
    name = next(k for k in state if k.startswith("predictor.") and state[k].is_floating_point() and state[k].dim() == 2)
    gen = torch.Generator().manual_seed(0)
    noise = {k: torch.randn(v.shape, generator=gen) * 0.5 for k, v in state.items()
             if k.startswith("predictor.") and v.is_floating_point()}

    def offer(uid: str, delta: dict[str, torch.Tensor] | None, base: str = serving, samples: int = 10) -> Offered:
        return Offered(Update(uid, "w", "r1", base, 1, samples, 0.0), delta, None, None if delta is not None else "gone")

    small = {name: state[name] * 1e-3}
    offered = [offer("stale", {}, base="f" * 64), offer("used", {}), offer("nan", {name: state[name] * float("nan")}),
               offer("alien", {"no.such.tensor": torch.ones(2)}), offer("gone", None), offer("none", {}, samples=0),
               offer("noise", noise),
               Offered(Update("negative-fisher", "w", "r1", serving, 1, 10, 0.0), small, fisher={name: -state[name] ** 2}),
               Offered(Update("alien-fisher", "w", "r1", serving, 1, 10, 0.0), small, fisher={"other": torch.ones(1)})]
    res = screen(blob, offered, Ancestry([serving], {"used": "earlier"}), heldout, Rules(), windows=32)
    rules = {r.id: r.rule for r in res.rejected}
    assert rules == {"stale": "stale", "nan": "invalid", "alien": "invalid", "gone": "unreadable", "none": "samples",
                     "noise": "regression", "negative-fisher": "invalid", "alien-fisher": "invalid"}, res.rejected
    assert [s["hash"] for s in res.skipped] == ["used"] and res.accepted == []
    assert not res.errors["noise"] <= res.errors["serving"]  # worse, or NaN: predictions blown up
    kept = screen(blob, [offer("nothing", {})], Ancestry([serving]), heldout, Rules(), windows=32)
    assert [e.id for e in kept.accepted] == ["nothing"] and kept.errors["nothing"] == kept.errors["serving"]
