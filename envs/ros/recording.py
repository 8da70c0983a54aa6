"""``jepa-robot record-ros``: record teleoperated episodes from ROS topics into a LeRobot v3 dataset.

The recorder is passive: it subscribes (over rosbridge) to the cameras, the pose,
the gripper joints and the commands someone else sends (a teleoperation tool, a
spacemouse node, a script), and never publishes a command. Frames are taken on the
robot config's clock (``rate_hz``, which becomes the dataset's fps).

The dataset has the keys, dtypes and names of ``jepa-robot collect`` data
(``envs.recording.dataset_features``): ``observation.images.<camera>``,
``observation.state`` and ``action`` (float32, named by the robot config's layouts;
the ``metaworld4`` / ``position_gripper`` layouts give exactly the sim names),
``next.success``, ``episode_seed``, ``task``. So it trains world models directly.

The action stored with frame t is what moved the arm from frame t to frame t+1,
in action units (the inverse of ``RosArmEnv``'s scaling, clipped to [-1, 1]):

- ``action_source: command``: the newest command seen on the command topic by the
  time of frame t+1 (zero if none arrived within ``safety.command_timeout_s``:
  the arm was holding still);
- ``action_source: measured``: the end-effector motion between the two frames
  (velocity = pose difference x rate), which is the twist actually applied.

The gripper dimension is the newest command on the gripper topic (topic mode), or,
with an action-server gripper whose goals cannot be observed, read from the gripper
state (assumed normalised as in Meta-World: 1 open, 0 closed).

Episodes are ``episode_steps`` frames long. Between episodes the robot's reset
service is called with the episode seed when there is one (the sim bridge has),
else recording just goes on. The dataset handling (create or resume, skip recorded
seeds, save, finalise) is ``envs.recording.record_seeds``, the loop ``jepa-robot
collect`` uses too; this module only records one episode from the robot. Ctrl-C or
SIGTERM drops the half-recorded episode and finalises a loadable dataset; a stale
sensor or a lost connection ends the recording the same way, with the error raised
afterwards.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from envs.recording import (
    ACTION_KEY,
    STATE_KEY,
    Frame,
    RecordingSummary,
    dataset_features,
    make_frame,
    record_seeds,
    training_seeds,
)
from envs.ros.config import RosArmConfig
from envs.ros.link import RosArmLink
from envs.ros.messages import quaternion_conjugate, quaternion_multiply, quaternion_to_rotation_vector
from envs.ros.safety import RobotConnectionError, RobotSafetyStop

log = logging.getLogger(__name__)

ACTION_SOURCES = ("command", "measured")


def ros_dataset_features(config: RosArmConfig) -> dict[str, dict]:
    """LeRobot features of a ROS recording: ``collect``'s, with the robot's layouts."""
    features = dataset_features(SimpleNamespace(image_size=config.image_size, cameras=[c.name for c in config.cameras]))
    features[STATE_KEY] = {"dtype": "float32", "shape": (len(config.state_names),), "names": config.state_names}
    features[ACTION_KEY] = {"dtype": "float32", "shape": (len(config.action_names),), "names": config.action_names}
    return features


class _ActionReader:
    """Turns what the link saw between two frames into an action in action units."""

    def __init__(self, config: RosArmConfig, link: RosArmLink, source: str) -> None:
        self.config = config
        self.link = link
        self.source = source
        self.scale = np.asarray(config.action_scale, dtype=np.float64)
        self.motion_dims = len(config.action_names) - 1

    def action(self, before: tuple[np.ndarray, np.ndarray], after: tuple[np.ndarray, np.ndarray],
               state_after: np.ndarray, now: float) -> np.ndarray:
        velocity = np.zeros(6)
        if self.source == "command":
            command, received = self.link.value("command")
            if command is not None and now - received <= self.config.safety.command_timeout_s:
                linear, angular = command
                velocity = np.concatenate([linear, angular])
        else:
            (p0, q0), (p1, q1) = before, after
            rotation = quaternion_to_rotation_vector(quaternion_multiply(q1, quaternion_conjugate(q0)))
            velocity = np.concatenate([p1 - p0, rotation]) * self.config.rate_hz
        motion = np.clip(velocity[: self.motion_dims] / self.scale, -1.0, 1.0)
        return np.append(motion, self._gripper(state_after)).astype(np.float32)

    def _gripper(self, state: np.ndarray) -> float:
        gripper = self.config.gripper
        if gripper.mode == "topic":
            value, _ = self.link.value("gripper_command")
            if value is not None:
                return gripper.action_value(value)
        return float(np.clip(1.0 - 2.0 * state[-1], -1.0, 1.0))


def record_ros(
    config: RosArmConfig,
    root: str | Path,
    repo_id: str,
    episodes: int,
    episode_steps: int,
    task: str,
    seed_start: int = 0,
    action_source: str = "command",
    video_codec: str = "h264",
    reset: bool = True,
    goal_dir: str | None = None,
    progress: bool = True,
) -> RecordingSummary:
    """Record ``episodes`` teleoperated episodes of ``episode_steps`` frames into ``root``.

    Episode i gets seed ``seed_start + i`` (stored as ``episode_seed`` and passed to
    the reset service); seeds already in the dataset are skipped, so rerunning
    resumes. With ``goal_dir`` the reset service also writes each seed's goal images.
    """
    seeds = training_seeds(seed_start, episodes)
    if episode_steps < 1:
        raise ValueError(f"episode_steps must be >= 1, got {episode_steps}")
    if action_source not in ACTION_SOURCES:
        raise ValueError(f"action_source={action_source!r}; valid: {list(ACTION_SOURCES)}")
    if action_source == "command" and config.command_mode != "twist":
        raise ValueError("action_source=command needs robot.command_mode=twist (pose targets are not velocities); "
                         "use action_source=measured")
    fps = int(round(config.rate_hz))
    if abs(fps - config.rate_hz) > 1e-9:
        raise ValueError(f"robot.rate_hz={config.rate_hz} must be a whole number of frames per second to record")

    link = RosArmLink(config, observe_commands=True)
    try:
        reader = _ActionReader(config, link, action_source)

        def record_one(seed: int, add_frame: Callable[[Frame], None]) -> tuple[int, bool]:
            success = _record_episode(link, reader, add_frame, config, seed, episode_steps, task, reset, goal_dir)
            return episode_steps, success

        return record_seeds(
            root, repo_id, ros_dataset_features(config), fps, config.robot_type, seeds, record_one,
            video_codec=video_codec, description=f"record-ros {task}", progress=progress,
            stop_errors=(RobotSafetyStop, RobotConnectionError),
        )
    finally:
        link.close()


def _record_episode(
    link: RosArmLink, reader: _ActionReader, add_frame: Callable[[Frame], None], config: RosArmConfig,
    seed: int, episode_steps: int, task: str, reset: bool, goal_dir: str | None,
) -> bool:
    """Record one episode of ``episode_steps`` frames through ``add_frame``, on the rate
    clock; returns its last success flag. Raises ``RobotSafetyStop`` on stale sensor data
    and ``RobotConnectionError`` when the link is lost."""
    if reset:
        link.reset(seed, goal_dir)
    else:
        link.wait_fresh(time.monotonic(), link.stamps(), timeout=config.connect_timeout_s)
    log.info("episode seed %d: recording %d frames at %s Hz", seed, episode_steps, config.rate_hz)
    max_age = config.safety.max_observation_age_s
    previous = None
    success = False
    recorded = 0
    tick = time.monotonic()
    while recorded < episode_steps:
        tick += config.period_s
        delay = tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -config.period_s:  # fell behind (busy CPU): re-anchor rather than burst
            tick = time.monotonic()
        if link.connection_error is not None:
            raise RobotConnectionError(str(link.connection_error))
        stale = link.stale(max_age)
        if stale:
            raise RobotSafetyStop(f"sensor data too old to record: {'; '.join(stale)}")
        observation, position, quaternion = link.observation()
        now = time.monotonic()
        if previous is not None:
            before_observation, before_pose = previous
            action = reader.action(before_pose, (position, quaternion), observation["state"], now)
            success_value, _ = link.value("success") if "success" in link.latest else (False, 0.0)
            success = bool(success_value)
            add_frame(make_frame(before_observation["images"], before_observation["state"], action, success,
                                 seed, task))
            recorded += 1
        previous = (observation, (position, quaternion))
    return success
