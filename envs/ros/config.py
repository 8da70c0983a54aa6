"""Configuration of an arm behind rosbridge (the ``robot`` config group).

``RosArmConfig`` is both what ``RosArmEnv`` takes and the Hydra schema of
``configs/robot/*.yaml``: one dataclass, a docstring per field, checks in
``__post_init__`` that name the key. See ``envs.ros.arm`` for what the fields mean
on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from envs.metaworld.tasks import ACTION_NAMES, STATE_NAMES
from envs.ros.messages import IMAGE_TYPES, normalise_type
from envs.ros.safety import SAFETY_KEYS, SafetySettings

# Action layouts: dimension names, last one the gripper.
ACTION_LAYOUTS: dict[str, list[str]] = {
    "metaworld4": list(ACTION_NAMES),
    "droid7": ["delta_x", "delta_y", "delta_z", "delta_roll", "delta_pitch", "delta_yaw", "gripper"],
}
# State layouts: what the state vector holds.
STATE_LAYOUTS: dict[str, list[str]] = {
    "position_gripper": list(STATE_NAMES),
    "pose_gripper": ["hand_x", "hand_y", "hand_z", "hand_roll", "hand_pitch", "hand_yaw", "gripper"],
}
GRIPPER_MODES = ("none", "topic", "action")
GRIPPER_TOPIC_TYPES = ("std_msgs/Float64", "std_msgs/Float32")
GRIPPER_ACTION_TYPE = "control_msgs/action/GripperCommand"
TRANSPORTS = ("asyncio", "twisted")
RESET_SERVICE_TYPE = "jepa_robot/ResetEpisode"

@dataclass
class CameraTopic:
    """One camera (``robot.cameras[i]``)."""

    name: str = "oblique"
    """Observation key; recorded as ``observation.images.<name>``."""
    topic: str = "/camera/image_raw/compressed"
    """The image topic."""
    message_type: str = "sensor_msgs/CompressedImage"
    """``sensor_msgs/CompressedImage`` (jpeg, png) or ``sensor_msgs/Image`` (rgb8, bgr8 ...)."""

    def __post_init__(self) -> None:
        if not self.name or not self.topic:
            raise ValueError(f"robot.cameras: every camera needs a name and a topic, got {self!r}")
        if normalise_type(self.message_type) not in IMAGE_TYPES:
            raise ValueError(f"robot.cameras[{self.name}].message_type={self.message_type!r}; valid: {list(IMAGE_TYPES)}")


@dataclass
class GripperSettings:
    """How the gripper is commanded and read (``robot.gripper.*``)."""

    mode: str = "topic"
    """``topic`` (a Float64 command topic), ``action`` (control_msgs/GripperCommand) or ``none``."""
    command: str = "/gripper/command"
    """The command topic (topic mode) or action name (action mode)."""
    message_type: str = "std_msgs/Float64"
    """std_msgs/Float64 or Float32 (topic mode); control_msgs/action/GripperCommand (action mode)."""
    open_position: float = -1.0
    """Command value sent for gripper action -1 (open)."""
    closed_position: float = 1.0
    """Command value sent for gripper action +1 (closed); values in between map linearly."""
    max_effort: float = 20.0
    """GripperCommand max_effort (N), action mode only."""
    deadband: float = 0.05
    """Action mode: a new goal is sent only when the command moved more than this (action units)."""
    state_joints: list[str] = field(default_factory=list)
    """JointState names whose positions, summed, give the gripper state; empty: state 0."""
    state_scale: float = 1.0
    """Gripper state = state_offset + state_scale * sum(joint positions)."""
    state_offset: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in GRIPPER_MODES:
            raise ValueError(f"robot.gripper.mode={self.mode!r}; valid: {list(GRIPPER_MODES)}")
        if self.mode == "topic" and normalise_type(self.message_type) not in GRIPPER_TOPIC_TYPES:
            raise ValueError(
                f"robot.gripper.message_type={self.message_type!r} must be one of {list(GRIPPER_TOPIC_TYPES)} "
                "in topic mode"
            )
        if self.mode == "action" and self.message_type.replace("/action/", "/") != GRIPPER_ACTION_TYPE.replace("/action/", "/"):
            raise ValueError(f"robot.gripper.message_type={self.message_type!r} must be {GRIPPER_ACTION_TYPE} in action mode")
        if self.mode != "none" and not self.command:
            raise ValueError("robot.gripper.command must name a topic or action")
        if self.open_position == self.closed_position and self.mode != "none":
            raise ValueError("robot.gripper.open_position and closed_position must differ")
        if self.deadband < 0:
            raise ValueError(f"robot.gripper.deadband={self.deadband} must be >= 0")

    def command_value(self, action: float) -> float:
        """Gripper action in [-1, 1] -> the value sent."""
        return self.open_position + (float(action) + 1.0) / 2.0 * (self.closed_position - self.open_position)

    def action_value(self, command: float) -> float:
        """The inverse of ``command_value``, clipped to [-1, 1]."""
        fraction = (float(command) - self.open_position) / (self.closed_position - self.open_position)
        return float(np.clip(2.0 * fraction - 1.0, -1.0, 1.0))


@dataclass
class RosArmConfig:
    """An arm behind rosbridge (config group ``robot``); see the module docstring."""

    host: str = "localhost"
    """rosbridge host."""
    port: int = 9090
    """rosbridge port (rosbridge_server's default is 9090)."""
    token: str | None = field(default=None, repr=False)
    """Shared token for a bridge that asks for one (``jepa-robot sim-bridge token=...``), sent as
    ``Authorization: Bearer``; null: ``$JEPA_ROBOT_BRIDGE_TOKEN`` if set, else none."""
    transport: str = "asyncio"
    """roslibpy transport: ``asyncio`` (can reconnect in one process) or ``twisted``."""
    connect_timeout_s: float = 10.0
    """How long to wait for the connection, and for the first observation after reset."""
    rate_hz: float = 10.0
    """Control rate: new commands go out at most this often; one step lasts 1 / rate_hz."""
    command_repeat_hz: float = 0.0
    """Re-send the current command this often as a keep-alive (0: never)."""
    image_size: int = 64
    """Side of the square observation images, pixels."""
    crop: str = "center"
    """``center``: crop camera images to a square before resizing; ``none``: stretch."""
    cameras: list[CameraTopic] = field(default_factory=lambda: [CameraTopic()])
    """The cameras; the first is the primary one."""
    pose_topic: str = "/ee_pose"
    """geometry_msgs/PoseStamped end-effector pose."""
    joint_state_topic: str | None = "/joint_states"
    """sensor_msgs/JointState with the gripper joints; null if gripper.state_joints is empty."""
    state_layout: str = "position_gripper"
    """``position_gripper`` (x, y, z, gripper) or ``pose_gripper`` (x, y, z, roll, pitch, yaw, gripper)."""
    action_layout: str = "metaworld4"
    """``metaworld4`` (dx, dy, dz, gripper) or ``droid7`` (dx, dy, dz, droll, dpitch, dyaw, gripper)."""
    action_scale: list[float] = field(default_factory=lambda: [0.05, 0.05, 0.05])
    """Velocity per action unit for each non-gripper dimension: m/s (x, y, z), rad/s (roll, pitch, yaw)."""
    command_mode: str = "twist"
    """``twist``: TwistStamped velocities; ``pose``: PoseStamped targets one period ahead."""
    command_topic: str = "/servo_node/delta_twist_cmds"
    """Where commands go."""
    command_frame: str = "world"
    """frame_id of the commands (MoveIt Servo: the planning frame or the end-effector frame)."""
    gripper: GripperSettings = field(default_factory=GripperSettings)
    safety: SafetySettings | None = None
    """The arm's limits (``envs.ros.safety``). Required: there is no default box or speed,
    every robot config states its own (null is refused with the keys to set)."""
    success_topic: str | None = None
    """std_msgs/Bool success flag reported in info["success"] (the sim bridge has one)."""
    reset_service: str | None = None
    """jepa_robot/ResetEpisode service called by reset() (the sim bridge has one); null: none."""
    step_budget: int | None = None
    """Steps after which step() reports truncated; null: never."""
    ros_version: int = 2
    """Header stamp format of outgoing messages: 2 (sec, nanosec) or 1 (secs, nsecs)."""
    robot_type: str = "ros_arm"
    """Stored as the robot type of recorded datasets."""
    dry_run: bool = False
    """Observe as usual but send nothing; log each command instead."""
    handle_signals: bool = True
    """Send a zero twist on SIGINT/SIGTERM (main thread only), then run the previous handler."""

    def __post_init__(self) -> None:
        checks = [
            (self.transport in TRANSPORTS, f"robot.transport={self.transport!r}; valid: {list(TRANSPORTS)}"),
            (1 <= self.port <= 65535 or self.port == 0, f"robot.port={self.port} must be a TCP port"),
            (self.connect_timeout_s > 0, f"robot.connect_timeout_s={self.connect_timeout_s} must be > 0"),
            (0 < self.rate_hz <= 1000, f"robot.rate_hz={self.rate_hz} must be in (0, 1000]"),
            (self.command_repeat_hz >= 0, f"robot.command_repeat_hz={self.command_repeat_hz} must be >= 0"),
            (16 <= self.image_size <= 1024, f"robot.image_size={self.image_size} must be in [16, 1024]"),
            (self.crop in ("center", "none"), f"robot.crop={self.crop!r} must be center or none"),
            (bool(self.cameras), "robot.cameras must name at least one camera"),
            (bool(self.pose_topic), "robot.pose_topic must name the end-effector pose topic"),
            (self.state_layout in STATE_LAYOUTS, f"robot.state_layout={self.state_layout!r}; valid: {sorted(STATE_LAYOUTS)}"),
            (self.action_layout in ACTION_LAYOUTS, f"robot.action_layout={self.action_layout!r}; valid: {sorted(ACTION_LAYOUTS)}"),
            (self.command_mode in ("twist", "pose"), f"robot.command_mode={self.command_mode!r} must be twist or pose"),
            (bool(self.command_topic), "robot.command_topic must name a topic"),
            (self.ros_version in (1, 2), f"robot.ros_version={self.ros_version} must be 1 or 2"),
            (self.step_budget is None or self.step_budget >= 1, f"robot.step_budget={self.step_budget} must be >= 1 or null"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        names = [camera.name for camera in self.cameras]
        if len(set(names)) != len(names):
            raise ValueError(f"robot.cameras: names must be unique, got {names}")
        motion_dims = len(ACTION_LAYOUTS[self.action_layout]) - 1
        scale = list(self.action_scale)
        if len(scale) != motion_dims or not all(isinstance(s, (int, float)) and s > 0 for s in scale):
            raise ValueError(
                f"robot.action_scale={scale} must hold {motion_dims} positive numbers for the "
                f"{self.action_layout} layout (m/s for x, y, z; rad/s for roll, pitch, yaw)"
            )
        if self.gripper.state_joints and not self.joint_state_topic:
            raise ValueError("robot.joint_state_topic must be set when robot.gripper.state_joints is not empty")
        if self.safety is None:
            raise ValueError(
                "robot.safety is not set: a robot config must state its own limits; set "
                + ", ".join(f"robot.safety.{key}" for key in SAFETY_KEYS)
                + " (measure the box in the pose topic's frame; see docs/robot.md)"
            )
        if self.safety.command_timeout_s < 1.0 / self.rate_hz:
            raise ValueError(
                f"robot.safety.command_timeout_s={self.safety.command_timeout_s} must be at least one "
                f"control period (1 / rate_hz = {1.0 / self.rate_hz:.3f} s)"
            )

    @property
    def period_s(self) -> float:
        return 1.0 / self.rate_hz

    @property
    def action_names(self) -> list[str]:
        return list(ACTION_LAYOUTS[self.action_layout])

    @property
    def state_names(self) -> list[str]:
        return list(STATE_LAYOUTS[self.state_layout])

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"
