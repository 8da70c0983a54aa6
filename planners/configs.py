"""The planners' settings, plain dataclasses free of torch: every planner's config class
and the action bounds. A config is checked (``jepa-robot ... --cfg``, a bad override)
without importing torch; ``planners.base`` and each planner module re-export theirs.
``ActionBounds`` works on tensors through their own methods alone."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

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
        finite = low.isfinite() & high.isfinite()
        midpoint = ((low + high) / 2).where(finite, low.new_zeros(low.shape).clamp(low, high))
        return self.project(midpoint)

    def project(self, actions: Tensor) -> Tensor:
        """Map ``actions [..., A]`` into the bounds (same shape, out of place).

        Moves longer than the ball are scaled back along their own direction (for L2
        this is the exact projection; for L1 it keeps the direction instead of the
        sparsifying Euclidean projection), then every dimension is clipped to the box.
        """
        if self.move_radius is not None:
            dims = actions.new_tensor(self.move_dims).long()
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
            dims = actions.new_tensor(self.binary_dims).long()
            values = actions.index_select(-1, dims)
            low, high = low[dims], high[dims]
            actions = actions.index_copy(-1, dims, high.where(values >= (low + high) / 2, low))
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


@dataclass
class ICEMConfig(EliteConfig):
    """iCEM settings; the paper's defaults where they fit a fixed sample count."""

    noise_exponent: float = 2.0
    """Colour of the noise (beta): 0 is white, 2 is Brownian-like, larger is smoother."""
    keep_elite_fraction: float = 0.3
    """Fraction of the elites carried into the next iteration and the next call."""
    init_std: float = 1.0
    """Initial standard deviation of every action dimension, in action units."""
    min_std: float = 0.01
    """Std floor, so the search never collapses to a point."""
    momentum: float = 0.1
    """Weight kept on the old mean and std at each refit."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.noise_exponent < 0 or not 0 <= self.keep_elite_fraction <= 1:
            raise ValueError("need noise_exponent >= 0 and keep_elite_fraction in [0, 1]")
        if self.init_std <= 0 or self.min_std < 0 or not 0 <= self.momentum < 1:
            raise ValueError("need init_std > 0, min_std >= 0, momentum in [0, 1)")
        if round(self.keep_elite_fraction * self.elites) >= self.samples:
            raise ValueError("keep_elite_fraction * elites must leave room for fresh samples")


@dataclass
class MPPIConfig(EliteConfig):
    """MPPI settings; defaults follow TD-MPC2 (512 samples, 64 elites, 6 iterations)."""

    iterations: int = 6
    samples: int = 512
    elites: int = 64
    """How many of the best samples enter the weighted average."""
    temperature: float = 0.5
    """Softness of the weights, relative to the elites' energy spread (smaller: greedier)."""
    min_std: float = 0.05
    """Lower clamp of the sampling std."""
    max_std: float = 2.0
    """Upper clamp of the sampling std, and its starting value."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature} must be > 0")
        if not 0 <= self.min_std <= self.max_std:
            raise ValueError(f"need 0 <= min_std={self.min_std} <= max_std={self.max_std}")


@dataclass
class GradientConfig(PlannerConfig):
    """Gradient-planner settings; ``samples`` is the number of restarts per environment."""

    iterations: int = 30
    samples: int = 8
    learning_rate: float = 0.05
    """Adam step size, in action units."""
    init_std: float = 0.5
    """Std of the noise that spreads the restarts around the starting plan."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.learning_rate <= 0 or self.init_std < 0:
            raise ValueError("need learning_rate > 0 and init_std >= 0")


PLANNER_CONFIGS: dict[str, type[PlannerConfig]] = {
    "cem": CEMConfig,
    "icem": ICEMConfig,
    "mppi": MPPIConfig,
    "gradient": GradientConfig,
}
"""Registry name -> the planner's config class (``planners.PLANNERS`` names the planners)."""
