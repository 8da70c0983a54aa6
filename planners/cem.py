"""Cross-entropy method in the style of V-JEPA 2-AC's released planner.

Each iteration samples Gaussian action sequences around a mean, keeps the
lowest-energy ``elites`` and moves mean and std towards theirs with momentum.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from planners.base import (
    BestSoFar,
    EliteConfig,
    Planner,
    PlanResult,
    Rollout,
    top_elites,
)
from planners.energy import Energy


@dataclass
class CEMConfig(EliteConfig):
    """CEM settings; defaults follow DINO-WM / LeWorldModel (300 samples, top 30)."""

    init_std: float = 1.0
    """Initial standard deviation of every action dimension, in action units."""
    min_std: float = 0.01
    """Std floor, so the search never collapses to a point before the last iteration."""
    mean_momentum: float = 0.1
    """Weight kept on the old mean: ``mean = m * mean + (1 - m) * elite_mean``."""
    std_momentum: float = 0.1
    """Weight kept on the old std, as for the mean."""
    return_mean: bool = False
    """Return the final mean (V-JEPA 2-AC's choice) instead of the best candidate ever
    evaluated. Under a noisy energy the single best sample is partly luck; the elite
    mean averages it out. The mean is evaluated once more so its energy is reported."""
    hold_candidate: bool = False
    """Add a hold candidate to every iteration: the mean with every step's move dims
    (``bounds.move_dims``; all dims if the action has none of them) set to 0, the
    gripper as the mean has it. Holding still is then always weighed against moving."""
    hold_margin: float = 0.0
    """With ``hold_candidate``: return the last iteration's hold candidate unless the
    plan chosen (the best, or the mean with ``return_mean``) undercuts its energy by
    more than this fraction of it.
    The best of many noisy energies is biased low (the winner's curse), so near the
    goal some moving plan nearly always looks a little better than holding; a margin
    keeps the arm still there unless a move is clearly better. Meant for energies >= 0
    (the goal distances are). 0 (default): off."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init_std <= 0 or self.min_std < 0:
            raise ValueError("init_std must be > 0 and min_std >= 0")
        for name in ("mean_momentum", "std_momentum"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be in [0, 1)")
        if self.hold_candidate and self.samples < 2:
            raise ValueError("hold_candidate needs samples >= 2 (candidate 0 is the mean)")
        if not 0 <= self.hold_margin < 1:
            raise ValueError(f"hold_margin={self.hold_margin} must be in [0, 1)")
        if self.hold_margin and not self.hold_candidate:
            raise ValueError("hold_margin needs hold_candidate: true")


class CEMPlanner(Planner):
    """Gaussian CEM with momentum and a std floor.

    The current mean is always one of the candidates, so the returned plan (the
    best candidate ever evaluated) is never worse than the mean the search settled
    on. The next call warm-starts from the returned plan, shifted by one step.
    """

    config_class = CEMConfig
    config: CEMConfig

    def plan(
        self,
        rollout: Rollout,
        goal: Tensor,
        *,
        num_envs: int | None = None,
        energy: Energy | None = None,
    ) -> PlanResult:
        started = time.perf_counter()
        config = self.config
        energy = energy if energy is not None else self.energy
        goals = self._goals_per_env(goal, num_envs)
        num_envs = goals.shape[0]
        like = self._action_like(goal)

        mean = self._initial_plan(num_envs, like)  # [E, H, A]
        std = torch.full_like(mean, config.init_std)
        best = BestSoFar(num_envs, mean)
        shape = (num_envs, config.samples, config.horizon, config.action_dim)

        with torch.no_grad():  # sampling planners need no gradients through the model
            for _ in self._iterations(like.device):
                candidates = mean.unsqueeze(1) + std.unsqueeze(1) * self._randn(shape, like)
                candidates[:, 0] = mean
                if config.hold_candidate:
                    candidates[:, 1] = mean
                    candidates[:, 1, :, self.bounds.moving_dims] = 0.0
                candidates = self.bounds.project(candidates)  # [E, N, H, A]
                energies = self._evaluate(rollout, energy, candidates, goals)  # [E, N]
                best.update(candidates, energies)
                if config.hold_candidate:
                    hold, hold_energy = candidates[:, 1], energies[:, 1]

                elites, _ = top_elites(candidates, energies, config.elites)  # [E, K, H, A]
                elite_std = elites.std(dim=1, unbiased=False)
                mean = config.mean_momentum * mean + (1 - config.mean_momentum) * elites.mean(1)
                std = config.std_momentum * std + (1 - config.std_momentum) * elite_std
                std = std.clamp_min(config.min_std)

            if config.return_mean:
                mean = self.bounds.project(mean)
                mean_energy = self._evaluate(rollout, energy, mean.unsqueeze(1), goals)[:, 0]
                best.actions, best.energy = mean, mean_energy.to(best.energy.dtype)
            if config.hold_margin:  # the plan chosen above, unless it does not beat holding enough
                hold_energy = hold_energy.to(best.energy.dtype)
                keep_still = best.energy > (1 - config.hold_margin) * hold_energy
                best.actions = torch.where(keep_still[:, None, None], hold, best.actions)
                best.energy = torch.where(keep_still, hold_energy, best.energy)

        result = best.result(started)
        self.previous_plan = result.actions
        return result
