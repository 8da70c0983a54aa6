"""What every planner shares: config, action bounds, warm start, results, the search loop's chores.

Shapes used throughout (``E`` environments planned at once, ``N`` candidates per
environment, ``H`` horizon, ``A`` action dimension, ``*latent`` any latent shape):

- a rollout callable maps actions ``[E*N, H, A]`` to predicted latents
  ``[E*N, H, *latent]``; rows ``e*N : (e+1)*N`` belong to environment ``e``;
- an energy callable maps predicted ``[N, H, *latent]`` and one goal ``[*latent]``
  to costs ``[N]`` (lower is better; see ``planners.energy``);
- a plan is ``[E, H, A]``.

The planner never sees a model or a robot: only these callables and a goal.
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from planners.configs import (  # noqa: F401 (re-exported: planners import them from here)
    WARM_START_FILLS,
    ActionBounds,
    EliteConfig,
    PlannerConfig,
    unbounded,
)
from planners.energy import Energy, L2Energy

logger = logging.getLogger(__name__)

Rollout = Callable[[Tensor], Tensor]
"""``actions [B, H, A] -> predicted latents [B, H, *latent]``."""

def shift_plan(plan: Tensor, fill: str = "repeat", mean: Tensor | None = None) -> Tensor:
    """Drop the executed first step of ``plan [..., H, A]`` and append one step.

    ``fill="repeat"`` appends a copy of the last step; ``fill="mean"`` appends
    ``mean [A]`` (the planner's neutral action).
    """
    if fill == "repeat":
        new_last = plan[..., -1:, :]
    elif fill == "mean":
        if mean is None:
            raise ValueError("shift_plan(fill='mean') needs mean")
        new_last = mean.expand_as(plan[..., -1:, :])
    else:
        raise ValueError(f"fill={fill!r}; valid: {list(WARM_START_FILLS)}")
    return torch.cat([plan[..., 1:, :], new_last], dim=-2)


@dataclass
class PlanResult:
    """What ``plan`` returns; tensors live on the goal's device."""

    actions: Tensor
    """Best action sequence found per environment, ``[E, H, A]``."""
    energy: Tensor
    """Energy of ``actions``, ``[E]``."""
    energy_history: Tensor
    """Lowest energy among each iteration's candidates, ``[iterations, E]``."""
    iterations: int
    """Iterations actually run (fewer than configured if the time budget ran out)."""
    seconds: float
    """Wall time of the ``plan`` call."""

    @property
    def first_action(self) -> Tensor:
        """The step to execute now, ``[E, A]``."""
        return self.actions[:, 0]


class Planner(ABC):
    """Base of every planner: owns config, bounds, default energy, generator, warm start.

    Subclasses implement ``plan`` with the helpers below. ``reset()`` forgets the
    previous plan and reseeds, so a seeded planner repeats its plan exactly.
    """

    config_class: ClassVar[type[PlannerConfig]] = PlannerConfig

    def __init__(
        self,
        config: PlannerConfig | None = None,
        *,
        bounds: ActionBounds | None = None,
        energy: Energy | None = None,
    ) -> None:
        self.config = config if config is not None else self.config_class()
        if not isinstance(self.config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}")
        bounds = bounds if bounds is not None else unbounded(self.config.action_dim)
        self.bounds = bounds.for_action_dim(self.config.action_dim)
        self.energy = energy if energy is not None else L2Energy()
        self.reset()

    @abstractmethod
    def plan(
        self,
        rollout: Rollout,
        goal: Tensor,
        *,
        num_envs: int | None = None,
        energy: Energy | None = None,
    ) -> PlanResult:
        """Search for actions whose predicted latents come closest to ``goal``.

        Args:
            rollout: ``actions [E*N, H, A] -> predicted [E*N, H, *latent]``; rows
                ``e*N:(e+1)*N`` belong to environment ``e``.
            goal: ``[*latent]`` for one environment, or ``[E, *latent]`` when
                ``num_envs=E`` is given (one goal per environment).
            num_envs: plan for ``E`` environments at once; ``None`` means one
                (the result still has a leading ``E = 1``).
            energy: ``(predicted [N, H, *latent], goal [*latent]) -> [N]``; defaults
                to the planner's own (``L2Energy()`` unless given at construction).
        """

    def reset(self) -> None:
        """Forget the previous plan and restart the random stream from ``config.seed``."""
        self.previous_plan: Tensor | None = None
        """The plan the next call warm-starts from (shifted), ``[E, H, A]``, or None."""
        self._generator: torch.Generator | None = None

    # -- helpers for subclasses -------------------------------------------------

    def _goals_per_env(self, goal: Tensor, num_envs: int | None) -> Tensor:
        """Goals as ``[E, *latent]``."""
        if num_envs is None:
            return goal.unsqueeze(0)
        if goal.dim() == 0 or goal.shape[0] != num_envs:
            raise ValueError(
                f"num_envs={num_envs} needs goal [E, *latent] with E={num_envs}, "
                f"got {tuple(goal.shape)}"
            )
        return goal

    @staticmethod
    def _action_like(goal: Tensor) -> Tensor:
        """An empty tensor giving the actions' device and dtype (float32 unless goal is float64)."""
        dtype = torch.float64 if goal.dtype == torch.float64 else torch.float32
        return torch.empty(0, device=goal.device, dtype=dtype)

    def _generator_for(self, device: torch.device) -> torch.Generator:
        """The planner's generator on ``device``, seeded on first use after a reset."""
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
            if self.config.seed is None:
                self._generator.seed()
            else:
                self._generator.manual_seed(self.config.seed)
        return self._generator

    def _randn(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        generator = self._generator_for(like.device)
        return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)

    def _initial_plan(self, num_envs: int, like: Tensor) -> Tensor:
        """Where the search starts, ``[E, H, A]``: the shifted previous plan if its shape
        fits this call, else the bounds' centre."""
        center = self.bounds.center(like)
        expected = (num_envs, self.config.horizon, self.config.action_dim)
        previous = self.previous_plan
        if self.config.warm_start and previous is not None and previous.shape == expected:
            previous = previous.to(like)
            return self.bounds.project(shift_plan(previous, self.config.warm_start_fill, center))
        return center.expand(expected).clone()

    def _evaluate(
        self, rollout: Rollout, energy: Energy, candidates: Tensor, goals: Tensor
    ) -> Tensor:
        """Energies ``[E, N]`` of ``candidates [E, N, H, A]`` against ``goals [E, *latent]``."""
        num_envs, num_candidates, horizon, action_dim = candidates.shape
        predicted = rollout(candidates.reshape(num_envs * num_candidates, horizon, action_dim))
        if predicted.shape[:2] != (num_envs * num_candidates, horizon):
            raise ValueError(
                f"rollout returned {tuple(predicted.shape)}; expected "
                f"[{num_envs * num_candidates}, {horizon}, *latent]"
            )
        predicted = predicted.reshape(num_envs, num_candidates, *predicted.shape[1:])
        # One energy call per environment keeps the goal unbatched: no [E*N, *latent]
        # copy of it, which matters for 256-token latents and hundreds of samples.
        energies = torch.stack([energy(predicted[env], goals[env]) for env in range(num_envs)])
        if energies.shape != (num_envs, num_candidates):
            raise ValueError(f"energy returned {tuple(energies.shape[1:])}; expected [N]")
        return energies

    def _iterations(self, device: torch.device) -> Iterator[int]:
        """Iteration indices, stopping early once ``time_budget_s`` has passed."""
        start = time.perf_counter()
        for iteration in range(self.config.iterations):
            yield iteration
            if self.config.time_budget_s is None:
                continue
            if device.type == "cuda":  # kernels run ahead of the clock; wait for them
                torch.cuda.synchronize(device)
            if time.perf_counter() - start >= self.config.time_budget_s:
                logger.debug("time budget spent after %d iterations", iteration + 1)
                return


def top_elites(candidates: Tensor, energies: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """The ``count`` lowest-energy candidates per environment, best first.

    ``candidates [E, N, H, A]``, ``energies [E, N]`` -> ``elites [E, K, H, A]``,
    ``elite_energies [E, K]``.
    """
    elite_energies, index = energies.topk(count, dim=1, largest=False)  # sorted ascending
    horizon, action_dim = candidates.shape[2:]
    elites = candidates.gather(1, index[..., None, None].expand(-1, -1, horizon, action_dim))
    return elites, elite_energies


class BestSoFar:
    """The lowest-energy candidate seen per environment across iterations."""

    def __init__(self, num_envs: int, like_plan: Tensor) -> None:
        self.actions = like_plan.clone()
        self.energy = torch.full_like(like_plan[:, 0, 0], math.inf)  # [E]
        self.history: list[Tensor] = []

    def update(self, candidates: Tensor, energies: Tensor) -> None:
        """Record ``candidates [E, N, H, A]`` with ``energies [E, N]``."""
        energies = energies.detach()
        iteration_best, index = energies.min(dim=1)
        self.history.append(iteration_best)
        better = iteration_best < self.energy
        chosen = candidates.detach()[torch.arange(len(index), device=index.device), index]
        self.actions = torch.where(better[:, None, None], chosen, self.actions)
        self.energy = torch.where(better, iteration_best.to(self.energy.dtype), self.energy)

    def result(self, started: float) -> PlanResult:
        return PlanResult(
            actions=self.actions,
            energy=self.energy,
            energy_history=torch.stack(self.history),
            iterations=len(self.history),
            seconds=time.perf_counter() - started,
        )
