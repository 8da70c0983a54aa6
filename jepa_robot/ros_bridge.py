"""``jepa-robot sim-bridge`` and ``jepa-robot record-ros``: configs in, ``envs`` functions out.

The work lives in ``envs.sim_bridge`` and ``envs.ros_recording``; this module only
turns the typed configs into their arguments.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from envs.metaworld_goal import MetaWorldGoalEnv
from envs.recording import RecordingSummary
from envs.ros_recording import record_ros as record_ros_episodes
from envs.sim_bridge import SimBridge
from jepa_robot.config import RecordRosConfig, SimBridgeConfig

log = logging.getLogger(__name__)


def make_sim_bridge(config: SimBridgeConfig) -> SimBridge:
    """A (not yet started) sim bridge rendering the robot config's cameras."""
    env = MetaWorldGoalEnv(
        config.task,
        image_size=config.render_size,
        cameras=tuple(camera.name for camera in config.robot.cameras),
    )
    return SimBridge(
        env,
        config.robot,
        host=config.host,
        port=config.port,
        lockstep=config.lockstep,
        command_timeout_s=config.command_timeout_s,
        image_format=config.image_format,
        seed=config.seed,
    )


def run_sim_bridge(config: SimBridgeConfig, on_listening: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT/SIGTERM; ``on_listening(url)`` once clients can connect."""
    bridge = make_sim_bridge(config)
    bridge.start()
    if on_listening is not None:
        on_listening(bridge.url)
    bridge.serve()


def record_ros(config: RecordRosConfig) -> RecordingSummary:
    """Record teleoperated episodes from the robot config's topics."""
    return record_ros_episodes(
        config.robot,
        root=config.root,
        repo_id=config.repo_id,
        episodes=config.episodes,
        episode_steps=config.episode_steps,
        task=config.task,
        seed_start=config.seed_start,
        action_source=config.action_source,
        video_codec=config.video_codec,
        reset=config.reset,
        goal_dir=config.goal_dir,
        progress=config.progress,
    )
