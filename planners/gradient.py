"""Gradient planner: Adam on the action sequence, through the differentiable rollout.

Several restarts per environment run as one batch of candidates (the first
starts from the warm-start plan, the others from noisy copies of it); after
every step the actions are projected back onto the bounds.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from planners.base import BestSoFar, Planner, PlanResult, Rollout
from planners.configs import GradientConfig
from planners.energy import Energy


class GradientPlanner(Planner):
    """Projected Adam over ``samples`` restarts; returns the best actions evaluated.

    The rollout (and the energy) must be differentiable with respect to the
    actions: do not wrap the world model's rollout in ``torch.no_grad()``. Each
    iteration evaluates every restart once and then takes one Adam step (none
    after the final evaluation, whose step would never be scored).
    """

    config_class = GradientConfig
    config: GradientConfig

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
        goals = self._goals_per_env(goal, num_envs).detach()
        num_envs = goals.shape[0]
        like = self._action_like(goal)

        start = self._initial_plan(num_envs, like)  # [E, H, A]
        shape = (num_envs, config.samples, config.horizon, config.action_dim)
        spread = config.init_std * self._randn(shape, like)
        spread[:, 0] = 0  # the first restart is the warm-start plan itself
        actions = self.bounds.project(start.unsqueeze(1) + spread)  # [E, N, H, A]
        adam = _Adam(actions, config.learning_rate)
        best = BestSoFar(num_envs, start)

        with torch.enable_grad():
            for iteration in self._iterations(like.device):
                actions.requires_grad_(True)
                energies = self._evaluate(rollout, energy, actions, goals)  # [E, N]
                best.update(actions, energies)
                if iteration + 1 == config.iterations:
                    break
                if not energies.requires_grad:
                    raise RuntimeError(
                        "energies carry no gradient to the actions: the rollout or energy is "
                        "not differentiable (is the model wrapped in torch.no_grad()?)"
                    )
                # Restarts and environments are independent terms of the sum, so each
                # gets exactly its own gradient. autograd.grad, unlike backward(), leaves
                # the world model's parameter .grad untouched.
                (gradient,) = torch.autograd.grad(energies.sum(), actions)
                actions = self.bounds.project(adam.step(actions.detach(), gradient))

        result = best.result(started)
        self.previous_plan = result.actions
        return result


class _Adam:
    """Adam (torch.optim's defaults) on one tensor, element-wise.

    Written out because constructing ``torch.optim.Adam`` imports ``torch._dynamo``,
    a one-off stall of several seconds on the first plan of a process.
    """

    def __init__(self, like: Tensor, learning_rate: float) -> None:
        self.learning_rate, self.beta1, self.beta2, self.eps = learning_rate, 0.9, 0.999, 1e-8
        self.first_moment = torch.zeros_like(like)
        self.second_moment = torch.zeros_like(like)
        self.steps = 0

    def step(self, value: Tensor, gradient: Tensor) -> Tensor:
        self.steps += 1
        self.first_moment.lerp_(gradient, 1 - self.beta1)
        self.second_moment.mul_(self.beta2).addcmul_(gradient, gradient, value=1 - self.beta2)
        first_unbiased = self.first_moment / (1 - self.beta1**self.steps)
        second_unbiased = self.second_moment / (1 - self.beta2**self.steps)
        return value - self.learning_rate * first_unbiased / (second_unbiased.sqrt() + self.eps)
