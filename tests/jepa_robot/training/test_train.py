import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from jepa_robot.config import compose
from jepa_robot.config.training import TrainConfig
from jepa_robot.data.dataset import DatasetError
from jepa_robot.errors import RunLockedError, TrainingStateError
from jepa_robot.files import LOCK_FILE
from jepa_robot.training.state import load_training_state
from jepa_robot.training.train import learning_rate, train
from jepa_robot.world_model.checkpoint import CheckpointError, load_checkpoint
from jepa_robot.world_model.encoders import load_encoder


def tiny_train_overrides(dataset_root, encoder_dir, out_dir, cache_dir, *extra):
    return [
        f"dataset={dataset_root}",
        "encoder=local",
        f"encoder.name={encoder_dir}",
        "predictor=tiny",
        "frameskip=2",
        "window=4",
        "rollout_steps=2",
        "batch_size=8",
        "steps=30",
        "val_every=10",
        "val_batches=2",
        "checkpoint_every=10",
        f"out_dir={out_dir}",
        f"cache_dir={cache_dir}",
        "val_fraction=0.34",
        "progress=false",
        *extra,
    ]


def tiny_train_config(dataset_root, encoder_dir, out_dir, cache_dir, *extra):
    return compose("train", tiny_train_overrides(dataset_root, encoder_dir, out_dir, cache_dir, *extra), TrainConfig)


@pytest.fixture(scope="module")
def straight_run(small_dataset, tiny_encoder_dir, tmp_path_factory):
    """An uninterrupted 30-step run, the reference for resumed ones."""
    work = tmp_path_factory.mktemp("straight")
    return train(tiny_train_config(small_dataset[0], tiny_encoder_dir, work / "run", work / "cache")), work / "cache"


def assert_same_weights(checkpoint_a, checkpoint_b):
    a = load_checkpoint(checkpoint_a).predictor.state_dict()
    b = load_checkpoint(checkpoint_b).predictor.state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)


def test_train_writes_a_loadable_checkpoint_and_metrics(small_dataset, tiny_encoder_dir, tmp_path):
    config = tiny_train_config(small_dataset[0], tiny_encoder_dir, tmp_path / "run", tmp_path / "cache", "optim.lr=3e-3", "steps=60")
    result = train(config)
    assert result.steps == 60 and len(result.val_loss_per_step) == 3  # window 4 -> 3 rollout steps
    encoder = load_encoder(str(tiny_encoder_dir), resize_ratio=1.0)
    checkpoint = load_checkpoint(result.checkpoint, encoder_reference=encoder.reference())
    assert checkpoint.frameskip == 2 and checkpoint.predictor.config.action_dim == 8
    assert len(checkpoint.stats["action"]["mean"]) == 8 and len(checkpoint.stats["state"]["std"]) == 4
    assert checkpoint.config["data"]["train_episodes"] == 2 and checkpoint.config["data"]["val_episodes"] == 1
    with open(tmp_path / "run" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == list(range(1, 61))
    assert {"train/teacher_forcing", "train/rollout", "train/state", "val/rollout_loss_step3"} <= set(rows[0]) | set(rows[-1])
    first = np.mean([float(r["train/loss"]) for r in rows[:5]])
    last = np.mean([float(r["train/loss"]) for r in rows[-5:]])
    assert last < first  # it learns
    assert (tmp_path / "run" / "loss_curve.png").stat().st_size > 1000


def test_a_killed_run_resumes_to_the_same_weights(small_dataset, tiny_encoder_dir, straight_run, tmp_path, monkeypatch):
    import jepa_robot.training.train as training

    straight, _ = straight_run

    real = training.learning_rate

    def die_at_step_15(step, total, optim):
        if step == 15:
            raise KeyboardInterrupt("killed")
        return real(step, total, optim)

    monkeypatch.setattr(training, "learning_rate", die_at_step_15)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_train_config(small_dataset[0], tiny_encoder_dir, tmp_path / "killed", tmp_path / "cache"))
    monkeypatch.setattr(training, "learning_rate", real)
    resumed = train(tiny_train_config(small_dataset[0], tiny_encoder_dir, tmp_path / "killed", tmp_path / "cache"))
    assert resumed.resumed_from == 10 and resumed.steps == 30
    assert_same_weights(straight.checkpoint, resumed.checkpoint)
    with open(tmp_path / "killed" / "metrics.csv") as handle:
        assert [int(r["step"]) for r in csv.DictReader(handle)] == list(range(1, 31))


def test_a_run_killed_with_sigkill_resumes_from_its_state_without_unpickling(
    small_dataset, tiny_encoder_dir, straight_run, tmp_path, monkeypatch
):
    """A real `jepa-robot train` process killed with SIGKILL mid-run: the next run takes
    over its lock, resumes from the last training state (tensors in safetensors, the rest
    JSON: torch.load is never called) and ends with the uninterrupted run's weights."""
    straight, cache = straight_run
    out = tmp_path / "run"
    command = [sys.executable, "-m", "jepa_robot.cli", "train",
               *tiny_train_overrides(small_dataset[0], tiny_encoder_dir, out, cache), "device=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # the same numerics as in here
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               process_group=0)  # its own group: killpg reaches its children too
    state = out / "training_state.safetensors"
    deadline = time.monotonic() + 300
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    _, stderr = process.communicate()
    assert state.exists(), f"no training state was written before the kill:\n{stderr[-2000:]}"
    killed_at = load_training_state(state).step
    assert killed_at in (10, 20)  # killed mid-run, after a checkpoint
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == process.pid  # its lock was never released

    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load called on resume")

    monkeypatch.setattr(torch, "load", no_pickle)
    resumed = train(tiny_train_config(small_dataset[0], tiny_encoder_dir, out, cache))
    assert resumed.resumed_from == killed_at and resumed.steps == 30
    assert_same_weights(straight.checkpoint, resumed.checkpoint)
    with open(out / "metrics.csv") as handle:  # no row lost or repeated around the kill
        assert [int(r["step"]) for r in csv.DictReader(handle)] == list(range(1, 31))
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name or ".old-" in p.name]  # nothing half-written left


class _RunsCodeWhenUnpickled:
    """Unpickling this creates ``path``: what a hostile training_state.pt could do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_an_old_pickled_training_state_is_refused_not_unpickled(straight_run, small_dataset, tiny_encoder_dir, tmp_path):
    """Before: resuming a run directory someone handed over ran torch.load(weights_only=False)
    on its training_state.pt, running whatever code the file held."""
    straight, cache = straight_run
    run = tmp_path / "handed-over"
    shutil.copytree(straight.checkpoint, run / "checkpoint")
    marker = tmp_path / "code-ran"
    torch.save({"optimizer": {}, "step": 10, "rng": [_RunsCodeWhenUnpickled(marker)]}, run / "training_state.pt")
    with pytest.raises(TrainingStateError, match=r"training_state.pt is a training state in the old pickle format"):
        train(tiny_train_config(small_dataset[0], tiny_encoder_dir, run, cache))
    assert not marker.exists()


def test_a_second_run_into_a_locked_out_dir_is_refused(small_dataset, tiny_encoder_dir, tmp_path):
    """Before: two runs into one out_dir both went ahead, the last writer winning."""
    hold = "import sys, time\nfrom jepa_robot.files import run_lock\nwith run_lock(sys.argv[1], 'jepa-robot train'):\n" \
           "    print('locked', flush=True)\n    time.sleep(600)\n"
    holder = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=rf"run is in use by jepa-robot train \(pid {holder.pid} on host "):
            train(tiny_train_config(small_dataset[0], tiny_encoder_dir, tmp_path / "run", tmp_path / "cache"))
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [LOCK_FILE]  # nothing written


def test_resume_refuses_another_encoder_or_action_layout(small_dataset, tiny_encoder_dir, straight_run, tmp_path):
    from jepa_robot.world_model.encoders import save_tiny_random_encoder

    run = tmp_path / "run"
    train(tiny_train_config(small_dataset[0], tiny_encoder_dir, run, straight_run[1], "steps=10"))
    other = save_tiny_random_encoder(tmp_path / "other", seed=1, crop_size=32, hidden_size=64, num_hidden_layers=2, num_attention_heads=2)
    with pytest.raises(ValueError, match="another encoder"):
        train(tiny_train_config(small_dataset[0], other, run, tmp_path / "cache", "steps=20"))
    with pytest.raises(ValueError, match=r"another predictor configuration \(action_dim: run has 8, now 12"):
        train(tiny_train_config(small_dataset[0], tiny_encoder_dir, run, tmp_path / "cache", "steps=20", "frameskip=3", "window=3"))
    from envs.metaworld.env import MetaWorldGoalEnv
    from envs.recording import record_episodes

    bigger = tmp_path / "bigger"
    record_episodes(lambda: MetaWorldGoalEnv("reach", image_size=48, step_budget=12), bigger, "test/big", 3, progress=False)
    with pytest.raises(ValueError, match=r"another data layout \(image_shape: run has \[32, 32, 3\], now \[48, 48, 3\]"):
        train(tiny_train_config(bigger, tiny_encoder_dir, run, tmp_path / "cache", "steps=20"))
    with pytest.raises(ValueError, match="already holds a run"):
        train(tiny_train_config(small_dataset[0], tiny_encoder_dir, run, tmp_path / "cache", "resume=false"))
    with pytest.raises(CheckpointError, match="another encoder"):
        load_checkpoint(run / "checkpoint", encoder_reference=load_encoder(str(other), resize_ratio=1.0).reference())


def test_on_the_fly_encoding_trains_too(small_dataset, tiny_encoder_dir, tmp_path):
    result = train(tiny_train_config(small_dataset[0], tiny_encoder_dir, tmp_path / "run", tmp_path / "cache", "use_cache=false", "steps=3"))
    assert result.steps == 3 and not (tmp_path / "cache").exists()


def test_nan_in_the_data_is_named(tiny_encoder_dir, tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    features = {
        "observation.images.cam": {"dtype": "image", "shape": (32, 32, 3), "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (4,), "names": None},
        "action": {"dtype": "float32", "shape": (4,), "names": None},
    }
    root = tmp_path / "nan"
    dataset = LeRobotDataset.create(repo_id="test/nan", fps=10, features=features, root=root, use_videos=False)
    for episode in range(2):
        for frame in range(12):
            action = np.zeros(4, np.float32)
            if episode == 0 and frame == 5:
                action[1] = np.nan
            dataset.add_frame({
                "observation.images.cam": np.zeros((32, 32, 3), np.uint8),
                "observation.state": np.zeros(4, np.float32),
                "action": action,
                "task": "t",
            })
        dataset.save_episode()
    dataset.finalize()
    with pytest.raises(DatasetError, match="action has a non-finite value at frame 5"):
        train(tiny_train_config(root, tiny_encoder_dir, tmp_path / "run", tmp_path / "cache"))


def test_episodes_too_short_for_the_window(small_dataset, tiny_encoder_dir, tmp_path):
    with pytest.raises(DatasetError, match="no training window fits"):
        train(tiny_train_config(small_dataset[0], tiny_encoder_dir, tmp_path / "run", tmp_path / "cache", "frameskip=4", "window=4"))


def test_learning_rate_schedule():
    from jepa_robot.config.training import OptimConfig

    optim = OptimConfig(lr=1.0, warmup_start_lr=0.1, warmup_steps=10, decay_fraction=0.2, final_lr=0.0)
    assert learning_rate(0, 100, optim) == pytest.approx(0.1)
    assert learning_rate(5, 100, optim) == pytest.approx(0.55)
    assert learning_rate(50, 100, optim) == 1.0
    assert learning_rate(90, 100, optim) == pytest.approx(0.5)


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(small_dataset, tiny_encoder_dir, tmp_path):
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "jepa_robot.cli", "train", f"dataset={small_dataset[0]}", "encoder=local",
        f"encoder.name={tiny_encoder_dir}", "predictor=tiny", "frameskip=2", "window=4", "batch_size=4",
        "steps=6", "val_every=3", "checkpoint_every=3", f"out_dir={tmp_path / 'run'}",
        f"cache_dir={tmp_path / 'cache'}", "device=cpu", "progress=false",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Own process group, so a hang kills torchrun's workers too, not just torchrun.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"DDP training hung:\n{stderr[-3000:]}")
    assert process.returncode == 0, stderr[-3000:]
    assert "trained 6 steps" in stdout
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoint")
    assert checkpoint.config["training"]["step"] == 6


def test_checkpoint_matches_a_copy_of_its_encoder_elsewhere(tiny_encoder_dir, tmp_path):
    import shutil

    from jepa_robot.world_model.checkpoint import encoder_differences

    copy = tmp_path / "moved"
    shutil.copytree(tiny_encoder_dir, copy)
    here = load_encoder(str(tiny_encoder_dir), resize_ratio=1.0).reference()
    there = load_encoder(str(copy), resize_ratio=1.0).reference()
    assert here["source"] != there["source"] and encoder_differences(here, there) == []
    pooled = load_encoder(str(copy), resize_ratio=1.0, pool_grid=2).reference()
    assert any(d.startswith("pool_grid") for d in encoder_differences(here, pooled))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bf16 autocast training); CPU-only here")
def test_train_with_bf16_autocast_on_gpu(small_dataset, tiny_encoder_dir, tmp_path):
    result = train(tiny_train_config(small_dataset[0], tiny_encoder_dir, tmp_path / "run", tmp_path / "cache", "device=cuda", "steps=10"))
    assert result.steps == 10 and all(np.isfinite(result.val_loss_per_step))
    checkpoint = load_checkpoint(result.checkpoint)
    assert all(t.dtype == torch.float32 for t in checkpoint.predictor.state_dict().values())


def test_a_run_saved_before_views_resumes(straight_run, small_dataset, tiny_encoder_dir, tmp_path):
    """A training state written before models had views (no ``views`` in its predictor
    config, no ``image_keys`` in its data layout) resumes as the one-camera run it was."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    straight, cache = straight_run
    run = tmp_path / "run"
    shutil.copytree(straight.checkpoint.parent, run)
    state = run / "training_state.safetensors"
    with safe_open(str(state), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    (key, document), = metadata.items()
    info = json.loads(document)
    del info["predictor"]["views"], info["data_layout"]["image_keys"]
    save_file(tensors, str(state), metadata={key: json.dumps(info)})
    resumed = train(tiny_train_config(small_dataset[0], tiny_encoder_dir, run, cache, "steps=32"))
    assert resumed.resumed_from == 30 and resumed.steps == 32
