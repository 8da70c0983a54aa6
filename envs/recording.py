"""Record goal-image task episodes into a LeRobot v3 dataset (through ``lerobot``).

Keys follow LeRobot's conventions (docs/architecture.md): ``observation.images.<camera>``
(video), ``observation.state`` and ``action`` (float32 with per-dimension names),
``next.success``, ``task``, plus ``episode_seed`` so every episode can be replayed.
Simulated recordings also carry ``observation.environment_state``, the object's xyz: a
label for fitting state readouts on the latents (``jepa-robot fit-readout``); no world
model or planner input reads it.

``record_seeds`` is the recorder loop shared by the simulator (``record_episodes``
here: a scripted expert in Meta-World) and a real arm (``envs.ros.recording``: a
teleoperated robot over rosbridge); each supplies only how to record one episode.

Episode seeds are ``seed_start, seed_start + 1, ...`` and must stay below
``EVAL_SEED_START`` (100000): evaluation seeds never appear in training data. Seeds
already in the dataset are skipped, so rerunning the same command resumes an
interrupted recording, and raising ``episodes`` appends more.

Ctrl-C or SIGTERM drops the half-recorded episode and finalises the dataset, which
then loads with every episode saved so far.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from envs.media import quiet_ffmpeg
from envs.metaworld.env import (
    ACTION_NAMES,
    EVAL_SEED_START,
    OBJECT_NAMES,
    STATE_NAMES,
    MetaWorldGoalEnv,
)
from envs.metaworld.experts import Exploration, ScriptedExpert

log = logging.getLogger(__name__)

IMAGE_KEY_PREFIX = "observation.images."
STATE_KEY = "observation.state"
ENV_STATE_KEY = "observation.environment_state"  # lerobot's OBS_ENV_STATE
ACTION_KEY = "action"
SUCCESS_KEY = "next.success"
SEED_KEY = "episode_seed"
ROBOT_TYPE = "sawyer"

Frame = dict[str, Any]
"""One dataset row as ``LeRobotDataset.add_frame`` takes it: feature key -> value, plus ``task``."""


class DatasetMismatchError(ValueError):
    """An existing dataset at the output root has other features than this recording."""


def dataset_features(env: MetaWorldGoalEnv) -> dict[str, dict]:
    """LeRobot feature spec for an arm's observations and actions (sim and ROS alike)."""
    size = env.image_size
    features: dict[str, dict] = {
        f"{IMAGE_KEY_PREFIX}{camera}": {
            "dtype": "video",
            "shape": (size, size, 3),
            "names": ["height", "width", "channels"],
        }
        for camera in env.cameras
    }
    features[STATE_KEY] = {"dtype": "float32", "shape": (4,), "names": list(STATE_NAMES)}
    features[ACTION_KEY] = {"dtype": "float32", "shape": (4,), "names": list(ACTION_NAMES)}
    features[SUCCESS_KEY] = {"dtype": "bool", "shape": (1,), "names": None}
    features[SEED_KEY] = {"dtype": "int64", "shape": (1,), "names": None}
    return features


def sim_dataset_features(env: MetaWorldGoalEnv) -> dict[str, dict]:
    """``dataset_features`` plus the object's position, which only a simulator knows."""
    features = dataset_features(env)
    features[ENV_STATE_KEY] = {"dtype": "float32", "shape": (len(OBJECT_NAMES),),
                               "names": list(OBJECT_NAMES)}
    return features


def make_frame(images: dict[str, np.ndarray], state: np.ndarray, action: np.ndarray, success: bool,
               seed: int, task: str) -> Frame:
    """The row of ``dataset_features`` for one step: what was seen and the action taken from it."""
    frame: Frame = {f"{IMAGE_KEY_PREFIX}{camera}": image for camera, image in images.items()}
    frame[STATE_KEY] = state
    frame[ACTION_KEY] = action
    frame[SUCCESS_KEY] = np.array([success], dtype=bool)
    frame[SEED_KEY] = np.array([seed], dtype=np.int64)
    frame["task"] = task
    return frame


def _feature_signature(features: dict[str, dict]) -> dict[str, tuple]:
    """What must agree for two recordings to share a dataset (LeRobot adds its own
    bookkeeping columns and video info; those are ignored)."""
    from lerobot.utils.constants import DEFAULT_FEATURES

    return {
        key: (spec["dtype"], tuple(spec["shape"]), tuple(spec["names"] or ()))
        for key, spec in features.items()
        if key not in DEFAULT_FEATURES
    }


def check_features_match(existing: dict[str, dict], wanted: dict[str, dict], root: Path) -> None:
    have, want = _feature_signature(existing), _feature_signature(wanted)
    if have == want:
        return
    problems = []
    for key in sorted(set(have) | set(want)):
        if key not in have:
            problems.append(f"  {key}: missing from the existing dataset")
        elif key not in want:
            problems.append(f"  {key}: in the existing dataset but not in this recording")
        elif have[key] != want[key]:
            problems.append(f"  {key}: existing {have[key]} vs this recording {want[key]}")
    raise DatasetMismatchError(
        f"the dataset at {root} has other features than this recording "
        "(choose another output root, or the same env settings):\n" + "\n".join(problems)
    )


def existing_episode_seeds(repo_id: str, root: Path) -> set[int]:
    """Seeds of the episodes already in a finalised dataset at ``root``."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    dataset = LeRobotDataset(repo_id, root=root, video_backend="pyav")
    if dataset.meta.total_episodes == 0:
        return set()
    if SEED_KEY not in dataset.hf_dataset.column_names:
        raise DatasetMismatchError(f"the dataset at {root} has no {SEED_KEY!r} column")
    return {int(np.asarray(seed).reshape(-1)[0]) for seed in dataset.hf_dataset.unique(SEED_KEY)}


def training_seeds(seed_start: int, episodes: int) -> range:
    """The seeds ``seed_start .. seed_start + episodes - 1``, checked to be training seeds."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if seed_start < 0 or seed_start + episodes > EVAL_SEED_START:
        raise ValueError(
            f"training seeds must lie in [0, {EVAL_SEED_START}); seeds {seed_start}.."
            f"{seed_start + episodes - 1} do not (seeds >= {EVAL_SEED_START} are reserved for evaluation)"
        )
    return range(seed_start, seed_start + episodes)


def _open_dataset(root: Path, repo_id: str, features: dict[str, dict], fps: int, robot_type: str,
                  video_codec: str) -> tuple[Any, set[int]]:
    """Create the dataset at ``root``, or resume the one there if it has the same features
    and fps; refuse a non-empty ``root`` that is no dataset. Returns ``(dataset, seeds
    already recorded)``; nothing is written before every check has passed."""
    from lerobot.configs.video import RGBEncoderConfig
    from lerobot.datasets.dataset_metadata import LeRobotDatasetMetadata
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    # H.264 at CRF 10 without chroma subsampling (yuv444p) encodes fast on a CPU and keeps
    # tiny frames close to the render (mean error ~2/255 at 32 px, against ~6/255 for
    # LeRobot's usual yuv420p): at 64 px a puck is only a few pixels wide.
    if video_codec == "h264":
        encoder = RGBEncoderConfig(vcodec="h264", pix_fmt="yuv444p", crf=10, preset="veryfast")
    else:
        encoder = RGBEncoderConfig(vcodec=video_codec)
    if (root / "meta" / "info.json").exists():
        try:
            meta = LeRobotDatasetMetadata(repo_id, root=root)
        except Exception as error:  # noqa: BLE001 - any failure here means unreadable
            raise DatasetMismatchError(f"the dataset at {root} cannot be read: {error}") from error
        check_features_match(meta.features, features, root)
        if meta.fps != fps:
            raise DatasetMismatchError(f"the dataset at {root} has fps {meta.fps}, this recording {fps}")
        done = existing_episode_seeds(repo_id, root)
        dataset = LeRobotDataset.resume(repo_id, root=root, video_backend="pyav", rgb_encoder=encoder)
        log.info("resuming %s: %d episodes already recorded", root, len(done))
        return dataset, done
    if root.exists() and any(root.iterdir()):
        raise DatasetMismatchError(
            f"{root} exists and is not a LeRobot dataset (no meta/info.json); choose an empty or new output root"
        )
    dataset = LeRobotDataset.create(
        repo_id=repo_id, fps=fps, features=features, root=root, robot_type=robot_type,
        use_videos=True, video_backend="pyav", rgb_encoder=encoder,
    )
    return dataset, set()


@contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into KeyboardInterrupt while recording, so a stopped or
    killed recording still finalises its dataset. SIGINT is set explicitly because a
    process started in the background inherits it ignored."""

    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, handler)
    except ValueError:  # not in the main thread: signals go to the main thread anyway
        pass
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@dataclass
class RecordingSummary:
    root: Path
    repo_id: str
    recorded_seeds: list[int] = field(default_factory=list)
    skipped_seeds: list[int] = field(default_factory=list)
    frames: int = 0
    successes: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    total_episodes: int = 0

    @property
    def episodes(self) -> int:
        return len(self.recorded_seeds)


def record_seeds(
    root: str | Path,
    repo_id: str,
    features: dict[str, dict],
    fps: int,
    robot_type: str,
    seeds: range,
    record_one: Callable[[int, Callable[[Frame], None]], tuple[int, bool]],
    *,
    video_codec: str = "h264",
    description: str = "record",
    progress: bool = True,
    on_saved: Callable[[int], None] | None = None,
    stop_errors: tuple[type[BaseException], ...] = (),
) -> RecordingSummary:
    """Record one episode per seed of ``seeds`` into the LeRobot dataset at ``root``.

    The recorder loop of every recording (sim and ROS); the caller says only how one
    episode is recorded. It:

    1. opens the dataset: creates it (``features``, ``fps``, ``robot_type``, videos in
       ``video_codec``: ``h264``, ``hevc`` or ``libsvtav1``), or resumes the one at
       ``root`` after checking it has the same features and fps (``DatasetMismatchError``
       if not, or if ``root`` holds something that is not a dataset);
    2. skips the seeds already in the dataset (so rerunning resumes) and, for each
       other seed, calls ``record_one(seed, add_frame)``: reset to ``seed``, call
       ``add_frame(frame)`` once per step with a ``make_frame`` row, and return
       ``(frames added, success of the last step)``. The episode is then saved and
       ``on_saved(seed)`` called; if ``record_one`` raises, its frames are dropped;
    3. on Ctrl-C or SIGTERM (a ``KeyboardInterrupt``), stops and returns a summary with
       ``interrupted=True``. An exception of ``stop_errors`` (e.g. a robot's safety stop)
       stops it the same way but is raised again once the dataset is finalised; any
       other exception is raised as is;
    4. always finalises the dataset, which then loads with every episode saved.

    ``description`` labels the progress bar (``progress=False`` hides it).
    """
    import datasets

    quiet_ffmpeg()
    datasets.disable_progress_bars()  # one bar per episode save otherwise
    root = Path(root)
    dataset, done = _open_dataset(root, repo_id, features, fps, robot_type, video_codec)
    summary = RecordingSummary(root=root, repo_id=repo_id, skipped_seeds=sorted(done.intersection(seeds)))
    todo = [seed for seed in seeds if seed not in done]
    error: BaseException | None = None
    start = time.perf_counter()
    bar = tqdm(total=len(todo), desc=description, unit="ep", disable=not progress)
    try:
        with _signals_as_interrupt():
            for seed in todo:
                try:
                    frames, success = record_one(seed, dataset.add_frame)
                    dataset.save_episode()
                except BaseException:
                    dataset.clear_episode_buffer()
                    raise
                summary.recorded_seeds.append(seed)
                summary.frames += frames
                summary.successes += int(success)
                bar.update(1)
                bar.set_postfix(success=f"{summary.successes}/{summary.episodes}")
                if on_saved is not None:
                    on_saved(seed)
    except KeyboardInterrupt:
        summary.interrupted = True
        log.warning("interrupted: finalising %s with the episodes saved so far", root)
    except stop_errors as failure:
        summary.interrupted = True
        error = failure
        log.error("recording stopped: %s; finalising %s with the episodes saved so far", failure, root)
    finally:
        bar.close()
        dataset.finalize()
        summary.seconds = time.perf_counter() - start
        summary.total_episodes = len(done) + summary.episodes
    if error is not None:
        raise error
    return summary


def episode_exploration(base: Exploration, random_fraction: float, seed: int) -> Exploration:
    """The exploration for one episode: a ``random_fraction`` of seeds (chosen by the
    seed itself, so a resumed run makes the same choice) are purely random."""
    if random_fraction > 0 and np.random.default_rng([seed, 0xE7]).random() < random_fraction:
        return Exploration(random_episode=True)
    return base


def record_episodes(
    make_env: Callable[[], MetaWorldGoalEnv],
    root: str | Path,
    repo_id: str,
    episodes: int,
    seed_start: int = 0,
    exploration: Exploration | None = None,
    random_fraction: float = 0.0,
    video_codec: str = "h264",
    on_episode: Callable[[int, list[dict[str, np.ndarray]]], None] | None = None,
    progress: bool = True,
) -> RecordingSummary:
    """Record ``episodes`` episodes with seeds ``seed_start ...`` into ``root``.

    ``video_codec`` is one LeRobot accepts (``h264``, ``hevc``, ``libsvtav1``); the
    default, H.264 yuv444p at CRF 10, keeps tiny frames sharp (see ``record_seeds``).
    ``on_episode(seed, frames)`` is called after each saved episode with its image
    observations (used for preview videos). Returns what was recorded.
    """
    seeds = training_seeds(seed_start, episodes)
    if not 0.0 <= random_fraction <= 1.0:
        raise ValueError(f"random_fraction must be in [0, 1], got {random_fraction}")
    exploration = exploration or Exploration()
    env = make_env()
    images: list[dict[str, np.ndarray]] = []  # the last recorded episode's, for on_episode

    def record_one(seed: int, add_frame: Callable[[Frame], None]) -> tuple[int, bool]:
        """One episode of the scripted expert from ``seed``, a frame per step."""
        nonlocal images
        expert = ScriptedExpert(env.task, episode_exploration(exploration, random_fraction, seed), seed=seed)
        observation, _ = env.reset(seed=seed)
        images = []
        truncated = success = False
        while not truncated:
            action = expert.act(env.privileged_obs)
            object_position = env.object_position()  # before the step, as the state
            images.append(observation["images"])
            next_observation, _, _, truncated, info = env.step(action)
            success = info["success"]
            frame = make_frame(observation["images"], observation["state"], action, success, seed, env.task)
            frame[ENV_STATE_KEY] = object_position
            add_frame(frame)
            observation = next_observation
        return len(images), success

    def on_saved(seed: int) -> None:
        if on_episode is not None:
            on_episode(seed, images)

    try:
        return record_seeds(
            root, repo_id, sim_dataset_features(env), env.metadata["render_fps"], ROBOT_TYPE, seeds, record_one,
            video_codec=video_codec, description=f"collect {env.task}", progress=progress, on_saved=on_saved,
        )
    finally:
        env.close()

