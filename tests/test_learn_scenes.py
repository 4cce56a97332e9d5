"""learn/scenes.py: the log's one-body samples put back into scenes of the bodies that met."""
from __future__ import annotations

import torch

from learn.scenes import MIN_GROUPS, scenes
from world_model.config import MASS, OBS_DIM, PRESENT, RADIUS, X, Y
from world_model.simulator import Rollouts

T = 4


def _body(x0: float, y0: float, vx: float) -> torch.Tensor:
    """One body's (T, 1, OBS) frames, moving along x at vx m per frame."""
    f = torch.zeros(T, 1, OBS_DIM)
    f[:, 0, X] = x0 + vx * torch.arange(T)
    f[:, 0, Y], f[:, 0, RADIUS], f[:, 0, MASS], f[:, 0, PRESENT] = y0, 0.3, 1.0, 1.0
    return f


def _data(bodies: list[torch.Tensor]) -> Rollouts:
    frames = torch.stack(bodies)
    return Rollouts(frames, torch.zeros(len(bodies), T - 1, 1, 2), torch.tensor([[9.81, 0.0, 0.1, 0.05]] * len(bodies)))


def test_bodies_that_meet_in_a_window_share_a_scene_and_others_stay_alone() -> None:
    # a and b close in on each other and touch at the last frame; c is far away; d meets a, but later
    data = _data([_body(2.0, 5.0, 0.4), _body(5.0, 5.0, -0.6), _body(8.0, 1.0, 0.0), _body(2.2, 5.0, 0.0)])
    out, groups = scenes(data, ["a", "b", "c", "d"], [0, 0, 0, 800], max_bodies=5)
    assert out.frames.shape == (3, T, 5, OBS_DIM) and out.actions.shape == (3, T - 1, 5, 2)
    together = [s for s in range(3) if int((out.frames[s, 0, :, PRESENT] > 0).sum()) == 2]
    assert len(together) == 1, "a and b met: one scene of two"
    s = together[0]
    assert torch.equal(out.frames[s, :, 0], data.frames[0, :, 0]) and torch.equal(out.frames[s, :, 1], data.frames[1, :, 0])
    assert bool((out.frames[:, :, 2:, PRESENT] == 0).all()) and bool((out.frames[:, :, 2:, MASS] == 1).all())  # padding
    assert int((out.frames[:, 0, :, PRESENT] > 0).sum()) == 4, "every body once"
    # d never shared a window with a: it stays alone, but a and b are one group for the split
    assert len(groups) == 3 and groups[s] in ("a", "b")


def test_a_chain_longer_than_the_model_takes_is_cut_and_groups_fall_back_to_scenes() -> None:
    chain = [_body(1.0 + 0.65 * i, 5.0, 0.0) for i in range(7)]  # each touches the next
    out, groups = scenes(_data(chain), [f"e{i}" for i in range(7)], [0] * 7, max_bodies=3)
    assert [int((out.frames[s, 0, :, PRESENT] > 0).sum()) for s in range(out.frames.shape[0])] == [3, 3, 1]
    # everyone met everyone's neighbour: one entity group only, so each scene is its own group
    assert len(set(groups)) == 3 < MIN_GROUPS


def test_no_sample_no_scene() -> None:
    empty = Rollouts(torch.zeros(0, T, 1, OBS_DIM), torch.zeros(0, T - 1, 1, 2), torch.zeros(0, 4))
    out, groups = scenes(empty, [], [], max_bodies=5)
    assert out.frames.shape == (0, T, 5, OBS_DIM) and groups == []
