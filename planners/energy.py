"""Energies: how far predicted latents are from a goal latent (lower is better).

An energy is any callable ``(predicted [B, H, *latent], goal) -> [B]`` where
``goal`` is ``[*latent]`` (shared by all B rows) or ``[B, *latent]`` (one per row).

``l1`` / ``l2`` compare every latent element alike. ``readout`` first maps both sides
through a fixed function of the latent (for a world model, a state readout fit on its
training frames) and takes a weighted Euclidean distance there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

Energy = Callable[[Tensor, Tensor], Tensor]
"""``(predicted [B, H, *latent], goal [*latent] or [B, *latent]) -> energy [B]``."""

STEP_MODES = ("final", "all")


def goal_is_batched(predicted: Tensor, goal: Tensor) -> bool:
    """Whether ``goal`` is ``[B, *latent]`` (one per row) rather than ``[*latent]``
    (shared) for ``predicted [B, H, *latent]``; any other shape is refused."""
    latent_dims = predicted.dim() - 2
    if goal.dim() == latent_dims:
        return False
    if goal.dim() == latent_dims + 1 and goal.shape[0] == predicted.shape[0]:
        return True
    raise ValueError(
        f"goal {tuple(goal.shape)} fits neither [*latent] nor [B, *latent] for "
        f"predicted {tuple(predicted.shape)} = [B, H, *latent]"
    )


@dataclass(frozen=True)
class GoalDistance:
    """Distance to the goal on the final predicted step, or summed over all steps.

    Subclasses choose the per-element distance; the mean is taken over the latent
    elements, so the scale does not grow with the number of tokens.
    """

    steps: str = "final"
    """``final``: only the last predicted step counts; ``all``: sum over steps."""
    step_weights: tuple[float, ...] | None = None
    """With ``steps="all"``, one weight per step (``H`` of them); ``None`` weighs all 1."""
    token_weights: tuple[float, ...] | None = None
    """One weight per latent token (the first latent dimension; for a world model over
    several cameras, each view's tokens in turn): the distance is the weighted mean of the
    per-token means. ``None`` weighs every element alike."""

    def __post_init__(self) -> None:
        if self.steps not in STEP_MODES:
            raise ValueError(f"steps={self.steps!r}; valid: {list(STEP_MODES)}")
        if self.step_weights is not None and self.steps != "all":
            raise ValueError("step_weights only apply with steps='all'")
        if self.token_weights is not None and (min(self.token_weights) < 0 or sum(self.token_weights) <= 0):
            raise ValueError(f"token_weights must be >= 0 with a positive sum, got {self.token_weights}")

    def elementwise(self, difference: Tensor) -> Tensor:
        raise NotImplementedError

    def per_step(self, predicted: Tensor, goal: Tensor) -> Tensor:
        """Distance of every predicted step to the goal, ``[B, H]``."""
        goal = goal.unsqueeze(1) if goal_is_batched(predicted, goal) else goal
        distance = self.elementwise(predicted - goal)
        if self.token_weights is None:
            return distance.flatten(2).mean(-1)
        if predicted.dim() < 4 or predicted.shape[2] != len(self.token_weights):
            raise ValueError(f"{len(self.token_weights)} token_weights for predicted latents "
                             f"{tuple(predicted.shape)} = [B, H, tokens, ...]")
        weights = distance.new_tensor(self.token_weights)
        return (distance.flatten(3).mean(-1) * weights).sum(-1) / weights.sum()

    def __call__(self, predicted: Tensor, goal: Tensor) -> Tensor:
        if self.steps == "final":  # only the last step is scored, so only it is read
            return self.per_step(predicted[:, -1:], goal)[:, 0]
        distances = self.per_step(predicted, goal)
        if self.step_weights is None:
            return distances.sum(-1)
        if len(self.step_weights) != distances.shape[1]:
            raise ValueError(
                f"{len(self.step_weights)} step_weights for a horizon of {distances.shape[1]}"
            )
        return (distances * distances.new_tensor(self.step_weights)).sum(-1)


@dataclass(frozen=True)
class L1Energy(GoalDistance):
    """Mean absolute difference (V-JEPA 2-AC's planning energy)."""

    def elementwise(self, difference: Tensor) -> Tensor:
        return difference.abs()


@dataclass(frozen=True)
class L2Energy(GoalDistance):
    """Mean squared difference (the JEPA-WMs study found L2 plans better than L1)."""

    def elementwise(self, difference: Tensor) -> Tensor:
        return difference.square()


@dataclass(frozen=True)
class ReadoutDistance(GoalDistance):
    """Weighted Euclidean distance between ``readout(predicted)`` and ``readout(goal)``.

    ``readout`` maps latents ``[..., *latent]`` to features ``[..., F]`` (for the
    world models here, a state readout: hand position in metres and gripper opening);
    ``weights`` (F of them, default all 1) set what a unit of each feature is worth.
    """

    readout: Callable[[Tensor], Tensor] | None = None
    weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.token_weights is not None:
            raise ValueError("token_weights do not apply to the readout energy (it reads every token)")
        if self.readout is None:
            raise ValueError("the readout energy needs a readout function (latent -> features)")

    def per_step(self, predicted: Tensor, goal: Tensor) -> Tensor:
        batched = goal_is_batched(predicted, goal)
        target = self.readout(goal)  # [F] or [B, F]
        difference = self.readout(predicted) - (target.unsqueeze(1) if batched else target)
        if self.weights is not None:
            if len(self.weights) != difference.shape[-1]:
                raise ValueError(f"{len(self.weights)} readout weights for "
                                 f"{difference.shape[-1]} readout features")
            difference = difference * difference.new_tensor(self.weights)
        return difference.norm(dim=-1)


ENERGIES = {"l1": L1Energy, "l2": L2Energy, "readout": ReadoutDistance}


def make_energy(name: str, **options) -> GoalDistance:
    """``make_energy("l1", steps="all")``, ``make_energy("readout", readout=fn,
    weights=(1, 1, 1, 0.1))``; an unknown name lists the valid ones."""
    if name not in ENERGIES:
        raise ValueError(f"unknown energy {name!r}; valid: {sorted(ENERGIES)}")
    return ENERGIES[name](**options)
