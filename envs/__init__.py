"""Environments: Meta-World goal-image tasks (``envs.metaworld``) and a real arm behind
rosbridge (``envs.ros``).

Knows nothing of world models or planners (docs/architecture.md): this package never imports
``jepa_robot`` or ``planners``. Importing it registers the goal-image tasks with
Gymnasium under the ``JepaRobot/`` namespace (by entry-point strings: Gymnasium itself,
~0.6 s, is imported, MuJoCo and Meta-World only when an env is made), and makes EGL
MuJoCo's default renderer (offscreen; ``MUJOCO_GL`` set by the user wins), before any
module of this package can import MuJoCo.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

from gymnasium.envs.registration import register, registry  # noqa: E402 - after MUJOCO_GL

from envs.metaworld.tasks import EPISODE_BUDGET, TASKS  # noqa: E402

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
