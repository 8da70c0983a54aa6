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
histogram) and ``videos/<task>-<seed>.mp4`` (observation | active goal | energy). An
``out_dir`` that already holds a report is refused before anything runs, unless
``overwrite=true``; an eval holds the directory's lock while it runs, so a second eval
into it is refused.
With ``traces=N`` the first N model episodes per task carry a per-step ``trace`` in
their record (:class:`EpisodeTrace`): where the hand and the object really were, beside
what the readout made of the frame and the plan's energy.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from envs.media import side_by_side, upscale, write_video
from envs.metaworld.env import (
    EPISODE_BUDGET,
    STATE_AND_OBJECT_NAMES,
    MetaWorldGoalEnv,
    seed_split,
)
from envs.metaworld.experts import SUBGOAL_PHASES, ScriptedExpert
from envs.metaworld.goals import JEPA_WMS_STEPS, GoalNotReachedError, make_goal_images
from jepa_robot.agent import EpisodeResult, MPCAgent, Replan, run_episode
from jepa_robot.config.planning import EvalConfig, PlanConfig
from jepa_robot.errors import JepaRobotError, RunDirectoryError
from jepa_robot.files import atomic_file, portable_path, remove_temporaries, run_lock, write_json_atomic
from jepa_robot.world_model.model import WorldModel, resolve_checkpoint

log = logging.getLogger(__name__)

REPORT_FORMAT = "jepa_robot.eval/1"
REPORT_FILE = "report.json"
VIDEO_PIXELS = 192
"""Height of each video panel; small frames are upscaled to it."""


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


def goal_frames(env: MetaWorldGoalEnv, seed: int, camera: str, subgoals: bool,
                source: str = "protocol"):
    """The goal frame(s) for ``seed`` (with ``subgoals``, the expert's phase-change frames
    first); resets ``env`` to ``seed``. Raises ``GoalNotReachedError`` where the expert
    cannot solve the task from this seed."""
    goal, observation, _ = make_goal_images(env, seed, source=source)
    frames = [g[camera] for g in goal.subgoals] if subgoals else []
    return frames + [goal.goal[camera]], observation, goal


class EpisodeVideo:
    """Collects observation | active goal | energy-curve frames during an episode."""

    def __init__(self, goals: list[np.ndarray], steps: int) -> None:
        self.factor = max(1, VIDEO_PIXELS // goals[0].shape[0])
        self.goals = [upscale(g, self.factor) for g in goals]
        self.steps = steps
        self.frames: list[np.ndarray] = []
        self._panel: np.ndarray | None = None
        self._replans_drawn = -1

    def add(self, observation_frame: np.ndarray, agent: MPCAgent) -> None:
        if len(agent.replans) != self._replans_drawn:
            self._panel = energy_panel(agent.replans, self.steps, self.goals[0].shape[0])
            self._replans_drawn = len(agent.replans)
        frame = side_by_side(
            [upscale(observation_frame, self.factor), self.goals[agent.goal_index], self._panel], gap=4
        )
        self.frames.append(frame)


def energy_panel(replans: list[Replan], steps: int, height: int) -> np.ndarray:
    """A small plot of the plan energy and the goal distance against env steps."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    dpi = 64
    figure, axes = plt.subplots(figsize=(1.6 * height / dpi, height / dpi), dpi=dpi)
    if replans:
        step = [r.step for r in replans]
        axes.plot(step, [r.energy for r in replans], color="tab:blue", label="plan energy")
        axes.plot(step, [r.goal_distance for r in replans], color="tab:orange", label="goal distance")
        for index in range(1, len(replans)):
            if replans[index].goal_index != replans[index - 1].goal_index:
                axes.axvline(replans[index].step, color="grey", lw=0.8, ls="--")
    axes.set_xlim(0, steps)
    axes.set_ylim(bottom=0)
    axes.set_xlabel("env step", fontsize=7)
    axes.tick_params(labelsize=6)
    if replans:
        axes.legend(fontsize=6, loc="upper right")
    figure.tight_layout(pad=0.3)
    figure.canvas.draw()
    image = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    plt.close(figure)
    return image


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

    def add(self, step: int, env: MetaWorldGoalEnv, frame: np.ndarray, agent: MPCAgent) -> None:
        if (step + 1) % self.frameskip or not agent.replans:
            return
        replan = agent.replans[-1]
        row = {"step": step + 1, "goal_index": replan.goal_index, "energy": replan.energy,
               "goal_distance": replan.goal_distance,
               "true": [round(float(v), 4) for v in (*env.state(), *env.object_position())]}
        readout = self.world_model.readout
        if readout is not None:
            with torch.no_grad():
                read = readout(self.world_model.encode(frame[None]))[0]
            row["read"] = [round(float(v), 4) for v in read]
        self.rows.append(row)


class ModelRunner:
    """Runs model episodes in one process: loads the world model once, keeps one env per task."""

    def __init__(self, checkpoint: str, planner, agent_config, subgoals: bool,
                 video_dir: Path | None, goals: str = "protocol") -> None:
        self.world_model = WorldModel.load(checkpoint, device=agent_config.device)
        self.planner_settings, self.agent_config = planner, agent_config
        self.agents: dict[str, MPCAgent] = {}  # one per task: weights may differ by task
        self.subgoals, self.goal_source = subgoals, goals
        self.video_dir = video_dir
        self.envs: dict[str, MetaWorldGoalEnv] = {}

    def env(self, task: str) -> MetaWorldGoalEnv:
        if task not in self.envs:
            size = self.world_model.image_size
            self.envs[task] = MetaWorldGoalEnv(task, image_size=size, cameras=(self.world_model.camera,))
        return self.envs[task]

    def agent(self, task: str) -> MPCAgent:
        if task not in self.agents:
            self.agents[task] = MPCAgent.from_settings(
                self.world_model, self.planner_settings.for_task(task), self.agent_config)
        return self.agents[task]

    def run(self, task: str, seed: int, video: bool = False, goals: list[np.ndarray] | None = None,
            steps: int | None = None, video_path: Path | None = None,
            trace: bool = False) -> tuple[dict[str, Any], Path | None]:
        started = time.perf_counter()
        env, camera = self.env(task), self.world_model.camera
        goal = None
        if goals is None:
            try:
                goals, observation, goal = goal_frames(env, seed, camera, self.subgoals,
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
        recorder = EpisodeVideo(goals, steps) if video else None
        tracer = EpisodeTrace(self.world_model, self.world_model.frameskip) if trace else None

        def on_step(step: int, obs: dict[str, Any], _action: np.ndarray, _info: dict[str, Any]) -> None:
            if recorder is not None:
                recorder.add(obs["images"][camera], agent)
            if tracer is not None:
                tracer.add(step, env, obs["images"][camera], agent)

        if recorder is not None:
            recorder.add(observation["images"][camera], agent)
        result = run_episode(env, agent, observation, steps,
                             on_step=on_step if recorder is not None or tracer is not None else None)
        written = None
        if recorder is not None:
            path = video_path or (self.video_dir / f"{task}-{seed}.mp4")
            written = write_video(path, recorder.frames, fps=20)
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
        return record, written

    def close(self) -> None:
        for env in self.envs.values():
            env.close()


def episode_record(task: str, seed: int, result: EpisodeResult, wm: WorldModel,
                   agent: MPCAgent) -> dict[str, Any]:
    env_steps_per_plan = agent.config.execute_steps * wm.frameskip
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
    }


# ---------------------------------------------------------------- worker pool
_runner: ModelRunner | None = None


def _init_worker(config_yaml: str, threads: int) -> None:
    global _runner
    torch.set_num_threads(threads)
    config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(EvalConfig), OmegaConf.create(config_yaml)))
    logging.getLogger("jepa_robot").setLevel(logging.WARNING)
    _runner = ModelRunner(config.checkpoint, config.planner, config.agent, config.subgoals,
                          Path(config.out_dir) / "videos", config.goals)


_init_error: str | None = None


class EvalWorkerError(JepaRobotError, RuntimeError):
    """A pool worker could not set itself up (its model did not load)."""


def _init_pool_worker(config_yaml: str, threads: int) -> None:
    """A pool worker's initializer. An exception here would make ``multiprocessing.Pool``
    start a new worker, fail again, and so on forever; keep it for the first job instead,
    which fails, and the error ends the evaluation."""
    global _init_error
    try:
        _init_worker(config_yaml, threads)
    except Exception as error:  # noqa: BLE001 - handed on to the job, which raises it
        _init_error = f"{type(error).__name__}: {error}"


def _run_job(job: Job) -> dict[str, Any]:
    if job.kind != "model":
        return run_reference(job.task, job.seed, job.kind, job.goals)
    if _init_error is not None:
        raise EvalWorkerError(f"an eval worker could not load its model: {_init_error}")
    assert _runner is not None
    record, video = _runner.run(job.task, job.seed, video=job.video, trace=job.trace)
    if video is not None:
        record["video"] = str(video)
    return record


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
        Job(task, config.seed_start + i, kind, video=(kind == "model" and i < config.videos),
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
    bar = tqdm(total=len(jobs), desc="eval", unit="ep", disable=not config.progress)
    if config.workers == 1:
        try:
            for job in jobs:
                records.append(_run_job(job))
                bar.update()
        finally:
            _runner.close()
    else:
        context = multiprocessing.get_context("spawn")
        with context.Pool(config.workers, initializer=_init_pool_worker, initargs=(config_yaml, threads)) as pool:
            for record in pool.imap_unordered(_run_job, jobs):
                records.append(record)
                bar.update()
    bar.close()
    report = build_report(config, records, time.perf_counter() - started, threads)
    # the machine's 1-minute load average before and after: plan times are only comparable
    # between runs on an otherwise idle machine
    report["machine"]["load_avg_1min"] = [load_before, os.getloadavg()[0]]
    write_json_atomic(out_dir / REPORT_FILE, report)
    plot_summary(report, out_dir / "summary.png")
    return report


def check_setup(config: EvalConfig) -> None:
    """Load the checkpoint and build the agent once in this process, so a missing
    checkpoint, a mismatched encoder or a bad planner option fails fast and clearly."""
    world_model = WorldModel.load(config.checkpoint, device=config.agent.device)
    for task in config.tasks:
        MPCAgent.from_settings(world_model, config.planner.for_task(task), config.agent)


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
    return {
        "format": REPORT_FORMAT,
        "checkpoint": portable_path(resolve_checkpoint(config.checkpoint)),
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
    }


def format_table(report: dict[str, Any]) -> str:
    """The report as a text table, one row per task."""
    head = (f"{'task':<11} {'N':>3} {'success':>8} {'95% CI':>13} {'random':>7} {'expert':>7} "
            f"{'replan ms mean/p50/p95':>24} {'ms/action':>9} {'s/episode':>9} {'end cm p50':>10}")
    lines = [head, "-" * len(head)]
    for task, entry in report["tasks"].items():
        low, high = entry["wilson_95"]
        refs = entry["references"]
        ref = {k: f"{refs[k]['success_rate']:.0%}" if k in refs else "-" for k in ("random", "expert")}
        replan = entry["plan_time_per_replan_s"] or {"mean": 0, "p50": 0, "p95": 0}
        per_action = (entry["plan_time_per_action_s"] or {"mean": 0})["mean"]
        wall = (entry["episode_wall_s"] or {"mean": 0})["mean"]
        final = (entry.get("goal_distance_m") or {}).get("final")
        end_cm = f"{100 * final['p50']:.1f}" if final else "-"
        lines.append(
            f"{task:<11} {entry['n']:>3} {entry['success_rate']:>8.0%} {f'[{low:.0%}, {high:.0%}]':>13} "
            f"{ref['random']:>7} {ref['expert']:>7} "
            f"{f'{1e3 * replan['mean']:.0f}/{1e3 * replan['p50']:.0f}/{1e3 * replan['p95']:.0f}':>24} "
            f"{1e3 * per_action:>9.1f} {wall:>9.1f} {end_cm:>10}"
        )
    protocol = report["protocol"]
    first, last = protocol["seeds"]
    lines.append(f"seeds {first}-{last} ({protocol['split']} seeds), goal images: {protocol['goals']}"
                 + (", with sub-goals" if protocol["subgoals"] else ""))
    for task, entry in report["tasks"].items():
        if entry["skipped"]:
            seeds = ", ".join(str(s["seed"]) for s in entry["skipped"])
            lines.append(f"{task}: the expert could not make a goal image for seed(s) {seeds}; skipped")
    return "\n".join(lines)


def plot_summary(report: dict[str, Any], path: Path) -> None:
    """Success per task (model vs references, 95% Wilson bars) and the replan-time histogram."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    tasks = list(report["tasks"])
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
        left.bar(x, rates, width, yerr=errors, capsize=3, label=kind)
    left.set_xticks(np.arange(len(tasks)), tasks)
    left.set_ylim(0, 105)
    left.set_ylabel("success % (95% Wilson)")
    left.legend(fontsize=8)
    for task in tasks:
        times = [1e3 * s for r in report["tasks"][task]["episodes"] for s in r["replan_seconds"]]
        if times:
            right.hist(times, bins=30, alpha=0.6, label=task)
    right.set_xlabel("replan time (ms)")
    right.set_ylabel("replans")
    right.legend(fontsize=8)
    name = "/".join(Path(report["checkpoint"]).parts[-2:])  # run/checkpoint says which model
    protocol = report["protocol"]
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
    runner = ModelRunner(config.checkpoint, config.planner, config.agent, config.subgoals, None)
    try:
        goals = [load_image(path) for path in config.goal] or None
        if goals is not None:
            goals = [resize_to(g, runner.world_model.image_size) for g in goals]
        video = Path(config.video or f"runs/plan/{config.task}-{config.seed}.mp4")
        record, written = runner.run(config.task, config.seed, video=True, goals=goals,
                                     steps=config.steps, video_path=video)
        if "skipped" in record:
            raise ValueError(f"{record['skipped']}; choose another seed or give goal=[file.png]")
    finally:
        runner.close()
    return record, written


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
            f"after {record['steps']} steps ({record['replans']} replans, "
            f"{1e3 * replan['mean']:.0f} ms mean per replan, {record['wall_seconds']:.1f} s); video: {video}")


