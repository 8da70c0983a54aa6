import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from lerobot.datasets.lerobot_dataset import LeRobotDataset

import envs.recording as recording
from envs.metaworld.env import MetaWorldGoalEnv
from envs.metaworld.experts import Exploration, ScriptedExpert
from envs.recording import (
    ENV_STATE_KEY,
    STAGE_DIR,
    DatasetMismatchError,
    episode_exploration,
    make_frame,
    record_episodes,
)


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


class SlowLerobotImport:
    """Stands in for ``LerobotImport``: lerobot (already imported here) counts as still
    loading for the first ``loading_checks`` times the recorder asks."""

    loading_checks = 0

    def __init__(self):
        self.asked = 0

    @property
    def done(self):
        self.asked += 1
        return self.asked > self.loading_checks

    def wait(self):
        pass


def test_a_new_recording_records_while_lerobot_loads(tmp_path, monkeypatch):
    """Episodes recorded before lerobot has loaded wait in memory, then are saved in seed
    order, each with its own frames (the preview's too)."""
    monkeypatch.setattr(recording, "LerobotImport", SlowLerobotImport)
    monkeypatch.setattr(SlowLerobotImport, "loading_checks", 3)  # seeds 0, 1, 2 wait; 3 is saved at once
    previews = {}
    summary = record_episodes(tiny_env(steps=6), tmp_path / "ds", "test/early", episodes=4,
                              on_episode=lambda seed, frames: previews.setdefault(seed, frames), progress=False)
    assert summary.recorded_seeds == [0, 1, 2, 3] and summary.frames == 24 and not summary.interrupted
    dataset = LeRobotDataset("test/early", root=tmp_path / "ds", video_backend="pyav")
    assert dataset.meta.total_episodes == 4 and len(dataset) == 24
    starts = dataset.meta.episodes["dataset_from_index"]
    assert [int(dataset.hf_dataset[int(start)]["episode_seed"]) for start in starts] == [0, 1, 2, 3]
    env = tiny_env(steps=6)()
    for seed in range(4):
        observation, _ = env.reset(seed=seed)
        assert len(previews[seed]) == 6
        np.testing.assert_array_equal(previews[seed][0]["oblique"], observation["images"]["oblique"])
    env.close()
    assert not (tmp_path / "ds" / STAGE_DIR).exists()


def test_episodes_waiting_for_lerobot_are_saved_on_a_stop(tmp_path, monkeypatch):
    """Ctrl-C while lerobot loads: the whole episodes recorded so far are saved, the one
    being recorded is dropped, and the dataset loads."""
    monkeypatch.setattr(recording, "LerobotImport", SlowLerobotImport)
    monkeypatch.setattr(SlowLerobotImport, "loading_checks", 10**6)  # lerobot never loads in time
    env = tiny_env(steps=5)()

    def record_one(seed, add_frame):
        observation, _ = env.reset(seed=seed)
        for step in range(5):
            if seed == 2 and step == 3:
                raise KeyboardInterrupt
            action = np.zeros(4, np.float32)
            add_frame(make_frame(observation["images"], observation["state"], action, False, seed, "reach"))
            observation, *_ = env.step(action)
        return 5, False

    summary = recording.record_seeds(tmp_path / "ds", "test/stop", recording.dataset_features(env), 80, "sawyer",
                                     range(5), record_one, progress=False)
    env.close()
    assert summary.interrupted and summary.recorded_seeds == [0, 1] and summary.frames == 10
    dataset = LeRobotDataset("test/stop", root=tmp_path / "ds", video_backend="pyav")
    assert dataset.meta.total_episodes == 2 and len(dataset) == 10


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


def saved_files(root, repo_id, episodes):
    """sha256 of the data and video files of the first ``episodes`` episodes, by path."""
    dataset = LeRobotDataset(repo_id, root=root, video_backend="pyav")
    paths = {dataset.meta.get_data_file_path(index) for index in range(episodes)}
    paths |= {dataset.meta.get_video_file_path(index, key)
              for index in range(episodes) for key in dataset.meta.video_keys}
    return {str(path): hashlib.sha256((root / path).read_bytes()).hexdigest() for path in paths}


def saved_rows(root, repo_id, episodes):
    """The parquet rows of the first ``episodes`` episodes, column by column."""
    dataset = LeRobotDataset(repo_id, root=root, video_backend="pyav")
    end = int(dataset.meta.episodes["dataset_to_index"][episodes - 1])
    return dataset.hf_dataset.with_format("numpy")[:end]


def assert_same_rows(before, after):
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(np.asarray(before[key]), np.asarray(after[key]), err_msg=key)


def test_sigkill_keeps_saved_episodes_and_the_same_command_resumes(tmp_path):
    """kill -9 of `collect` once two episodes are in the dataset. Before: lerobot's footers
    and buffered episode metadata were never written, the dataset did not load (a hub
    "offline" error) and the rerun stopped with the same error."""
    root = tmp_path / "ds"
    command = [sys.executable, "-m", "jepa_robot.cli", "collect", f"root={root}", "repo_id=test/sigkill",
               "episodes=6", "env.step_budget=10", "env.image_size=32", "preview_episodes=0", "progress=false"]
    with open(tmp_path / "log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=log)
        saved, deadline = 0, time.time() + 300
        while saved < 2 and time.time() < deadline and process.poll() is None:
            time.sleep(0.05)
            try:  # the recorder replaces info.json atomically, once an episode is in the dataset
                saved = json.loads((root / "meta" / "info.json").read_text())["total_episodes"]
            except (OSError, ValueError, KeyError):
                pass
        assert process.poll() is None, (tmp_path / "log").read_text()[-2000:]
        process.kill()
        process.wait(timeout=60)

    dataset = LeRobotDataset("test/sigkill", root=root, video_backend="pyav")  # loads as the kill left it
    kept = dataset.meta.total_episodes
    assert kept >= 2 and len(dataset) == 10 * kept
    files, rows = saved_files(root, "test/sigkill", kept), saved_rows(root, "test/sigkill", kept)

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"skipped {kept} already recorded" in rerun.stdout
    dataset = LeRobotDataset("test/sigkill", root=root, video_backend="pyav")
    assert dataset.meta.total_episodes == 6 and len(dataset) == 60
    seeds = [int(dataset.hf_dataset[int(start)]["episode_seed"]) for start in dataset.meta.episodes["dataset_from_index"]]
    assert seeds == [0, 1, 2, 3, 4, 5]
    assert saved_files(root, "test/sigkill", kept) == files  # the episodes saved before the kill, byte for byte
    assert_same_rows(rows, saved_rows(root, "test/sigkill", kept))
    assert not (root / STAGE_DIR).exists()


KILL_WHILE_PUBLISHING = """
import os, signal, sys
from pathlib import Path
import envs.recording as recording
from envs.metaworld.env import MetaWorldGoalEnv

root, kill_before = Path(sys.argv[1]), int(sys.argv[2])
published, publish_file = [], recording._publish_file

def publish_or_die(stage, root, relative, link=True):
    published.append(relative)
    if len(published) == kill_before:
        os.kill(os.getpid(), signal.SIGKILL)
    publish_file(stage, root, relative, link)

recording._publish_file = publish_or_die
recording.record_episodes(lambda: MetaWorldGoalEnv("reach", image_size=32, step_budget=6), root, "test/publish",
                          episodes=4, progress=False)
"""


# The recorder publishes info.json at creation, then per episode: video, data, tasks,
# metadata, stats, info.json. Episode 2's files are publications 14 to 19.
@pytest.mark.parametrize("kill_before, kept", [
    (14, 2),  # episode 2 saved in the staging copy only
    (16, 2),  # its video and data published, its metadata not: they are strays
    (19, 3),  # all but info.json published: the episode is complete and counted
])
def test_sigkill_while_publishing_an_episode(tmp_path, kill_before, kept):
    root = tmp_path / "ds"
    killed = subprocess.run([sys.executable, "-c", KILL_WHILE_PUBLISHING, str(root), str(kill_before)],
                            capture_output=True, text=True, timeout=900)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    dataset = LeRobotDataset("test/publish", root=root, video_backend="pyav")  # loads as the kill left it
    assert dataset.meta.total_episodes == 2 and len(dataset) == 12
    files, rows = saved_files(root, "test/publish", 2), saved_rows(root, "test/publish", 2)

    again = record_episodes(tiny_env(steps=6), root, "test/publish", episodes=4, progress=False)
    assert again.skipped_seeds == list(range(kept)) and again.recorded_seeds == list(range(kept, 4))
    dataset = LeRobotDataset("test/publish", root=root, video_backend="pyav")
    assert dataset.meta.total_episodes == 4 and len(dataset) == 24
    assert sorted(int(seed) for seed in dataset.hf_dataset.unique("episode_seed")) == [0, 1, 2, 3]
    assert saved_files(root, "test/publish", 2) == files
    assert_same_rows(rows, saved_rows(root, "test/publish", 2))
    assert not (root / STAGE_DIR).exists()
    for key in ("action", "observation.state"):  # the stats count every episode once (repaired ones too)
        values = np.asarray(dataset.hf_dataset.with_format("numpy")[key])
        np.testing.assert_allclose(dataset.meta.stats[key]["mean"], values.mean(axis=0), rtol=1e-5, atol=1e-6)
        assert int(np.asarray(dataset.meta.stats[key]["count"]).reshape(-1)[0]) == 24


def test_a_dataset_lerobots_in_place_writer_left_at_a_kill_is_repaired(tmp_path):
    """What a kill leaves when lerobot writes in place (the recorder before this one):
    footerless parquet files, episode metadata still in memory, info.json counting the
    lost episodes. The saved episodes are kept and the recording resumes."""
    root, killed = tmp_path / "ds", tmp_path / "killed"
    record_episodes(tiny_env(steps=6), root, "test/inplace", episodes=2, progress=False)
    files = saved_files(root, "test/inplace", 2)
    dataset = LeRobotDataset.resume("test/inplace", root=root, video_backend="pyav")
    dataset.meta.update_chunk_settings(data_files_size_in_mb=100, video_files_size_in_mb=200)  # lerobot's defaults
    env = MetaWorldGoalEnv("reach", image_size=32, step_budget=6)
    for seed in (2, 3):
        observation, _ = env.reset(seed=seed)
        truncated = False
        while not truncated:
            action = np.zeros(4, np.float32)
            frame = make_frame(observation["images"], observation["state"], action, False, seed, env.task)
            frame[ENV_STATE_KEY] = env.object_position()
            dataset.add_frame(frame)
            observation, _, _, truncated, _ = env.step(action)
        dataset.save_episode()
    shutil.copytree(root, killed)  # the files as a kill leaves them: no finalize()
    dataset.finalize()
    env.close()
    assert json.loads((killed / "meta" / "info.json").read_text())["total_episodes"] == 4
    with pytest.raises(Exception):  # noqa: B017 - the original failure: lerobot cannot load it
        LeRobotDataset("test/inplace", root=killed, video_backend="pyav")

    again = record_episodes(tiny_env(steps=6), killed, "test/inplace", episodes=5, progress=False)
    assert again.skipped_seeds == [0, 1] and again.recorded_seeds == [2, 3, 4]
    dataset = LeRobotDataset("test/inplace", root=killed, video_backend="pyav")
    assert dataset.meta.total_episodes == 5 and len(dataset) == 30
    assert saved_files(killed, "test/inplace", 2) == files


def test_an_unreadable_info_json_is_refused_and_nothing_is_removed(tmp_path):
    root = tmp_path / "ds"
    record_episodes(tiny_env(steps=6), root, "test/noinfo", episodes=1, progress=False)
    info = root / "meta" / "info.json"
    info.write_text(info.read_text()[:100])
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    with pytest.raises(DatasetMismatchError, match=r"meta/info\.json cannot be read"):
        record_episodes(tiny_env(steps=6), root, "test/noinfo", episodes=2, progress=False)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


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
