"""Hierarchical planning on toy dynamics where a greedy (short-horizon) planner provably
fails: a point mass must get around a wall that stands between it and its goal.

The point starts at (-0.3, -0.3), the goal is (0.3, -0.3), and a wall along x = 0 reaches
from below up to y = 0.1. A low-level step moves the point by 0.1 * action per axis
(action in [-1, 1]^2) and stops it at the wall. Every plan of the flat planner looks 3
steps (0.3) ahead, and from anywhere below y = -0.2 no such plan gets over the wall: its
best plan heads straight for the goal, the point ends pressed against the wall at a
distance of 0.3 from the goal, and there every 3-step plan ends at least as far away
(moving up along the wall only adds distance). The high level steps 5 low-level steps
at a time (its macro-action is the action held for those 5 steps) and looks 4 of them
ahead, far enough to see the way over the wall; its first predicted position is the
sub-goal of the same low-level planner. The high level scores a plan by its Euclidean
distances to the goal summed over its steps: of the plans that get there, the quickest
wins, so the first step of the best plan is on the way (with the final step's distance
alone, every plan that ends at the goal is as good, and once past the wall the sub-goal
would wander).
"""

from __future__ import annotations

import torch

from planners import ActionBounds, L2Energy, ReadoutDistance, make_planner
from planners.hierarchy import SubgoalPlanner

START = torch.tensor([-0.3, -0.3])
GOAL = torch.tensor([0.3, -0.3])
WALL_TOP = 0.1
STEP = 0.1
MACRO_STEPS = 5


def step(position: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """[B, 2] positions, [B, 2] actions -> [B, 2]; a move across x = 0 below the wall's
    top stops just short of the wall."""
    moved = position + STEP * action.clamp(-1, 1)
    crosses = (position[:, 0] < 0) != (moved[:, 0] < 0)
    blocked = crosses & (torch.maximum(position[:, 1], moved[:, 1]) <= WALL_TOP)
    at_wall = torch.where(position[:, 0] < 0, -1e-3, 1e-3)
    return torch.stack([torch.where(blocked, at_wall, moved[:, 0]), moved[:, 1]], dim=1)


def low_rollout_from(position: torch.Tensor):
    def rollout(actions: torch.Tensor) -> torch.Tensor:  # [B, H, 2] -> [B, H, 2]
        current = position.expand(actions.shape[0], 2)
        out = []
        for t in range(actions.shape[1]):
            current = step(current, actions[:, t])
            out.append(current)
        return torch.stack(out, dim=1)
    return rollout


def high_rollout_from(position: torch.Tensor):
    def rollout(macro_actions: torch.Tensor) -> torch.Tensor:  # one macro-action held for 5 steps
        current = position.expand(macro_actions.shape[0], 2)
        out = []
        for t in range(macro_actions.shape[1]):
            for _ in range(MACRO_STEPS):
                current = step(current, macro_actions[:, t])
            out.append(current)
        return torch.stack(out, dim=1)
    return rollout


def low_planner():
    return make_planner("cem", horizon=3, action_dim=2, samples=128, iterations=5, elites=16, seed=0,
                        bounds=ActionBounds.box(2), energy=L2Energy(steps="final"))


def high_level_planner() -> SubgoalPlanner:
    path_length = ReadoutDistance(steps="all", readout=lambda position: position)  # summed distances
    return SubgoalPlanner(make_planner("cem", horizon=4, action_dim=2, samples=256, iterations=8, elites=24,
                                       seed=0, bounds=ActionBounds.box(2), energy=path_length))


def run(hierarchical: bool, steps: int = 60) -> tuple[torch.Tensor, float]:
    """Where the point ends after ``steps`` low-level steps, and the highest it went."""
    position = START.clone()
    highest = float(position[1])
    planner = low_planner()
    subgoals = high_level_planner()
    subgoal, since = None, 0
    for _ in range(steps):
        if hierarchical and (subgoal is None or since >= MACRO_STEPS or (position - subgoal).norm() < 0.05):
            subgoal, since = subgoals.plan(high_rollout_from(position), GOAL).subgoal, 0
            planner.reset()
        target = subgoal if hierarchical else GOAL
        action = planner.plan(low_rollout_from(position), target).first_action
        position = step(position[None], action)[0]
        highest = max(highest, float(position[1]))
        since += 1
    return position, highest


def test_flat_planner_ends_against_the_wall():
    final, highest = run(hierarchical=False)
    assert -0.1 < float(final[0]) <= 0  # at the wall, on the start's side ...
    assert float((final - GOAL).norm()) > 0.25  # ... 0.3 short of the goal
    assert highest < WALL_TOP


def test_hierarchy_gets_around_the_wall():
    final, highest = run(hierarchical=True)
    assert highest > WALL_TOP  # over the wall ...
    # ... and at the goal, give or take the low-level planner's own precision (over seeds
    # 1-6 of both planners: 0.03-0.11; the flat planner stays 0.30-0.33 away)
    assert float((final - GOAL).norm()) < 0.15


def test_subgoal_is_the_first_predicted_step_of_the_best_plan():
    subgoals = high_level_planner()
    rollout = high_rollout_from(START)
    plan = subgoals.plan(rollout, GOAL)
    assert plan.predicted.shape == (4, 2)
    assert torch.equal(plan.subgoal, rollout(plan.result.actions)[0, 0])
    assert float((plan.predicted[-1] - GOAL).norm()) < 0.1  # the plan gets there ...
    assert float(plan.predicted[:, 1].max()) > WALL_TOP  # ... over the wall
