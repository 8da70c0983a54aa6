"""Safety limits for commanding a real arm: always on, applied before anything is sent.

``SafetyFilter.filter`` turns a requested end-effector velocity and gripper command
into one that is safe to send, in this order:

1. each action dimension is clipped to [-1, 1] (done by the env before scaling);
2. the linear speed (m/s) and angular speed (rad/s) are scaled down, direction kept,
   to ``max_linear_speed`` / ``max_angular_speed``;
3. the workspace box: the position the command would reach if held for
   ``horizon_s`` (the watchdog's hold timeout, so even an unrefreshed command
   cannot leave the box) is clipped per axis to ``[workspace_low, workspace_high]``
   and the velocity recomputed. An end effector already outside the box may only
   move back toward it on that axis;
4. the gripper command stays in [-1, 1] and changes by at most ``max_gripper_step``
   per step.

Every limit has a hard ceiling in code (``LIMIT_CEILINGS``, ``WORKSPACE_COORDINATE_CEILING``,
``WORKSPACE_SIZE_CEILING``) that no configuration can exceed: ``SafetySettings`` refuses a
larger value, and ``SafetyFilter`` applies the ceilings again on every command, so a
settings object changed after it was checked cannot switch the filter off either.

The filter is pure (numpy only) so the rules are unit-tested without a robot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

import numpy as np

# Hard ceilings: below a Franka's own Cartesian limits, above what a learning-driven
# tabletop servo needs. A config asking for more is refused; the filter caps at them too.
LIMIT_CEILINGS: dict[str, float] = {
    # Franka's Cartesian limit is 1.7 m/s; a learned policy stepping at 4-20 Hz moves a few
    # centimetres a step and never needs more than 0.5 m/s (the shipped configs use 0.08-0.35).
    "max_linear_speed": 0.5,
    # Franka's Cartesian limit is 2.5 rad/s; 1.5 rad/s turns the wrist 90 degrees in 1 s.
    "max_angular_speed": 1.5,
    # Gripper commands live in [-1, 1]: a step of 2 already allows open <-> closed at once.
    "max_gripper_step": 2.0,
    # A camera image or pose older than 1 s no longer shows where the arm is at these speeds.
    "max_observation_age_s": 1.0,
    # An unrefreshed command is held at most 1 s (0.5 m at the speed ceiling); it is also the
    # horizon of the workspace check, so it needs rate_hz >= 1.
    "command_timeout_s": 1.0,
}
LIMIT_UNITS = {"max_linear_speed": "m/s", "max_angular_speed": "rad/s", "max_gripper_step": "action units",
               "max_observation_age_s": "s", "command_timeout_s": "s"}
WORKSPACE_COORDINATE_CEILING = 2.0
"""Largest |x|, |y|, |z| of a workspace corner, metres. The box is given in the pose
topic's frame, which for a tabletop arm is its base (Franka reaches 0.855 m, a UR10e
1.3 m): a corner farther than 2 m from it is a wrong frame or no box at all."""
WORKSPACE_SIZE_CEILING = 2.0
"""Largest side of the workspace box (high - low on any axis), metres."""
SAFETY_KEYS = ("workspace_low", "workspace_high", *LIMIT_CEILINGS)
"""Every key a robot config's ``safety`` section must set."""


class RobotSafetyStop(RuntimeError):
    """The arm was stopped (a zero command sent) because a safety check failed:
    stale camera or state, or a fault latched by the watchdog."""


class RobotConnectionError(ConnectionError):
    """The rosbridge connection could not be opened, or was lost."""


@dataclass
class SafetySettings:
    """Limits on what an arm may be commanded to do (``robot.safety.*``).

    Every field is required: a robot config states its own limits, and each must lie
    under its hard ceiling (see the module docstring)."""

    workspace_low: list[float]
    """Lower corner (x, y, z) of the box the end effector must stay in, metres, in the
    frame of the pose topic; each within +-``WORKSPACE_COORDINATE_CEILING``."""
    workspace_high: list[float]
    """Upper corner (x, y, z) of that box, metres; at most ``WORKSPACE_SIZE_CEILING`` above
    ``workspace_low`` on every axis."""
    max_linear_speed: float
    """Largest end-effector speed sent, m/s (the norm of the linear velocity); at most 0.5."""
    max_angular_speed: float
    """Largest end-effector angular speed sent, rad/s (the norm of the angular velocity); at most 1.5."""
    max_gripper_step: float
    """Largest change of the gripper command per step, in action units (range [-1, 1]); at most 2."""
    max_observation_age_s: float
    """A camera image or state older than this stops the arm (``RobotSafetyStop``); at most 1 s."""
    command_timeout_s: float
    """A command not followed by another within this long is replaced by a zero command;
    also the horizon of the workspace check. Must be at least one control period; at most 1 s."""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise ``ValueError`` naming the key if any limit is missing, not a number, or
        above its hard ceiling."""
        workspace_box(self)
        for name in LIMIT_CEILINGS:
            bounded_limit(self, name, strict=True)


def bounded_limit(settings: SafetySettings, name: str, strict: bool = False) -> float:
    """``settings.<name>`` as used by the filter: a number > 0, capped at its hard ceiling.

    Anything that is not a number > 0 (nan, 0, a string) raises ``ValueError``. A value
    above the ceiling (inf included) raises too when ``strict``, else the ceiling is used."""
    value = getattr(settings, name)
    ceiling = LIMIT_CEILINGS[name]
    if isinstance(value, bool) or not isinstance(value, Real) or not value > 0:
        raise ValueError(f"robot.safety.{name}={value!r} must be a number in (0, {ceiling}] {LIMIT_UNITS[name]}")
    if strict and not value <= ceiling:
        raise ValueError(
            f"robot.safety.{name}={value!r} is above its hard ceiling of {ceiling} {LIMIT_UNITS[name]} "
            "(see envs/ros/safety.py)"
        )
    return min(float(value), ceiling)


def _fail_safe_limit(settings: SafetySettings, name: str) -> float:
    """``bounded_limit``, but 0 instead of an error: for the watchdog, which must act, not raise."""
    try:
        return bounded_limit(settings, name)
    except ValueError:
        return 0.0


def workspace_box(settings: SafetySettings) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` of the workspace box, float64 (3,) each, checked against the
    ceilings; raises ``ValueError`` naming the key."""
    corners = []
    for name in ("workspace_low", "workspace_high"):
        values = getattr(settings, name)
        values = list(values) if isinstance(values, (list, tuple, np.ndarray)) else [values]
        if len(values) != 3 or not all(
            isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v) for v in values
        ):
            raise ValueError(f"robot.safety.{name}={values} must be three finite numbers (x, y, z), metres")
        if any(abs(v) > WORKSPACE_COORDINATE_CEILING for v in values):
            raise ValueError(
                f"robot.safety.{name}={values}: every coordinate must lie within "
                f"+-{WORKSPACE_COORDINATE_CEILING} m of the pose frame's origin (the arm's base)"
            )
        corners.append(np.asarray(values, dtype=np.float64))
    low, high = corners
    if np.any(low >= high):
        raise ValueError(
            f"robot.safety.workspace_low={low.tolist()} must be below workspace_high={high.tolist()} on every axis"
        )
    if np.any(high - low > WORKSPACE_SIZE_CEILING):
        raise ValueError(
            f"robot.safety.workspace_low={low.tolist()}, workspace_high={high.tolist()}: the box may be at "
            f"most {WORKSPACE_SIZE_CEILING} m on each side"
        )
    return low, high


@dataclass(frozen=True)
class SafeCommand:
    """A bounded command, ready to send."""

    linear: np.ndarray
    """End-effector linear velocity, m/s, float64 (3,)."""
    angular: np.ndarray
    """End-effector angular velocity, rad/s, float64 (3,)."""
    gripper: float | None
    """Gripper command in action units [-1 open, 1 closed], or None (no gripper)."""
    clipped: tuple[str, ...] = ()
    """Which limits changed the request: ``linear_speed``, ``angular_speed``,
    ``workspace_x`` ..., ``gripper_step``."""

    @classmethod
    def zero(cls, gripper: float | None = None) -> SafeCommand:
        return cls(np.zeros(3), np.zeros(3), gripper)

    @property
    def is_motion(self) -> bool:
        return bool(np.any(self.linear != 0) or np.any(self.angular != 0))

    def as_dict(self) -> dict:
        return {
            "linear": self.linear.tolist(),
            "angular": self.angular.tolist(),
            "gripper": self.gripper,
            "clipped": list(self.clipped),
        }


class SafetyFilter:
    """Applies ``SafetySettings`` to requested commands (see the module docstring).

    The settings are checked when the filter is built, and read again on every command:
    a speed, gripper step or timeout raised later (even to inf) is used at its hard
    ceiling, and a value that is no positive number, or a box beyond its ceilings,
    raises ``ValueError`` (``RosArmEnv.step`` then stops the arm)."""

    def __init__(self, settings: SafetySettings, horizon_s: float | None = None) -> None:
        settings.check()
        if horizon_s is not None and not (math.isfinite(horizon_s) and horizon_s > 0):
            raise ValueError(f"SafetyFilter horizon_s={horizon_s} must be a finite number > 0")
        self.settings = settings
        self._horizon_s = None if horizon_s is None else float(horizon_s)

    @property
    def horizon_s(self) -> float:
        """Seconds a command is assumed held for the workspace check: the given
        ``horizon_s``, else ``command_timeout_s`` capped at its ceiling (raises if it is
        no longer a number > 0)."""
        return self._horizon_s if self._horizon_s is not None else bounded_limit(self.settings, "command_timeout_s")

    @property
    def command_timeout_s(self) -> float:
        """How long the watchdog holds a command: ``settings.command_timeout_s`` capped at its
        ceiling, or 0 (hold at once) if it is no longer a number > 0."""
        return _fail_safe_limit(self.settings, "command_timeout_s")

    @property
    def max_observation_age_s(self) -> float:
        """The oldest observation the env acts on: ``settings.max_observation_age_s`` capped at
        its ceiling, or 0 (everything is too old: the arm stops) if it is no longer a number > 0."""
        return _fail_safe_limit(self.settings, "max_observation_age_s")

    def filter(
        self,
        linear: np.ndarray,
        angular: np.ndarray,
        gripper: float | None,
        position: np.ndarray,
        previous_gripper: float | None,
    ) -> SafeCommand:
        """Bound a requested command given the end effector's measured ``position``."""
        linear = np.asarray(linear, dtype=np.float64).copy()
        angular = np.asarray(angular, dtype=np.float64).copy()
        if not (np.all(np.isfinite(linear)) and np.all(np.isfinite(angular))):
            raise ValueError(f"non-finite velocity requested: linear={linear}, angular={angular}")
        clipped: list[str] = []

        max_linear = bounded_limit(self.settings, "max_linear_speed")
        max_angular = bounded_limit(self.settings, "max_angular_speed")
        speed = float(np.linalg.norm(linear))
        if speed > max_linear:
            linear *= max_linear / speed
            clipped.append("linear_speed")
        turn = float(np.linalg.norm(angular))
        if turn > max_angular:
            angular *= max_angular / turn
            clipped.append("angular_speed")

        position = np.asarray(position, dtype=np.float64)
        horizon = self.horizon_s
        target = position + linear * horizon
        # Outside the box on an axis: the bound on that side becomes the current
        # position, so the arm may come back but not go further out.
        box_low, box_high = workspace_box(self.settings)
        low = np.minimum(box_low, position)
        high = np.maximum(box_high, position)
        bounded = np.clip(target, low, high)
        for axis, name in enumerate("xyz"):
            if bounded[axis] != target[axis]:
                linear[axis] = (bounded[axis] - position[axis]) / horizon
                clipped.append(f"workspace_{name}")

        if gripper is not None:
            wanted = float(np.clip(gripper, -1.0, 1.0))
            if previous_gripper is not None:
                step = bounded_limit(self.settings, "max_gripper_step")
                limited = float(np.clip(wanted, previous_gripper - step, previous_gripper + step))
                if limited != wanted:
                    clipped.append("gripper_step")
                wanted = limited
            gripper = wanted
        return SafeCommand(linear, angular, gripper, tuple(clipped))

    def pose_target(self, position: np.ndarray, linear: np.ndarray, period_s: float) -> np.ndarray:
        """For pose-target control: the next position target one period ahead, inside the box."""
        position = np.asarray(position, dtype=np.float64)
        target = position + np.asarray(linear) * period_s
        box_low, box_high = workspace_box(self.settings)
        low = np.minimum(box_low, position)
        high = np.maximum(box_high, position)
        return np.clip(target, low, high)
