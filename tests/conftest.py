"""Shared fixtures. Tests never touch the network: CI sets HF_HUB_OFFLINE=1, and so
do we, before lerobot or huggingface_hub is imported."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")

import pytest
import torch

# Two cores here and in CI: keep torch from oversubscribing them.
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory):
    """A 3-episode reach dataset (12 steps, 32 px) recorded through the real pipeline.
    Returns (root, repo_id, summary). Treat as read-only."""
    from envs.metaworld.env import MetaWorldGoalEnv
    from envs.metaworld.experts import Exploration
    from envs.recording import record_episodes

    root = tmp_path_factory.mktemp("datasets") / "reach"
    summary = record_episodes(
        make_env=lambda: MetaWorldGoalEnv("reach", image_size=32, step_budget=12),
        root=root,
        repo_id="test/reach",
        episodes=3,
        exploration=Exploration(noise_std=0.1),
        progress=False,
    )
    return root, "test/reach", summary


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory):
    """A randomly initialised tiny V-JEPA 2 (32 px crop, 8 px patches -> 16 tokens of 64 dims)."""
    from jepa_robot.world_model.encoders import save_tiny_random_encoder

    return save_tiny_random_encoder(
        tmp_path_factory.mktemp("encoders") / "tiny",
        seed=0,
        crop_size=32,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
    )


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_encoder_dir):
    """An untrained world-model checkpoint on the tiny encoder (32 px frames from the
    ``oblique`` camera, 2x2 pooled tokens, frameskip 2, 4-D actions and states)."""
    from jepa_robot.world_model.checkpoint import save_checkpoint
    from jepa_robot.world_model.encoders import load_encoder
    from jepa_robot.world_model.predictor import ACPredictor, PredictorConfig

    encoder = load_encoder(str(tiny_encoder_dir), resize_ratio=1.0, pool_grid=2)
    torch.manual_seed(0)
    predictor = ACPredictor(PredictorConfig(
        latent_dim=encoder.embed_dim, num_tokens=encoder.num_tokens, action_dim=8, state_dim=4,
        hidden_dim=32, depth=2, heads=2, mlp_ratio=2.0, max_steps=16, grid=2,
    ))
    data = {
        "image_key": "observation.images.oblique", "image_shape": [32, 32, 3], "frameskip": 2,
        "action_key": "action", "state_key": "observation.state", "fps": 80,
        "action_names": ["delta_x", "delta_y", "delta_z", "gripper"],
    }
    stats = {
        "action": {"mean": [0.0] * 8, "std": [0.5] * 8},
        "state": {"mean": [0.0, 0.6, 0.2, 0.5], "std": [0.1, 0.1, 0.1, 0.3]},
    }
    return save_checkpoint(tmp_path_factory.mktemp("checkpoints") / "tiny", predictor,
                           encoder.reference(), data, stats)


@pytest.fixture(scope="session")
def readout_checkpoint(small_dataset, tiny_checkpoint, tmp_path_factory):
    """A copy of the tiny checkpoint with a readout fit on the small dataset (shared)."""
    import shutil

    from jepa_robot.cli import main as cli

    root, _, _ = small_dataset
    work = tmp_path_factory.mktemp("readout")
    checkpoint = work / "checkpoint"
    shutil.copytree(tiny_checkpoint, checkpoint)
    assert cli(["fit-readout", f"checkpoint={checkpoint}", f"dataset={root}", "holdout=2",
                "epochs=1", "hidden=16", f"cache_dir={work}/latents", "progress=false"]) == 0
    return checkpoint


@pytest.fixture(scope="session")
def two_level_checkpoints(small_dataset, tiny_encoder_dir, tmp_path_factory):
    """A low-level checkpoint and a high-level one (``macro_steps=2``: 2 predictor steps per
    step, 3-D macro-actions) trained briefly on the small dataset with the same encoder
    (all tokens, frameskip 2) and latent cache. Returns their ``TrainResult``s (low, high)."""
    from jepa_robot.config import compose
    from jepa_robot.config.training import TrainConfig
    from jepa_robot.training.train import train

    work = tmp_path_factory.mktemp("two_levels")

    def run(name: str, *extra: str):
        overrides = [f"dataset={small_dataset[0]}", "encoder=local", f"encoder.name={tiny_encoder_dir}",
                     "predictor=tiny", "frameskip=2", "batch_size=8", "val_every=10", "val_batches=2",
                     "checkpoint_every=10", f"out_dir={work / name}", f"cache_dir={work / 'cache'}",
                     "val_fraction=0.34", "progress=false", "optim.lr=3e-3", *extra]
        return train(compose("train", overrides, TrainConfig))

    low = run("low", "window=4", "rollout_steps=2", "steps=20")
    high = run("high", "macro_steps=2", "macro_action_dim=3", "window=3", "rollout_steps=2", "steps=40")
    return low, high
