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
