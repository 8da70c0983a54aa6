import json
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
        open_dataset(str(tmp_path / "ds2"), image_key="observation.images.wrist", state_key=None)


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
    with pytest.raises(DatasetError, match="cannot load the dataset"):
        open_dataset(str(broken))


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
    dataset, _ = open_dataset(str(merged))
    assert len(dataset.meta.tasks) == 2  # one task string per source
    # the second dataset's first episode decodes from the merged videos as it did alone
    alone, _ = open_dataset(str(second_root))
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
