"""The planners on a CUDA device: tensors stay there and seeds still repeat."""

from __future__ import annotations

import pytest
import torch

from planners import PLANNERS, ActionBounds, L2Energy, make_planner

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_plans_on_the_goal_device_and_repeat_with_a_seed(name, point_mass, fast_settings):
    device = torch.device("cuda")
    goal = torch.tensor([1.0, -0.6], device=device)
    rollout = point_mass(torch.zeros(1, 2, device=device))
    planner = make_planner(
        name,
        horizon=4,
        action_dim=2,
        bounds=ActionBounds.box(2, move_radius=0.9, move_norm="l2", move_dims=[0, 1]),
        energy=L2Energy(steps="all"),
        time_budget_s=60.0,  # exercises the synchronising budget check
        **fast_settings[name],
    )

    first = planner.plan(rollout, goal)
    planner.reset()
    again = planner.plan(rollout, goal)

    assert first.actions.device.type == "cuda" and first.energy.device.type == "cuda"
    assert torch.equal(first.actions, again.actions)
    assert planner.bounds.contains(first.actions)
    assert (rollout(first.actions)[0, -1] - goal).norm() < 0.1
