"""Toy problems with known optima for the planner tests.

The point mass: latent x in R^A starts at ``start`` and moves
``x_{t+1} = x_t + GAIN * a_t``; the predicted latents of a sequence are its
positions after each step.
"""

from __future__ import annotations

import pytest
import torch

from planners.base import Rollout

torch.set_num_threads(1)  # tiny tensors: threads only add overhead on 2-core CI

GAIN = 0.5
"""Latent displacement per unit action."""

FAST_SETTINGS = {
    "cem": dict(samples=200, elites=20, iterations=15),
    "icem": dict(samples=200, elites=20, iterations=20),
    "mppi": dict(samples=256, elites=32, iterations=10),
    "gradient": dict(samples=4, iterations=60, learning_rate=0.1),
}
"""Small budgets that still solve the toy problems (the suite must stay fast)."""


def point_mass_rollout(starts: torch.Tensor, calls: list | None = None) -> Rollout:
    """A rollout over ``E = len(starts)`` environments: ``[E*N, H, A] -> [E*N, H, A]``.

    Rows ``e*N:(e+1)*N`` start at ``starts[e]``; ``calls`` (if given) records every
    action batch the planner asked about.
    """

    def rollout(actions: torch.Tensor) -> torch.Tensor:
        if calls is not None:
            calls.append(actions.detach().clone())
        per_env = actions.shape[0] // starts.shape[0]
        start_rows = starts.to(actions).repeat_interleave(per_env, dim=0)  # [E*N, A]
        return start_rows[:, None, :] + GAIN * actions.cumsum(dim=1)

    return rollout


@pytest.fixture
def point_mass():
    """``point_mass(starts [E, A], calls=None) -> rollout``."""
    return point_mass_rollout


@pytest.fixture
def fast_settings():
    """``fast_settings[name]``: config overrides that keep a planner quick on the toys."""
    return {name: dict(settings) for name, settings in FAST_SETTINGS.items()}
