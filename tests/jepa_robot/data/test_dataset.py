import json
import re
import shutil

import numpy as np
import pytest
from lerobot.datasets.lerobot_dataset import LeRobotDataset

from jepa_robot.data.dataset import DatasetError, open_dataset


def make_dataset(root, features, frames=3):
    """A tiny LeRobot v3 dataset with the given (non-default) features."""
    dataset = LeRobotDataset.create(repo_id="test/custom", fps=10, features=features, root=root, use_videos=False)
    for _ in range(frames):
        frame = {"task": "t"}
        for key, spec in features.items():
            if spec["dtype"] == "image":
                frame[key] = np.zeros(spec["shape"], np.uint8)
            else:
                frame[key] = np.zeros(spec["shape"], spec["dtype"])
        dataset.add_frame(frame)
    dataset.save_episode()
    dataset.finalize()
    return root


IMAGE = {"dtype": "image", "shape": (16, 16, 3), "names": ["height", "width", "channels"]}
VECTOR = {"dtype": "float32", "shape": (3,), "names": None}


def test_opens_a_recorded_dataset(small_dataset):
    root, _, _ = small_dataset
    dataset, spec = open_dataset(str(root))
    assert spec.image_key == "observation.images.oblique" and spec.image_shape == (32, 32, 3)
    assert spec.action_dim == 4 and spec.state_dim == 4 and spec.episodes == 3 and spec.frames == 36
    assert len(dataset) == 36
    assert "4-D" in spec.describe()


def test_training_windows_through_delta_timestamps(small_dataset):
    root, _, _ = small_dataset
    dt = 1 / 80
    dataset, _ = open_dataset(str(root), delta_timestamps={"action": [0, dt, 2 * dt]})
    assert dataset[0]["action"].shape == (3, 4)


def test_state_is_optional(tmp_path):
    root = make_dataset(tmp_path / "ds", {"observation.images.cam": IMAGE, "action": VECTOR})
    _, spec = open_dataset(str(root), state_key=None)
    assert spec.state_key is None and spec.action_dim == 3
    with pytest.raises(DatasetError, match="no state key 'observation.state'"):
        open_dataset(str(root))


def test_missing_action_key_is_named(tmp_path):
    root = make_dataset(tmp_path / "ds", {"observation.images.cam": IMAGE, "observation.state": VECTOR})
    with pytest.raises(DatasetError, match="no action key 'action'"):
        open_dataset(str(root))


def test_missing_image_key_is_named(tmp_path):
    root = make_dataset(tmp_path / "ds", {"action": VECTOR, "observation.state": VECTOR})
    with pytest.raises(DatasetError, match="no image or video key"):
        open_dataset(str(root))
    with pytest.raises(DatasetError, match="no image key 'observation.images.wrist'"):
        make_dataset(tmp_path / "ds2", {"observation.images.cam": IMAGE, "action": VECTOR})
        open_dataset(str(tmp_path / "ds2"), image_keys=["observation.images.wrist"], state_key=None)


def test_non_vector_action_is_refused(tmp_path):
    features = {"observation.images.cam": IMAGE, "action": {"dtype": "int64", "shape": (2,), "names": None}}
    root = make_dataset(tmp_path / "ds", features)
    with pytest.raises(DatasetError, match="1-D float vector"):
        open_dataset(str(root), state_key=None)


def test_missing_and_corrupt_datasets(tmp_path, small_dataset):
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"meta/info.json is missing"):
        open_dataset(str(tmp_path / "empty"))

    corrupt = tmp_path / "corrupt"
    shutil.copytree(small_dataset[0], corrupt)
    (corrupt / "meta" / "info.json").write_text("{not json")
    with pytest.raises(DatasetError, match="info.json is unreadable"):
        open_dataset(str(corrupt))

    old = tmp_path / "old"
    shutil.copytree(small_dataset[0], old)
    info = json.loads((old / "meta" / "info.json").read_text())
    info["codebase_version"] = "v2.1"
    (old / "meta" / "info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match="v2.1 dataset"):
        open_dataset(str(old))

    broken = tmp_path / "broken"
    shutil.copytree(small_dataset[0], broken)
    for parquet in (broken / "data").rglob("*.parquet"):
        parquet.write_bytes(b"PAR1 truncated")
    with pytest.raises(DatasetError, match=r"data/chunk-000/file-000\.parquet is not a readable parquet file"):
        open_dataset(str(broken))


def file_of(root, what):
    """The file of the dataset at ``root`` that holds ``what``: episode 1's video, its data
    or its metadata, the tasks or the stats (whether episodes share files or not)."""
    from lerobot.datasets.utils import DEFAULT_EPISODES_PATH

    meta = LeRobotDataset("test/reach", root=root, video_backend="pyav").meta
    episode = meta.episodes[1]
    return root / {
        "video": lambda: meta.get_video_file_path(1, "observation.images.oblique"),
        "data": lambda: meta.get_data_file_path(1),
        "episodes": lambda: DEFAULT_EPISODES_PATH.format(
            chunk_index=episode["meta/episodes/chunk_index"], file_index=episode["meta/episodes/file_index"]),
        "tasks": lambda: "meta/tasks.parquet",
        "stats": lambda: "meta/stats.json",
    }[what]()


@pytest.mark.parametrize("damage", ["junk", "truncated", "missing"])
def test_a_damaged_video_is_named(tmp_path, small_dataset, damage):
    """Before: a video of junk or cut in half passed ``open_dataset`` (and ``inspect``) and
    failed only when training decoded it; a missing one read as a failed hub download."""
    root = tmp_path / "ds"
    shutil.copytree(small_dataset[0], root)
    video = file_of(root, "video")
    if damage == "junk":
        video.write_bytes(b"\0" * 5000)
    elif damage == "truncated":
        video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    else:
        video.unlink()
    with pytest.raises(DatasetError, match=re.escape(str(video))):
        open_dataset(str(root))


def test_inspect_names_a_corrupt_video(tmp_path, small_dataset, capsys):
    from jepa_robot.cli import main

    root = tmp_path / "ds"
    shutil.copytree(small_dataset[0], root)
    assert main(["inspect", f"dataset={root}"]) == 0
    video = file_of(root, "video")
    video.write_bytes(b"\0" * 5000)
    capsys.readouterr()
    assert main(["inspect", f"dataset={root}"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("jepa-robot inspect: error: ") and str(video) in error and "does not decode" in error


def test_inspect_shows_a_local_dataset_before_lerobot_has_loaded(small_dataset, capsys):
    """inspect's first line comes from meta/info.json, which needs no lerobot (its import
    takes seconds); the full check follows."""
    import subprocess
    import sys

    from jepa_robot.cli import main

    root = small_dataset[0]
    assert main(["inspect", f"dataset={root}"]) == 0
    first, second, *rest = capsys.readouterr().out.splitlines()
    assert first == f"{root}: LeRobot v3.0 dataset, 3 episodes, 36 frames at 80 fps, cameras observation.images.oblique"
    assert second == "checking it with lerobot..." and rest[0].startswith("dataset   test/reach")
    probe = ("import sys; from jepa_robot.data.dataset import local_info; "
             f"assert local_info({str(root)!r})[1]['total_episodes'] == 3; "
             "assert local_info('someone/hub-dataset') is None; "
             "assert not any(name.startswith('lerobot') for name in sys.modules)")
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)


@pytest.mark.parametrize("what, message", [
    ("data", "is not a readable parquet file"),
    ("episodes", "is not a readable parquet file"),
    ("tasks", "is not a readable parquet file"),
    ("stats", "is unreadable"),
])
def test_unreadable_metadata_and_data_files_are_named(tmp_path, small_dataset, what, message):
    """Before: lerobot's errors ("Parquet magic bytes not found in footer", a JSON position)
    did not say which file."""
    root = tmp_path / "ds"
    shutil.copytree(small_dataset[0], root)
    target = file_of(root, what)
    content = target.read_bytes()
    target.write_bytes(content[:-20] if target.suffix == ".parquet" else content[: len(content) // 2])
    with pytest.raises(DatasetError, match=re.escape(str(target)) + " " + message):
        open_dataset(str(root))


def test_hub_id_offline_says_so(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DatasetError, match="HF_HUB_OFFLINE"):
        open_dataset("someone/not-a-real-dataset-xyz")


def test_merge_datasets_keeps_every_episode_and_refuses_mismatches(tmp_path, small_dataset):
    from envs.metaworld.env import MetaWorldGoalEnv
    from envs.recording import record_episodes
    from jepa_robot.data.dataset import episode_frames, merge_datasets

    first_root, _, first = small_dataset
    second_root = tmp_path / "push"
    record_episodes(lambda: MetaWorldGoalEnv("push", image_size=32, step_budget=12), second_root,
                    "test/push", episodes=2, seed_start=500, progress=False)
    merged = tmp_path / "merged"
    spec = merge_datasets([str(first_root), str(second_root)], merged, "test/merged")
    assert spec.episodes == first.total_episodes + 2 and spec.frames == 12 * (first.total_episodes + 2)
    dataset, merged_spec = open_dataset(str(merged))
    assert len(dataset.meta.tasks) == 2  # one task string per source
    # the second dataset's first episode decodes from the merged videos as it did alone
    alone, alone_spec = open_dataset(str(second_root))
    assert (merged_spec.repo_id, alone_spec.repo_id) == ("test/merged", "test/push")  # as recorded, not local/<dir>
    np.testing.assert_array_equal(episode_frames(dataset, spec.image_key, first.total_episodes).numpy(),
                                  episode_frames(alone, spec.image_key, 0).numpy())

    # an existing root is never overwritten
    with pytest.raises(DatasetError, match="already exists"):
        merge_datasets([str(first_root), str(second_root)], merged, "test/merged")
    # other features (64 px frames) are refused, and nothing is left behind
    other = tmp_path / "reach64"
    record_episodes(lambda: MetaWorldGoalEnv("reach", image_size=64, step_budget=4), other,
                    "test/reach64", episodes=1, seed_start=900, progress=False)
    with pytest.raises(DatasetError, match="cannot merge"):
        merge_datasets([str(first_root), str(other)], tmp_path / "bad", "test/bad")
    assert not (tmp_path / "bad").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bad")]


def test_a_dataset_without_a_recorded_repo_id_is_named_by_its_place(tmp_path, monkeypatch):
    from jepa_robot.data import dataset as dataset_module

    features = {"observation.images.cam": IMAGE, "action": VECTOR}
    outside = make_dataset(tmp_path / "elsewhere" / "mine", features)
    assert dataset_module.local_repo_id(outside) == "local/mine"
    monkeypatch.setattr("lerobot.utils.constants.HF_LEROBOT_HOME", tmp_path / "home")
    cached = make_dataset(tmp_path / "home" / "someone" / "theirs", features)
    assert dataset_module.local_repo_id(cached) == "someone/theirs"  # lerobot's cache: <user>/<name>
