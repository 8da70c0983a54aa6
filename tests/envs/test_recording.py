import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from lerobot.datasets.lerobot_dataset import LeRobotDataset

from envs.metaworld.env import MetaWorldGoalEnv
from envs.metaworld.experts import Exploration, ScriptedExpert
from envs.recording import DatasetMismatchError, episode_exploration, record_episodes


def tiny_env(image_size=32, steps=10, task="reach"):
    return lambda: MetaWorldGoalEnv(task, image_size=image_size, step_budget=steps)


def test_round_trip_through_lerobot(small_dataset):
    root, repo_id, summary = small_dataset
    assert summary.recorded_seeds == [0, 1, 2] and summary.frames == 36 and not summary.interrupted
    dataset = LeRobotDataset(repo_id, root=root, video_backend="pyav")
    assert dataset.meta.total_episodes == 3 and len(dataset) == 36
    assert dataset.meta.fps == 80 and dataset.meta.robot_type == "sawyer"
    assert dataset.meta.features["observation.state"]["names"] == ["hand_x", "hand_y", "hand_z", "gripper"]
    assert dataset.meta.features["action"]["names"] == ["delta_x", "delta_y", "delta_z", "gripper"]
    assert dataset.meta.features["observation.environment_state"]["names"] == ["object_x", "object_y", "object_z"]

    # Replay episode 1 (seed 1) with the same expert and compare frame by frame.
    env = MetaWorldGoalEnv("reach", image_size=32, step_budget=12)
    expert = ScriptedExpert("reach", Exploration(noise_std=0.1), seed=1)
    observation, _ = env.reset(seed=1)
    start = dataset.meta.episodes["dataset_from_index"][1]
    for offset in range(12):
        item = dataset[start + offset]
        action = expert.act(env.privileged_obs)
        # The object's position before the step, like the state (a readout label only).
        np.testing.assert_array_equal(item["observation.environment_state"].numpy(), env.object_position())
        assert int(item["episode_seed"]) == 1 and item["task"] == "reach"
        np.testing.assert_array_equal(item["observation.state"].numpy(), observation["state"])
        np.testing.assert_array_equal(item["action"].numpy(), action)
        image = np.round(item["observation.images.oblique"].permute(1, 2, 0).numpy() * 255)
        # Video is lossy (H.264 CRF 10 plus YUV<->RGB conversion): close, not equal.
        assert np.abs(image - observation["images"]["oblique"]).mean() < 4.0
        observation, _, _, _, info = env.step(action)
        assert bool(item["next.success"]) == info["success"]
    env.close()


def test_resume_records_only_missing_seeds(tmp_path):
    root = tmp_path / "ds"
    first = record_episodes(tiny_env(), root, "test/resume", episodes=2, progress=False)
    assert first.recorded_seeds == [0, 1]
    second = record_episodes(tiny_env(), root, "test/resume", episodes=4, progress=False)
    assert second.skipped_seeds == [0, 1] and second.recorded_seeds == [2, 3]
    assert second.total_episodes == 4
    dataset = LeRobotDataset("test/resume", root=root, video_backend="pyav")
    assert dataset.meta.total_episodes == 4
    assert sorted(int(s) for s in dataset.hf_dataset.unique("episode_seed")) == [0, 1, 2, 3]


def test_other_features_are_refused_and_nothing_is_written(tmp_path):
    root = tmp_path / "ds"
    record_episodes(tiny_env(image_size=32), root, "test/mismatch", episodes=1, progress=False)
    before = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    info_before = (root / "meta" / "info.json").read_text()
    with pytest.raises(DatasetMismatchError, match=r"observation\.images\.oblique"):
        record_episodes(tiny_env(image_size=48), root, "test/mismatch", episodes=2, progress=False)
    after = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert before == after and (root / "meta" / "info.json").read_text() == info_before
    assert LeRobotDataset("test/mismatch", root=root, video_backend="pyav").meta.total_episodes == 1


def test_a_non_dataset_directory_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetMismatchError, match="not a LeRobot dataset"):
        record_episodes(tiny_env(), tmp_path, "test/x", episodes=1, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_interrupt_keeps_saved_episodes(tmp_path):
    root = tmp_path / "ds"

    def stop_after_two(seed, frames):
        if seed == 1:
            raise KeyboardInterrupt

    summary = record_episodes(tiny_env(), root, "test/int", episodes=5, on_episode=stop_after_two, progress=False)
    assert summary.interrupted and summary.recorded_seeds == [0, 1]
    assert LeRobotDataset("test/int", root=root, video_backend="pyav").meta.total_episodes == 2
    # Rerunning resumes where it stopped.
    again = record_episodes(tiny_env(), root, "test/int", episodes=5, progress=False)
    assert again.recorded_seeds == [2, 3, 4]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_killed_collect_leaves_a_loadable_dataset(tmp_path, sig):
    root = tmp_path / "ds"
    command = [
        sys.executable, "-m", "jepa_robot.cli", "collect", f"root={root}", "repo_id=test/killed",
        "episodes=200", "env.step_budget=20", "env.image_size=32", "preview_episodes=0",
    ]
    # Unbuffered, so the progress bar's carriage-return updates reach us as they happen.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    seen = []

    def read_stderr():
        for chunk in iter(lambda: process.stderr.read(64), b""):
            seen.append(chunk)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    deadline = time.time() + 120
    while b"success=" not in b"".join(seen) and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)  # the progress bar shows success= once an episode is saved
    assert process.poll() is None, b"".join(seen).decode(errors="replace")[-2000:]
    process.send_signal(sig)
    process.wait(timeout=120)
    reader.join(timeout=5)
    assert process.returncode == 130, b"".join(seen).decode(errors="replace")[-2000:]
    dataset = LeRobotDataset("test/killed", root=root, video_backend="pyav")
    assert 1 <= dataset.meta.total_episodes < 200
    assert len(dataset) == 20 * dataset.meta.total_episodes
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["total_episodes"] == dataset.meta.total_episodes


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"episodes": 0}, "episodes"),
        ({"episodes": 5, "seed_start": 99_998}, "evaluation"),
        ({"episodes": 1, "seed_start": -1}, "training seeds"),
        ({"episodes": 1, "random_fraction": 1.5}, "random_fraction"),
    ],
)
def test_bad_recording_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        record_episodes(tiny_env(), tmp_path / "ds", "test/bad", progress=False, **kwargs)
    assert not (tmp_path / "ds").exists()


def test_random_episodes_are_chosen_by_seed():
    base = Exploration(noise_std=0.1)
    picks = [episode_exploration(base, 0.3, seed).random_episode for seed in range(200)]
    assert picks == [episode_exploration(base, 0.3, seed).random_episode for seed in range(200)]
    assert 0.2 < np.mean(picks) < 0.4
    assert not any(episode_exploration(base, 0.0, seed).random_episode for seed in range(50))
