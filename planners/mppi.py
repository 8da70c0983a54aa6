"""MPPI in the style of TD-MPC2's planner.

Each iteration samples Gaussian action sequences, takes the ``elites`` best and
moves the mean to their energy-weighted average; the std is the weighted spread,
clamped to ``[min_std, max_std]``. Between calls the mean is shifted by one step.
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
from planners.configs import MPPIConfig
from planners.energy import Energy


class MPPIPlanner(Planner):
    """Temperature-weighted elite averaging with a clamped std.

    Energies are divided by the elites' energy spread before the softmax, so one
    ``temperature`` works whatever the scale of the latent distances (TD-MPC2 uses
    raw returns, whose scale its value normalisation fixes). Returns the best
    candidate evaluated (the mean is always one); warm-starts from the final mean.
    """

    config_class = MPPIConfig
    config: MPPIConfig

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
        std = torch.full_like(mean, config.max_std)
        best = BestSoFar(num_envs, mean)
        shape = (num_envs, config.samples, config.horizon, config.action_dim)

        with torch.no_grad():
            for _ in self._iterations(like.device):
                candidates = mean.unsqueeze(1) + std.unsqueeze(1) * self._randn(shape, like)
                candidates[:, 0] = mean
                candidates = self.bounds.project(candidates)  # [E, N, H, A]
                energies = self._evaluate(rollout, energy, candidates, goals)  # [E, N]
                best.update(candidates, energies)

                elites, elite_energy = top_elites(candidates, energies, config.elites)
                gap = elite_energy - elite_energy[:, :1]  # >= 0, best elite first
                spread = elite_energy.std(dim=1, keepdim=True, unbiased=False).clamp_min(1e-12)
                weights = torch.softmax(-gap / (config.temperature * spread), dim=1)
                weights = weights.to(like.dtype)[..., None, None]  # [E, K, 1, 1]
                mean = (weights * elites).sum(1)
                variance = (weights * (elites - mean.unsqueeze(1)).square()).sum(1)
                std = variance.sqrt().clamp(config.min_std, config.max_std)

        result = best.result(started)
        # TD-MPC2 warm-starts from the mean, not the chosen sample: it is the
        # smoother estimate. _initial_plan shifts it at the next call.
        self.previous_plan = self.bounds.project(mean)
        return result
