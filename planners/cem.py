"""Cross-entropy method in the style of V-JEPA 2-AC's released planner.

Each iteration samples Gaussian action sequences around a mean, keeps the
lowest-energy ``elites`` and moves mean and std towards theirs with momentum.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from planners.base import (
    BestSoFar,
    Planner,
    PlanResult,
    Rollout,
    top_elites,
)
from planners.configs import CEMConfig
from planners.energy import Energy


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
