"""The goal-image tasks' names, step budgets, state and action layouts, seed splits and
camera views: plain Python, so that configs can be checked without importing Gymnasium
or MuJoCo (``envs.metaworld.env`` re-exports them)."""

from __future__ import annotations

import math
from dataclasses import dataclass

# Our task names -> Meta-World v3 env names.
TASKS: dict[str, str] = {
    "reach": "reach-v3",
    "push": "push-v3",
    "pick-place": "pick-place-v3",
}
TASKS_WITH_OBJECT = ("push", "pick-place")
"""The tasks whose goal is about the object (reach's object is there but unused)."""

# Step budgets of the evaluation protocol (docs/protocol.md).
EPISODE_BUDGET: dict[str, int] = {"reach": 100, "push": 150, "pick-place": 200}

STATE_NAMES = ["hand_x", "hand_y", "hand_z", "gripper"]
# The task object's position (Meta-World's puck or block; reach has one too, unused).
OBJECT_NAMES = ["object_x", "object_y", "object_z"]
STATE_AND_OBJECT_NAMES = STATE_NAMES + OBJECT_NAMES
"""A simulated recording's ``observation.state`` then ``observation.environment_state``
columns: what the default readout reads and an eval trace's ``true`` rows hold."""
ACTION_NAMES = ["delta_x", "delta_y", "delta_z", "gripper"]

# Seeds by the evaluation protocol (docs/protocol.md): training data below 100000;
# reported figures on 100000 + i; any tuning on 150000-199999; nothing at or above 200000.
EVAL_SEED_START = 100_000
"""The first evaluation seed: reported episode i runs from seed ``EVAL_SEED_START + i``."""
TUNING_SEED_START = 150_000
"""Seeds from here to ``SEED_LIMIT - 1`` are for tuning (planner settings, checkpoint
choice, any knob); the seeds below it, from ``EVAL_SEED_START``, are the reporting seeds."""
SEED_LIMIT = 200_000
"""No seed at or above this is used by the project."""


def seed_split(first: int, last: int) -> str:
    """Which evaluation split the seeds ``first..last`` belong to: ``"reporting"``
    (100000-149999) or ``"tuning"`` (150000-199999). Raises ``ValueError`` for seeds
    outside both or for a range that mixes them."""
    if first > last:
        raise ValueError(f"seeds {first}..{last}: an empty range")
    if first < EVAL_SEED_START or last >= SEED_LIMIT:
        raise ValueError(
            f"seeds {first}..{last}: evaluation seeds lie in [{EVAL_SEED_START}, {SEED_LIMIT}) "
            f"(below {EVAL_SEED_START} is training data; nothing at or above {SEED_LIMIT} is used)")
    if last < TUNING_SEED_START:
        return "reporting"
    if first >= TUNING_SEED_START:
        return "tuning"
    raise ValueError(
        f"seeds {first}..{last} mix the reporting seeds ({EVAL_SEED_START}-{TUNING_SEED_START - 1}) "
        f"and the tuning seeds ({TUNING_SEED_START}-{SEED_LIMIT - 1}); run them separately")


@dataclass(frozen=True)
class CameraView:
    """A free camera aimed at ``lookat`` (MuJoCo's azimuth/elevation in degrees)."""

    lookat: tuple[float, float, float]
    distance: float
    azimuth: float
    elevation: float


# Named views of the Sawyer workspace (objects and goals lie in x in [-0.1, 0.1],
# y in [0.6, 0.9], z in [0, 0.3]). Free cameras render upright, unlike Meta-World's
# corner cameras.
CAMERA_VIEWS: dict[str, CameraView] = {
    # Oblique view from the far side of the table, facing the robot: the whole arm,
    # the object and the goal region are in frame, and depth (y) and height (z) both
    # move things in the image.
    "oblique": CameraView(lookat=(0.0, 0.68, 0.16), distance=0.95, azimuth=-65.0, elevation=-28.0),
    # Straight on from the far side of the table.
    "front": CameraView(lookat=(0.0, 0.68, 0.16), distance=0.95, azimuth=-90.0, elevation=-30.0),
    # The oblique view's angles from 0.7 m instead of 0.95, aimed at the middle of the
    # hand's working volume (x in [-0.15, 0.15], y in [0.5, 0.92], z in [0, 0.32]), which
    # then just fills the frame: 5 cm of hand motion moves 5.1 / 3.2 / 5.2 px at 64 px
    # along x / y / z, against 3.8 / 2.7 / 3.7 in the oblique view. An encoder pretrained
    # on it did not resolve the hand better near a goal than the oblique one (x and z
    # sharper, y blunter; docs/default_model.md), so the default model keeps "oblique".
    "workspace": CameraView(lookat=(0.026, 0.751, 0.111), distance=0.7, azimuth=-65.0, elevation=-28.0),
    # Straight down on the workspace.
    "top": CameraView(lookat=(0.0, 0.72, 0.0), distance=0.8, azimuth=-90.0, elevation=-89.0),
}

# Cameras the arm carries (Meta-World's own, fixed to the hand): they move with it, so
# near a grasp the object fills their view and the arm cannot hide it. Our name -> the
# model's camera.
BODY_CAMERAS: dict[str, str] = {
    # Between the fingers, looking down past them at the table.
    "wrist": "gripperPOV",
    # Behind and above the hand, looking along the arm at the gripper and what is below it.
    "behind_gripper": "behindGripper",
}
CAMERA_NAMES: tuple[str, ...] = (*CAMERA_VIEWS, *BODY_CAMERAS)
"""Every camera an env renders: the free views, then the cameras on the arm."""

CAMERA_MOVE_LIMITS = (30.0, 20.0, 0.3)
"""The largest camera move an env accepts, per component: degrees of azimuth, degrees of
elevation, metres of distance (``check_camera_move``)."""


def check_camera_move(name: str, move, spread: bool = False) -> tuple[float, float, float]:
    """``move`` as ``(azimuth degrees, elevation degrees, distance metres)``, each finite
    and within ``CAMERA_MOVE_LIMITS`` (and, for a ``spread`` such as a jitter, not
    negative); a ``ValueError`` naming ``name`` otherwise."""
    values = tuple(float(v) for v in move)
    if len(values) != 3:
        raise ValueError(f"{name}={list(move)} must be [azimuth_deg, elevation_deg, distance_m]")
    if spread and any(value < 0 for value in values):
        raise ValueError(f"{name}={list(values)} must be >= 0")
    for value, limit, what in zip(values, CAMERA_MOVE_LIMITS, ("azimuth", "elevation", "distance"), strict=True):
        if not math.isfinite(value) or abs(value) > limit:
            raise ValueError(f"{name}={list(values)}: the {what} must be finite and within +-{limit}")
    return values  # type: ignore[return-value]


GOAL_SOURCES = ("protocol", "jepa_wms")
"""Where goal images come from: the protocol's task-aimed expert, or JEPA-WMs' rule
(``envs.metaworld.goals.make_goal_images``)."""
