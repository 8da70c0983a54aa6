"""Latent-space trajectory optimisation: CEM, iCEM, MPPI and gradient planners.

Planners take a batched rollout callable and a goal latent, never a model or a
robot, and import only torch, numpy and the standard library::

    planner = make_planner("cem", horizon=5, action_dim=4, bounds=ActionBounds.box(4))
    result = planner.plan(rollout, goal_latent)   # rollout: [B, H, A] -> [B, H, *latent]
    action = result.first_action[0]               # [A]

Shapes are documented in ``planners.base``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from planners.configs import PLANNER_CONFIGS, ActionBounds, PlannerConfig

if TYPE_CHECKING:
    from planners.base import Planner, PlanResult, shift_plan
    from planners.energy import L1Energy, L2Energy, ReadoutDistance, make_energy

# Imported on first use, so that configs (ActionBounds, the planners' config classes)
# are checked without importing torch.
_TORCH_EXPORTS = {
    "Planner": "planners.base",
    "PlanResult": "planners.base",
    "shift_plan": "planners.base",
    "L1Energy": "planners.energy",
    "L2Energy": "planners.energy",
    "ReadoutDistance": "planners.energy",
    "make_energy": "planners.energy",
}


def __getattr__(name: str) -> Any:
    if name in _TORCH_EXPORTS:
        return getattr(importlib.import_module(_TORCH_EXPORTS[name]), name)
    raise AttributeError(f"module 'planners' has no attribute {name!r}")

PLANNERS = {
    "cem": "planners.cem:CEMPlanner",
    "icem": "planners.icem:ICEMPlanner",
    "mppi": "planners.mppi:MPPIPlanner",
    "gradient": "planners.gradient:GradientPlanner",
}
"""Planner names mapped to lazy ``module:Class`` import strings."""


def planner_class(name: str) -> type[Planner]:
    """The planner class registered as ``name``; an unknown name lists the valid ones."""
    if name not in PLANNERS:
        raise ValueError(f"unknown planner {name!r}; valid: {sorted(PLANNERS)}")
    module_name, class_name = PLANNERS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def planner_config_class(name: str) -> type[PlannerConfig]:
    """The config dataclass of the planner registered as ``name``, without importing torch."""
    if name not in PLANNER_CONFIGS:
        raise ValueError(f"unknown planner {name!r}; valid: {sorted(PLANNERS)}")
    return PLANNER_CONFIGS[name]


def make_planner(name: str, *, bounds=None, energy=None, **config) -> Planner:
    """Build a planner: ``config`` are fields of its config dataclass (a typo raises).

    ``make_planner("mppi", horizon=3, action_dim=4, samples=512, bounds=..., energy=...)``
    """
    cls = planner_class(name)
    return cls(cls.config_class(**config), bounds=bounds, energy=energy)


__all__ = [
    "PLANNERS",
    "ActionBounds",
    "L1Energy",
    "L2Energy",
    "PlanResult",
    "Planner",
    "PlannerConfig",
    "ReadoutDistance",
    "make_energy",
    "make_planner",
    "planner_class",
    "planner_config_class",
    "shift_plan",
]
