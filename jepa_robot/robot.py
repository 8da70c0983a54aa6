"""``jepa-robot sim-bridge``, ``record-ros`` and ``run-robot``: configs in, ``envs`` functions out.

The work lives in ``envs.ros.sim_bridge``, ``envs.ros.recording``, ``envs.ros.arm`` and
``jepa_robot.agent``; this module only turns the typed configs into their arguments.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from jepa_robot.config.robot import RecordRosConfig, RunRobotConfig, SimBridgeConfig

if TYPE_CHECKING:  # imported where used: the sim bridge's asyncio server must not load beside
    # a client on roslibpy's twisted transport (robot.transport=twisted)
    from envs.recording import RecordingSummary
    from envs.ros.sim_bridge import SimBridge

log = logging.getLogger(__name__)


def make_sim_bridge(config: SimBridgeConfig) -> SimBridge:
    """A (not yet started) sim bridge rendering the robot config's cameras; its token is
    ``config.token``, else ``$JEPA_ROBOT_BRIDGE_TOKEN`` (``ValueError`` for a weak one)."""
    from envs.metaworld.env import MetaWorldGoalEnv
    from envs.ros.access import resolve_token
    from envs.ros.sim_bridge import SimBridge

    token = resolve_token(config.token)  # before the env: a bad token costs no renderer
    env = MetaWorldGoalEnv(
        config.task,
        image_size=config.image_size,
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
        goal_root=config.goal_root,
        token=token,
        allowed_origins=config.allowed_origins,
        max_message_bytes=config.max_message_bytes,
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
    from envs.ros.recording import record_ros as record_ros_episodes

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


def camera_goal_files(files: list[str], cameras: list[str], robot_cameras: list[str]) -> list[dict[str, str]]:
    """The reset service's goal images, one mapping camera -> file per goal, for the world
    model's ``cameras``. The sim bridge writes one file per goal and camera, named
    ``<goal>_<camera>.png`` (sub-goals first); files of the same ``<goal>`` make one goal,
    views of the robot's other cameras are dropped, and a file that names none of
    ``robot_cameras`` is a goal of its own (for a one-camera model)."""
    goals: dict[str, dict[str, str]] = {}
    for path in files:
        stem = Path(path).stem
        camera = next((c for c in robot_cameras if stem.endswith(f"_{c}")), None)
        if camera is None:
            if len(cameras) == 1:
                goals[stem] = {cameras[0]: path}
            continue
        if camera in cameras:
            goals.setdefault(stem.removesuffix(f"_{camera}"), {})[camera] = path
    incomplete = [name for name, views in goals.items() if set(views) != set(cameras)]
    if incomplete:
        raise ValueError(f"goal images {incomplete} lack a view of the world model's cameras {cameras}")
    return list(goals.values())


def run_robot(config: RunRobotConfig) -> dict:
    """The MPC agent on a ROS arm for ``config.steps`` bounded commands.

    Every command goes through ``RosArmEnv``'s safety filter (workspace box, speed
    limits, rate limit, watchdog); any exception, Ctrl-C or disconnect stops the arm
    (the env's context manager). Returns a summary of the run.
    """
    import dataclasses
    import time

    from envs.ros.arm import RosArmEnv
    from jepa_robot.agent import HierarchicalAgent, make_agent, run_episode
    from jepa_robot.evaluation import goal_images, load_image, resize_to, summarise
    from jepa_robot.world_model.model import WorldModel

    world_model = WorldModel.load(config.checkpoint, device=config.agent.device)
    agent = make_agent(world_model, config.planner, config.agent)
    robot = config.robot
    if config.dry_run is not None:
        robot = dataclasses.replace(robot, dry_run=config.dry_run)
    if len(robot.action_names) != world_model.env_action_dim:
        raise ValueError(f"robot.action_layout={robot.action_layout!r} gives {len(robot.action_names)}-D "
                         f"actions; the world model was trained on {world_model.env_action_dim}-D")
    robot_cameras = [camera.name for camera in robot.cameras]
    missing = [camera for camera in world_model.cameras if camera not in robot_cameras]
    if missing:
        raise ValueError(f"the world model sees cameras {list(world_model.cameras)}; robot.cameras has "
                         f"{robot_cameras} (no topic for {missing})")
    if robot.image_size != world_model.image_size:
        raise ValueError(f"robot.image_size={robot.image_size}, the world model takes "
                         f"{world_model.image_size} px frames")
    started = time.perf_counter()
    with RosArmEnv(robot) as env:
        options = None if config.goal else {"goal_dir": config.goal_dir}
        observation, info = env.reset(seed=config.seed, options=options)
        cameras = list(world_model.cameras)
        if config.goal:
            goals = goal_images(config.goal, cameras, world_model.image_size)
            goal_files = list(config.goal)
        else:
            grouped = camera_goal_files(list(info.get("goal_images") or []), cameras, robot_cameras)
            goals = [{camera: resize_to(load_image(path), world_model.image_size) for camera, path in views.items()}
                     for views in grouped]
            goal_files = [views[camera] for views in grouped for camera in cameras]
        if not goals:
            raise ValueError("no goal images: give goal=[FILE, ...] (this robot's reset service wrote none)")
        agent.reset(goals)
        clipped = 0

        def on_step(_step, _observation, _action, step_info) -> None:
            nonlocal clipped
            clipped += bool(step_info.get("clipped"))

        result = run_episode(env, agent, observation, config.steps, on_step=on_step)
    replan = summarise([r.seconds for r in result.replans]) or {}
    summary = {
        "steps": result.steps,
        "success": result.success,
        "goals": goal_files,
        "replans": len(result.replans),
        "replan_seconds": replan,
        "clipped_commands": clipped,
        **({"high_level_plans": len(agent.high_plans)} if isinstance(agent, HierarchicalAgent) else {}),
        "seconds": time.perf_counter() - started,
        "dry_run": robot.dry_run,
    }
    log.info("run-robot: %s", summary)
    return summary
