"""Schemas of ``jepa-robot sim-bridge``, ``record-ros`` and ``run-robot``."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from envs.metaworld.tasks import CAMERA_NAMES, EVAL_SEED_START, TASKS
from envs.ros.access import DEFAULT_MAX_MESSAGE_BYTES, check_origin_patterns
from envs.ros.config import RosArmConfig as RobotConfig
from jepa_robot.config import ConfigError
from jepa_robot.config.planning import AgentConfig, PlannerSettings

ROS_ACTION_SOURCES = ("command", "measured")


@dataclass
class SimBridgeConfig:
    """``jepa-robot sim-bridge``: a rosbridge v2 server backed by a Meta-World env."""

    robot: RobotConfig = MISSING
    """Topics, rate and gripper mapping to serve (config group ``robot``, normally ``sim``)."""
    task: str = "reach"
    """Meta-World task: ``reach``, ``push`` or ``pick-place``."""
    image_size: int = 64
    """Side of the rendered camera images, pixels; clients resize to ``robot.image_size``."""
    host: str = "127.0.0.1"
    """Interface to listen on (127.0.0.1: this machine only; 0.0.0.0: the network)."""
    port: int = 9090
    """TCP port; 0 picks a free one (printed on start)."""
    lockstep: bool = False
    """One env step per received command instead of stepping on the clock (repeatable tests)."""
    command_timeout_s: float = 0.5
    """A command older than this (or whose sender disconnected) stops the arm."""
    image_format: str = "png"
    """Compressed image format: ``png`` (lossless, as sim data) or ``jpeg``."""
    seed: int = 0
    """Scene seed before the first reset call."""
    goal_root: str = "runs/sim-bridge/goals"
    """The one directory the reset service writes goal images under; a client's
    ``goal_dir`` is a name or relative path inside it (absolute paths, ``..`` refused)."""
    token: str | None = field(default=None, repr=False)
    """Shared token every client must present (``robot.token`` on the client side);
    null: ``$JEPA_ROBOT_BRIDGE_TOKEN`` if set, else no token (fine on 127.0.0.1 only)."""
    allowed_origins: list[str] = field(default_factory=list)
    """Browser origins accepted besides this machine's pages (``scheme://host:port``,
    ``*`` wildcards); clients without an Origin header (roslibpy, ROS) are always accepted."""
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    """Largest websocket message accepted (and sent); a larger one closes its connection."""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task={self.task!r}; valid: {sorted(TASKS)}")
        if not 16 <= self.image_size <= 512:
            raise ConfigError(f"image_size={self.image_size} must be in [16, 512]")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port={self.port} must be a TCP port (0: pick a free one)")
        if self.command_timeout_s <= 0:
            raise ConfigError(f"command_timeout_s={self.command_timeout_s} must be > 0")
        if self.image_format not in ("png", "jpeg"):
            raise ConfigError(f"image_format={self.image_format!r} must be png or jpeg")
        bad = [camera.name for camera in self.robot.cameras if camera.name not in CAMERA_NAMES]
        if bad:
            raise ConfigError(f"robot.cameras {bad}: the sim bridge renders only {list(CAMERA_NAMES)}")
        if not self.goal_root:
            raise ConfigError("goal_root must name a directory for the reset service's goal images")
        largest_image = 4 * self.image_size**2 + 4096  # base64 of rgb8 (or a PNG no larger), plus the header
        if self.max_message_bytes < largest_image:
            raise ConfigError(f"max_message_bytes={self.max_message_bytes} is below the bridge's own image "
                              f"messages at image_size={self.image_size} (up to {largest_image} bytes)")
        try:
            check_origin_patterns(self.allowed_origins)
        except ValueError as error:
            raise ConfigError(str(error)) from error


@dataclass
class RecordRosConfig:
    """``jepa-robot record-ros``: record teleoperated episodes from ROS topics into a LeRobot dataset."""

    robot: RobotConfig = MISSING
    """The arm's topics, rate (the dataset's fps) and action/state layouts (config group ``robot``)."""
    root: str = MISSING
    """Dataset directory (created, or resumed if it holds a dataset with the same features)."""
    repo_id: str = MISSING
    """LeRobot repo id stored in the dataset (``user/name``)."""
    task: str = "teleop"
    """Task string stored with every frame."""
    episodes: int = 10
    """Episodes wanted, seeds ``seed_start ...``; seeds already recorded are skipped."""
    episode_steps: int = 100
    """Frames per episode, taken at ``robot.rate_hz``."""
    seed_start: int = 0
    """First episode seed (stored as ``episode_seed``, passed to the reset service); below 100000."""
    action_source: str = "command"
    """``command``: the teleoperation commands seen on the command topic; ``measured``: the pose change."""
    reset: bool = True
    """Call ``robot.reset_service`` with the seed before each episode, when the robot has one."""
    goal_dir: str | None = None
    """With a reset service: directory where it writes each seed's goal images (the sim
    bridge's: a name or relative path inside its ``goal_root``)."""
    video_codec: str = "h264"
    """Codec of the dataset's videos: ``h264``, ``hevc`` or ``libsvtav1``."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        if self.episodes < 1 or self.episode_steps < 1:
            raise ConfigError(f"episodes={self.episodes} and episode_steps={self.episode_steps} must be >= 1")
        if self.seed_start < 0 or self.seed_start + self.episodes > EVAL_SEED_START:
            raise ConfigError(
                f"seed_start={self.seed_start}, episodes={self.episodes}: seeds must lie in "
                f"[0, {EVAL_SEED_START}); seeds from {EVAL_SEED_START} are reserved for evaluation"
            )
        if self.action_source not in ROS_ACTION_SOURCES:
            raise ConfigError(f"action_source={self.action_source!r}; valid: {list(ROS_ACTION_SOURCES)}")
        if self.video_codec not in ("h264", "hevc", "libsvtav1"):
            raise ConfigError(f"video_codec={self.video_codec!r} must be h264, hevc or libsvtav1")
        if abs(self.robot.rate_hz - round(self.robot.rate_hz)) > 1e-9:
            raise ConfigError(f"robot.rate_hz={self.robot.rate_hz} must be a whole number (it is the dataset's fps)")


@dataclass
class RunRobotConfig:
    """``jepa-robot run-robot``: the MPC agent on an arm behind rosbridge."""

    checkpoint: str = MISSING
    """World-model checkpoint directory, or a built-in name (``default``)."""
    robot: RobotConfig = MISSING
    """Topics, rate, action layout and safety limits (config group ``robot``)."""
    planner: PlannerSettings = field(default_factory=PlannerSettings)
    agent: AgentConfig = field(default_factory=AgentConfig)
    planning_source: dict[str, str] = field(default_factory=dict)
    """Where ``planner`` and ``agent`` came from (the checkpoint's planning.json, a config
    group, dotted overrides): noted when the config is composed, not an input."""
    goal: list[str] = field(default_factory=list)
    """Goal image file(s), sub-goals first; a model over several cameras takes each goal's
    views in its camera order. Empty: the goal images the robot's reset service writes for
    ``seed`` (the sim bridge does)."""
    goal_dir: str = "runs/run-robot/goals"
    """Where the reset service is asked to write goal images when ``goal`` is empty (the
    sim bridge's: a name or relative path inside its ``goal_root``)."""
    seed: int | None = None
    """Passed to the reset service (the sim bridge's scene); null for a real arm."""
    steps: int = 100
    """Control steps to run; every one is a bounded command."""
    dry_run: bool | None = None
    """Log commands instead of sending them; null: the robot config's ``dry_run``."""

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"steps={self.steps} must be >= 1")


# --- V-JEPA 2-AC import
