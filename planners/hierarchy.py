"""Sub-goals from a long-horizon model: the planning step of hierarchical planning.

A flat planner that looks a few steps ahead cannot solve a task whose way to the goal
first leads away from it (around a wall; to the object before the goal): every short
plan toward the goal ends closer to it by going straight, into the wall. A second model,
one of whose steps spans many low-level steps, sees far enough. :class:`SubgoalPlanner`
plans with it toward the final goal and hands on the first latent it predicts on the
best plan: a sub-goal close enough for the low-level planner to reach, and on the way.

Like every planner here it sees callables only: the high-level rollout (macro-actions
``[B, H, A_macro]`` -> latents ``[B, H, *latent]``) and a goal. ``jepa_robot.agent.
HierarchicalAgent`` runs it with a learned high-level world model, and decides when to
ask it for the next sub-goal.

```python
subgoals = SubgoalPlanner(make_planner("cem", horizon=3, action_dim=8, bounds=macro_bounds))
plan = subgoals.plan(high_rollout, final_goal)    # plan.subgoal: [*latent]
low_level_result = low_planner.plan(low_rollout, plan.subgoal)
```
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from planners.base import Planner, PlanResult, Rollout


@dataclass
class SubgoalPlan:
    """One high-level plan: the sub-goal it hands on and how it was found."""

    subgoal: Tensor
    """The first predicted latent of the best plan, ``[*latent]``."""
    predicted: Tensor
    """Every predicted latent of the best plan, ``[H, *latent]``."""
    result: PlanResult
    seconds: float
    """Wall time: the search and the rollout of the chosen plan."""


class SubgoalPlanner:
    """Plans macro-actions toward a goal with a high-level rollout and returns the first
    predicted latent of the best plan as the next sub-goal."""

    def __init__(self, planner: Planner) -> None:
        self.planner = planner

    def reset(self) -> None:
        self.planner.reset()

    def plan(self, rollout: Rollout, goal: Tensor) -> SubgoalPlan:
        """The sub-goal toward ``goal [*latent]`` (one environment)."""
        started = time.perf_counter()
        result = self.planner.plan(rollout, goal)
        with torch.no_grad():
            predicted = rollout(result.actions[:1])[0]  # [H, *latent]
        return SubgoalPlan(subgoal=predicted[0], predicted=predicted, result=result,
                           seconds=time.perf_counter() - started)
