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

The filter is pure (numpy only) so the rules are unit-tested without a robot.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class RobotSafetyStop(RuntimeError):
    """The arm was stopped (a zero command sent) because a safety check failed:
    stale camera or state, or a fault latched by the watchdog."""


class RobotConnectionError(ConnectionError):
    """The rosbridge connection could not be opened, or was lost."""


@dataclass
class SafetySettings:
    """Limits on what an arm may be commanded to do (``robot.safety.*``)."""

    workspace_low: list[float] = field(default_factory=lambda: [-0.5, 0.4, 0.05])
    """Lower corner (x, y, z) of the box the end effector must stay in, metres, in the
    frame of the pose topic."""
    workspace_high: list[float] = field(default_factory=lambda: [0.5, 1.0, 0.5])
    """Upper corner (x, y, z) of that box, metres."""
    max_linear_speed: float = 0.1
    """Largest end-effector speed sent, m/s (the norm of the linear velocity)."""
    max_angular_speed: float = 0.5
    """Largest end-effector angular speed sent, rad/s (the norm of the angular velocity)."""
    max_gripper_step: float = 2.0
    """Largest change of the gripper command per step, in action units (range [-1, 1])."""
    max_observation_age_s: float = 0.5
    """A camera image or state older than this stops the arm (``RobotSafetyStop``)."""
    command_timeout_s: float = 0.5
    """A command not followed by another within this long is replaced by a zero command;
    also the horizon of the workspace check. Must be at least one control period."""

    def __post_init__(self) -> None:
        for name in ("workspace_low", "workspace_high"):
            values = list(getattr(self, name))
            if len(values) != 3 or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in values):
                raise ValueError(f"robot.safety.{name}={values} must be three finite numbers (x, y, z)")
        if any(lo >= hi for lo, hi in zip(self.workspace_low, self.workspace_high, strict=True)):
            raise ValueError(
                f"robot.safety.workspace_low={list(self.workspace_low)} must be below "
                f"workspace_high={list(self.workspace_high)} on every axis"
            )
        for name in ("max_linear_speed", "max_angular_speed", "max_gripper_step",
                     "max_observation_age_s", "command_timeout_s"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"robot.safety.{name}={value} must be > 0")


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
    """Applies ``SafetySettings`` to requested commands (see the module docstring)."""

    def __init__(self, settings: SafetySettings, horizon_s: float | None = None) -> None:
        self.settings = settings
        self.horizon_s = float(horizon_s if horizon_s is not None else settings.command_timeout_s)
        self.low = np.asarray(settings.workspace_low, dtype=np.float64)
        self.high = np.asarray(settings.workspace_high, dtype=np.float64)

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

        speed = float(np.linalg.norm(linear))
        if speed > self.settings.max_linear_speed:
            linear *= self.settings.max_linear_speed / speed
            clipped.append("linear_speed")
        turn = float(np.linalg.norm(angular))
        if turn > self.settings.max_angular_speed:
            angular *= self.settings.max_angular_speed / turn
            clipped.append("angular_speed")

        position = np.asarray(position, dtype=np.float64)
        target = position + linear * self.horizon_s
        # Outside the box on an axis: the bound on that side becomes the current
        # position, so the arm may come back but not go further out.
        low = np.minimum(self.low, position)
        high = np.maximum(self.high, position)
        bounded = np.clip(target, low, high)
        for axis, name in enumerate("xyz"):
            if bounded[axis] != target[axis]:
                linear[axis] = (bounded[axis] - position[axis]) / self.horizon_s
                clipped.append(f"workspace_{name}")

        if gripper is not None:
            wanted = float(np.clip(gripper, -1.0, 1.0))
            if previous_gripper is not None:
                step = self.settings.max_gripper_step
                limited = float(np.clip(wanted, previous_gripper - step, previous_gripper + step))
                if limited != wanted:
                    clipped.append("gripper_step")
                wanted = limited
            gripper = wanted
        return SafeCommand(linear, angular, gripper, tuple(clipped))

    def pose_target(self, position: np.ndarray, linear: np.ndarray, period_s: float) -> np.ndarray:
        """For pose-target control: the next position target one period ahead, inside the box."""
        target = np.asarray(position, dtype=np.float64) + np.asarray(linear) * period_s
        low = np.minimum(self.low, position)
        high = np.maximum(self.high, position)
        return np.clip(target, low, high)
