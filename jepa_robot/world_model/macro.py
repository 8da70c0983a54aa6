"""The high level of a two-level world model: one step spans ``steps`` predictor steps,
and its action is a *macro-action* learned from the actions it spans.

A :class:`HighLevelPredictor` is an ordinary :class:`ACPredictor` (same latents, same
block-causal layout of action, state and frame tokens) whose action token reads a
``dim``-D macro-action instead of the raw actions. The :class:`MacroActionEncoder`
compresses the ``steps * frameskip`` env actions of one high-level step (flattened,
normalised) into that macro-action, and is trained together with the predictor (``jepa-robot
train macro_steps=K``). Its output passes through ``tanh``, so every macro-action lies in
``[-1, 1]^dim``; a planner searches that box directly (the encoder is not needed to
plan), narrowed to the range the training data's macro-actions actually span
(``stats.json``'s ``macro_action``), where the predictor has seen examples.

This follows the hierarchical world model of Zhang et al. (2026), "Hierarchical Planning
with Latent World Models": a long-horizon predictor in the low level's latent space,
over learned macro-actions, whose first predicted latent is the low-level planner's
sub-goal (``jepa_robot.agent.HierarchicalAgent``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from jepa_robot.world_model.predictor import ACPredictor, NextStateFn, PredictorConfig

__all__ = ["HighLevelPredictor", "MacroActionEncoder", "MacroConfig"]


@dataclass
class MacroConfig:
    """The macro-action encoder's shape (stored in a high-level checkpoint's
    ``config.json`` as ``macro_actions``)."""

    steps: int
    """Predictor steps per high-level step (K)."""
    input_dim: int
    """Width of the actions one high-level step spans: ``K * frameskip * A_env``."""
    dim: int = 8
    """Width of a macro-action."""
    hidden: int = 256
    """Hidden width of the encoder's MLP."""

    def __post_init__(self) -> None:
        for name, minimum in (("steps", 2), ("input_dim", 1), ("dim", 1), ("hidden", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"macro_actions.{name} must be an int >= {minimum}, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MacroConfig:
        if not isinstance(d, Mapping):
            raise ValueError(f"macro_actions must be an object, got {type(d).__name__}")
        return cls(**dict(d))


class MacroActionEncoder(nn.Module):
    """``[..., K * frameskip * A]`` normalised actions -> ``[..., dim]`` in ``[-1, 1]``:
    a two-layer GELU MLP with a tanh output."""

    def __init__(self, config: MacroConfig) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(config.input_dim, config.hidden), nn.GELU(),
            nn.Linear(config.hidden, config.hidden), nn.GELU(),
            nn.Linear(config.hidden, config.dim), nn.Tanh(),
        )

    def forward(self, actions: Tensor) -> Tensor:
        return self.net(actions)


class HighLevelPredictor(nn.Module):
    """A macro-action encoder in front of an :class:`ACPredictor` over macro-actions.

    ``forward`` and ``rollout`` take the raw (normalised) actions of each high-level step,
    ``[..., K * frameskip * A]``, exactly like an :class:`ACPredictor` takes its actions,
    so the training objective is the same code for both levels; ``predictor.rollout``
    takes macro-actions ``[..., dim]`` directly (planning)."""

    def __init__(self, config: PredictorConfig, macro: MacroConfig) -> None:
        super().__init__()
        if config.action_dim != macro.dim:
            raise ValueError(f"the high-level predictor reads {config.action_dim}-D actions; "
                             f"the macro-actions are {macro.dim}-D")
        self.macro_config = macro
        self.action_encoder = MacroActionEncoder(macro)
        self.predictor = ACPredictor(config)

    @property
    def config(self) -> PredictorConfig:
        """The predictor's config (what a checkpoint stores as ``predictor``)."""
        return self.predictor.config

    def forward(self, latents: Tensor, actions: Tensor, states: Tensor | None = None
                ) -> tuple[Tensor, Tensor | None]:
        return self.predictor(latents, self.action_encoder(actions), states)

    def rollout(self, context_latents: Tensor, context_states: Tensor | None, actions: Tensor,
                next_state_fn: NextStateFn | None = None) -> tuple[Tensor, Tensor | None]:
        return self.predictor.rollout(context_latents, context_states, self.action_encoder(actions),
                                      next_state_fn)

    @torch.no_grad()
    def macro_range(self, actions: Tensor, quantile: float = 0.01) -> dict[str, list[float]]:
        """The spread of the macro-actions of ``actions [M, K * frameskip * A]`` (normalised):
        per dimension the ``quantile`` and ``1 - quantile`` quantiles, the mean and std."""
        macro = self.action_encoder(actions).float()
        return {
            "low": torch.quantile(macro, quantile, dim=0).tolist(),
            "high": torch.quantile(macro, 1 - quantile, dim=0).tolist(),
            "mean": macro.mean(0).tolist(),
            "std": macro.std(0).tolist(),
        }
