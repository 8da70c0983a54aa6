"""Open any LeRobot v3 dataset and check it has what a world model needs.

A world model needs frames (an image or video key), actions (a 1-D float key) and,
optionally, proprio state. ``open_dataset`` loads through the ``lerobot`` library
from a local root or a hub id, and turns every way this can go wrong into a
``DatasetError`` that names the dataset and the key or the file: an unreadable parquet
or stats file, or a video that is missing or does not decode (``check_videos``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envs.recording import ACTION_KEY, IMAGE_KEY_PREFIX, STATE_KEY, recorded_repo_id, write_recorded_repo_id
from jepa_robot.errors import JepaRobotError


class DatasetError(JepaRobotError, ValueError):
    """A dataset that is missing, unreadable, or lacks what a world model needs."""


@dataclass(frozen=True)
class DatasetSpec:
    """The keys and shapes a world model reads from a dataset."""

    repo_id: str
    root: Path
    fps: int
    episodes: int
    frames: int
    image_keys: tuple[str, ...]
    """The camera views a world model reads, in order (``observation.images.<camera>``)."""
    image_shape: tuple[int, int, int]
    """(height, width, channels), the same for every view."""
    action_key: str
    action_dim: int
    state_key: str | None
    state_dim: int | None
    robot_type: str | None

    @property
    def image_key(self) -> str:
        """The first view's key (the only one of a one-camera dataset)."""
        return self.image_keys[0]

    def describe(self) -> str:
        state = f"{self.state_key} ({self.state_dim}-D)" if self.state_key else "none"
        return (
            f"dataset   {self.repo_id} at {self.root}\n"
            f"episodes  {self.episodes} ({self.frames} frames at {self.fps} fps, robot {self.robot_type})\n"
            f"images    {', '.join(self.image_keys)} {self.image_shape[0]}x{self.image_shape[1]}x{self.image_shape[2]}\n"
            f"actions   {self.action_key} ({self.action_dim}-D)\n"
            f"state     {state}"
        )


def _is_local(source: str) -> bool:
    return Path(source).expanduser().exists() or source.startswith((".", "/", "~"))


def local_repo_id(root: Path) -> str:
    """The repo id of the dataset at ``root``: the one it was recorded or merged with
    (``collect``, ``record-ros``, ``merge``), else its path under lerobot's cache
    (``HF_LEROBOT_HOME/<user>/<name>``), else ``local/<directory name>``."""
    from lerobot.utils.constants import HF_LEROBOT_HOME

    recorded = recorded_repo_id(root)
    if recorded:
        return recorded
    try:
        relative = root.relative_to(Path(HF_LEROBOT_HOME).expanduser().resolve())
    except ValueError:
        relative = None
    return relative.as_posix() if relative is not None and len(relative.parts) == 2 else f"local/{root.name}"


def open_dataset(
    source: str,
    image_keys: str | Sequence[str] | None = None,
    action_key: str = ACTION_KEY,
    state_key: str | None = STATE_KEY,
    video_backend: str = "pyav",
    announce: Callable[[str], None] | None = None,
    **dataset_kwargs,
):
    """Open a LeRobot v3 dataset from a local directory or a hub repo id.

    Returns ``(LeRobotDataset, DatasetSpec)``. ``image_keys``: the camera views to read
    (one key or several, all of one frame size); None reads every camera the dataset has.
    ``dataset_kwargs`` go to
    ``LeRobotDataset`` (for example ``delta_timestamps`` or ``episodes``).
    ``announce(line)`` gets a local dataset's one-line summary (``describe_info``) once
    its metadata has been checked, before lerobot, which takes seconds to import, loads it.
    Raises ``DatasetError`` naming the problem.
    """
    local = local_info(source)
    if local is not None and announce is not None:
        announce(describe_info(*local))
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    if local is not None:
        root, _ = local
        repo_id = local_repo_id(root)
        try:
            dataset = LeRobotDataset(repo_id, root=root, video_backend=video_backend, **dataset_kwargs)
        except Exception as error:  # noqa: BLE001 - lerobot raises many kinds; name the dataset and the file
            reason = _file_behind_failure(root) or f"{type(error).__name__}: {error}"
            raise DatasetError(f"cannot load the dataset at {root}: {reason}") from error
        check_videos(dataset)
    else:
        try:
            dataset = LeRobotDataset(source, video_backend=video_backend, **dataset_kwargs)
        except Exception as error:  # noqa: BLE001
            offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0")
            hint = " (HF_HUB_OFFLINE is set: only datasets already on disk can be opened)" if offline else ""
            raise DatasetError(
                f"{source!r} is neither a local dataset directory nor a loadable hub dataset{hint}: "
                f"{type(error).__name__}: {error}"
            ) from error

    spec = check_dataset(dataset, image_keys=image_keys, action_key=action_key, state_key=state_key)
    return dataset, spec


def local_info(source: str) -> tuple[Path, dict[str, Any]] | None:
    """For a local dataset directory: its resolved root and ``meta/info.json``, after the
    checks that need no ``lerobot`` (a v3 dataset whose metadata files read), which raise
    ``DatasetError`` naming the file; None for a hub repo id."""
    if not _is_local(source):
        return None
    root = Path(source).expanduser().resolve()
    info_path = root / "meta" / "info.json"
    if not root.is_dir():
        raise DatasetError(f"dataset directory {root} does not exist")
    if not info_path.is_file():
        raise DatasetError(f"{root} is not a LeRobot dataset: {info_path} is missing")
    try:
        info = json.loads(info_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DatasetError(f"{info_path} is unreadable: {error}") from error
    version = str(info.get("codebase_version", "?"))
    if not version.startswith("v3"):
        raise DatasetError(
            f"{root} is a LeRobot {version} dataset; jepa-robot reads v3 datasets "
            "(convert with lerobot's convert_dataset_v21_to_v30 script)"
        )
    _check_metadata_files(root)
    return root, info


def describe_info(root: Path, info: dict[str, Any]) -> str:
    """One line from a dataset's ``meta/info.json``: size, rate and cameras."""
    features = info.get("features") or {}
    cameras = [key for key, spec in features.items() if isinstance(spec, dict) and spec.get("dtype") in ("video", "image")]
    return (f"{root}: LeRobot {info.get('codebase_version', '?')} dataset, {info.get('total_episodes', '?')} episodes, "
            f"{info.get('total_frames', '?')} frames at {info.get('fps', '?')} fps, "
            f"cameras {', '.join(cameras) or 'none'}")


def _check_metadata_files(root: Path) -> None:
    """Name the file when a parquet file's footer or meta/stats.json of the dataset at
    ``root`` is unreadable: lerobot's own errors do not (a footerless file reports "Parquet
    magic bytes not found", a cut-off stats.json a JSON position)."""
    import pyarrow.parquet as pq

    parquet_files = [root / "meta" / "tasks.parquet", *sorted((root / "meta" / "episodes").glob("*/*.parquet")),
                     *sorted((root / "data").glob("*/*.parquet"))]
    for path in parquet_files:
        if not path.exists():
            continue
        try:
            pq.read_metadata(path)
        except Exception as error:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...
            raise DatasetError(f"{path} is not a readable parquet file: {type(error).__name__}: {error}") from error
    stats = root / "meta" / "stats.json"
    if stats.exists():
        try:
            json.loads(stats.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DatasetError(f"{stats} is unreadable: {error}") from error


def _file_behind_failure(root: Path) -> str:
    """``<file>: <problem>`` for the first data parquet file of ``root`` that does not read
    whole, or video file an episode names that is missing, else ``""``. lerobot's own
    error does not name the file, and reports a missing video as a failed hub download."""
    import pyarrow.parquet as pq

    for path in sorted((root / "data").glob("*/*.parquet")):
        try:
            pq.read_table(path)
        except Exception as error:  # noqa: BLE001
            return f"{path}: {type(error).__name__}: {error}"
    try:
        template = json.loads((root / "meta" / "info.json").read_text())["video_path"]
        for episodes in sorted((root / "meta" / "episodes").glob("*/*.parquet")):
            for row in pq.read_table(episodes).to_pylist():
                for column in row:
                    if column.startswith("videos/") and column.endswith("/chunk_index"):
                        key = column[len("videos/"):-len("/chunk_index")]
                        path = root / template.format(video_key=key, chunk_index=row[column],
                                                      file_index=row[f"videos/{key}/file_index"])
                        if not path.is_file():
                            return f"{path} (video {key} of episode {row['episode_index']}) is missing"
    except Exception:  # noqa: BLE001 - best effort: the load error stands on its own
        pass
    return ""


def check_videos(dataset) -> None:
    """Decode the first and the last frame of every video file a loaded dataset's episodes
    use, with lerobot's decoder (one seek each, so cheap). Raises ``DatasetError`` naming
    the file and its episodes if one is missing or does not decode: a corrupt or
    truncated video would otherwise surface only when training reaches it."""
    from lerobot.datasets.video_utils import decode_video_frames

    meta = dataset.meta
    if not meta.video_keys or meta.total_episodes < 1:
        return
    episodes = meta.episodes
    for key in meta.video_keys:
        spans: dict[tuple[int, int], list] = {}  # (chunk, file) -> [first time, end time, first episode, last episode]
        for index, chunk, file, start, end in zip(
            episodes["episode_index"], episodes[f"videos/{key}/chunk_index"], episodes[f"videos/{key}/file_index"],
            episodes[f"videos/{key}/from_timestamp"], episodes[f"videos/{key}/to_timestamp"], strict=True,
        ):
            span = spans.setdefault((int(chunk), int(file)), [float(start), float(end), int(index), int(index)])
            span[0], span[1] = min(span[0], float(start)), max(span[1], float(end))
            span[2], span[3] = min(span[2], int(index)), max(span[3], int(index))
        for (chunk, file), (first, end, first_episode, last_episode) in sorted(spans.items()):
            path = Path(dataset.root) / meta.video_path.format(video_key=key, chunk_index=chunk, file_index=file)
            where = f"{path} (video {key} of episodes {first_episode}..{last_episode})"
            if not path.is_file():
                raise DatasetError(f"{where} is missing")
            for timestamp in (first, max(first, end - 1 / meta.fps)):
                try:
                    decode_video_frames(path, [timestamp], dataset.tolerance_s, "pyav", return_uint8=True)
                except Exception as error:  # noqa: BLE001 - av, lerobot's tolerance assertion, ...
                    raise DatasetError(
                        f"{where} does not decode at {timestamp:.3f} s: {type(error).__name__}: {error}"
                    ) from error


def check_dataset(dataset, image_keys: str | Sequence[str] | None, action_key: str,
                  state_key: str | None) -> DatasetSpec:
    """Check a loaded ``LeRobotDataset`` for the keys a world model needs; ``image_keys``
    None means every camera (``observation.images.*`` keys first)."""
    meta = dataset.meta
    features: dict[str, dict] = meta.features
    where = f"dataset {meta.repo_id} at {meta.root}"
    available = [k for k, spec in features.items() if spec.get("dtype") in ("image", "video")]
    if not available:
        raise DatasetError(f"{where} has no image or video key; a world model needs camera frames (features: {sorted(features)})")
    if image_keys is None:
        preferred = [k for k in available if k.startswith(IMAGE_KEY_PREFIX)]
        keys = preferred or available
    else:
        keys = [image_keys] if isinstance(image_keys, str) else list(image_keys)
        if not keys or len(set(keys)) != len(keys):
            raise DatasetError(f"image keys {keys} must name at least one camera, each once")
        missing = [k for k in keys if k not in available]
        if missing:
            raise DatasetError(f"{where} has no image key {', '.join(map(repr, missing))}; image keys: {available}")
    shapes = {}
    for key in keys:
        shape = tuple(int(s) for s in features[key]["shape"])
        if len(shape) != 3 or 3 not in (shape[0], shape[-1]):
            raise DatasetError(f"{where}: {key} has shape {shape}, expected (height, width, 3)")
        shapes[key] = shape if shape[-1] == 3 else (shape[1], shape[2], shape[0])
    image_shape = shapes[keys[0]]
    if any(shape != image_shape for shape in shapes.values()):
        raise DatasetError(f"{where}: the cameras {keys} have frames of different sizes {shapes}; one "
                           "encoder reads every view, so choose views of one size (image_keys=[...])")

    def vector_dim(key: str, role: str) -> int:
        if key not in features:
            raise DatasetError(f"{where} has no {role} key {key!r}; keys: {sorted(features)}")
        spec = features[key]
        if spec.get("dtype") not in ("float32", "float64") or len(spec.get("shape", ())) != 1:
            raise DatasetError(
                f"{where}: {role} key {key!r} must be a 1-D float vector, got dtype "
                f"{spec.get('dtype')} shape {spec.get('shape')}"
            )
        return int(spec["shape"][0])

    action_dim = vector_dim(action_key, "action")
    state_dim = vector_dim(state_key, "state") if state_key is not None else None
    if meta.total_episodes < 1:
        raise DatasetError(f"{where} has no episodes")
    return DatasetSpec(
        repo_id=meta.repo_id,
        root=Path(meta.root),
        fps=int(meta.fps),
        episodes=int(meta.total_episodes),
        frames=int(meta.total_frames),
        image_keys=tuple(keys),
        image_shape=image_shape,  # type: ignore[arg-type]
        action_key=action_key,
        action_dim=action_dim,
        state_key=state_key,
        state_dim=state_dim,
        robot_type=meta.robot_type,
    )


def episode_bounds(dataset) -> list[tuple[int, int]]:
    """(first, end) global frame indices of every episode, ``end`` exclusive."""
    episodes = dataset.meta.episodes
    return [
        (int(start), int(end))
        for start, end in zip(episodes["dataset_from_index"], episodes["dataset_to_index"], strict=True)
    ]


def episode_frames(dataset, image_key: str, episode_index: int):
    """Every frame of one episode as uint8 [T, H, W, 3].

    Videos are decoded in one pass through lerobot's ``decode_video_frames`` (about
    30x faster than indexing the dataset frame by frame, which seeks for each item);
    image datasets are read from their parquet rows.
    """
    import torch
    from lerobot.datasets.video_utils import decode_video_frames

    meta = dataset.meta
    start, end = episode_bounds(dataset)[episode_index]
    if image_key in meta.video_keys:
        episode = meta.episodes[episode_index]
        offset = float(episode[f"videos/{image_key}/from_timestamp"])
        timestamps = [offset + float(t) for t in dataset.hf_dataset[start:end]["timestamp"]]
        path = dataset.root / meta.get_video_file_path(episode_index, image_key)
        try:
            frames = decode_video_frames(path, timestamps, dataset.tolerance_s, "pyav", return_uint8=True)
        except Exception as error:  # noqa: BLE001 - av, lerobot's tolerance assertion, ...
            raise DatasetError(
                f"{path} (episode {episode_index}, {image_key}) does not decode: {type(error).__name__}: {error}"
            ) from error
    else:
        frames = torch.stack([dataset[index][image_key] for index in range(start, end)])
        if frames.dtype != torch.uint8:
            frames = (frames.clamp(0, 1) * 255).round().to(torch.uint8)
    if frames.shape[0] != end - start:
        raise DatasetError(
            f"{meta.root}: episode {episode_index} has {end - start} frames but {frames.shape[0]} "
            f"decoded for {image_key}"
        )
    return frames.permute(0, 2, 3, 1).contiguous()  # [T, C, H, W] -> [T, H, W, C]


def episode_vectors(dataset, key: str):
    """One float32 column for the whole dataset, as a numpy array [frames, dim]."""
    import numpy as np

    column = dataset.hf_dataset.with_format("numpy")[key]
    array = np.asarray(column, dtype=np.float32)
    if array.ndim == 1:
        array = array[:, None]
    if not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))[0]
        raise DatasetError(f"dataset {dataset.meta.repo_id}: {key} has a non-finite value at frame {bad[0]}")
    return array


def merge_datasets(sources: list[str], root: str | Path, repo_id: str) -> DatasetSpec:
    """Merge local LeRobot v3 datasets (say, one per task, recorded in parallel) into a
    new dataset at ``root`` with lerobot's ``aggregate_datasets``.

    The sources must have the same features and fps (lerobot checks, and the error
    names the mismatch). ``root`` must not exist yet: the merge is written to a
    temporary sibling and renamed, so a failed merge leaves nothing behind and an
    existing dataset is never touched. Returns the merged dataset's spec.
    """
    from lerobot.datasets.aggregate import aggregate_datasets

    if len(sources) < 2:
        raise DatasetError(f"merge needs at least two datasets, got {list(sources)}")
    root = Path(root).expanduser().resolve()
    if root.exists():
        raise DatasetError(f"{root} already exists; merge writes a new dataset (remove it or pick another root)")
    roots = [Path(s).expanduser().resolve() for s in sources]
    if len(set(roots)) != len(roots):
        raise DatasetError(f"merge got the same dataset twice: {sources}")
    for source in roots:
        if not (source / "meta" / "info.json").is_file():
            raise DatasetError(f"{source} is not a local LeRobot dataset (no meta/info.json)")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.merge-", dir=root.parent))
    try:
        staging = tmp / "dataset"
        try:  # lerobot reads and checks every source's metadata (features, fps) itself
            aggregate_datasets([s.name for s in roots], repo_id, roots=roots, aggr_root=staging)
        except Exception as error:  # noqa: BLE001 - a mismatch surfaces as ValueError or others
            raise DatasetError(f"cannot merge {sources}: {type(error).__name__}: {error}") from error
        write_recorded_repo_id(staging, repo_id)
        _, spec = open_dataset(str(staging))  # the merged dataset must load before it is kept
        expected = sum(_total_episodes(s) for s in roots)
        if spec.episodes != expected:
            raise DatasetError(f"merge of {sources} holds {spec.episodes} episodes, expected {expected}")
        os.replace(staging, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dataclasses.replace(spec, root=root, repo_id=repo_id)


def _total_episodes(root: Path) -> int:
    return int(json.loads((root / "meta" / "info.json").read_text())["total_episodes"])
