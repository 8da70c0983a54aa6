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

from planners.base import ActionBounds, Planner, PlannerConfig, PlanResult, shift_plan
from planners.energy import L1Energy, L2Energy, ReadoutDistance, make_energy

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
    "shift_plan",
]
