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
    from envs.experts import Exploration
    from envs.metaworld_goal import MetaWorldGoalEnv
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
    from jepa_robot.encoders import save_tiny_random_encoder

    return save_tiny_random_encoder(
        tmp_path_factory.mktemp("encoders") / "tiny",
        seed=0,
        crop_size=32,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
    )
