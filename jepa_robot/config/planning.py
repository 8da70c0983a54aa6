"""Schemas of ``jepa-robot eval``, ``demo`` and ``plan``: the planner, the agent, the protocol."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from omegaconf import MISSING

from envs.metaworld.env import EVAL_SEED_START, SEED_LIMIT, TASKS, seed_split
from envs.metaworld.goals import GOAL_SOURCES
from jepa_robot.config import ConfigError
from planners import ActionBounds


@dataclass
class PlannerSettings:
    """A planner from ``planners/`` (config group ``planner=cem|icem|mppi|gradient``)."""

    name: str = "cem"
    """Registry name: cem, icem, mppi or gradient."""
    options: dict[str, Any] = field(default_factory=dict)
    """Fields of that planner's config dataclass (horizon, samples, iterations, ...)."""
    energy: str = "l1"
    """Distance to the goal latent: l1 (V-JEPA 2-AC), l2, or readout (a weighted distance
    between the checkpoint's state readouts of both latents; ``jepa-robot fit-readout``)."""
    energy_steps: str = "final"
    """final: only the last predicted step counts; all: summed over the horizon."""
    energy_weights: list[float] | None = None
    """readout only: one weight per state dimension (None: all 1)."""
    task_energy_weights: dict[str, Any] = field(default_factory=dict)
    """readout only: ``energy_weights`` for one Meta-World task (eval, demo, plan), in place
    of the shared ones; the goal image is still the only goal. Say which parts of the
    state a task's goal is about: reach the hand's position, pick-place also the object's."""
    bounds: ActionBounds = field(default_factory=ActionBounds)
    """Action bounds in env action units (``planners.ActionBounds``)."""

    def __post_init__(self) -> None:
        from planners import PLANNERS, planner_class

        if self.name not in PLANNERS:
            raise ConfigError(f"planner.name={self.name!r}; valid: {sorted(PLANNERS)}")
        if self.energy not in ("l1", "l2", "readout"):
            raise ConfigError(f"planner.energy={self.energy!r} must be l1, l2 or readout")
        if self.energy_weights is not None and self.energy != "readout":
            raise ConfigError("planner.energy_weights only apply with planner.energy=readout")
        # dict[str, list[float]], typed loosely: OmegaConf refuses ints in nested float lists
        try:
            self.task_energy_weights = {str(task): [float(w) for w in weights]
                                        for task, weights in dict(self.task_energy_weights).items()}
        except (TypeError, ValueError) as error:
            raise ConfigError(f"planner.task_energy_weights={self.task_energy_weights}: "
                              f"each task needs a list of numbers ({error})") from error
        weight_lists = {"planner.energy_weights": self.energy_weights,
                        **{f"planner.task_energy_weights.{task}": weights
                           for task, weights in self.task_energy_weights.items()}}
        for key, weights in weight_lists.items():
            if weights is not None and any(w < 0 for w in weights):
                raise ConfigError(f"{key}={list(weights)} must be >= 0")
        if self.task_energy_weights and self.energy != "readout":
            raise ConfigError("planner.task_energy_weights only apply with planner.energy=readout")
        unknown = sorted(set(self.task_energy_weights) - set(TASKS))
        if unknown:
            raise ConfigError(f"planner.task_energy_weights: unknown tasks {unknown}; valid: {sorted(TASKS)}")
        if self.energy_steps not in ("final", "all"):
            raise ConfigError(f"planner.energy_steps={self.energy_steps!r} must be final or all")
        self._check_options(planner_class(self.name).config_class)

    def _check_options(self, config_class: type) -> None:
        """``options`` are fields of the planner's config dataclass with values it accepts:
        checked here, when the config is composed, not when a model has loaded."""
        from dataclasses import fields

        if "action_dim" in self.options:
            raise ConfigError("planner.options.action_dim is derived from the checkpoint; remove it")
        known = {f.name for f in fields(config_class)} - {"action_dim"}
        unknown = sorted(set(self.options) - known)
        if unknown:
            raise ConfigError(f"planner.options: unknown {unknown} for planner {self.name!r}; "
                              f"valid: {sorted(known)}")
        try:
            config_class(action_dim=1, **dict(self.options))
        except (TypeError, ValueError) as error:
            raise ConfigError(f"planner.options for {self.name!r}: {error}") from error

    def for_task(self, task: str) -> PlannerSettings:
        """These settings with the task's own ``task_energy_weights``, if it has any."""
        if task not in self.task_energy_weights:
            return self
        return replace(self, energy_weights=list(self.task_energy_weights[task]))


SUBGOAL_SWITCHES = ("schedule", "distance")


@dataclass
class AgentConfig:
    """The MPC loop (``jepa_robot.agent.MPCAgent``)."""

    context_frames: int = 1
    """Observed frames (one predictor step apart) the predictor conditions on."""
    execute_steps: int = 1
    """Planned predictor steps executed before replanning (each is ``frameskip`` env steps)."""
    action_repeat: bool = True
    """Plan one env action per predictor step, held for frameskip env steps (False: plan all of them)."""
    subgoal_switch: str = "schedule"
    """schedule: each sub-goal gets subgoal_steps env steps; distance: move on once the latent
    distance falls below subgoal_threshold (or after subgoal_steps)."""
    subgoal_steps: int = 60
    subgoal_threshold: float = 0.3
    """In the planner energy's units (per step): latent L1 for ``l1``, metres of the
    weighted readout for ``readout`` (agent=default_model: 0.025)."""
    device: str = "cpu"
    """Where encoder, predictor and planner run (cpu, cuda, cuda:1)."""

    def __post_init__(self) -> None:
        checks = [
            (self.context_frames >= 1, f"agent.context_frames={self.context_frames} must be >= 1"),
            (self.execute_steps >= 1, f"agent.execute_steps={self.execute_steps} must be >= 1"),
            (self.subgoal_switch in SUBGOAL_SWITCHES,
             f"agent.subgoal_switch={self.subgoal_switch!r}; valid: {list(SUBGOAL_SWITCHES)}"),
            (self.subgoal_steps >= 1, f"agent.subgoal_steps={self.subgoal_steps} must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


REFERENCES = ("random", "expert")


@dataclass
class EvalConfig:
    """``jepa-robot eval``: the evaluation protocol (docs/protocol.md) for a checkpoint and a planner."""

    checkpoint: str = MISSING
    """World-model checkpoint directory."""
    planner: PlannerSettings = field(default_factory=PlannerSettings)
    agent: AgentConfig = field(default_factory=AgentConfig)
    tasks: list[str] = field(default_factory=lambda: ["reach", "push", "pick-place"])
    episodes: int = 50
    """Episodes per task; episode i uses seed seed_start + i."""
    seed_start: int = EVAL_SEED_START
    """100000 for reported figures; 150000-199999 for tuning (any knob, any choice). A
    run's seeds lie wholly in one of the two, and the report says which."""
    subgoals: bool = False
    """Plan through the expert's sub-goal images before the final goal: push ``contact``,
    pick-place ``grasp`` and ``lift`` (reach has none)."""
    goals: str = "protocol"
    """Goal images: ``protocol`` (the task-aimed expert's success frame closest to the
    target) or ``jepa_wms`` (Meta-World's own expert after 100 steps, the JEPA-WMs study's
    rule, for setting a reach figure beside theirs; no sub-goals)."""
    references: list[str] = field(default_factory=lambda: list(REFERENCES))
    """Baselines run on the same seeds and budgets: random actions, the scripted expert."""
    workers: int = 1
    """Episodes run in this many processes at once (each loads the model once)."""
    threads_per_worker: int | None = None
    """torch threads per worker; null: the machine's cores split among the workers."""
    videos: int = 2
    """Episodes per task whose video (observation | goal | energy) is written."""
    traces: int = 0
    """Episodes per task (the first ones) whose report record gets a per-step ``trace``:
    after every predictor step, the simulator's hand, gripper and object (privileged:
    for diagnosis, never seen by the agent), the readout of the frame (if the model has
    a readout), the plan's energy and the active goal."""
    out_dir: str = "runs/eval"
    overwrite: bool = False
    """Replace a report already in out_dir (false: refuse, and write nothing)."""
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks:
            raise ConfigError(f"tasks={list(self.tasks)}: unknown {unknown}; valid: {sorted(TASKS)}")
        bad_refs = [r for r in self.references if r not in REFERENCES]
        if bad_refs:
            raise ConfigError(f"references: unknown {bad_refs}; valid: {list(REFERENCES)}")
        if self.episodes < 1:
            raise ConfigError(f"episodes={self.episodes} must be >= 1")
        try:
            seed_split(self.seed_start, self.seed_start + self.episodes - 1)
        except ValueError as error:
            raise ConfigError(f"seed_start={self.seed_start}, episodes={self.episodes}: {error}") from None
        if self.workers < 1 or self.videos < 0 or self.traces < 0:
            raise ConfigError("workers must be >= 1, videos and traces >= 0")
        if self.threads_per_worker is not None and self.threads_per_worker < 1:
            raise ConfigError(f"threads_per_worker={self.threads_per_worker} must be >= 1")
        if self.goals not in GOAL_SOURCES:
            raise ConfigError(f"goals={self.goals!r}; valid: {list(GOAL_SOURCES)}")
        if self.goals == "jepa_wms" and self.subgoals:
            raise ConfigError("goals=jepa_wms has no sub-goal images; set subgoals=false")


@dataclass
class PlanConfig:
    """``jepa-robot plan``: one closed-loop episode from a seed, toward its goal or a goal image file."""

    checkpoint: str = MISSING
    planner: PlannerSettings = field(default_factory=PlannerSettings)
    agent: AgentConfig = field(default_factory=AgentConfig)
    task: str = "reach"
    seed: int = EVAL_SEED_START
    goal: list[str] = field(default_factory=list)
    """Goal image file(s) (PNG/JPEG, sub-goals first); empty: the protocol's goal for the seed."""
    subgoals: bool = False
    steps: int | None = None
    """Env steps; null: the protocol budget of the task."""
    video: str | None = None
    """Where to write the video; null: runs/plan/<task>-<seed>.mp4."""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task={self.task!r}; valid: {sorted(TASKS)}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps={self.steps} must be >= 1")
        if not 0 <= self.seed < SEED_LIMIT:
            raise ConfigError(f"seed={self.seed} must be in [0, {SEED_LIMIT}) "
                              f"(nothing at or above {SEED_LIMIT} is used)")
        if self.goal and self.subgoals:
            raise ConfigError("give goal image files or subgoals=true, not both")


# --- encoder pretraining
