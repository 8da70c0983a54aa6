"""jepa-robot: planning with action-conditioned V-JEPA world models.

The packages are ``envs/`` (simulation, ROS, recording), ``planners/`` (trajectory
optimisation) and ``jepa_robot/``: ``world_model/`` (encoder, predictor, readout,
checkpoint, ``WorldModel``), ``data/``, ``training/``, ``agent`` (the MPC loop),
``evaluation``, ``robot`` (the ROS commands), ``config/`` and ``cli``
(docs/architecture.md). The names most scripts need are importable from here::

    from jepa_robot import MPCAgent, WorldModel, run_episode
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "WorldModel": "jepa_robot.world_model.model",
    "MPCAgent": "jepa_robot.agent",
    "run_episode": "jepa_robot.agent",
}
__all__ = ["MPCAgent", "WorldModel", "__version__", "run_episode"]

if TYPE_CHECKING:
    from jepa_robot.agent import MPCAgent, run_episode
    from jepa_robot.world_model.model import WorldModel


def __getattr__(name: str) -> Any:
    # imported on first use: `import jepa_robot` (and the CLI) stays free of torch
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'jepa_robot' has no attribute {name!r}")
