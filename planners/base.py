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
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch
from torch import Tensor

from planners.energy import Energy, L2Energy

logger = logging.getLogger(__name__)

Rollout = Callable[[Tensor], Tensor]
"""``actions [B, H, A] -> predicted latents [B, H, *latent]``."""

WARM_START_FILLS = ("repeat", "mean")


@dataclass
class PlannerConfig:
    """Settings every planner reads; each planner extends it with its own."""

    horizon: int = 5
    """Number of action steps planned ahead (H)."""
    action_dim: int = 4
    """Size of one action (A); Meta-World uses 4 (dx, dy, dz, gripper)."""
    iterations: int = 10
    """Optimisation rounds per ``plan`` call (fewer if ``time_budget_s`` runs out)."""
    samples: int = 300
    """Candidate action sequences per environment and iteration (restarts for ``gradient``)."""
    seed: int | None = 0
    """Seed of the planner's own generator; ``None`` draws a fresh one on every reset."""
    time_budget_s: float | None = None
    """Stop iterating once this many seconds have passed (at least one iteration runs)."""
    warm_start: bool = True
    """Start from the previous plan shifted by one step (receding horizon)."""
    warm_start_fill: str = "repeat"
    """What fills the freed last step: ``repeat`` the last action or the initial ``mean``."""

    def __post_init__(self) -> None:
        for name in ("horizon", "action_dim", "iterations", "samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ValueError(f"time_budget_s={self.time_budget_s} must be > 0 or None")
        if self.warm_start_fill not in WARM_START_FILLS:
            raise ValueError(
                f"warm_start_fill={self.warm_start_fill!r}; valid: {list(WARM_START_FILLS)}"
            )


@dataclass
class EliteConfig(PlannerConfig):
    """Settings of planners that refit on the best ``elites`` of ``samples``."""

    elites: int = 30
    """How many of the best samples refit the distribution."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.elites <= self.samples:
            raise ValueError(f"elites={self.elites} must be in [1, samples={self.samples}]")


@dataclass
class ActionBounds:
    """A per-dimension box, optionally intersected with a per-step move ball.

    The ball bounds the size of each step's move on ``move_dims`` (e.g. the xyz
    delta), as V-JEPA 2-AC keeps each step in an L1 ball of radius 0.075. A
    dimension with ``low == high`` is held fixed (e.g. rotation at 0).

    ``low`` and ``high`` are each one number (the same on every dimension) or a list
    with one entry per dimension; a planner fits them to its action size with
    :meth:`for_action_dim`. This class is also the schema of a config's
    ``planner.bounds``.
    """

    low: Any = -1.0
    """Lower bound: a number for every dimension, or one per dimension; ``-inf`` for none."""
    high: Any = 1.0
    """Upper bound, as ``low``; ``inf`` for none."""
    move_radius: float | None = None
    """Radius of the per-step ball on ``move_dims``; ``None`` for no ball."""
    move_norm: str = "l1"
    """Norm of that ball: ``l1`` or ``l2``."""
    move_dims: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Action dimensions the ball applies to (xyz by default)."""
    binary_dims: list[int] = field(default_factory=list)
    """Dimensions that take only their two bounds, such as a gripper commanded open or
    closed: a value at or above the box's midpoint becomes ``high``, below it ``low``
    (no gradient flows through them)."""

    def __post_init__(self) -> None:
        self.low, self.high = _bound("low", self.low), _bound("high", self.high)
        self.move_dims = [int(d) for d in self.move_dims]
        self.binary_dims = [int(d) for d in self.binary_dims]
        if self.move_norm not in ("l1", "l2"):
            raise ValueError(f"bounds: move_norm={self.move_norm!r}; valid: ['l1', 'l2']")
        if self.move_radius is not None and self.move_radius <= 0:
            raise ValueError(f"bounds: move_radius={self.move_radius} must be > 0")
        if isinstance(self.low, list) and isinstance(self.high, list) and len(self.low) != len(self.high):
            raise ValueError(f"bounds: low has {len(self.low)} entries but high has {len(self.high)}")
        # the per-dimension checks need a size: one the lists give, or the largest dim named
        named = [*self.binary_dims, *(self.move_dims if self.move_radius is not None else [])]
        dims = self.action_dim or (max(named) + 1 if named else 1)
        low, high = self._broadcast(self.low, dims), self._broadcast(self.high, dims)
        for d in self.binary_dims:
            if not 0 <= d < dims or not math.isfinite(low[d]) or not math.isfinite(high[d]):
                raise ValueError(f"bounds: binary_dims={self.binary_dims}: dim {d} needs finite bounds "
                                 f"among {dims} dims")
        if any(lo > hi for lo, hi in zip(low, high, strict=True)):
            raise ValueError(f"bounds: low={self.low} exceeds high={self.high} somewhere")
        if self.move_radius is not None:
            if not self.move_dims or not all(0 <= d < dims for d in self.move_dims):
                raise ValueError(f"bounds: move_dims={self.move_dims} must index {dims} dims")
            # Clipping to a box that holds 0 never lengthens a move, so ball-then-clip
            # lands inside both; without 0 in the box that guarantee is gone.
            if any(not low[d] <= 0.0 <= high[d] for d in self.move_dims):
                raise ValueError("bounds: the box must contain 0 on move_dims when move_radius is set")

    @staticmethod
    def _broadcast(bound: float | list[float], action_dim: int) -> list[float]:
        return list(bound) if isinstance(bound, list) else [bound] * action_dim

    def for_action_dim(self, action_dim: int) -> ActionBounds:
        """These bounds with one entry per dimension for ``action_dim``-D actions (a single
        number is repeated; a list must already have ``action_dim`` entries)."""
        if self.action_dim not in (None, action_dim):
            raise ValueError(f"bounds: bounds have {self.action_dim} dims, the actions {action_dim}")
        if isinstance(self.low, list) and isinstance(self.high, list):
            return self
        return replace(self, low=self._broadcast(self.low, action_dim),
                       high=self._broadcast(self.high, action_dim))

    @classmethod
    def box(cls, action_dim: int, low: float = -1.0, high: float = 1.0, **ball) -> ActionBounds:
        """The same ``[low, high]`` on every dimension; ``ball`` sets the move_* fields."""
        return cls([low] * action_dim, [high] * action_dim, **ball)

    @property
    def action_dim(self) -> int | None:
        """Dimensions the bounds were given for; None when both are single numbers."""
        for bound in (self.low, self.high):
            if isinstance(bound, list):
                return len(bound)
        return None

    @property
    def moving_dims(self) -> list[int]:
        """The ``move_dims`` this action has, or every dim if it has none of them: what
        CEM's hold candidate sets to 0."""
        dims = [d for d in self.move_dims if 0 <= d < self.action_dim]
        return dims or list(range(self.action_dim))

    def limits(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """``low``, ``high`` as ``[A]`` tensors on ``like``'s device and dtype."""
        return (like.new_tensor(self.low), like.new_tensor(self.high))

    def center(self, like: Tensor) -> Tensor:
        """A neutral action ``[A]``: the box midpoint, or 0 clipped where a side is open."""
        low, high = self.limits(like)
        finite = torch.isfinite(low) & torch.isfinite(high)
        midpoint = torch.where(finite, (low + high) / 2, torch.zeros_like(low).clamp(low, high))
        return self.project(midpoint)

    def project(self, actions: Tensor) -> Tensor:
        """Map ``actions [..., A]`` into the bounds (same shape, out of place).

        Moves longer than the ball are scaled back along their own direction (for L2
        this is the exact projection; for L1 it keeps the direction instead of the
        sparsifying Euclidean projection), then every dimension is clipped to the box.
        """
        if self.move_radius is not None:
            dims = torch.tensor(self.move_dims, device=actions.device)
            moves = actions.index_select(-1, dims)
            if self.move_norm == "l1":
                length = moves.abs().sum(-1, keepdim=True)
            else:
                length = moves.norm(dim=-1, keepdim=True)
            scale = (self.move_radius / length.clamp_min(1e-12)).clamp(max=1.0)
            actions = actions.index_copy(-1, dims, moves * scale)
        low, high = self.limits(actions)
        actions = actions.clamp(low, high)
        if self.binary_dims:
            dims = torch.tensor(self.binary_dims, device=actions.device)
            values = actions.index_select(-1, dims)
            low, high = low[dims], high[dims]
            actions = actions.index_copy(-1, dims, torch.where(values >= (low + high) / 2, high, low))
        return actions

    def contains(self, actions: Tensor, tolerance: float = 1e-5) -> bool:
        """Whether every action in ``actions [..., A]`` lies within the bounds."""
        low, high = self.limits(actions)
        inside = bool(((actions >= low - tolerance) & (actions <= high + tolerance)).all())
        if inside and self.move_radius is not None:
            moves = actions[..., self.move_dims]
            length = moves.abs().sum(-1) if self.move_norm == "l1" else moves.norm(dim=-1)
            inside = bool((length <= self.move_radius + tolerance).all())
        return inside


def _bound(name: str, value: Any) -> float | list[float]:
    """A bound as given (a number, or a sequence of numbers) -> float or list of floats."""
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        values = [float(v) for v in value]
    except (TypeError, ValueError):
        values = []
    if not values:
        raise ValueError(f"bounds: {name}={value!r} must be a number or a non-empty list of numbers")
    return values


def unbounded(action_dim: int) -> ActionBounds:
    """Bounds that leave every action as it is."""
    return ActionBounds.box(action_dim, -math.inf, math.inf)


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
