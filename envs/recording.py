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

The dataset at the output root loads at every moment of a recording, with every episode
saved so far: lerobot writes into a staging copy and each saved episode is published at
once (see "Surviving a kill" below). Ctrl-C or SIGTERM drops the half-recorded episode (an
episode being saved is finished first). A kill (SIGKILL) loses at most the episode being
recorded (or, in the first seconds of a new dataset, the episodes recorded while lerobot
was still loading: they wait in memory, see ``record_seeds``); rerunning the same command
clears what it left and resumes (``repair_killed_recording``, docs/reliability.md "Recording").
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from envs.media import quiet_ffmpeg
from envs.metaworld.experts import Exploration, ScriptedExpert
from envs.metaworld.tasks import ACTION_NAMES, EVAL_SEED_START, OBJECT_NAMES, STATE_NAMES

if TYPE_CHECKING:  # the env (Gymnasium, MuJoCo) is imported by whoever makes one
    from envs.metaworld.env import MetaWorldGoalEnv

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


# -- Surviving a kill ----------------------------------------------------------------------
#
# lerobot 0.6.1 writes a dataset in place: through parquet writers whose footers only
# ``finalize()`` writes, with episode metadata buffered (ten episodes by default) and
# meta/info.json and meta/stats.json rewritten in place. A recording killed before it
# finalises leaves a dataset that does not load. So lerobot writes into a staging copy,
# ``<root>/.recording``, and each saved episode is published to ``<root>`` at once:
#
# 1. file-size limits of ~0 MB make lerobot give every episode files of its own (a data
#    parquet, a metadata parquet, a video per camera) that it never writes again;
# 2. ``_commit_episode`` closes both parquet writers right after ``save_episode``;
# 3. ``_publish_episode`` hard-links the episode's files into ``<root>`` (videos and data
#    before metadata), then replaces tasks, stats and, last, info.json by atomic renames.
#
# The dataset at ``<root>`` thus loads at every moment, with the episodes info.json counts.
# A kill leaves the staging copy and, if it came mid-publish, files of one episode that
# info.json does not count yet; ``repair_killed_recording`` sorts that out on the next run.

STAGE_DIR = ".recording"
"""Where lerobot writes, inside the dataset root (lerobot's loaders never look there)."""
INFO_FILE = "meta/info.json"
RECORDING_FILE = "meta/recording.json"
"""The repo id a dataset was recorded with (``{"repo_id": ...}``); lerobot keeps no repo
id on disk and never reads this file."""
PREVIEW_FILE = "preview.mp4"
"""A recording's preview video, in the dataset root, where lerobot's loaders never look."""
_FILE_MB = 1e-6
"""lerobot's data and video file-size limits (MB) for recordings: every file is larger,
so every episode starts new files."""
_EPISODES_DIR = "meta/episodes"
_DATA_FILES = "data/chunk-*/file-*.parquet"
_VIDEO_FILES = "videos/*/chunk-*/file-*.mp4"
_LEROBOT_TEMP_DIR = re.compile(r"tmp[a-z0-9_]{8}")  # lerobot's tempfile.mkdtemp(dir=root) while encoding
_REPAIR_PREFIX = ".repair-"


def _recording_encoder(video_codec: str):
    """LeRobot's video encoder settings for ``video_codec``."""
    from lerobot.configs.video import RGBEncoderConfig

    # H.264 at CRF 10 without chroma subsampling (yuv444p) encodes fast on a CPU and keeps
    # tiny frames close to the render (mean error ~2/255 at 32 px, against ~6/255 for
    # LeRobot's usual yuv420p): at 64 px a puck is only a few pixels wide.
    if video_codec == "h264":
        return RGBEncoderConfig(vcodec="h264", pix_fmt="yuv444p", crf=10, preset="veryfast")
    return RGBEncoderConfig(vcodec=video_codec)


def _open_dataset(root: Path, repo_id: str, features: dict[str, dict], fps: int, robot_type: str,
                  video_codec: str) -> tuple[Any, set[int]]:
    """Create the dataset at ``root``, or resume the one there if it has the same features
    and fps, after sorting out what a killed recording left (``repair_killed_recording``);
    refuse a non-empty ``root`` that is no dataset. Returns ``(dataset, seeds already
    recorded)``: a ``LeRobotDataset`` writing into the staging copy ``root/.recording``,
    whose episodes ``_publish_episode`` adds to ``root``. Nothing is written before every
    check has passed."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    encoder = _recording_encoder(video_codec)
    stage = root / STAGE_DIR
    if (root / INFO_FILE).exists() and repair_killed_recording(root, features, fps):
        done = existing_episode_seeds(repo_id, root)
        (stage / "meta").mkdir(parents=True)  # lerobot resumes from the metadata alone
        for name in ("info.json", "stats.json", "tasks.parquet"):
            if (root / "meta" / name).exists():
                shutil.copyfile(root / "meta" / name, stage / "meta" / name)
        shutil.copytree(root / _EPISODES_DIR, stage / _EPISODES_DIR)
        dataset = LeRobotDataset.resume(repo_id, root=stage, video_backend="pyav", rgb_encoder=encoder)
        if (dataset.meta.data_files_size_in_mb, dataset.meta.video_files_size_in_mb) != (_FILE_MB, _FILE_MB):
            # recorded before episodes had files of their own: the new episodes get theirs
            dataset.meta.update_chunk_settings(data_files_size_in_mb=_FILE_MB, video_files_size_in_mb=_FILE_MB)
        log.info("resuming %s: %d episodes already recorded", root, len(done))
        write_recorded_repo_id(root, repo_id)  # a kill can come between info.json and it
        _quiet_hub_progress_bars()
        return dataset, done
    _refuse_a_non_dataset(root)
    _remove(stage)
    dataset = LeRobotDataset.create(
        repo_id=repo_id, fps=fps, features=features, root=stage, robot_type=robot_type,
        use_videos=True, video_backend="pyav", rgb_encoder=encoder,
        data_files_size_in_mb=_FILE_MB, video_files_size_in_mb=_FILE_MB,
    )
    _publish_file(stage, root, INFO_FILE, link=False)  # root is a dataset (of no episodes yet) from here on
    write_recorded_repo_id(root, repo_id)
    _quiet_hub_progress_bars()
    return dataset, set()


def _quiet_hub_progress_bars() -> None:
    """Hugging Face ``datasets`` would show a bar per episode save; lerobot's load turns
    them on, so this runs once a dataset is open."""
    import datasets

    datasets.disable_progress_bars()


def recorded_repo_id(root: Path) -> str | None:
    """The repo id the dataset at ``root`` was recorded with (``RECORDING_FILE``), or None
    for a dataset recorded elsewhere or before the file existed."""
    try:
        repo_id = json.loads((Path(root) / RECORDING_FILE).read_text()).get("repo_id")
    except (OSError, ValueError, AttributeError):
        return None
    return repo_id if isinstance(repo_id, str) and repo_id else None


def write_recorded_repo_id(root: Path, repo_id: str) -> None:
    """Keep the repo id of the first recording into ``root`` (a resume with another id
    leaves it)."""
    def write(staging: Path) -> None:
        (staging / RECORDING_FILE).parent.mkdir(parents=True)
        (staging / RECORDING_FILE).write_text(json.dumps({"repo_id": repo_id}) + "\n")

    if recorded_repo_id(root) is None:
        _write_atomically(root, RECORDING_FILE, write)


def _commit_episode(dataset) -> None:
    """Write the parquet footers of the episode ``save_episode`` just wrote."""
    dataset.writer.close_writer()  # its data/chunk-*/file-*.parquet
    # Its meta/episodes/chunk-*/file-*.parquet: flush the buffered row and close. lerobot
    # 0.6.1 has no public call for this (LeRobotDatasetMetadata.finalize() closes only once).
    dataset.meta._close_writer()


def _publish_episode(dataset, root: Path) -> None:
    """Add the episode just saved and committed in the staging copy to the dataset at
    ``root``, in an order that keeps ``root`` loadable at every moment: the episode's
    videos and data, the tasks, its metadata, the stats, and last info.json, which makes
    it count."""
    from lerobot.datasets.utils import DEFAULT_EPISODES_PATH

    stage, meta = Path(dataset.root), dataset.meta
    episode = {key: value[0] for key, value in meta.latest_episode.items()}  # the row just written
    for key in meta.video_keys:
        _publish_file(stage, root, meta.video_path.format(
            video_key=key, chunk_index=episode[f"videos/{key}/chunk_index"], file_index=episode[f"videos/{key}/file_index"]
        ))
    _publish_file(stage, root, meta.data_path.format(
        chunk_index=episode["data/chunk_index"], file_index=episode["data/file_index"]
    ))
    _publish_file(stage, root, "meta/tasks.parquet", link=False)
    _publish_file(stage, root, DEFAULT_EPISODES_PATH.format(
        chunk_index=episode["meta/episodes/chunk_index"], file_index=episode["meta/episodes/file_index"]
    ))
    _publish_file(stage, root, "meta/stats.json", link=False)
    _publish_file(stage, root, INFO_FILE, link=False)


def _publish_file(stage: Path, root: Path, relative: str, link: bool = True) -> None:
    """Put ``stage/relative`` at ``root/relative`` by an atomic rename: a hard link for the
    files lerobot never writes again (no copy; a copy where links are not supported), a
    copy for those it rewrites in place."""
    staged = stage / ".publishing"
    _remove(staged)
    if link:
        try:
            os.link(stage / relative, staged)
        except OSError:  # a filesystem without hard links
            link = False
    if not link:
        shutil.copyfile(stage / relative, staged)
    (root / relative).parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, root / relative)


@dataclass
class _Leftovers:
    """A recording's dataset as a kill may have left it (found without writing anything)."""

    info: Any
    """lerobot's ``DatasetInfo`` from meta/info.json."""
    episodes: list[dict]
    """meta/episodes rows of the saved episodes, in episode order."""
    strays: list[Path]
    """Files and folders no saved episode needs: the staging copy and anything of an
    episode that was being saved or published when the recording stopped."""


def _read_leftovers(root: Path, info, features: dict[str, dict]) -> _Leftovers:
    """Sort the files at ``root`` into saved episodes and strays; ``DatasetMismatchError``
    for damage a kill cannot cause (a saved episode's file missing or unreadable)."""
    import pyarrow.parquet as pq

    episodes: list[dict] = []
    strays: list[Path] = []
    for path in sorted((root / _EPISODES_DIR).glob("chunk-*/file-*.parquet")):
        try:
            rows = pq.read_table(path).to_pylist()
        except Exception:  # noqa: BLE001 - no footer: written in place by an older recorder, then killed
            strays.append(path)
            continue
        if strays:
            raise DatasetMismatchError(
                f"{strays[0]} cannot be read although later episode files can: a killed recording "
                "does not leave this (move the dataset aside and record again)"
            )
        episodes.extend(rows)
    episodes.sort(key=lambda row: row["episode_index"])
    if [row["episode_index"] for row in episodes] != list(range(len(episodes))):
        raise DatasetMismatchError(f"the episode metadata in {root / _EPISODES_DIR} skips episode indices")

    video_keys = [key for key, spec in features.items() if spec["dtype"] == "video"]
    saved: set[Path] = set()
    for row in episodes:
        saved.add(root / info.data_path.format(chunk_index=row["data/chunk_index"], file_index=row["data/file_index"]))
        saved.update(root / info.video_path.format(
            video_key=key, chunk_index=row[f"videos/{key}/chunk_index"], file_index=row[f"videos/{key}/file_index"]
        ) for key in video_keys)
    for path in sorted(saved):
        try:
            if path.suffix == ".parquet":
                pq.read_metadata(path)
            elif not path.is_file():
                raise FileNotFoundError("missing")
        except Exception as error:  # noqa: BLE001 - name the file whatever went wrong
            raise DatasetMismatchError(
                f"{path}, a file of a saved episode, cannot be read ({error}): a killed recording does not "
                "leave this (move the dataset aside and record again)"
            ) from error

    strays += [path for pattern in (_DATA_FILES, _VIDEO_FILES) for path in sorted(root.glob(pattern))
               if path not in saved]
    strays += [  # the staging copy; lerobot's staging frames and temporary videos (older recorders); repairs
        path for path in sorted(root.iterdir())
        if path.name == STAGE_DIR or (
            (path.name == "images" or _LEROBOT_TEMP_DIR.fullmatch(path.name) or path.name.startswith(_REPAIR_PREFIX))
            and path.is_dir() and any(child.is_file() for child in path.rglob("*")))
    ]
    return _Leftovers(info=info, episodes=episodes, strays=strays)


def repair_killed_recording(root: Path, features: dict[str, dict], fps: int) -> bool:
    """Bring the dataset at ``root`` back to the episodes a stopped or killed recording saved.

    First checks, writing nothing, that the dataset has ``features`` and ``fps`` and holds
    nothing a kill cannot leave (``DatasetMismatchError`` otherwise). Then removes the
    staging copy and the files of an episode that was being published when the recording
    stopped, or, if that episode's metadata was already published, counts it; and
    rewrites meta/tasks.parquet, meta/stats.json and meta/info.json from the saved
    episodes' metadata where they disagree with it or are unreadable. Each rewrite is an
    atomic rename, so a kill during the repair is repaired by the next run. A dataset that
    needs nothing is left as it is.

    Datasets written by earlier recorders (in place, footers at the end) are handled the
    same way: what a kill left without parquet footers is removed.

    Returns whether at least one saved episode remains. If none does, every file a
    recording writes is removed, so the recording starts over.
    """
    from lerobot.datasets.io_utils import load_info

    try:
        info = load_info(root)
    except Exception as error:  # noqa: BLE001 - lerobot raises many kinds; name the file
        raise DatasetMismatchError(f"{root / INFO_FILE} cannot be read: {type(error).__name__}: {error}") from error
    if not str(info.codebase_version).startswith("v3"):
        raise DatasetMismatchError(f"the dataset at {root} is a LeRobot {info.codebase_version} dataset, not v3")
    check_features_match(info.features, features, root)
    if info.fps != fps:
        raise DatasetMismatchError(f"the dataset at {root} has fps {info.fps}, this recording {fps}")
    left = _read_leftovers(root, info, features)
    if not left.episodes:
        if info.total_episodes:
            log.warning("%s counted %d episodes but none was fully written: starting the recording again",
                        root / INFO_FILE, info.total_episodes)
        for path in [*left.strays, root / INFO_FILE, root / "meta" / "stats.json", root / "meta" / "tasks.parquet",
                     root / RECORDING_FILE, root / PREVIEW_FILE]:
            _remove(path)
        for folder in (_EPISODES_DIR, "meta", "data", "videos", "images"):  # now empty, unless someone else's
            _remove_empty_tree(root / folder)
        return False
    for path in left.strays:
        if path.name != STAGE_DIR:
            log.warning("removing %s: left by an episode that was being saved when the recording stopped", path)
        _remove(path)
    _repair_metadata(root, left)
    return True


def _repair_metadata(root: Path, left: _Leftovers) -> None:
    """Make tasks, stats and info agree with the saved episodes (``repair_killed_recording``)."""
    import pandas as pd
    from lerobot.datasets.compute_stats import aggregate_stats
    from lerobot.datasets.io_utils import (
        cast_stats_to_numpy,
        load_stats,
        load_tasks,
        write_info,
        write_stats,
        write_tasks,
    )
    from lerobot.utils.utils import unflatten_dict

    episodes, info = left.episodes, left.info
    used = list(dict.fromkeys(task for row in episodes for task in row["tasks"]))  # in order of first use
    try:
        tasks = load_tasks(root)
    except Exception:  # noqa: BLE001 - cut off mid-write by an older recorder: renumbered as lerobot did
        log.warning("rebuilding %s from the saved episodes", root / "meta" / "tasks.parquet")
        tasks = pd.DataFrame({"task_index": range(len(used))}, index=pd.Index(used, name="task"))
        _write_atomically(root, "meta/tasks.parquet", lambda staging: write_tasks(tasks, staging))
    if set(tasks.index) != set(used):  # a task only the unsaved episode had (lerobot numbers tasks in order)
        kept = tasks[tasks.index.isin(used)]
        if len(kept) != len(used) or sorted(kept["task_index"]) != list(range(len(kept))):
            raise DatasetMismatchError(f"{root / 'meta' / 'tasks.parquet'} does not match the saved episodes' tasks")
        _write_atomically(root, "meta/tasks.parquet", lambda staging: write_tasks(kept, staging))
        tasks = kept

    totals = (len(episodes), sum(int(row["length"]) for row in episodes), len(tasks))
    stale = (info.total_episodes, info.total_frames, info.total_tasks) != totals
    try:
        stats_readable = load_stats(root) is not None
    except Exception:  # noqa: BLE001 - cut off mid-write by an older recorder
        stats_readable = False
    if stale or not stats_readable:
        log.warning("recomputing %s from the %d saved episodes", root / "meta" / "stats.json", len(episodes))
        per_episode = [
            cast_stats_to_numpy(unflatten_dict({key[len("stats/"):]: value for key, value in row.items()
                                                if key.startswith("stats/")}))
            for row in episodes
        ]
        stats = aggregate_stats(per_episode)
        _write_atomically(root, "meta/stats.json", lambda staging: write_stats(stats, staging))
    if stale:  # last: a kill before this point leaves the repair to do again
        log.warning("%s counted %d episodes; %d are saved", root / INFO_FILE, info.total_episodes, totals[0])
        info.total_episodes, info.total_frames, info.total_tasks = totals
        info.splits = {"train": f"0:{totals[0]}"}
        _write_atomically(root, INFO_FILE, lambda staging: write_info(info, staging))


def _write_atomically(root: Path, relative: str, write: Callable[[Path], None]) -> None:
    """Write ``root/relative`` with ``write(staging_root)`` then an atomic rename, so a kill
    leaves the old file or the new one, never half of one."""
    staging = Path(tempfile.mkdtemp(prefix=_REPAIR_PREFIX, dir=root))
    try:
        write(staging)
        os.replace(staging / relative, root / relative)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _remove_empty_tree(folder: Path) -> None:
    """Remove ``folder`` if it holds only empty folders."""
    if not folder.is_dir():
        return
    for child in folder.iterdir():
        _remove_empty_tree(child)
    if not any(folder.iterdir()):
        folder.rmdir()


class StopSignals:
    """SIGINT and SIGTERM as ``KeyboardInterrupt`` while recording, so a stopped recording
    still finalises its dataset; held back while an episode is being saved, so a stop
    never cuts a save in half. SIGINT is set explicitly because a process started in the
    background inherits it ignored."""

    def __init__(self) -> None:
        self._holding = False
        self._pending: int | None = None

    def _handle(self, signum, frame):  # noqa: ARG002
        if self._holding:
            self._pending = signum
            return
        raise KeyboardInterrupt(f"signal {signum}")

    @contextmanager
    def installed(self) -> Iterator[None]:
        previous = {}
        try:
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous[signum] = signal.signal(signum, self._handle)
        except ValueError:  # not in the main thread: signals go to the main thread anyway
            pass
        try:
            yield
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold a stop back while the block runs (``raise_held`` raises it)."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False

    def raise_held(self) -> None:
        """Raise the stop that came while held, if one did."""
        if self._pending is not None:
            raise KeyboardInterrupt(f"signal {self._pending}")


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


MAX_PENDING_EPISODES = 8
"""A new recording holds at most this many episodes in memory while lerobot loads."""


class LerobotImport:
    """lerobot's dataset module (and Hugging Face ``datasets``), imported in a thread of
    its own: about 8 s on a 2-core machine, which a new recording spends recording
    instead. The episodes wait in memory until it is done (``record_seeds``)."""

    def __init__(self) -> None:
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="import-lerobot", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            import datasets  # noqa: F401
            import lerobot.datasets.lerobot_dataset  # noqa: F401
        except BaseException as error:  # noqa: BLE001 - raised again by wait(), in the recording's thread
            self._error = error

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


def _is_new_recording(root: Path) -> bool:
    """Whether ``root`` holds no dataset yet (then no seed is recorded, and lerobot is
    needed only to save); refuses a non-empty ``root`` that is no dataset, as
    ``_open_dataset`` does, before anything is recorded."""
    if (root / INFO_FILE).exists():
        return False
    _refuse_a_non_dataset(root)
    return True


def _refuse_a_non_dataset(root: Path) -> None:
    """``DatasetMismatchError`` for a ``root`` that holds anything but a staging copy."""
    if root.exists() and any(path.name != STAGE_DIR for path in root.iterdir()):
        raise DatasetMismatchError(
            f"{root} exists and is not a LeRobot dataset (no {INFO_FILE}); choose an empty or new output root"
        )


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
       if not, or if ``root`` holds something that is not a dataset) and removing what a
       killed recording left (``repair_killed_recording``). A new dataset starts
       recording at once, while lerobot loads in a thread (``LerobotImport``); the
       episodes recorded meanwhile (at most ``MAX_PENDING_EPISODES``) wait in memory and
       are saved, in order, as soon as it has loaded;
    2. skips the seeds already in the dataset (so rerunning resumes) and, for each
       other seed, calls ``record_one(seed, add_frame)``: reset to ``seed``, call
       ``add_frame(frame)`` once per step with a ``make_frame`` row, and return
       ``(frames added, success of the last step)``. The episode is then saved, in files
       of its own whose parquet footers are written at once, so it survives a kill, and
       ``on_saved(seed)`` is called; if ``record_one`` raises, its frames are dropped;
    3. on Ctrl-C or SIGTERM (a ``KeyboardInterrupt``; one that comes while an episode is
       being saved waits until it is), stops and returns a summary with
       ``interrupted=True``. An exception of ``stop_errors`` (e.g. a robot's safety stop)
       stops it the same way but is raised again once the dataset is finalised; any
       other exception is raised as is. Episodes waiting in memory are saved first;
    4. always finalises the dataset, which then loads with every episode saved.

    ``description`` labels the progress bar (``progress=False`` hides it), which counts
    saved episodes and shows the frames of the episode being recorded.
    """
    quiet_ffmpeg()
    root = Path(root)
    loading = LerobotImport() if _is_new_recording(root) else None
    dataset, done = (None, set()) if loading else _open_dataset(root, repo_id, features, fps, robot_type, video_codec)
    summary = RecordingSummary(root=root, repo_id=repo_id, skipped_seeds=sorted(done.intersection(seeds)))
    todo = [seed for seed in seeds if seed not in done]
    pending: list[tuple[int, list[Frame], int, bool]] = []  # recorded while lerobot loads
    error: BaseException | None = None
    start = time.perf_counter()
    bar = tqdm(total=len(todo), desc=description, unit="ep", disable=not progress)
    stop = StopSignals()

    def counting(add_frame: Callable[[Frame], None], seed: int) -> Callable[[Frame], None]:
        frames = 0

        def add(frame: Frame) -> None:
            nonlocal frames
            add_frame(frame)
            frames += 1
            if frames % 10 == 0:
                bar.set_postfix_str(", ".join(filter(None, (status(), f"seed {seed}: {frames} frames"))))
        return add

    def status() -> str:
        parts = [f"success={summary.successes}/{summary.episodes}"] if summary.episodes else []
        if pending:
            parts.append(f"{len(pending)} recorded, saved once lerobot has loaded")
        return ", ".join(parts)

    def saved(seed: int, frames: int, success: bool) -> None:
        summary.recorded_seeds.append(seed)
        summary.frames += frames
        summary.successes += int(success)
        bar.update(1)
        bar.set_postfix_str(status())
        if on_saved is not None:
            on_saved(seed)

    def open_new_dataset() -> None:
        """Once lerobot has loaded: create the dataset and save the episodes waiting."""
        nonlocal dataset
        if dataset is None:
            assert loading is not None
            loading.wait()
            dataset, _ = _open_dataset(root, repo_id, features, fps, robot_type, video_codec)
        while pending:
            seed, frames, count, success = pending[0]
            with stop.held():
                try:
                    for frame in frames:
                        dataset.add_frame(frame)
                    _save_episode(dataset, root)
                except BaseException:
                    dataset.clear_episode_buffer()
                    raise
                pending.pop(0)
            saved(seed, count, success)

    try:
        with stop.installed():
            for seed in todo:
                if dataset is None and (loading.done or len(pending) >= MAX_PENDING_EPISODES):
                    open_new_dataset()
                    stop.raise_held()
                if dataset is None:  # lerobot is still loading: keep the episode in memory
                    frames: list[Frame] = []
                    count, success = record_one(seed, counting(frames.append, seed))
                    pending.append((seed, frames, count, success))
                    bar.set_postfix_str(status())
                    continue
                try:
                    count, success = record_one(seed, counting(dataset.add_frame, seed))
                    with stop.held():  # a Ctrl-C or SIGTERM waits until the episode is in the dataset
                        _save_episode(dataset, root)
                except BaseException:
                    dataset.clear_episode_buffer()  # the episode's frames are dropped
                    raise
                saved(seed, count, success)
                stop.raise_held()
            open_new_dataset()  # a new dataset exists even if every episode ran before lerobot loaded
            stop.raise_held()
    except KeyboardInterrupt:
        summary.interrupted = True
        log.warning("interrupted: finalising %s with the episodes saved so far", root)
    except stop_errors as failure:
        summary.interrupted = True
        error = failure
        log.error("recording stopped: %s; finalising %s with the episodes saved so far", failure, root)
    finally:
        try:
            if pending or dataset is None:  # recorded whole before the stop: saved all the same
                open_new_dataset()
        finally:
            bar.close()
            if dataset is not None:
                dataset.finalize()
            _remove(root / STAGE_DIR)  # every saved episode is published
            summary.seconds = time.perf_counter() - start
            summary.total_episodes = len(done) + summary.episodes
    if error is not None:
        raise error
    return summary


def _save_episode(dataset, root: Path) -> None:
    """Save the episode in ``dataset``'s buffer and publish it to ``root``."""
    dataset.save_episode()
    _commit_episode(dataset)
    _publish_episode(dataset, root)


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
    images: dict[int, list[dict[str, np.ndarray]]] = {}  # per seed, until saved: for on_episode

    def record_one(seed: int, add_frame: Callable[[Frame], None]) -> tuple[int, bool]:
        """One episode of the scripted expert from ``seed``, a frame per step."""
        expert = ScriptedExpert(env.task, episode_exploration(exploration, random_fraction, seed), seed=seed)
        observation, _ = env.reset(seed=seed)
        images[seed] = seen = []
        truncated = success = False
        while not truncated:
            action = expert.act(env.privileged_obs)
            object_position = env.object_position()  # before the step, as the state
            seen.append(observation["images"])
            next_observation, _, _, truncated, info = env.step(action)
            success = info["success"]
            frame = make_frame(observation["images"], observation["state"], action, success, seed, env.task)
            frame[ENV_STATE_KEY] = object_position
            add_frame(frame)
            observation = next_observation
        return len(seen), success

    def on_saved(seed: int) -> None:
        seen = images.pop(seed)
        if on_episode is not None:
            on_episode(seed, seen)

    try:
        return record_seeds(
            root, repo_id, sim_dataset_features(env), env.metadata["render_fps"], ROBOT_TYPE, seeds, record_one,
            video_codec=video_codec, description=f"collect {env.task}", progress=progress, on_saved=on_saved,
        )
    finally:
        env.close()

