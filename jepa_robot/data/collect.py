"""``jepa-robot collect``: record scripted-expert episodes and a preview video."""

from __future__ import annotations

import logging
from pathlib import Path

import gymnasium as gym
import numpy as np

import envs
from envs.media import side_by_side, upscale, write_video
from envs.metaworld.env import MetaWorldGoalEnv
from envs.metaworld.goals import GoalNotReachedError, make_goal_images
from envs.recording import PREVIEW_FILE, RecordingSummary, record_episodes
from jepa_robot.config.data import CollectConfig, EnvConfig

log = logging.getLogger(__name__)

PREVIEW_PIXELS = 256  # preview frames are upscaled to about this size


def make_env(config: EnvConfig) -> MetaWorldGoalEnv:
    """Build the registered goal-image env an ``EnvConfig`` names."""
    env = gym.make(
        envs.ENV_IDS[config.task],
        image_size=config.image_size,
        cameras=tuple(config.cameras),
        step_budget=config.step_budget,
        camera_jitter=tuple(config.camera_jitter),
    )
    return env.unwrapped  # our env truncates itself; gym.make adds only checker wrappers


def collect(config: CollectConfig) -> RecordingSummary:
    """Record ``config.episodes`` episodes into ``config.root``; write a preview video."""
    preview: dict[int, list[dict[str, np.ndarray]]] = {}

    def keep_for_preview(seed: int, frames: list[dict[str, np.ndarray]]) -> None:
        if len(preview) < config.preview_episodes:
            preview[seed] = frames

    summary = record_episodes(
        make_env=lambda: make_env(config.env),
        root=config.root,
        repo_id=config.repo_id,
        episodes=config.episodes,
        seed_start=config.seed_start,
        exploration=config.exploration.to_exploration(),
        random_fraction=config.exploration.random_fraction,
        video_codec=config.video_codec,
        on_episode=keep_for_preview,
        progress=config.progress,
    )
    if preview:
        path = Path(config.preview_path) if config.preview_path else Path(config.root) / PREVIEW_FILE
        write_preview(config.env, preview, path)
        log.info("preview video: %s", path)
    return summary


def write_preview(env_config: EnvConfig, episodes: dict[int, list[dict[str, np.ndarray]]], path: Path) -> Path:
    """Video of recorded episodes: each camera's observation, then the goal image the
    evaluation protocol makes from the same seed."""
    env = make_env(env_config)
    factor = max(1, PREVIEW_PIXELS // env_config.image_size)
    video_frames = []
    try:
        for seed, frames in episodes.items():
            try:
                goal, _, _ = make_goal_images(env, seed)
                goal_panel = [upscale(goal.goal[c], factor) for c in env_config.cameras]
            except GoalNotReachedError as error:  # the recording stands; its preview shows no goal
                log.warning("preview of seed %d has no goal panel: %s", seed, error)
                goal_panel = [np.zeros_like(upscale(frames[0][c], factor)) for c in env_config.cameras]
            for frame in frames:
                panels = [upscale(frame[c], factor) for c in env_config.cameras]
                video_frames.append(side_by_side(panels + goal_panel, gap=4))
    finally:
        env.close()
    return write_video(path, video_frames, fps=20)
