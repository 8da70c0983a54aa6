"""Schemas of ``jepa-robot eval``, ``demo``, ``plan`` and ``set-planning``: the planner,
the agent, the protocol; and the checkpoint's own planner and agent settings.

A checkpoint may carry the planner and agent settings it was tuned with
(``planning.json``, written by ``jepa-robot set-planning``). Every command that plans
with a checkpoint (eval, demo, plan, run-robot) composes its config through
:func:`compose_planning`: for ``planner`` and for ``agent``, a group the user names
(``planner=mppi``) wins; else the checkpoint's settings replace the config's group
default; else that default. Dotted overrides (``planner.options.samples=128``) apply on
top of whichever was chosen. Where each came from is logged and kept in the config's
``planning_source`` (so eval's report.json records it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from omegaconf import MISSING, OmegaConf, open_dict

from envs.metaworld.tasks import EVAL_SEED_START, GOAL_SOURCES, SEED_LIMIT, TASKS, seed_split
from jepa_robot.config import ConfigError, check_camera
from planners import ActionBounds

if TYPE_CHECKING:
    from omegaconf import DictConfig

log = logging.getLogger(__name__)


@dataclass
class PlannerSettings:
    """A planner from ``planners/`` (config group ``planner=cem|icem|mppi|gradient``)."""

    KEY: ClassVar[str] = "planner"
    """Where these settings sit in a command's config (error messages name it)."""

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
    energy_views: dict[str, Any] = field(default_factory=dict)
    """l1 or l2 on a world model over several cameras: a weight per camera's view in the
    energy (a camera not named weighs 1; 0 leaves its view out), e.g. ``{wrist: 2}``;
    empty: every token alike."""
    task_energy_views: dict[str, Any] = field(default_factory=dict)
    """``energy_views`` for one Meta-World task (eval, demo, plan), in place of the shared ones."""
    bounds: ActionBounds = field(default_factory=ActionBounds)
    """Action bounds in env action units (``planners.ActionBounds``)."""

    def __post_init__(self) -> None:
        from planners import PLANNERS, planner_config_class

        if self.name not in PLANNERS:
            raise ConfigError(f"{self.KEY}.name={self.name!r}; valid: {sorted(PLANNERS)}")
        if self.energy not in ("l1", "l2", "readout"):
            raise ConfigError(f"{self.KEY}.energy={self.energy!r} must be l1, l2 or readout")
        if self.energy_weights is not None and self.energy != "readout":
            raise ConfigError(f"{self.KEY}.energy_weights only apply with {self.KEY}.energy=readout")
        # dict[str, list[float]], typed loosely: OmegaConf refuses ints in nested float lists
        try:
            self.task_energy_weights = {str(task): [float(w) for w in weights]
                                        for task, weights in dict(self.task_energy_weights).items()}
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{self.KEY}.task_energy_weights={self.task_energy_weights}: "
                              f"each task needs a list of numbers ({error})") from error
        weight_lists = {f"{self.KEY}.energy_weights": self.energy_weights,
                        **{f"{self.KEY}.task_energy_weights.{task}": weights
                           for task, weights in self.task_energy_weights.items()}}
        for key, weights in weight_lists.items():
            if weights is not None and any(w < 0 for w in weights):
                raise ConfigError(f"{key}={list(weights)} must be >= 0")
        if self.task_energy_weights and self.energy != "readout":
            raise ConfigError(f"{self.KEY}.task_energy_weights only apply with {self.KEY}.energy=readout")
        unknown = sorted(set(self.task_energy_weights) - set(TASKS))
        if unknown:
            raise ConfigError(f"{self.KEY}.task_energy_weights: unknown tasks {unknown}; valid: {sorted(TASKS)}")
        if self.energy_steps not in ("final", "all"):
            raise ConfigError(f"{self.KEY}.energy_steps={self.energy_steps!r} must be final or all")
        self._check_views()
        self._check_options(planner_config_class(self.name))

    def _check_views(self) -> None:
        def weights(key: str, views: Any) -> dict[str, float]:
            try:
                checked = {str(camera): float(weight) for camera, weight in dict(views).items()}
            except (TypeError, ValueError) as error:
                raise ConfigError(f"{key}={views}: a weight (number) per camera ({error})") from error
            if any(w < 0 for w in checked.values()):
                raise ConfigError(f"{key}={checked}: weights must be >= 0")
            return checked

        self.energy_views = weights(f"{self.KEY}.energy_views", self.energy_views)
        self.task_energy_views = {str(task): weights(f"{self.KEY}.task_energy_views.{task}", views)
                                  for task, views in dict(self.task_energy_views).items()}
        if (self.energy_views or self.task_energy_views) and self.energy == "readout":
            raise ConfigError(f"{self.KEY}.energy_views apply to the l1 and l2 energies; the readout reads every view")
        unknown = sorted(set(self.task_energy_views) - set(TASKS))
        if unknown:
            raise ConfigError(f"{self.KEY}.task_energy_views: unknown tasks {unknown}; valid: {sorted(TASKS)}")

    def _check_options(self, config_class: type) -> None:
        """``options`` are fields of the planner's config dataclass with values it accepts:
        checked here, when the config is composed, not when a model has loaded."""
        from dataclasses import fields

        if "action_dim" in self.options:
            raise ConfigError(f"{self.KEY}.options.action_dim is derived from the checkpoint; remove it")
        known = {f.name for f in fields(config_class)} - {"action_dim"}
        unknown = sorted(set(self.options) - known)
        if unknown:
            raise ConfigError(f"{self.KEY}.options: unknown {unknown} for planner {self.name!r}; "
                              f"valid: {sorted(known)}")
        try:
            config_class(action_dim=1, **dict(self.options))
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{self.KEY}.options for {self.name!r}: {error}") from error

    def for_task(self, task: str) -> PlannerSettings:
        """These settings with the task's own ``task_energy_weights`` and ``task_energy_views``,
        where it has them."""
        settings = self
        if task in self.task_energy_weights:
            settings = replace(settings, energy_weights=list(self.task_energy_weights[task]))
        if task in self.task_energy_views:
            settings = replace(settings, energy_views=dict(self.task_energy_views[task]))
        return settings


SUBGOAL_SWITCHES = ("schedule", "distance")


def _default_high_level_planner() -> HighLevelPlannerSettings:
    # init_std 0.5: macro-actions lie in [-1, 1], and their training range is narrower still
    return HighLevelPlannerSettings(name="cem", options={"horizon": 3, "samples": 128, "iterations": 3,
                                                         "elites": 16, "init_std": 0.5}, energy_steps="all")


@dataclass
class HighLevelPlannerSettings(PlannerSettings):
    """The high-level planner's settings: a ``PlannerSettings`` at ``agent.hierarchy.planner``."""

    KEY: ClassVar[str] = "agent.hierarchy.planner"


@dataclass
class HierarchySettings:
    """Hierarchical planning (``agent=hierarchical``; ``jepa_robot.agent.HierarchicalAgent``):
    a high-level world model plans macro-actions toward the final goal, and its first
    predicted latent is the sub-goal of the ordinary (low-level) planner."""

    checkpoint: str | None = None
    """High-level checkpoint (``jepa-robot train macro_steps=K``) on the same encoder as the
    model's checkpoint; null: no hierarchy (the flat MPC agent)."""
    planner: HighLevelPlannerSettings = field(default_factory=_default_high_level_planner)
    """The high-level planner: it searches macro-actions (their bounds come from the
    high-level checkpoint: the range of its training data's macro-actions) and scores its
    predictions against the final goal with its own energy."""

    def __post_init__(self) -> None:
        if self.planner.bounds != ActionBounds():
            raise ConfigError("agent.hierarchy.planner.bounds: the high-level planner searches "
                              "macro-actions within the range its checkpoint records; remove the bounds")
        if self.planner.task_energy_weights or self.planner.task_energy_views:
            raise ConfigError("agent.hierarchy.planner.task_energy_weights and task_energy_views are not "
                              "supported; use energy_weights and energy_views")


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
    hierarchy: HierarchySettings = field(default_factory=HierarchySettings)
    """With ``hierarchy.checkpoint`` set, the agent plans hierarchically: the sub-goals come
    from the high-level model (one goal image, the final one), and move on as
    ``subgoal_switch`` / ``subgoal_steps`` / ``subgoal_threshold`` say."""

    @property
    def hierarchical(self) -> bool:
        return self.hierarchy.checkpoint is not None

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


def refuse_subgoal_images(agent: AgentConfig, subgoal_images: bool) -> None:
    if agent.hierarchical and subgoal_images:
        raise ConfigError("agent.hierarchy plans its own sub-goals toward the final goal image: "
                          "give that one goal (subgoals=false), or plan flat (agent.hierarchy.checkpoint=null)")


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
    """Episodes per task whose video (camera with the target marked | goal | energy, with
    a success or failure caption) is written; ``video_choice`` says which."""
    video_choice: str = "mixed"
    """Which episodes get the videos: ``mixed`` (per task, successes and failures
    alternating in seed order, a success first, as many of each as there are) or
    ``first`` (the lowest seeds)."""
    camera_offset: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    """Move the camera from the view the model was trained on, for the whole run (the
    observations and the goal images): ``[azimuth degrees, elevation degrees, distance
    metres]``, each within +-30, +-20, +-0.3. Measures how much a camera knocked since
    recording costs; the report's protocol records it."""
    traces: int = 0
    """Episodes per task (the first ones) whose report record gets a per-step ``trace``:
    after every predictor step, the simulator's hand, gripper and object (privileged:
    for diagnosis, never seen by the agent), the readout of the frame (if the model has
    a readout), the plan's energy and the active goal."""
    planning_source: dict[str, str] = field(default_factory=dict)
    """Where ``planner`` and ``agent`` came from (the checkpoint's planning.json, a config
    group, dotted overrides): noted when the config is composed, not an input."""
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
        check_camera("camera_offset", self.camera_offset)
        if self.threads_per_worker is not None and self.threads_per_worker < 1:
            raise ConfigError(f"threads_per_worker={self.threads_per_worker} must be >= 1")
        if self.goals not in GOAL_SOURCES:
            raise ConfigError(f"goals={self.goals!r}; valid: {list(GOAL_SOURCES)}")
        if self.goals == "jepa_wms" and self.subgoals:
            raise ConfigError("goals=jepa_wms has no sub-goal images; set subgoals=false")
        refuse_subgoal_images(self.agent, self.subgoals)


@dataclass
class PlanConfig:
    """``jepa-robot plan``: one closed-loop episode from a seed, toward its goal or a goal image file."""

    checkpoint: str = MISSING
    planner: PlannerSettings = field(default_factory=PlannerSettings)
    agent: AgentConfig = field(default_factory=AgentConfig)
    task: str = "reach"
    seed: int = EVAL_SEED_START
    goal: list[str] = field(default_factory=list)
    """Goal image file(s) (PNG/JPEG, sub-goals first); empty: the protocol's goal for the seed.
    A model over several cameras takes each goal's views in its camera order (``goal=[final_
    oblique.png,final_wrist.png]``)."""
    subgoals: bool = False
    steps: int | None = None
    """Env steps; null: the protocol budget of the task."""
    video: str | None = None
    """Where to write the video; null: runs/plan/<task>-<seed>.mp4."""
    camera_offset: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    """Move the camera from the model's training view: ``[azimuth degrees, elevation
    degrees, distance metres]`` (as ``eval``'s)."""
    planning_source: dict[str, str] = field(default_factory=dict)
    """Where ``planner`` and ``agent`` came from (the checkpoint's planning.json, a config
    group, dotted overrides): noted when the config is composed, not an input."""

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
        refuse_subgoal_images(self.agent, self.subgoals)
        check_camera("camera_offset", self.camera_offset)


@dataclass
class SetPlanningConfig:
    """``jepa-robot set-planning``: save planner and agent settings into a checkpoint
    (its ``planning.json``), for every command that plans with it to use."""

    checkpoint: str = MISSING
    """Checkpoint directory, or a built-in name (``default``)."""
    planner: PlannerSettings = field(default_factory=PlannerSettings)
    agent: AgentConfig = field(default_factory=AgentConfig)
    planning_source: dict[str, str] = field(default_factory=dict)
    """Where ``planner`` and ``agent`` came from (the checkpoint's planning.json, a config
    group, dotted overrides): noted when the config is composed, not an input."""


PLANNING_GROUPS = ("planner", "agent")
CHECKPOINT_CHOICE = "checkpoint"
"""The group option that stands for the checkpoint's own settings (``planner=checkpoint``):
the default whenever the checkpoint has a planning file."""


def checkpoint_planning(checkpoint: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """A checkpoint's planning file and its settings, ``{"planner": PlannerSettings,
    "agent": AgentConfig}``, checked against the schemas; None when it has none.
    A malformed file raises an error naming it."""
    from jepa_robot.config import to_schema
    from jepa_robot.world_model.checkpoint import PLANNING, read_planning, resolve_checkpoint

    directory = resolve_checkpoint(checkpoint)
    sections = read_planning(directory)
    if sections is None:
        return None
    schemas = {"planner": PlannerSettings, "agent": AgentConfig}
    settings = {}
    for section, schema in schemas.items():
        try:
            settings[section] = to_schema(sections[section], schema)
        except ConfigError as error:
            raise ConfigError(f"{directory / PLANNING}: {section}: {error}") from error
    return directory / PLANNING, settings


def compose_planning(config_name: str, overrides: list[str]) -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` for a command that plans with a checkpoint,
    with the checkpoint's planner and agent settings in place of the group defaults (the
    rule is in this module's docstring). Call it inside Hydra's ``initialize_config_dir``."""
    from hydra import compose as hydra_compose
    from hydra.core.config_store import ConfigStore
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from jepa_robot.files import portable_path

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    group_choices = {o.key_or_group: o.value() for o in parsed if o.key_or_group in PLANNING_GROUPS}
    dotted = [line for line, o in zip(overrides, parsed, strict=True)
              if o.key_or_group.split(".")[0] in PLANNING_GROUPS and o.key_or_group not in PLANNING_GROUPS]
    wanted = [g for g in PLANNING_GROUPS if group_choices.get(g, CHECKPOINT_CHOICE) == CHECKPOINT_CHOICE]
    extra: list[str] = []
    planning_file, default_note = "", ""
    if wanted:
        # first the config without planner and agent overrides, to learn its checkpoint
        # (a dotted override may name a key only the checkpoint's settings have)
        rest = [line for line, o in zip(overrides, parsed, strict=True)
                if o.key_or_group.split(".")[0] not in PLANNING_GROUPS]
        checkpoint = OmegaConf.select(hydra_compose(config_name=config_name, overrides=rest), "checkpoint",
                                      default=None)
        found = checkpoint_planning(checkpoint) if checkpoint else None
        if found is None:
            named = [g for g in wanted if g in group_choices]
            if named:
                raise ConfigError(f"{named[0]}={CHECKPOINT_CHOICE}: checkpoint {checkpoint} has no planning file "
                                  "(write one with jepa-robot set-planning)")
            default_note = f"; checkpoint {checkpoint} has no planning file" if checkpoint else ""
        else:
            path, settings = found
            for group in wanted:
                node = OmegaConf.to_container(OmegaConf.structured(settings[group]))
                ConfigStore.instance().store(group=group, name=CHECKPOINT_CHOICE, node=node)
                if group not in group_choices:
                    extra.append(f"{group}={CHECKPOINT_CHOICE}")
            planning_file = portable_path(path)
    composed = hydra_compose(config_name=config_name, overrides=[*extra, *overrides], return_hydra_config=True)
    choices = composed.hydra.runtime.choices
    sources = {}
    for group in PLANNING_GROUPS:
        choice = choices.get(group)
        if choice == CHECKPOINT_CHOICE:
            origin = planning_file
        elif group in group_choices:
            origin = f"{group}={choice} (given)"
        else:
            origin = f"{group}={choice} (default of configs/{config_name}.yaml{default_note})"
        changes = [line for line in dotted if line.lstrip("+~").startswith(f"{group}.")]
        sources[group] = origin + (f", then {' '.join(changes)}" if changes else "")
    with open_dict(composed):
        del composed["hydra"]
        composed.planning_source = sources
    if sources["planner"] == sources["agent"]:
        log.info("planner and agent settings from %s", sources["planner"])
    else:
        log.info("planner settings from %s; agent settings from %s", sources["planner"], sources["agent"])
    return composed


def set_planning(config: SetPlanningConfig) -> Path:
    """``jepa-robot set-planning``: write ``config.planner`` and ``config.agent`` as the
    checkpoint's ``planning.json`` (atomically); returns its path."""
    from jepa_robot.world_model.checkpoint import resolve_checkpoint, write_planning

    sections = {name: OmegaConf.to_container(OmegaConf.structured(getattr(config, name)))
                for name in PLANNING_GROUPS}
    path = write_planning(resolve_checkpoint(config.checkpoint), **sections)
    log.info("wrote %s", path)
    return path

