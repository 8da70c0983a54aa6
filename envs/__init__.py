"""Simulation and robot environments for jepa-robot.

Knows nothing of world models or planners (docs/architecture.md): this package never imports
``jepa_robot`` or ``planners``. Importing it registers the goal-image tasks with
Gymnasium under the ``JepaRobot/`` namespace.
"""

from gymnasium.envs.registration import register, registry

from envs.metaworld.env import EPISODE_BUDGET, TASKS

# Task name -> Gymnasium id.
ENV_IDS: dict[str, str] = {
    "reach": "JepaRobot/MetaWorld-Reach-v0",
    "push": "JepaRobot/MetaWorld-Push-v0",
    "pick-place": "JepaRobot/MetaWorld-PickPlace-v0",
}

for _task, _env_id in ENV_IDS.items():
    if _env_id not in registry:
        register(
            id=_env_id,
            entry_point="envs.metaworld.env:MetaWorldGoalEnv",
            kwargs={"task": _task},
            # The env truncates at its own protocol budget; no extra TimeLimit wrapper.
        )

__all__ = ["ENV_IDS", "EPISODE_BUDGET", "TASKS"]
