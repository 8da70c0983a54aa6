"""``jepa-robot eval`` and ``jepa-robot plan``: the evaluation protocol (docs/protocol.md).

Per task, episode i starts from seed ``seed_start + i``: 100000 + i for reported
figures, 150000 and up for tuning, never training data. The goal image is the task-aimed
scripted expert's success frame closest to the target (``envs.metaworld.goals``; its phase-change
frames are the sub-goals if asked; ``goals=jepa_wms`` takes JEPA-WMs' goal frames
instead); a seed whose expert cannot solve the task is reported and skipped. The agent
runs the full step budget and success is the env's flag on the last step. The same
seeds and budgets are run with random actions and with the expert that made the goal
images as references.

Outputs under ``out_dir``: ``report.json`` (everything below, written atomically),
``summary.png`` (success with 95% Wilson intervals against the references, plan-time
histogram against the plan-time target) and ``videos/<task>-<seed>.mp4`` (camera with the
target marked | active goal | energy, under a header with task, seed and step, ending on a
success or failure caption). Every model episode is recorded in memory (the model's
frames, cheap); ``videos=N`` then draws N per task, successes and failures alternating
(``video_choice=mixed``) or the first N seeds (``first``). An
``out_dir`` that already holds a report is refused before anything runs, unless
``overwrite=true``; an eval holds the directory's lock while it runs, so a second eval
into it is refused.
With ``traces=N`` the first N model episodes per task carry a per-step ``trace`` in
their record (:class:`EpisodeTrace`): where the hand and the object really were, beside
what the readout made of the frame and the plan's energy.
"""

from __future__ import annotations

import logging
import logging.handlers
import math
import multiprocessing
import os
import platform
import queue
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from envs.media import draw_target, side_by_side, stack_vertically, text_bar, upscale, write_video
from envs.metaworld.camera import project_to_camera, target_position
from envs.metaworld.env import (
    EPISODE_BUDGET,
    STATE_AND_OBJECT_NAMES,
    MetaWorldGoalEnv,
    seed_split,
)
from envs.metaworld.experts import SUBGOAL_PHASES, ScriptedExpert
from envs.metaworld.goals import JEPA_WMS_STEPS, GoalNotReachedError, make_goal_images
from jepa_robot.agent import EpisodeResult, HierarchicalAgent, MPCAgent, Replan, make_agent, run_episode
from jepa_robot.config import ConfigError
from jepa_robot.config.planning import REFERENCES, EvalConfig, PlanConfig
from jepa_robot.errors import JepaRobotError, RunDirectoryError
from jepa_robot.files import atomic_file, portable_path, remove_temporaries, run_lock, write_json_atomic
from jepa_robot.world_model.model import IMAGE_KEY_PREFIX, WorldModel, read_checkpoint_config, resolve_checkpoint

log = logging.getLogger(__name__)

REPORT_FORMAT = "jepa_robot.eval/1"
REPORT_FILE = "report.json"
VIDEO_PIXELS = 256
"""Height of each video panel; the model's small frames are upscaled to it."""
VIDEO_FPS = 20
CAPTION_SECONDS = 1.0
"""How long a video holds its closing success / failure caption."""
VIDEO_CHOICES = ("mixed", "first")
"""Which episodes get a video (``video_choice``): successes and failures alternating, or the first seeds."""
PLAN_TIME_TARGET_S = 0.5
"""The project's target for one replan (encode + plan), drawn on ``summary.png``."""


# ---------------------------------------------------------------- statistics
def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (well behaved at 0% and 100%)."""
    if trials == 0:
        return (0.0, 1.0)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    # The interval always holds p; min/max keep rounding (1 - 1e-16 at 100%) from saying otherwise.
    return (max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)))


def summarise(values: list[float]) -> dict[str, float] | None:
    """mean, p50, p95, min, max and count of ``values`` (None if empty)."""
    if not values:
        return None
    array = np.asarray(values, dtype=float)
    return {
        "mean": float(array.mean()),
        "p50": float(np.percentile(array, 50)),
        "p95": float(np.percentile(array, 95)),
        "min": float(array.min()),
        "max": float(array.max()),
        "count": int(array.size),
    }


def success_summary(successes: list[bool]) -> dict[str, Any]:
    count, n = int(sum(successes)), len(successes)
    low, high = wilson_interval(count, n)
    return {"success_rate": count / n if n else 0.0, "successes": count, "n": n, "wilson_95": [low, high]}


# ---------------------------------------------------------------- episodes
@dataclass(frozen=True)
class Job:
    """One episode to run: ``kind`` is ``model``, ``random`` or ``expert``."""

    task: str
    seed: int
    kind: str
    video: bool = False
    trace: bool = False
    goals: str = "protocol"
    """Which goal images (``envs.metaworld.goals.GOAL_SOURCES``); the expert reference follows it."""


_reference_envs: dict[str, MetaWorldGoalEnv] = {}
"""One camera-less env per task and process, reused: ``reset(seed)`` alone sets the scene."""


def run_reference(task: str, seed: int, kind: str, goals: str = "protocol") -> dict[str, Any]:
    """Random actions or the noise-free scripted expert that makes the goal images
    (task-aimed for ``goals=protocol``, Meta-World's own for ``jepa_wms``) for the task's
    budget, on a camera-less env (neither looks at images)."""
    started = time.perf_counter()
    if task not in _reference_envs:
        _reference_envs[task] = MetaWorldGoalEnv(task, cameras=())
    env = _reference_envs[task]
    observation, _ = env.reset(seed=seed)
    if kind == "random":
        rng = np.random.default_rng([seed, 0x5EED])
        policy = lambda _obs: rng.uniform(-1.0, 1.0, 4).astype(np.float32)  # noqa: E731
    elif kind == "expert":
        expert = ScriptedExpert(task, seed=seed)
        if goals == "protocol":
            policy = lambda _obs: expert.aimed_action(env.privileged_obs, env.task_point())  # noqa: E731
        else:
            policy = lambda _obs: expert.expert_action(env.privileged_obs)  # noqa: E731
    else:
        raise ValueError(f"unknown reference {kind!r}")
    result = run_episode(env, policy, observation, EPISODE_BUDGET[task])
    return {"task": task, "seed": seed, "kind": kind, "success": result.success,
            "steps": result.steps, "seconds": time.perf_counter() - started}


def goal_frames(env: MetaWorldGoalEnv, seed: int, cameras: Sequence[str], subgoals: bool,
                source: str = "protocol"):
    """The goal images for ``seed``, each a mapping camera -> frame for ``cameras`` (with
    ``subgoals``, the expert's phase-change images first); resets ``env`` to ``seed``.
    Raises ``GoalNotReachedError`` where the expert cannot solve the task from this seed."""
    goal, observation, _ = make_goal_images(env, seed, source=source)
    images = [*goal.subgoals, goal.goal] if subgoals else [goal.goal]
    return [{camera: image[camera] for camera in cameras} for image in images], observation, goal


def goal_names(count: int, phases: list[str]) -> list[str]:
    """What each goal image is, for a video's goal panel: ``sub-goal 1/2: grasp``, ...,
    ``final goal`` (sub-goals without known phases are numbered only)."""
    names = []
    for index in range(count - 1):
        phase = f": {phases[index]}" if index < len(phases) else ""
        names.append(f"sub-goal {index + 1}/{count - 1}{phase}")
    return [*names, "final goal"]


@dataclass
class EpisodeRecording:
    """What an episode's video shows, collected while it runs: the model's own frames
    (small, so recording every episode is cheap) and per frame the active goal and the
    simulator's distance to the target. The video is drawn from it afterwards
    (:func:`write_episode_video`) for the episodes chosen."""

    task: str
    seed: int
    budget: int
    goals: list[dict[str, np.ndarray]]
    """Each goal image, per camera (the model's cameras, in its order)."""
    goal_names: list[str]
    target_pixel: tuple[float, float] | None
    """The task's target in the first camera's frame (pixels of the model's frame), or None."""
    frames: list[dict[str, np.ndarray]] = field(default_factory=list)
    """Per env step, every camera's frame."""
    goal_indices: list[int] = field(default_factory=list)
    target_distances: list[float | None] = field(default_factory=list)
    replans: list[Replan] = field(default_factory=list)
    success: bool = False

    def add(self, frame: dict[str, np.ndarray], goal_index: int, target_distance: float | None) -> None:
        self.frames.append(frame)
        self.goal_indices.append(goal_index)
        self.target_distances.append(target_distance)

    def finish(self, result: EpisodeResult) -> None:
        self.replans, self.success = list(result.replans), result.success


def _pyplot():
    """matplotlib's pyplot on the Agg backend, its INFO notes (font cache) kept off the
    terminal, where they would land inside the progress bar."""
    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def energy_plot(replans: list[Replan], steps: int, height: int,
                width: int) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """The whole episode's plan energy and goal distance against env steps, drawn once
    as a ``(height, width, 3)`` image. Also returns the axes' pixel columns for steps
    ``0`` and ``steps``, and its pixel rows (top, bottom), so a frame can hide the part of
    the plot that lies in its future without redrawing it."""
    plt = _pyplot()
    dpi = 100
    figure, axes = plt.subplots(figsize=(width / dpi, height / dpi), dpi=dpi)
    if replans:
        step = [r.step for r in replans]
        axes.plot(step, [r.energy for r in replans], color="tab:blue", lw=1.5)
        axes.plot(step, [r.goal_distance for r in replans], color="tab:orange", lw=1.5)
        for index in range(1, len(replans)):
            if replans[index].goal_index != replans[index - 1].goal_index:
                axes.axvline(replans[index].step, color="grey", lw=1.0, ls="--")
            elif replans[index].high_level_seconds > 0:  # a hierarchical agent's new sub-goal
                axes.axvline(replans[index].step, color="tab:purple", lw=0.8, ls=":")
    axes.set_xlim(0, steps)
    axes.set_ylim(bottom=0)
    axes.set_xlabel("env step", fontsize=10)
    axes.set_ylabel("latent energy", fontsize=10)
    axes.tick_params(labelsize=9)
    axes.grid(alpha=0.3)
    figure.tight_layout(pad=0.4)
    figure.canvas.draw()
    image = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    box = axes.get_window_extent()  # display pixels, origin bottom left
    plt.close(figure)
    rows = (image.shape[0] - int(math.ceil(box.y1)), image.shape[0] - int(box.y0))
    return image, (int(round(box.x0)), int(round(box.x1))), rows


def episode_video_frames(recording: EpisodeRecording, caption_frames: int | None = None) -> Iterator[np.ndarray]:
    """The video's frames: a header (task, seed, step, distance to the target), panel
    labels, then every camera (the target ringed in the first) | the active goal's views |
    energy so far, and a footer; the last frame is held for ``caption_frames`` (default
    ``CAPTION_SECONDS``) with the success or failure caption."""
    if caption_frames is None:
        caption_frames = int(round(CAPTION_SECONDS * VIDEO_FPS))
    cameras = list(recording.frames[0])
    side = recording.frames[0][cameras[0]].shape[0]
    factor = max(1, VIDEO_PIXELS // side)
    panel, gap = side * factor, 4
    views_width = len(cameras) * panel + (len(cameras) - 1) * gap  # one camera row: views side by side

    def views(images: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [upscale(images[camera], factor) for camera in cameras]

    goals = [side_by_side(views(g), gap=gap) for g in recording.goals]
    plot_width = int(1.6 * panel)
    plot, (x_start, x_end), (top, bottom) = energy_plot(recording.replans, recording.budget, panel, plot_width)
    width = 2 * views_width + plot_width + 2 * gap
    bar, font = max(20, panel // 10), max(12, panel // 16)
    label_bar = lambda texts: text_bar(width, bar, texts, font_size=font)  # noqa: E731
    which = "fingers" if recording.task == "reach" else "object"
    plot_x = 2 * (views_width + gap)
    seen = "camera" if len(cameras) == 1 else " | ".join(cameras)
    base_labels = [(6, f"{seen} (the model's input)", (0, 0, 0)),
                   (plot_x + 6, "plan energy", (31, 119, 180)),
                   (plot_x + 6 + 9 * font, "goal distance", (255, 127, 14))]
    if len(goals) > 1:
        base_labels.append((plot_x + 6 + 19 * font, "- - goal switch", (110, 110, 110)))
    ringed = "" if len(cameras) == 1 else f" in the {cameras[0]} view"
    footer = label_bar([(6, f"yellow ring: the task's target{ringed} (drawn for the video; never shown to the model)",
                         (90, 90, 90))])
    labels: dict[int, np.ndarray] = {}  # one label row per goal: text drawing is the costly part
    last = len(recording.frames) - 1
    for index, frame in enumerate(recording.frames):
        seen_now = views(frame)
        if recording.target_pixel is not None:
            seen_now[0] = draw_target(seen_now[0], *(factor * v for v in recording.target_pixel),
                                      radius=max(4, panel // 32))
        camera = side_by_side(seen_now, gap=gap)
        goal_index = recording.goal_indices[index]
        step_plot = plot.copy()
        # hide the plot right of this frame's step: it has not happened yet
        x_now = x_start + round((x_end - x_start) * index / recording.budget)
        step_plot[top:bottom, x_now + 1: x_end] = 235
        distance = recording.target_distances[index]
        header = label_bar([
            (6, f"{recording.task}   seed {recording.seed}   step {index}/{recording.budget}", (0, 0, 0)),
            (plot_x + 6, f"{which} to target: " + (f"{100 * distance:.1f} cm" if distance is not None else "-"),
             (0, 0, 0))])
        if goal_index not in labels:
            labels[goal_index] = label_bar(
                [*base_labels, (views_width + gap + 6, f"goal ({recording.goal_names[goal_index]})", (0, 0, 0))])
        panels = side_by_side([camera, goals[goal_index], step_plot], gap=gap)
        yield stack_vertically([header, labels[goal_index], panels, footer])
        if index < last:
            continue
        outcome = "SUCCESS" if recording.success else "FAILURE"
        colour = (0, 130, 0) if recording.success else (190, 0, 0)
        ending = (f"{outcome}: {which} {100 * distance:.1f} cm from the target at step {index}"
                  if distance is not None else f"{outcome} at step {index}")
        caption = text_bar(width, bar, [(6, ending, (255, 255, 255))], background=colour, font_size=font)
        closing = stack_vertically([header, labels[goal_index], panels, caption])
        for _ in range(caption_frames):
            yield closing


def write_episode_video(recording: EpisodeRecording, path: Path) -> Path:
    """Draw ``recording``'s video and write it to ``path`` (atomically)."""
    return write_video(path, episode_video_frames(recording), fps=VIDEO_FPS)


def choose_videos(records: list[dict[str, Any]], count: int, choice: str) -> list[tuple[str, int]]:
    """Which ``(task, seed)`` model episodes get a video: per task, ``count`` of them;
    ``first``: the lowest seeds; ``mixed``: successes and failures alternating in seed
    order (a success first), as many of each as there are. Skipped seeds have none."""
    chosen: list[tuple[str, int]] = []
    tasks = dict.fromkeys(r["task"] for r in records)
    for task in tasks:
        ran = sorted((r for r in records if r["task"] == task and r["kind"] == "model" and "skipped" not in r),
                     key=lambda r: r["seed"])
        if choice == "first":
            picked = ran[:count]
        else:
            successes = [r for r in ran if r["success"]]
            failures = [r for r in ran if not r["success"]]
            picked = []
            while len(picked) < count and (successes or failures):
                for pool in (successes, failures):
                    if pool and len(picked) < count:
                        picked.append(pool.pop(0))
        chosen.extend((task, r["seed"]) for r in sorted(picked, key=lambda r: r["seed"]))
    return chosen


class VideoCandidates:
    """The recordings that may still be chosen (:func:`choose_videos`), as episodes end
    in any order: per task, the ``count`` lowest-seed successes and failures (``mixed``)
    or the ``count`` lowest seeds (``first``). Bounds memory to ``2 * count`` per task."""

    def __init__(self, count: int, choice: str) -> None:
        self.count, self.choice = count, choice
        self.kept: dict[tuple[str, bool], dict[int, EpisodeRecording]] = {}

    def offer(self, recording: EpisodeRecording) -> None:
        if self.count == 0:
            return
        group = (recording.task, recording.success if self.choice == "mixed" else True)
        kept = self.kept.setdefault(group, {})
        kept[recording.seed] = recording
        if len(kept) > self.count:
            del kept[max(kept)]

    def get(self, task: str, seed: int) -> EpisodeRecording:
        for (kept_task, _), kept in self.kept.items():
            if kept_task == task and seed in kept:
                return kept[seed]
        raise KeyError(f"no recording of {task} seed {seed}")


class EpisodeTrace:
    """One row per predictor step: the simulator's state after it (hand xyz, gripper,
    object xyz; privileged, a diagnostic only), the world model's readout of that frame
    (when it has a readout) and the latest plan's energy, active goal and goal distance."""

    def __init__(self, world_model: WorldModel, frameskip: int) -> None:
        self.world_model = world_model
        self.frameskip = frameskip
        self.rows: list[dict[str, Any]] = []

    @property
    def columns(self) -> dict[str, list[str]]:
        """What the ``true`` and ``read`` lists of a row hold."""
        readout = self.world_model.readout
        return {"true": list(STATE_AND_OBJECT_NAMES),
                "read": list(readout.config.state_names) if readout is not None else []}

    def add(self, step: int, env: MetaWorldGoalEnv, images: dict[str, np.ndarray], agent: MPCAgent) -> None:
        if (step + 1) % self.frameskip or not agent.replans:
            return
        replan = agent.replans[-1]
        row = {"step": step + 1, "goal_index": replan.goal_index, "energy": replan.energy,
               "goal_distance": replan.goal_distance,
               "true": [round(float(v), 4) for v in (*env.state(), *env.object_position())]}
        readout = self.world_model.readout
        if readout is not None:
            with torch.no_grad():
                read = readout(self.world_model.encode_image(images))
            row["read"] = [round(float(v), 4) for v in read]
        self.rows.append(row)


class ModelRunner:
    """Runs model episodes in one process: loads the world model once, keeps one env per task."""

    def __init__(self, checkpoint: str, planner, agent_config, subgoals: bool,
                 goals: str = "protocol", camera_offset: tuple[float, float, float] | list[float] = (0, 0, 0)) -> None:
        self.world_model = WorldModel.load(checkpoint, device=agent_config.device)
        self.camera_offset = tuple(camera_offset)
        """How far the camera has moved from the model's training view (azimuth and
        elevation degrees, distance metres): observations and goal images alike."""
        self.planner_settings, self.agent_config = planner, agent_config
        self.agents: dict[str, MPCAgent] = {}  # one per task: weights may differ by task
        self.subgoals, self.goal_source = subgoals, goals
        self.envs: dict[str, MetaWorldGoalEnv] = {}

    def env(self, task: str) -> MetaWorldGoalEnv:
        if task not in self.envs:
            size = self.world_model.image_size
            self.envs[task] = MetaWorldGoalEnv(task, image_size=size, cameras=self.world_model.cameras,
                                               camera_offset=self.camera_offset)
        return self.envs[task]

    def agent(self, task: str) -> MPCAgent:
        if task not in self.agents:
            self.agents[task] = make_agent(
                self.world_model, self.planner_settings.for_task(task), self.agent_config)
        return self.agents[task]

    def run(self, task: str, seed: int, record_video: bool = False, goals: list[dict[str, np.ndarray]] | None = None,
            steps: int | None = None, trace: bool = False,
            on_env_step: Callable[[], None] | None = None) -> tuple[dict[str, Any], EpisodeRecording | None]:
        """One episode from ``seed`` toward the protocol's goal frames (or ``goals``): its
        report record and, with ``record_video``, what its video shows; each goal is a
        mapping camera -> frame. ``on_env_step()`` is called after every env step (progress)."""
        started = time.perf_counter()
        env, cameras = self.env(task), self.world_model.cameras

        def seen(obs: dict[str, Any]) -> dict[str, np.ndarray]:
            return {camera: obs["images"][camera] for camera in cameras}

        goal = None
        if goals is None:
            try:
                goals, observation, goal = goal_frames(env, seed, cameras, self.subgoals,
                                                      self.goal_source)
            except GoalNotReachedError as error:  # reported and skipped, never replaced
                log.warning("%s seed %d skipped: %s", task, seed, error)
                return {"task": task, "seed": seed, "kind": "model", "skipped": str(error),
                        "wall_seconds": time.perf_counter() - started}, None
        else:
            observation, _ = env.reset(seed=seed)
        steps = steps or EPISODE_BUDGET[task]
        agent = self.agent(task)
        agent.reset(goals)
        recording = None
        if record_video:
            # privileged, for the video only: the model's frames are never drawn on
            target = target_position(env)
            phases = goal.subgoal_phases if goal is not None and self.subgoals else []
            recording = EpisodeRecording(
                task, seed, steps, list(goals), goal_names(len(goals), phases),
                project_to_camera(env, target, cameras[0], self.world_model.image_size))
            recording.add(seen(observation), agent.goal_index,
                          float(np.linalg.norm(env.task_point() - target)))
        tracer = EpisodeTrace(self.world_model, self.world_model.frameskip) if trace else None

        def on_step(step: int, obs: dict[str, Any], _action: np.ndarray, info: dict[str, Any]) -> None:
            if recording is not None:
                recording.add(seen(obs), agent.goal_index, info.get("goal_distance_m"))
            if tracer is not None:
                tracer.add(step, env, seen(obs), agent)
            if on_env_step is not None:
                on_env_step()

        result = run_episode(env, agent, observation, steps, on_step=on_step)
        if recording is not None:
            recording.finish(result)
        record = episode_record(task, seed, result, self.world_model, agent)
        if goal is not None:  # how well the episode matched the goal image (diagnostic only)
            record["goal_frame_distance_m"] = goal.goal_distance_m
            record["goal_step"] = goal.goal_step
            record["subgoal_phases"] = goal.subgoal_phases if self.subgoals else []
            record["final_hand_to_goal_frame_m"] = float(
                np.linalg.norm(env.state()[:3] - goal.goal_state[:3]))
        if tracer is not None:
            record["trace"] = tracer.rows
            record["trace_columns"] = tracer.columns
        record["wall_seconds"] = time.perf_counter() - started
        return record, recording

    def close(self) -> None:
        for env in self.envs.values():
            env.close()


def episode_record(task: str, seed: int, result: EpisodeResult, wm: WorldModel,
                   agent: MPCAgent) -> dict[str, Any]:
    env_steps_per_plan = agent.config.execute_steps * wm.frameskip
    high_level = ({"high_level_plans": len(agent.high_plans),
                   "high_level_seconds": [p.seconds for p in agent.high_plans]}
                  if isinstance(agent, HierarchicalAgent) else {})
    return {
        "task": task,
        "seed": seed,
        "kind": "model",
        "success": result.success,
        "steps": result.steps,
        "success_steps": result.success_steps,
        "final_goal_distance_m": result.final_goal_distance_m,
        "min_goal_distance_m": result.min_goal_distance_m,
        "seconds": result.seconds,
        "replans": len(result.replans),
        "replan_seconds": [r.seconds for r in result.replans],
        "plan_seconds": [r.plan_seconds for r in result.replans],
        # the replan's time shared among the env actions it produced
        "per_action_seconds": [r.seconds / env_steps_per_plan for r in result.replans],
        "final_energy": result.replans[-1].energy if result.replans else None,
        "final_goal_distance": result.replans[-1].goal_distance if result.replans else None,
        "goals_reached": max((r.goal_index for r in result.replans), default=0),
        # a hierarchical agent's high-level plans (their time is inside replan_seconds)
        **high_level,
    }


# ---------------------------------------------------------------- worker pool
_runner: ModelRunner | None = None


def _init_worker(config_yaml: str, threads: int) -> None:
    global _runner
    torch.set_num_threads(threads)
    config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(EvalConfig), OmegaConf.create(config_yaml)))
    logging.getLogger("jepa_robot").setLevel(logging.WARNING)
    _runner = ModelRunner(config.checkpoint, config.planner, config.agent, config.subgoals, config.goals,
                          config.camera_offset)


_init_error: str | None = None
_step_counter = None
"""A pool worker's handle on the eval's shared count of model env steps (progress)."""


class EvalWorkerError(JepaRobotError, RuntimeError):
    """A pool worker could not set itself up (its model did not load)."""


def _init_pool_worker(config_yaml: str, threads: int, step_counter=None, log_queue=None) -> None:
    """A pool worker's initializer. An exception here would make ``multiprocessing.Pool``
    start a new worker, fail again, and so on forever; keep it for the first job instead,
    which fails, and the error ends the evaluation. The worker counts its env steps into
    ``step_counter`` and sends its warnings through ``log_queue`` to the main process,
    which writes them above the progress bar."""
    global _init_error, _step_counter
    _step_counter = step_counter
    if log_queue is not None:
        root = logging.getLogger()
        root.handlers[:] = [logging.handlers.QueueHandler(log_queue)]
        root.setLevel(logging.WARNING)
    try:
        _init_worker(config_yaml, threads)
    except Exception as error:  # noqa: BLE001 - handed on to the job, which raises it
        _init_error = f"{type(error).__name__}: {error}"


def _count_step() -> None:
    with _step_counter.get_lock():
        _step_counter.value += 1


def _run_job(job: Job, on_env_step: Callable[[], None] | None = None
             ) -> tuple[dict[str, Any], EpisodeRecording | None]:
    if job.kind != "model":
        return run_reference(job.task, job.seed, job.kind, job.goals), None
    if _init_error is not None:
        raise EvalWorkerError(f"an eval worker could not load its model: {_init_error}")
    assert _runner is not None
    if on_env_step is None and _step_counter is not None:
        on_env_step = _count_step
    return _runner.run(job.task, job.seed, record_video=job.video, trace=job.trace, on_env_step=on_env_step)


def _forward_worker_logs(log_queue) -> None:
    """Hand the pool workers' queued log records to this process's loggers."""
    while True:
        try:
            record = log_queue.get_nowait()
        except queue.Empty:
            return
        logging.getLogger(record.name).handle(record)


class EvalProgress:
    """The eval's progress bar: env steps over all episodes, moving while an episode
    runs (also in pool workers, through a shared counter), with episodes done and
    successes so far beside it."""

    def __init__(self, jobs: list[Job], enabled: bool) -> None:
        self.bar = tqdm(total=sum(EPISODE_BUDGET[job.task] for job in jobs), desc="eval", unit="step",
                        disable=not enabled, smoothing=0.05)
        self.model_total = sum(job.kind == "model" for job in jobs)
        self.references_total = len(jobs) - self.model_total
        self.model_done = self.successes = self.skipped = self.references_done = 0
        self._model_steps = 0  # reported live by the running model episodes
        self._settled = 0  # steps counted when an episode ends: references', and budgets not stepped
        self._describe()

    def model_step(self) -> None:
        """One env step of a model episode in this process."""
        self._model_steps += 1
        self._show()

    def set_model_steps(self, total: int) -> None:
        """The pool workers' model env steps so far."""
        self._model_steps = max(self._model_steps, total)
        self._show()

    def episode_done(self, record: dict[str, Any]) -> None:
        budget = EPISODE_BUDGET[record["task"]]
        if record["kind"] != "model":
            self.references_done += 1
            self._settled += budget  # references report no steps while they run (they take ~0.3 s)
        elif "skipped" in record:
            self.skipped += 1
            self._settled += budget
        else:
            self.model_done += 1
            self.successes += bool(record["success"])
            self._settled += budget - record["steps"]
        self._describe()
        self._show()

    def close(self) -> None:
        self.bar.close()

    @property
    def steps(self) -> int:
        """Env steps done or accounted for so far."""
        return self._model_steps + self._settled

    @property
    def summary(self) -> str:
        """Episodes done and successes so far, as shown beside the bar."""
        text = f"episodes {self.model_done}/{self.model_total}, successes {self.successes}"
        if self.skipped:
            text += f", skipped {self.skipped}"
        if self.references_total:
            text += f", references {self.references_done}/{self.references_total}"
        return text

    def _describe(self) -> None:
        self.bar.set_postfix_str(self.summary, refresh=False)

    def _show(self) -> None:
        self.bar.update(self.steps - self.bar.n)


def refuse_earlier_report(config: EvalConfig) -> None:
    """Refuse an ``out_dir`` that holds a report already, unless ``config.overwrite``."""
    path = Path(config.out_dir) / REPORT_FILE
    if path.exists() and not config.overwrite:
        raise RunDirectoryError(
            f"{path} holds the report of an earlier eval; to keep it, give another out_dir; "
            "to replace it (and its summary.png and videos of the same seeds), pass overwrite=true"
        )


def evaluate(config: EvalConfig) -> dict[str, Any]:
    """Run the protocol; write ``report.json``, ``summary.png`` and videos; return the report.

    Refuses an ``out_dir`` holding an earlier report (unless ``config.overwrite``) or in
    use by another run (``RunLockedError``), before anything is written."""
    if config.video_choice not in VIDEO_CHOICES:
        raise ConfigError(f"video_choice={config.video_choice!r}; valid: {list(VIDEO_CHOICES)}")
    refuse_earlier_report(config)
    cores = os.cpu_count() or 1
    threads = config.threads_per_worker or max(1, cores // config.workers)
    config_yaml = OmegaConf.to_yaml(OmegaConf.structured(config))
    # Fail on a bad checkpoint or planner before starting any process or writing anything:
    # one worker loads its model here, in this process; a pool's workers load theirs later.
    if config.workers == 1:
        _init_worker(config_yaml, threads)
    else:
        check_setup(config)
    out_dir = Path(config.out_dir)
    with run_lock(out_dir, "jepa-robot eval"):
        refuse_earlier_report(config)  # again: an eval that held the lock may have written one
        remove_temporaries(out_dir)  # what a killed eval left
        return _evaluate_locked(config, out_dir, config_yaml, threads)


def _evaluate_locked(config: EvalConfig, out_dir: Path, config_yaml: str, threads: int) -> dict[str, Any]:
    jobs = [
        Job(task, config.seed_start + i, kind, video=(kind == "model" and config.videos > 0),
            trace=(kind == "model" and i < config.traces), goals=config.goals)
        for task in config.tasks
        for kind in ("model", *config.references)
        for i in range(config.episodes)
    ]
    # Model episodes first: they are the slow ones, so the pool stays busy to the end.
    jobs.sort(key=lambda job: job.kind != "model")
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    records: list[dict[str, Any]] = []
    candidates = VideoCandidates(config.videos, config.video_choice)
    progress = EvalProgress(jobs, config.progress)

    def finished(record: dict[str, Any], recording: EpisodeRecording | None) -> None:
        records.append(record)
        if recording is not None:
            candidates.offer(recording)
        progress.episode_done(record)

    # worker warnings and library notes go above the bar, not through it
    with logging_redirect_tqdm() if config.progress else nullcontext():
        if config.workers == 1:
            try:
                for job in jobs:
                    finished(*_run_job(job, on_env_step=progress.model_step))
                progress.close()
                videos = _write_chosen_videos(config, out_dir, records, candidates)
            finally:
                _runner.close()
        else:
            context = multiprocessing.get_context("spawn")
            step_counter, log_queue = context.Value("q", 0), context.Queue()

            def poll() -> None:
                progress.set_model_steps(step_counter.value)
                _forward_worker_logs(log_queue)

            with context.Pool(config.workers, initializer=_init_pool_worker,
                              initargs=(config_yaml, threads, step_counter, log_queue)) as pool:
                results = pool.imap_unordered(_run_job, jobs)
                for _ in jobs:
                    while True:  # wake up now and then to move the bar while episodes run
                        try:
                            result = results.next(timeout=0.5)
                            break
                        except multiprocessing.TimeoutError:
                            poll()
                    poll()
                    finished(*result)
                progress.close()
                videos = _write_chosen_videos(config, out_dir, records, candidates, pool)
            _forward_worker_logs(log_queue)
    for record in records:
        if (record["task"], record["seed"]) in videos and record["kind"] == "model":
            record["video"] = str(videos[record["task"], record["seed"]])
    report = build_report(config, records, time.perf_counter() - started, threads)
    # the machine's 1-minute load average before and after: plan times are only comparable
    # between runs on an otherwise idle machine
    report["machine"]["load_avg_1min"] = [load_before, os.getloadavg()[0]]
    write_json_atomic(out_dir / REPORT_FILE, report)
    plot_summary(report, out_dir / "summary.png")
    return report


def _write_chosen_videos(config: EvalConfig, out_dir: Path, records: list[dict[str, Any]],
                         candidates: VideoCandidates, pool=None) -> dict[tuple[str, int], Path]:
    """Draw and write the videos of the episodes ``choose_videos`` picks (in ``pool``'s
    workers, in parallel, if given); returns their paths."""
    chosen = choose_videos(records, config.videos, config.video_choice)
    if not chosen:
        return {}
    started = time.perf_counter()
    work = [(candidates.get(task, seed), out_dir / "videos" / f"{task}-{seed}.mp4") for task, seed in chosen]
    written = pool.starmap(write_episode_video, work) if pool is not None else [write_episode_video(*w) for w in work]
    log.info("wrote %d video(s) in %.1f s: %s", len(written), time.perf_counter() - started,
             ", ".join(path.name for path in written))
    return dict(zip(chosen, written, strict=True))


def check_setup(config: EvalConfig) -> None:
    """Load the checkpoint and build the agent once in this process, so a missing
    checkpoint, a mismatched encoder or a bad planner option fails fast and clearly."""
    world_model = WorldModel.load(config.checkpoint, device=config.agent.device)
    for task in config.tasks:
        make_agent(world_model, config.planner.for_task(task), config.agent)


def build_report(config: EvalConfig, records: list[dict[str, Any]], seconds: float,
                 threads: int) -> dict[str, Any]:
    tasks: dict[str, Any] = {}
    for task in config.tasks:
        ran = sorted((r for r in records if r["task"] == task and r["kind"] == "model"),
                     key=lambda r: r["seed"])
        model = [r for r in ran if "skipped" not in r]
        skipped = [r for r in ran if "skipped" in r]
        entry = success_summary([r["success"] for r in model])
        # seeds whose expert could not make a goal image: listed, never replaced
        entry["skipped"] = [{"seed": r["seed"], "reason": r["skipped"]} for r in skipped]
        entry["plan_time_per_replan_s"] = summarise([s for r in model for s in r["replan_seconds"]])
        entry["planner_time_per_replan_s"] = summarise([s for r in model for s in r["plan_seconds"]])
        entry["plan_time_per_action_s"] = summarise([s for r in model for s in r["per_action_seconds"]])
        entry["episode_wall_s"] = summarise([r["wall_seconds"] for r in model])
        # the simulator's distance behind the success flag (diagnostic, never seen by the agent):
        # how far from success the failures ended, and how close they ever came
        entry["goal_distance_m"] = {
            which: summarise([r[f"{which}_goal_distance_m"] for r in model
                              if r.get(f"{which}_goal_distance_m") is not None])
            for which in ("final", "min")
        }
        # the goal frame's own distance to the target (the expert stops short of the centre)
        # and how far the hand ended from where the goal image shows it
        for key in ("goal_frame_distance_m", "final_hand_to_goal_frame_m"):
            entry[key] = summarise([r[key] for r in model if r.get(key) is not None])
        entry["budget"] = EPISODE_BUDGET[task]
        entry["references"] = {}
        skipped_seeds = {r["seed"] for r in skipped}
        for kind in config.references:  # on the seeds the model ran, for a like-for-like row
            ref = [r for r in records if r["task"] == task and r["kind"] == kind
                   and r["seed"] not in skipped_seeds]
            entry["references"][kind] = success_summary([r["success"] for r in ref])
            entry["references"][kind]["seeds"] = sorted(r["seed"] for r in ref if r["success"])
        entry["episodes"] = model
        tasks[task] = entry
    checkpoint = resolve_checkpoint(config.checkpoint)
    return {
        "format": REPORT_FORMAT,
        "checkpoint": portable_path(checkpoint),
        "cameras": [key.removeprefix(IMAGE_KEY_PREFIX) for key in read_checkpoint_config(checkpoint)["data"]["image_keys"]],
        "config": OmegaConf.to_container(OmegaConf.structured(config)),
        "protocol": protocol_summary(config),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "workers": config.workers,
            "torch_threads_per_worker": threads,
            "device": config.agent.device,
            "torch": torch.__version__,
        },
        "seconds": seconds,
        "tasks": tasks,
    }


def protocol_summary(config: EvalConfig) -> dict[str, Any]:
    """What a report says of how it was measured: seeds and their split, goal images,
    sub-goals, budgets, success."""
    first, last = config.seed_start, config.seed_start + config.episodes - 1
    split = seed_split(first, last)
    goals = ("task-aimed scripted expert, its success frame closest to the target"
             if config.goals == "protocol" else
             f"Meta-World's own expert, its frame after {JEPA_WMS_STEPS} steps (JEPA-WMs' rule)")
    return {
        "version": 2,
        "seeds": [first, last],
        "split": split,
        "reporting_seeds": split == "reporting",
        "goals": config.goals,
        "goal_images": goals,
        "subgoals": config.subgoals,
        **({"subgoal_phases": {t: list(SUBGOAL_PHASES[t]) for t in config.tasks}}
           if config.subgoals else {}),
        "budgets": {t: EPISODE_BUDGET[t] for t in config.tasks},
        "success": "env success flag at the last step",
        # the camera moved from the view the model was trained on (observations and goals)
        **({"camera_offset": list(config.camera_offset)} if any(config.camera_offset) else {}),
    }


def format_table(report: dict[str, Any]) -> str:
    """The report as a text table, one row per task; a reference that was not run
    (``references`` leaves it out) has no column, and a line under the table says so."""
    ran = list(report["config"]["references"])
    head = (f"{'task':<11} {'N':>3} {'success':>8} {'95% CI':>13} "
            + "".join(f"{kind:>7} " for kind in ran)
            + f"{'replan ms mean/p50/p95':>24} {'ms/action':>9} {'s/episode':>9} {'end cm p50':>10}")
    lines = [head, "-" * len(head)]
    for task, entry in report["tasks"].items():
        low, high = entry["wilson_95"]
        refs = entry["references"]
        ref = "".join(f"{refs[kind]['success_rate']:>7.0%} " for kind in ran)
        replan = entry["plan_time_per_replan_s"] or {"mean": 0, "p50": 0, "p95": 0}
        per_action = (entry["plan_time_per_action_s"] or {"mean": 0})["mean"]
        wall = (entry["episode_wall_s"] or {"mean": 0})["mean"]
        final = (entry.get("goal_distance_m") or {}).get("final")
        end_cm = f"{100 * final['p50']:.1f}" if final else "-"
        lines.append(
            f"{task:<11} {entry['n']:>3} {entry['success_rate']:>8.0%} {f'[{low:.0%}, {high:.0%}]':>13} "
            f"{ref}"
            f"{f'{1e3 * replan['mean']:.0f}/{1e3 * replan['p50']:.0f}/{1e3 * replan['p95']:.0f}':>24} "
            f"{1e3 * per_action:>9.1f} {wall:>9.1f} {end_cm:>10}"
        )
    protocol = report["protocol"]
    first, last = protocol["seeds"]
    lines.append(f"seeds {first}-{last} ({protocol['split']} seeds), goal images: {protocol['goals']}"
                 + (", with sub-goals" if protocol["subgoals"] else ""))
    not_run = [kind for kind in REFERENCES if kind not in ran]
    if not_run:
        lines.append(f"references not run: {', '.join(not_run)} (add them with references=[random,expert])")
    for task, entry in report["tasks"].items():
        if entry["skipped"]:
            seeds = ", ".join(str(s["seed"]) for s in entry["skipped"])
            lines.append(f"{task}: the expert could not make a goal image for seed(s) {seeds}; skipped")
    return "\n".join(lines)


def plot_summary(report: dict[str, Any], path: Path) -> None:
    """Success per task (model vs references, 95% Wilson bars; each task's sub-goals, if
    used, under its name) and the replan-time histogram against the plan-time target."""
    plt = _pyplot()
    tasks = list(report["tasks"])
    protocol = report["protocol"]
    phases = protocol.get("subgoal_phases", {}) if protocol["subgoals"] else {}
    kinds = ["model", *report["config"]["references"]]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    width = 0.8 / len(kinds)
    for k, kind in enumerate(kinds):
        rates, errors = [], [[], []]
        for task in tasks:
            entry = report["tasks"][task] if kind == "model" else report["tasks"][task]["references"][kind]
            rate, (low, high) = entry["success_rate"], entry["wilson_95"]
            rates.append(100 * rate)
            # max(0, .): at 0% or 100% the interval's end equals the rate up to rounding
            errors[0].append(max(0.0, 100 * (rate - low)))
            errors[1].append(max(0.0, 100 * (high - rate)))
        x = np.arange(len(tasks)) + (k - (len(kinds) - 1) / 2) * width
        bars = left.bar(x, rates, width, yerr=errors, capsize=3, label=kind)
        left.bar_label(bars, [f"{rate:.0f}%" for rate in rates], fontsize=8, padding=2)  # a 0% bar has no height
    left.set_xticks(np.arange(len(tasks)), [
        task + (f"\nsub-goals: {', '.join(phases[task])}" if phases.get(task)
                else "\nfinal goal only" if protocol["subgoals"] else "") for task in tasks])
    left.set_ylim(0, 105)
    left.set_ylabel("success % (95% Wilson)")
    left.legend(fontsize=8)
    all_times = []
    for task in tasks:
        times = [1e3 * s for r in report["tasks"][task]["episodes"] for s in r["replan_seconds"]]
        all_times += times
        if times:
            right.hist(times, bins=30, alpha=0.6, label=task)
    target_ms = 1e3 * PLAN_TIME_TARGET_S
    under = f", {np.mean(np.asarray(all_times) <= target_ms):.0%} of replans within" if all_times else ""
    right.axvline(target_ms, color="tab:red", ls="--", lw=1.5, label=f"target {target_ms:.0f} ms{under}")
    right.set_xlim(left=0, right=max(1.15 * target_ms, 1.05 * max(all_times, default=0.0)))
    right.set_xlabel("replan time, encode + plan (ms)")
    right.set_ylabel("replans")
    right.legend(fontsize=8)
    name = "/".join(Path(report["checkpoint"]).parts[-2:])  # run/checkpoint says which model
    figure.suptitle(f"{name} — N={report['tasks'][tasks[0]]['n']} per task, {protocol['split']} seeds, "
                    f"{protocol['goals']} goals" + (" with sub-goals" if protocol["subgoals"] else ""),
                    fontsize=10)
    figure.tight_layout()
    with atomic_file(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)


# ---------------------------------------------------------------- plan
def plan_episode(config: PlanConfig) -> tuple[dict[str, Any], Path]:
    """``jepa-robot plan``: one episode from ``config.seed``; writes its video."""
    runner = ModelRunner(config.checkpoint, config.planner, config.agent, config.subgoals,
                         camera_offset=config.camera_offset)
    try:
        goals = goal_images(config.goal, runner.world_model.cameras, runner.world_model.image_size) or None
        video = Path(config.video or f"runs/plan/{config.task}-{config.seed}.mp4")
        record, recording = runner.run(config.task, config.seed, record_video=True, goals=goals,
                                       steps=config.steps)
        if "skipped" in record:
            raise ValueError(f"{record['skipped']}; choose another seed or give goal=[file.png]")
        written = write_episode_video(recording, video)
    finally:
        runner.close()
    return record, written


def goal_images(files: Sequence[str], cameras: Sequence[str], size: int) -> list[dict[str, np.ndarray]]:
    """Goal images from files, ``len(cameras)`` files per goal (each goal's views in the
    model's camera order), cropped square and resized to ``size``."""
    if len(files) % len(cameras):
        raise ValueError(f"the world model sees {len(cameras)} cameras {list(cameras)}: give their "
                         f"goal images in that order, {len(cameras)} files per goal; got {len(files)} files")
    frames = [resize_to(load_image(path), size) for path in files]
    return [dict(zip(cameras, frames[start: start + len(cameras)], strict=True))
            for start in range(0, len(frames), len(cameras))]


def load_image(path: str) -> np.ndarray:
    """A goal image file as uint8 ``[H, W, 3]``."""
    from PIL import Image, UnidentifiedImageError

    if not Path(path).is_file():
        raise FileNotFoundError(f"goal image {path!r} does not exist")
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))  # a writable copy
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"goal image {path!r} could not be read as an image: {error}") from error


def resize_to(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to ``size`` (area-averaging), uint8."""
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = torch.from_numpy(np.ascontiguousarray(image[top: top + side, left: left + side])).permute(2, 0, 1)[None].float()
    if side != size:
        square = torch.nn.functional.interpolate(square, size=(size, size), mode="area")
    return square[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def describe_plan(record: dict[str, Any], video: Path | None) -> str:
    replan = summarise(record["replan_seconds"]) or {"mean": 0.0}
    return (f"{record['task']} seed {record['seed']}: {'success' if record['success'] else 'failure'} "
            f"after {record['steps']} steps ({record['replans']} replans"
            + (f", {record['high_level_plans']} of them after a high-level plan" if "high_level_plans" in record else "")
            + f", {1e3 * replan['mean']:.0f} ms mean per replan, {record['wall_seconds']:.1f} s); video: {video}")


