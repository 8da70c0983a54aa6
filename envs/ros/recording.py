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
else recording just goes on. Ctrl-C or SIGTERM drops the half-recorded episode and
finalises a loadable dataset, as ``envs.recording`` does; a stale sensor or a lost
connection ends the recording the same way, with the error raised afterwards.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from envs.media import quiet_ffmpeg
from envs.metaworld.env import EVAL_SEED_START
from envs.recording import (
    ACTION_KEY,
    IMAGE_KEY_PREFIX,
    SEED_KEY,
    STATE_KEY,
    SUCCESS_KEY,
    DatasetMismatchError,
    RecordingSummary,
    _signals_as_interrupt,
    check_features_match,
    dataset_features,
    existing_episode_seeds,
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


def _open_dataset(config: RosArmConfig, root: Path, repo_id: str, fps: int, video_codec: str):
    """Create the dataset at ``root``, or resume one with the same features and fps.
    Returns ``(dataset, seeds already recorded)``."""
    from lerobot.configs.video import RGBEncoderConfig
    from lerobot.datasets.dataset_metadata import LeRobotDatasetMetadata
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    # The encoder settings of envs.recording (H.264 yuv444p CRF 10: small frames stay sharp).
    if video_codec == "h264":
        encoder = RGBEncoderConfig(vcodec="h264", pix_fmt="yuv444p", crf=10, preset="veryfast")
    else:
        encoder = RGBEncoderConfig(vcodec=video_codec)
    features = ros_dataset_features(config)
    if (root / "meta" / "info.json").exists():
        try:
            meta = LeRobotDatasetMetadata(repo_id, root=root)
        except Exception as error:  # noqa: BLE001 - any failure here means unreadable
            raise DatasetMismatchError(f"the dataset at {root} cannot be read: {error}") from error
        check_features_match(meta.features, features, root)
        if meta.fps != fps:
            raise DatasetMismatchError(f"the dataset at {root} has fps {meta.fps}, this robot config {fps}")
        done = existing_episode_seeds(repo_id, root)
        dataset = LeRobotDataset.resume(repo_id, root=root, video_backend="pyav", rgb_encoder=encoder)
        return dataset, done
    if root.exists() and any(root.iterdir()):
        raise DatasetMismatchError(
            f"{root} exists and is not a LeRobot dataset (no meta/info.json); choose an empty or new output root"
        )
    dataset = LeRobotDataset.create(
        repo_id=repo_id, fps=fps, features=features, root=root, robot_type=config.robot_type,
        use_videos=True, video_backend="pyav", rgb_encoder=encoder,
    )
    return dataset, set()


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
    if episodes < 1 or episode_steps < 1:
        raise ValueError(f"episodes={episodes} and episode_steps={episode_steps} must be >= 1")
    if seed_start < 0 or seed_start + episodes > EVAL_SEED_START:
        raise ValueError(
            f"seeds {seed_start}..{seed_start + episodes - 1} must lie in [0, {EVAL_SEED_START}) "
            "(seeds from 100000 are reserved for evaluation)"
        )
    if action_source not in ACTION_SOURCES:
        raise ValueError(f"action_source={action_source!r}; valid: {list(ACTION_SOURCES)}")
    if action_source == "command" and config.command_mode != "twist":
        raise ValueError("action_source=command needs robot.command_mode=twist (pose targets are not velocities); "
                         "use action_source=measured")
    fps = int(round(config.rate_hz))
    if abs(fps - config.rate_hz) > 1e-9:
        raise ValueError(f"robot.rate_hz={config.rate_hz} must be a whole number of frames per second to record")

    import datasets

    quiet_ffmpeg()
    datasets.disable_progress_bars()
    root = Path(root)
    link = RosArmLink(config, observe_commands=True)
    summary = RecordingSummary(root=root, repo_id=repo_id)
    error: BaseException | None = None
    try:
        dataset, done = _open_dataset(config, root, repo_id, fps, video_codec)
    except BaseException:
        link.close()
        raise
    reader = _ActionReader(config, link, action_source)
    seeds = [s for s in range(seed_start, seed_start + episodes) if s not in done]
    summary.skipped_seeds = sorted(done.intersection(range(seed_start, seed_start + episodes)))
    start = time.perf_counter()
    bar = tqdm(total=len(seeds), desc=f"record-ros {task}", unit="ep", disable=not progress)
    try:
        with _signals_as_interrupt():
            for seed in seeds:
                try:
                    successes = _record_episode(link, reader, dataset, config, seed, episode_steps, task,
                                                reset, goal_dir)
                    dataset.save_episode()
                except BaseException:
                    dataset.clear_episode_buffer()
                    raise
                summary.recorded_seeds.append(seed)
                summary.frames += episode_steps
                summary.successes += int(successes)
                bar.update(1)
    except KeyboardInterrupt:
        summary.interrupted = True
        log.warning("interrupted: finalising %s with the episodes saved so far", root)
    except (RobotSafetyStop, RobotConnectionError) as failure:
        summary.interrupted = True
        error = failure
        log.error("recording stopped: %s; finalising %s with the episodes saved so far", failure, root)
    finally:
        bar.close()
        dataset.finalize()
        link.close()
        summary.seconds = time.perf_counter() - start
        summary.total_episodes = len(done) + summary.episodes
    if error is not None:
        raise error
    return summary


def _record_episode(
    link: RosArmLink, reader: _ActionReader, dataset: Any, config: RosArmConfig, seed: int,
    episode_steps: int, task: str, reset: bool, goal_dir: str | None,
) -> bool:
    """Record one episode into the dataset's episode buffer; returns its last success flag."""
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
            frame = {f"{IMAGE_KEY_PREFIX}{name}": image for name, image in before_observation["images"].items()}
            frame[STATE_KEY] = before_observation["state"]
            frame[ACTION_KEY] = action
            frame[SUCCESS_KEY] = np.array([success], dtype=bool)
            frame[SEED_KEY] = np.array([seed], dtype=np.int64)
            frame["task"] = task
            dataset.add_frame(frame)
            recorded += 1
        previous = (observation, (position, quaternion))
    return success
