import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from jepa_robot.config import ConfigError, compose
from jepa_robot.config.training import MaskConfig, PretrainEncoderConfig
from jepa_robot.data.dataset import DatasetError
from jepa_robot.errors import RunLockedError, TrainingStateError
from jepa_robot.files import LOCK_FILE
from jepa_robot.training.pretrain import encode_context, pretrain_encoder, ridge_probe, sample_masks
from jepa_robot.training.state import load_training_state
from jepa_robot.world_model.encoders import load_encoder, tiny_vjepa2_config

TINY = [
    "encoder.crop_size=32",
    "encoder.patch_size=8",
    "encoder.hidden_size=64",
    "encoder.num_hidden_layers=2",
    "encoder.num_attention_heads=2",
    "encoder.pred_hidden_size=32",
    "encoder.pred_num_hidden_layers=1",
    "encoder.pred_num_attention_heads=2",
]


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: one thread is as fast, and far faster when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_overrides(dataset_root, out_dir, *extra) -> list[str]:
    return [
        f"datasets=[{dataset_root}]",
        *TINY,
        "batch_size=8",
        "steps=12",
        "optim.warmup_steps=2",
        "val_fraction=0.34",
        "val_every=4",
        "probe_every=6",
        "probe_frames=24",
        "probe_pool_grid=2",
        "checkpoint_every=4",
        "video_fraction=0.5",
        f"out_dir={out_dir}",
        "progress=false",
        *extra,
    ]


def tiny_config(dataset_root, out_dir, *extra) -> PretrainEncoderConfig:
    return compose("pretrain-encoder", tiny_overrides(dataset_root, out_dir, *extra), PretrainEncoderConfig)


SHORT = ("steps=8", "checkpoint_every=3")


@pytest.fixture(scope="module")
def straight_run(small_dataset, tmp_path_factory):
    """An uninterrupted short run, the reference for resumed ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return pretrain_encoder(tiny_config(small_dataset[0], tmp_path_factory.mktemp("pretrain") / "straight", *SHORT))
    finally:
        torch.set_num_threads(threads)


def read_metrics(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_context_encoder_with_every_token_is_the_encoder():
    from transformers import VJEPA2Model

    torch.manual_seed(0)
    model = VJEPA2Model(tiny_vjepa2_config(crop_size=32, hidden_size=64, num_hidden_layers=2, num_attention_heads=2)).eval()
    pixels = torch.randn(2, 4, 3, 32, 32)  # 2 tubelets -> 32 tokens
    full = model.encoder(pixel_values_videos=pixels).last_hidden_state
    every = torch.arange(32).repeat(2, 1)
    torch.testing.assert_close(encode_context(model.encoder, pixels, every), full)
    # the context encoder sees only its tokens: changing a target patch leaves the context unchanged
    context = torch.tensor([[0, 1, 2, 16, 17, 18]] * 2)
    changed = pixels.clone()
    changed[:, :, :, 24:, 24:] += 1.0  # the last patch of every frame (tokens 15 and 31)
    torch.testing.assert_close(encode_context(model.encoder, changed, context), encode_context(model.encoder, pixels, context))


def test_multi_block_masks_cover_the_target_ratio_and_repeat_over_time():
    rng = np.random.default_rng(0)
    context, target = sample_masks(rng, 16, 8, 2, MaskConfig())
    assert context.shape[0] == target.shape[0] == 16
    for row_context, row_target in zip(context.tolist(), target.tolist(), strict=True):
        assert not set(row_context) & set(row_target)
        first, second = [i for i in row_target if i < 64], [i - 64 for i in row_target if i >= 64]
        assert first == second  # the same spatial mask in both time slots
    assert 0.55 <= target.shape[1] / 128 <= 0.85
    # a tiny grid still leaves a context and a target
    context, target = sample_masks(rng, 4, 2, 1, MaskConfig())
    assert context.shape[1] >= 1 and target.shape[1] >= 1


def test_ridge_probe_recovers_a_linear_map_and_not_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 10)).astype(np.float32)
    y = x[:, :3] @ rng.normal(size=(3, 2)).astype(np.float32)
    groups = np.repeat(np.arange(6), 20)
    assert ridge_probe(x[:90], y[:90], groups[:90], x[90:], y[90:]).min() > 0.95
    noise = rng.normal(size=(120, 2)).astype(np.float32)
    assert ridge_probe(x[:90], noise[:90], groups[:90], x[90:], noise[90:]).max() < 0.2


def test_pretraining_learns_and_exports_a_loadable_encoder(small_dataset, tmp_path):
    result = pretrain_encoder(tiny_config(small_dataset[0], tmp_path / "run", "steps=16", "optim.lr=2e-3"))
    assert result.steps == 16 and result.resumed_from == 0
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(17))
    val = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    assert val[-1] < val[0]  # the loss on the fixed held-out batch went down
    assert {"train/target_std", "train/video_loss", "train/image_loss", "probe/r2", "probe/r2_random", "probe/r2_pixels"} <= set(rows[0]) | set(rows[-1])
    assert all(float(r["train/target_std"]) > 0.05 for r in rows[1:])  # not collapsed
    assert result.probe_r2 is not None and result.probe_r2_random is not None
    assert set(result.probe_r2_per_dim) == {"hand_x", "hand_y", "hand_z", "gripper"}
    for name in ("loss_curve.png", "pretrain_curves.png"):
        assert (tmp_path / "run" / name).stat().st_size > 1000

    encoder = load_encoder(str(result.encoder_dir), resize_ratio=1.0, device="cpu")
    frames = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    latents = encoder.encode(frames)
    assert latents.shape == (3, 16, 64) and torch.isfinite(latents).all()
    assert encoder.reference()["weights_sha256"]
    # the export is the EMA target encoder
    state = load_training_state(tmp_path / "run" / "training_state.safetensors")
    exported = load_file(result.encoder_dir / "model.safetensors")
    for name, tensor in state.section("target_encoder").items():
        torch.testing.assert_close(exported[f"encoder.{name}"], tensor, rtol=0, atol=0)
    model = state.section("model")
    assert not torch.equal(exported["encoder.layer.0.mlp.fc1.weight"], model["encoder.layer.0.mlp.fc1.weight"])


def test_a_killed_run_resumes_bit_exactly(small_dataset, straight_run, tmp_path, monkeypatch):
    import jepa_robot.training.pretrain as pretrain

    short = SHORT
    straight = straight_run

    real = pretrain.learning_rate

    def die_at_step_5(step, total, optim):
        if step == 5:
            raise KeyboardInterrupt("killed")
        return real(step, total, optim)

    monkeypatch.setattr(pretrain, "learning_rate", die_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        pretrain_encoder(tiny_config(small_dataset[0], tmp_path / "killed", *short))
    monkeypatch.setattr(pretrain, "learning_rate", real)
    resumed = pretrain_encoder(tiny_config(small_dataset[0], tmp_path / "killed", *short))
    assert resumed.resumed_from == 3 and resumed.steps == 8

    a = load_training_state(straight.out_dir / "training_state.safetensors")
    b = load_training_state(tmp_path / "killed" / "training_state.safetensors")
    for part in ("model", "target_encoder", "optimizer", "rng"):  # optimizer: exp_avg etc. per parameter
        assert a.section(part).keys() == b.section(part).keys() and a.section(part)
        for name, tensor in a.section(part).items():
            assert torch.equal(tensor, b.section(part)[name]), f"{part}.{name}"
    assert a.info["rng"] == b.info["rng"] and a.info["optimizer"] == b.info["optimizer"]
    assert a.step == b.step == 8
    exported_a = load_file(straight.encoder_dir / "model.safetensors")
    exported_b = load_file(resumed.encoder_dir / "model.safetensors")
    assert all(torch.equal(exported_a[k], exported_b[k]) for k in exported_a)
    rows = read_metrics(tmp_path / "killed" / "metrics.csv")
    assert [r["step"] for r in rows] == [str(s) for s in range(9)]
    assert rows == read_metrics(straight.out_dir / "metrics.csv")  # losses and probes too
    assert resumed.probe_r2_random == straight.probe_r2_random

    with pytest.raises(ValueError, match="already holds a run"):
        pretrain_encoder(tiny_config(small_dataset[0], tmp_path / "killed", "resume=false"))
    with pytest.raises(ValueError, match="hidden_size"):
        pretrain_encoder(tiny_config(small_dataset[0], tmp_path / "killed", "encoder.hidden_size=32"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("encoder.patch_size=7", "encoder.patch_size=7 must divide encoder.crop_size=32"),
        ("mask.target_ratio=[0.9,0.5]", "mask.target_ratio"),
        ("clip_frames=3", "clip_frames=3"),
        ("ema=[0.999,0.99]", "ema="),
        ("probe_pool_grid=9", "probe_pool_grid=9"),
        ("encoder.hidden_sise=64", "hidden_sise"),
    ],
)
def test_bad_config_values_name_the_key(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        tiny_config("data/x", tmp_path / "run", override)


def test_a_dataset_without_images_is_refused(tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    vector = {"dtype": "float32", "shape": (4,), "names": None}
    root = tmp_path / "no-images"
    dataset = LeRobotDataset.create(
        repo_id="test/no-images", fps=10, features={"action": vector, "observation.state": vector}, root=root, use_videos=False
    )
    for _ in range(4):
        dataset.add_frame({"task": "t", "action": np.zeros(4, np.float32), "observation.state": np.zeros(4, np.float32)})
    dataset.save_episode()
    dataset.finalize()
    with pytest.raises(DatasetError, match="no image or video key"):
        pretrain_encoder(tiny_config(root, tmp_path / "run"))
    assert not (tmp_path / "run" / "training_state.safetensors").exists()


def _kill_when(dataset_root, out, condition):
    """Run `jepa-robot pretrain-encoder` into ``out`` and SIGKILL it once ``condition()``."""
    command = [sys.executable, "-m", "jepa_robot.cli", "pretrain-encoder", *tiny_overrides(dataset_root, out, *SHORT),
               "device=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread, as here
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               process_group=0)  # its own group: killpg reaches its children too
    deadline = time.monotonic() + 300
    while not condition() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    _, stderr = process.communicate()
    assert condition(), f"killed too late or too early:\n{stderr[-2000:]}"
    return process


def test_a_run_killed_with_sigkill_resumes_bit_exactly(small_dataset, straight_run, tmp_path):
    """A real `jepa-robot pretrain-encoder` process killed with SIGKILL, first before its
    first checkpoint (before: its step-0 metrics row was then written twice), then mid-run:
    the next run takes over the lock and resumes from the last training state to the same
    encoder and the same metrics."""
    out = tmp_path / "run"
    state = out / "training_state.safetensors"
    _kill_when(small_dataset[0], out, lambda: (out / "metrics.csv").exists())
    assert not state.exists()
    process = _kill_when(small_dataset[0], out, state.exists)
    killed_at = load_training_state(state).step
    assert killed_at in (3, 6)  # killed mid-run, after a checkpoint
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == process.pid  # never released

    resumed = pretrain_encoder(tiny_config(small_dataset[0], out, *SHORT))
    assert resumed.resumed_from == killed_at and resumed.steps == 8
    exported_a = load_file(straight_run.encoder_dir / "model.safetensors")
    exported_b = load_file(resumed.encoder_dir / "model.safetensors")
    assert exported_a.keys() == exported_b.keys()
    assert all(torch.equal(exported_a[k], exported_b[k]) for k in exported_a)
    assert read_metrics(out / "metrics.csv") == read_metrics(straight_run.out_dir / "metrics.csv")


class _RunsCodeWhenUnpickled:
    """Unpickling this creates ``path``: what a hostile training_state.pt could do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_an_old_pickled_training_state_is_refused_not_unpickled(small_dataset, tmp_path):
    """Before: resuming ran torch.load(weights_only=False) on the run's training_state.pt,
    running whatever code the file held."""
    run = tmp_path / "handed-over"
    run.mkdir()
    marker = tmp_path / "code-ran"
    torch.save({"step": 3, "identity": _RunsCodeWhenUnpickled(marker)}, run / "training_state.pt")
    with pytest.raises(TrainingStateError, match="training_state.pt is a training state in the old pickle format"):
        pretrain_encoder(tiny_config(small_dataset[0], run))
    assert not marker.exists()


def test_a_second_run_into_a_locked_out_dir_is_refused(small_dataset, tmp_path):
    hold = "import sys, time\nfrom jepa_robot.files import run_lock\nwith run_lock(sys.argv[1], 'jepa-robot pretrain-encoder'):\n" \
           "    print('locked', flush=True)\n    time.sleep(600)\n"
    holder = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=rf"in use by jepa-robot pretrain-encoder \(pid {holder.pid} on host "):
            pretrain_encoder(tiny_config(small_dataset[0], tmp_path / "run"))
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [LOCK_FILE]  # nothing written
