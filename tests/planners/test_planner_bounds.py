"""ActionBounds: the box, the per-step move ball, and shift_plan."""

from __future__ import annotations

import math

import pytest
import torch

from planners import ActionBounds, make_planner, shift_plan


def test_box_clips_each_dimension():
    bounds = ActionBounds(low=[-1.0, 0.0], high=[1.0, 0.5])
    actions = torch.tensor([[2.0, -3.0], [0.3, 0.2], [-5.0, 9.0]])
    projected = bounds.project(actions)
    assert torch.equal(projected, torch.tensor([[1.0, 0.0], [0.3, 0.2], [-1.0, 0.5]]))
    assert bounds.contains(projected)
    assert not bounds.contains(actions)


def test_l1_ball_scales_long_moves_back_along_their_direction():
    bounds = ActionBounds.box(4, move_radius=0.075, move_norm="l1", move_dims=[0, 1, 2])
    actions = torch.tensor([[0.3, -0.1, 0.2, 0.9], [0.01, 0.02, -0.03, -0.4]])
    projected = bounds.project(actions)

    assert projected[0, :3].abs().sum() == pytest.approx(0.075)
    direction = actions[0, :3] / actions[0, :3].norm()
    assert torch.allclose(projected[0, :3] / projected[0, :3].norm(), direction)
    assert torch.equal(projected[1], actions[1])  # short moves are left alone
    assert projected[0, 3] == actions[0, 3]  # dims outside the ball keep their value
    assert bounds.contains(projected)


def test_l2_ball_is_the_euclidean_projection():
    bounds = ActionBounds.box(3, move_radius=0.5, move_norm="l2", move_dims=[0, 1])
    projected = bounds.project(torch.tensor([3.0, 4.0, 0.25]))
    assert torch.allclose(projected, torch.tensor([0.3, 0.4, 0.25]))


def test_projection_of_random_actions_is_inside_and_idempotent():
    generator = torch.Generator().manual_seed(0)
    actions = 3 * torch.randn(64, 5, 4, generator=generator)  # [N, H, A]
    for move_norm in ("l1", "l2"):
        bounds = ActionBounds(
            low=[-1.0, -0.05, -1.0, 0.0],
            high=[1.0, 0.05, 1.0, 1.0],
            move_radius=0.2,
            move_norm=move_norm,
        )
        projected = bounds.project(actions)
        assert projected.shape == actions.shape
        assert bounds.contains(projected)
        assert torch.allclose(bounds.project(projected), projected)


def test_a_dimension_with_equal_limits_is_held_fixed():
    bounds = ActionBounds(low=[-1.0, 0.0], high=[1.0, 0.0])
    assert (bounds.project(torch.randn(10, 2))[:, 1] == 0).all()


def test_centre_is_the_box_midpoint_or_zero_when_open():
    like = torch.empty(0)
    assert torch.equal(
        ActionBounds(low=[0.0, -1.0], high=[1.0, 3.0]).center(like), torch.tensor([0.5, 1.0])
    )
    open_box = ActionBounds(low=[-math.inf, 0.2], high=[math.inf, math.inf])
    assert torch.equal(open_box.center(like), torch.tensor([0.0, 0.2]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(low=[0.0], high=[1.0, 2.0]), "entries"),
        (dict(low=[1.0], high=[0.0]), "exceeds"),
        (dict(low=[-1.0] * 3, high=[1.0] * 3, move_radius=0.1, move_norm="linf"), "move_norm"),
        (dict(low=[-1.0] * 3, high=[1.0] * 3, move_radius=-0.1), "move_radius"),
        (dict(low=[-1.0] * 2, high=[1.0] * 2, move_radius=0.1), "move_dims"),
        (dict(low=[0.1, -1.0, -1.0], high=[1.0] * 3, move_radius=0.1), "contain 0"),
        (dict(low="abc"), "number or a non-empty list"),
        (dict(low=[]), "number or a non-empty list"),
        (dict(low=2.0, high=1.0), "exceeds"),
        (dict(low=0.1, high=1.0, move_radius=0.1), "contain 0"),
        (dict(low=-1.0, high=math.inf, binary_dims=[3]), "finite bounds"),
    ],
)
def test_bad_bounds_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ActionBounds(**kwargs)


def test_single_number_bounds_repeat_over_the_planned_action():
    shared = ActionBounds(low=-0.5, high=0.5, binary_dims=[3])
    assert shared.action_dim is None
    fitted = shared.for_action_dim(4)
    assert fitted.low == [-0.5] * 4 and fitted.high == [0.5] * 4 and fitted.binary_dims == [3]
    planner = make_planner("cem", horizon=2, action_dim=4, samples=8, elites=2, iterations=1, bounds=shared)
    assert planner.bounds.low == [-0.5] * 4
    with pytest.raises(ValueError, match="bounds have 2 dims, the actions 4"):
        ActionBounds(low=[-1.0, -1.0], high=1.0).for_action_dim(4)


def test_shift_plan_drops_the_first_step_and_fills_the_last():
    plan = torch.arange(12.0).reshape(1, 3, 4)  # [E, H, A]
    repeated = shift_plan(plan, "repeat")
    assert torch.equal(repeated[0, :2], plan[0, 1:])
    assert torch.equal(repeated[0, 2], plan[0, 2])

    filled = shift_plan(plan, "mean", mean=torch.full((4,), -1.0))
    assert torch.equal(filled[0, :2], plan[0, 1:])
    assert torch.equal(filled[0, 2], torch.full((4,), -1.0))

    with pytest.raises(ValueError, match="fill"):
        shift_plan(plan, "zeros")


def test_binary_dims_take_only_their_bounds():
    bounds = ActionBounds([-1, -1, -1, -1], [1, 1, 1, 1], binary_dims=[3])
    actions = torch.tensor([[0.3, -2.0, 0.0, 0.2], [0.3, 0.5, 0.0, -0.01], [0, 0, 0, 0.0]])
    projected = bounds.project(actions)
    assert projected[:, 3].tolist() == [1.0, -1.0, 1.0]  # midpoint and above -> high
    assert torch.equal(projected[:, :3], actions[:, :3].clamp(-1, 1))  # the rest only clipped
    assert torch.equal(bounds.project(projected), projected)
    asymmetric = ActionBounds([0.0], [0.5], binary_dims=[0])
    assert asymmetric.project(torch.tensor([[0.2], [0.3]])).flatten().tolist() == [0.0, 0.5]
    with pytest.raises(ValueError, match="finite bounds"):
        ActionBounds([-math.inf], [1.0], binary_dims=[0])
    with pytest.raises(ValueError, match="finite bounds"):
        ActionBounds([-1.0], [1.0], binary_dims=[1])
