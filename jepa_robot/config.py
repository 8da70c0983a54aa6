"""Typed configs for the ``jepa-robot`` commands, and Hydra composition.

YAML files in ``configs/`` give the defaults and the config groups (``env=...``);
the dataclasses here are the schema they are merged into, so a misspelt key or a
value of the wrong type fails loudly, and ``__post_init__`` checks ranges.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from envs.metaworld.env import CAMERA_VIEWS, EVAL_SEED_START, SEED_LIMIT, TASKS, seed_split
from envs.metaworld.goals import GOAL_SOURCES


class ConfigError(ValueError):
    """A bad config value or override."""


@dataclass
class EnvConfig:
    """A goal-image Meta-World task (see ``envs.metaworld.env``)."""

    task: str = "reach"
    """One of ``reach``, ``push``, ``pick-place``."""
    image_size: int = 64
    """Square image side in pixels (16-512); 64 suits the small embedded encoder."""
    cameras: list[str] = field(default_factory=lambda: ["oblique"])
    """Named camera views (``oblique``, ``workspace``, ``front``, ``top``; see
    ``envs.metaworld.env.CAMERA_VIEWS``); the first is the primary one. The default
    model was trained on ``oblique``."""
    step_budget: int | None = None
    """Step budget; ``null`` uses the protocol's (reach 100, push 150, pick-place 200)."""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"env.task={self.task!r} is not a task; valid: {sorted(TASKS)}")
        if not 16 <= self.image_size <= 512:
            raise ConfigError(f"env.image_size={self.image_size} must be in [16, 512]")
        bad = [c for c in self.cameras if c not in CAMERA_VIEWS]
        if bad or not self.cameras:
            raise ConfigError(f"env.cameras={self.cameras} must name views from {sorted(CAMERA_VIEWS)}")
        if self.step_budget is not None and self.step_budget < 1:
            raise ConfigError(f"env.step_budget={self.step_budget} must be >= 1")


@dataclass
class ExplorationConfig:
    """How recorded actions stray from the scripted expert (``envs.metaworld.experts``)."""

    noise_std: float = 0.1
    """Gaussian noise on each expert action."""
    perturb_prob: float = 0.02
    """Per-step probability of starting a segment of one held random action."""
    perturb_steps: list[int] = field(default_factory=lambda: [5, 15])
    """Min and max length of such a segment, in steps."""
    random_fraction: float = 0.1
    """Fraction of episodes (picked by seed) that are smoothed random actions only."""

    def __post_init__(self) -> None:
        if len(self.perturb_steps) != 2:
            raise ConfigError(f"exploration.perturb_steps={self.perturb_steps} must be [min, max]")
        if not 0.0 <= self.random_fraction <= 1.0:
            raise ConfigError(f"exploration.random_fraction={self.random_fraction} must be in [0, 1]")
        try:
            self.to_exploration()
        except ValueError as error:
            raise ConfigError(f"exploration: {error}") from error

    def to_exploration(self):
        from envs.metaworld.experts import Exploration

        return Exploration(
            noise_std=self.noise_std,
            perturb_prob=self.perturb_prob,
            perturb_steps=(int(self.perturb_steps[0]), int(self.perturb_steps[1])),
        )


@dataclass
class CollectConfig:
    """``jepa-robot collect``: record scripted-expert episodes into a LeRobot dataset."""

    env: EnvConfig = field(default_factory=EnvConfig)
    exploration: ExplorationConfig = field(default_factory=ExplorationConfig)
    episodes: int = 10
    """Episodes wanted from seeds ``seed_start ...``; seeds already recorded are skipped."""
    seed_start: int = 0
    """First episode seed; training seeds stay below 100000 (evaluation uses 100000+)."""
    root: str = MISSING
    """Dataset directory (created, or resumed if it holds a dataset with the same features)."""
    repo_id: str = MISSING
    """LeRobot repo id stored in the dataset (``user/name``)."""
    video_codec: str = "h264"
    """Codec of the dataset's videos: ``h264``, ``hevc`` or ``libsvtav1``."""
    preview_episodes: int = 2
    """Episodes drawn into ``preview.mp4`` (observation | goal image); 0 for none."""
    preview_path: str | None = None
    """Where the preview goes; ``null`` puts it beside the dataset as ``<root>-preview.mp4``."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ConfigError(f"episodes={self.episodes} must be >= 1")
        if self.seed_start < 0 or self.seed_start + self.episodes > EVAL_SEED_START:
            raise ConfigError(
                f"seed_start={self.seed_start}, episodes={self.episodes}: training seeds must lie in "
                f"[0, {EVAL_SEED_START}); seeds from {EVAL_SEED_START} are reserved for evaluation"
            )
        if self.video_codec not in ("h264", "hevc", "libsvtav1"):
            raise ConfigError(f"video_codec={self.video_codec!r} must be h264, hevc or libsvtav1")
        if self.preview_episodes < 0:
            raise ConfigError(f"preview_episodes={self.preview_episodes} must be >= 0")


@dataclass
class InspectConfig:
    """``jepa-robot inspect``: open a LeRobot v3 dataset and check it can train a world model."""

    dataset: str = MISSING
    """Local dataset directory, or a hub repo id (needs the network)."""
    image_key: str | None = None
    """Camera key to use; ``null`` picks the first image key."""
    action_key: str = "action"
    state_key: str | None = "observation.state"
    """Proprio key; ``null`` if the dataset has none."""


@dataclass
class MergeConfig:
    """``jepa-robot merge``: merge local LeRobot v3 datasets into a new one."""

    datasets: list[str] = MISSING
    """Local dataset directories (same features and fps), at least two."""
    root: str = MISSING
    """Directory of the merged dataset; must not exist yet."""
    repo_id: str = "local/merged"


@dataclass
class FitReadoutConfig:
    """``jepa-robot fit-readout``: fit a state readout (latents -> state) for a world model.

    The readout lets the planner use ``planner.energy=readout`` (``jepa_robot.readout``).
    """

    checkpoint: str = MISSING
    """World-model checkpoint directory, or a built-in name (``default``)."""
    dataset: str = MISSING
    """LeRobot v3 dataset recorded with the checkpoint's camera (a local directory or hub id)."""
    state_keys: list[str] | None = None
    """Float columns the readout predicts, concatenated. null: ``observation.state``, plus
    ``observation.environment_state`` (simulated recordings: the object's xyz) when present."""
    out_dir: str | None = None
    """null: write the readout into the checkpoint directory (replacing one it has). A path:
    copy the model there first (a packaged model with its ``encoder/``) and write it into
    the copy; the path must not exist."""
    cache_dir: str = "data/latents"
    """Where the dataset's latents are cached (encoded once; reused by later fits)."""
    holdout: int = 10
    """Every n-th episode is held out of the fit and its error reported."""
    epochs: int = 20
    hidden: int = 512
    """Width of the readout MLP's two hidden layers."""
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0
    threads: int | None = None
    """torch threads; null: torch's default."""
    progress: bool = True

    def __post_init__(self) -> None:
        if self.holdout < 2:
            raise ConfigError(f"holdout={self.holdout}: every n-th episode is held out, n must be >= 2")
        for name in ("epochs", "hidden", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if self.lr <= 0:
            raise ConfigError(f"lr={self.lr} must be > 0")
        if self.state_keys is not None and not self.state_keys:
            raise ConfigError("state_keys=[] names no column; null picks the defaults")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads={self.threads} must be >= 1")


def configs_dir() -> Path:
    """The Hydra config directory: inside the package when installed from a wheel,
    else ``configs/`` at the top of the source tree."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parent / "configs"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no configs directory beside {here}")


def compose[T](config_name: str, overrides: list[str], schema: type[T]) -> T:
    """Compose ``configs/<config_name>.yaml`` with Hydra overrides and check it
    against ``schema``. Raises ``ConfigError`` with a readable message."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    try:
        with initialize_config_dir(config_dir=str(configs_dir()), version_base="1.3"):
            composed = hydra_compose(config_name=config_name, overrides=list(overrides))
    except HydraException as error:
        raise ConfigError(f"bad override in {overrides}: {error}") from error
    return to_schema(composed, schema)


def to_schema[T](config: DictConfig | dict[str, Any], schema: type[T]) -> T:
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), config)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as error:
        raise ConfigError(str(error).splitlines()[0] + _full_key(error)) from error


def _full_key(error: OmegaConfBaseException) -> str:
    key = getattr(error, "full_key", None)
    return f" (key: {key})" if key else ""


@dataclass
class EncoderConfig:
    """The frozen encoder (``jepa_robot.encoders``)."""

    name: str = "vjepa2_vitl"
    """Registry name (vjepa2_vitl, vjepa2_vith, vjepa2_vitg, vjepa2_vitg_384), hub id, or a local directory."""
    revision: str | None = None
    """Hub revision (commit, tag or branch) for hub weights."""
    pool_grid: int | None = None
    """Average-pool the patch-token grid to pool_grid x pool_grid (fewer tokens, faster planning)."""
    resize_ratio: float = 292 / 256
    """Resize the short side to crop_size * resize_ratio before the centre crop (1.0: no crop)."""
    batch_size: int = 64
    """Frames per encoder forward pass."""

    def __post_init__(self) -> None:
        if self.resize_ratio < 1.0:
            raise ConfigError(f"encoder.resize_ratio={self.resize_ratio} must be >= 1.0")
        if self.batch_size < 1:
            raise ConfigError(f"encoder.batch_size={self.batch_size} must be >= 1")


@dataclass
class PredictorSettings:
    """Size of the action-conditioned predictor (``jepa_robot.predictor``)."""

    hidden_dim: int = 384
    depth: int = 6
    heads: int = 6
    mlp_ratio: float = 4.0
    predict_state: bool = True
    """Also predict the next proprio state (used to roll states forward when planning)."""
    residual_latents: bool = False
    """Predict each frame token's change rather than the token itself (for predictors
    narrower than the encoder's latents; ``jepa_robot.predictor.PredictorConfig``)."""

    def __post_init__(self) -> None:
        if self.hidden_dim % self.heads:
            raise ConfigError(f"predictor.hidden_dim={self.hidden_dim} must be divisible by heads={self.heads}")
        if self.depth < 1:
            raise ConfigError(f"predictor.depth={self.depth} must be >= 1")


@dataclass
class OptimConfig:
    """AdamW with a warmup -> constant -> linear decay learning-rate schedule."""

    lr: float = 4.25e-4
    """Peak learning rate (V-JEPA 2-AC's)."""
    warmup_start_lr: float = 7.5e-5
    warmup_steps: int = 100
    decay_fraction: float = 0.2
    """Fraction of the steps, at the end, over which the rate decays linearly to final_lr."""
    final_lr: float = 1e-6
    weight_decay: float = 0.04
    grad_clip: float = 1.0
    """Clip the gradient's global norm to this (0: no clipping)."""

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.warmup_start_lr < 0 or self.final_lr < 0:
            raise ConfigError("optim learning rates must be positive")
        if not 0.0 <= self.decay_fraction <= 1.0:
            raise ConfigError(f"optim.decay_fraction={self.decay_fraction} must be in [0, 1]")


@dataclass
class TrainConfig:
    """``jepa-robot train``: train an action-conditioned predictor on a LeRobot dataset."""

    dataset: str = MISSING
    """Local dataset directory or hub repo id."""
    image_key: str | None = None
    action_key: str = "action"
    state_key: str | None = "observation.state"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    predictor: PredictorSettings = field(default_factory=PredictorSettings)
    optim: OptimConfig = field(default_factory=OptimConfig)
    frameskip: int = 5
    """Env steps per predictor step; the frameskip actions in between are concatenated."""
    window: int = 4
    """Frames per training window (window - 1 predicted transitions)."""
    rollout_steps: int = 2
    """Steps of the autoregressive rollout loss (0: teacher forcing only)."""
    loss: str = "l1"
    """l1 (V-JEPA 2-AC) or l2."""
    state_loss_weight: float = 0.1
    batch_size: int = 64
    steps: int = 2000
    val_fraction: float = 0.1
    """Fraction of episodes held out for validation (split by episode, seeded)."""
    val_every: int = 250
    val_batches: int = 8
    checkpoint_every: int = 500
    out_dir: str = "runs/default"
    """Run directory: checkpoint/, training_state.pt, metrics.csv, loss_curve.png."""
    resume: bool = True
    """Continue the run in out_dir if it has a training state (false: refuse to overwrite it)."""
    cache_dir: str = "data/latents"
    use_cache: bool = True
    """Train from the latent cache (encode each frame once) or encode frames on the fly."""
    device: str = "auto"
    """auto (cuda if available), cpu, cuda, cuda:1 ..."""
    precision: str = "auto"
    """auto (bf16 autocast on CUDA, fp32 on CPU), fp32 or bf16."""
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        checks = [
            (self.frameskip >= 1, f"frameskip={self.frameskip} must be >= 1"),
            (self.window >= 2, f"window={self.window} must be >= 2"),
            (0 <= self.rollout_steps <= self.window - 1, f"rollout_steps={self.rollout_steps} must be in [0, window-1={self.window - 1}]"),
            (self.loss in ("l1", "l2"), f"loss={self.loss!r} must be l1 or l2"),
            (self.batch_size >= 1, f"batch_size={self.batch_size} must be >= 1"),
            (self.steps >= 1, f"steps={self.steps} must be >= 1"),
            (0.0 <= self.val_fraction < 1.0, f"val_fraction={self.val_fraction} must be in [0, 1)"),
            (self.val_every >= 1 and self.checkpoint_every >= 1, "val_every and checkpoint_every must be >= 1"),
            (self.precision in ("auto", "fp32", "bf16"), f"precision={self.precision!r} must be auto, fp32 or bf16"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


# --- planning and evaluation


@dataclass
class BoundsSettings:
    """Action bounds of the planner (``planners.ActionBounds``), in env action units."""

    low: Any = -1.0
    """Lower bound: one number for every dimension, or a list with one per dimension."""
    high: Any = 1.0
    """Upper bound, as ``low``."""
    move_radius: float | None = None
    """Radius of a per-step ball on ``move_dims`` (V-JEPA 2-AC: L1 ball of 0.075); null: none."""
    move_norm: str = "l1"
    move_dims: list[int] = field(default_factory=lambda: [0, 1, 2])
    binary_dims: list[int] = field(default_factory=list)
    """Dims commanded at one bound or the other only (Meta-World's gripper: [3])."""

    def __post_init__(self) -> None:
        for name in ("low", "high"):
            value = getattr(self, name)
            values = list(value) if isinstance(value, (list, tuple)) or hasattr(value, "__len__") else [value]
            if not values or not all(isinstance(v, (int, float)) for v in values):
                raise ConfigError(f"planner.bounds.{name}={value!r} must be a number or a list of numbers")
        if self.move_norm not in ("l1", "l2"):
            raise ConfigError(f"planner.bounds.move_norm={self.move_norm!r} must be l1 or l2")
        if self.move_radius is not None and self.move_radius <= 0:
            raise ConfigError(f"planner.bounds.move_radius={self.move_radius} must be > 0 or null")


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
    bounds: BoundsSettings = field(default_factory=BoundsSettings)

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


def _check_range(key: str, values: list[float], low: float, high: float) -> None:
    """``values`` must be ``[min, max]`` with ``low <= min <= max <= high``."""
    if len(values) != 2 or not low <= values[0] <= values[1] <= high:
        raise ConfigError(f"{key}={list(values)} must be [min, max] with {low} <= min <= max <= {high}")


@dataclass
class EncoderSizeConfig:
    """Architecture of the V-JEPA 2 model pretrained from scratch: the ``VJEPA2Config``
    fields given here override ``jepa_robot.encoders.tiny_vjepa2_config`` (the rest keep its values)."""

    crop_size: int = 64
    """Side of the square image the encoder sees, in pixels."""
    patch_size: int = 8
    """Side of a patch; the token grid is (crop_size / patch_size) squared per tubelet."""
    tubelet_size: int = 2
    """Frames per token in time (V-JEPA 2: 2; a single frame is repeated over it downstream)."""
    hidden_size: int = 192
    """Token width of the encoder (the latent dimension D downstream)."""
    num_hidden_layers: int = 6
    """Encoder transformer blocks."""
    num_attention_heads: int = 3
    """Encoder attention heads; hidden_size must be divisible by it."""
    mlp_ratio: float = 4.0
    """Encoder MLP width as a multiple of hidden_size."""
    pred_hidden_size: int = 96
    """Width of the masked-latent predictor (only used for pretraining)."""
    pred_num_hidden_layers: int = 2
    """Predictor transformer blocks."""
    pred_num_attention_heads: int = 3
    """Predictor attention heads; pred_hidden_size must be divisible by it."""
    pred_mlp_ratio: float = 4.0
    """Predictor MLP width as a multiple of pred_hidden_size."""
    drop_path_rate: float = 0.0
    """Stochastic depth, linearly increasing over the blocks (0: off)."""

    def __post_init__(self) -> None:
        checks = [
            (self.crop_size >= 8, f"encoder.crop_size={self.crop_size} must be >= 8"),
            (self.patch_size >= 1 and self.crop_size % self.patch_size == 0,
             f"encoder.patch_size={self.patch_size} must divide encoder.crop_size={self.crop_size}"),
            (self.tubelet_size >= 1, f"encoder.tubelet_size={self.tubelet_size} must be >= 1"),
            (self.num_hidden_layers >= 1, f"encoder.num_hidden_layers={self.num_hidden_layers} must be >= 1"),
            (self.pred_num_hidden_layers >= 1,
             f"encoder.pred_num_hidden_layers={self.pred_num_hidden_layers} must be >= 1"),
            (self.num_attention_heads >= 1 and self.hidden_size % self.num_attention_heads == 0,
             f"encoder.hidden_size={self.hidden_size} must be divisible by "
             f"encoder.num_attention_heads={self.num_attention_heads}"),
            (self.pred_num_attention_heads >= 1 and self.pred_hidden_size % self.pred_num_attention_heads == 0,
             f"encoder.pred_hidden_size={self.pred_hidden_size} must be divisible by "
             f"encoder.pred_num_attention_heads={self.pred_num_attention_heads}"),
            (self.mlp_ratio > 0 and self.pred_mlp_ratio > 0, "encoder.mlp_ratio and encoder.pred_mlp_ratio must be > 0"),
            (0.0 <= self.drop_path_rate < 1.0, f"encoder.drop_path_rate={self.drop_path_rate} must be in [0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def overrides(self) -> dict[str, Any]:
        """The fields as ``VJEPA2Config`` keyword arguments."""
        from dataclasses import asdict

        return asdict(self)


@dataclass
class MaskConfig:
    """V-JEPA multi-block masking: the target is the union of random rectangles of patches
    (the same spatial mask at every time step of a clip); the context is the rest."""

    num_blocks: int = 8
    """Rectangles per mask (V-JEPA's short-range generator: 8 blocks of 15%)."""
    block_scale: list[float] = field(default_factory=lambda: [0.15, 0.15])
    """[min, max] area of one rectangle as a fraction of the patch grid."""
    aspect_ratio: list[float] = field(default_factory=lambda: [0.75, 1.5])
    """[min, max] height / width of a rectangle (sampled log-uniformly)."""
    target_ratio: list[float] = field(default_factory=lambda: [0.6, 0.85])
    """[min, max] fraction of the patch grid the target may cover; masks outside are redrawn."""

    def __post_init__(self) -> None:
        if self.num_blocks < 1:
            raise ConfigError(f"mask.num_blocks={self.num_blocks} must be >= 1")
        _check_range("mask.block_scale", self.block_scale, 1e-6, 1.0)
        _check_range("mask.aspect_ratio", self.aspect_ratio, 1e-3, 1e3)
        _check_range("mask.target_ratio", self.target_ratio, 0.0, 1.0)
        if self.target_ratio[1] <= 0.0 or self.target_ratio[0] >= 1.0:
            raise ConfigError(f"mask.target_ratio={list(self.target_ratio)} must leave both a target and a context")


@dataclass
class AugmentConfig:
    """Augmentation for a fixed camera: mild random resized crops (the same box for every
    frame of a clip), optional colour jitter."""

    crop_scale: list[float] = field(default_factory=lambda: [0.7, 1.0])
    """[min, max] area of the crop box as a fraction of the (resized, square) frame; [1, 1]: no crop."""
    crop_aspect: list[float] = field(default_factory=lambda: [0.9, 1.1])
    """[min, max] width / height of the crop box (sampled log-uniformly)."""
    color_jitter: float = 0.0
    """Brightness, contrast and saturation factors drawn from [1 - j, 1 + j] per clip (0: off)."""

    def __post_init__(self) -> None:
        _check_range("augment.crop_scale", self.crop_scale, 1e-3, 1.0)
        _check_range("augment.crop_aspect", self.crop_aspect, 1e-2, 1e2)
        if not 0.0 <= self.color_jitter < 1.0:
            raise ConfigError(f"augment.color_jitter={self.color_jitter} must be in [0, 1)")


@dataclass
class PretrainEncoderConfig:
    """``jepa-robot pretrain-encoder``: pretrain a small V-JEPA 2 encoder from scratch on
    recorded robot video (masked latent prediction against an EMA target encoder)."""

    datasets: list[str] = field(default_factory=list)
    """One or more LeRobot v3 datasets (local directories or hub repo ids) whose frames are used."""
    image_key: str | None = None
    """Camera key in every dataset; ``null`` picks each dataset's first image key."""
    action_key: str = "action"
    """Action key the datasets are checked for (not used for training)."""
    probe_key: str | None = "observation.state"
    """1-D float key the linear probe regresses from frozen latents; ``null``: no probe."""
    encoder: EncoderSizeConfig = field(default_factory=EncoderSizeConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    resize_ratio: float = 1.0
    """Frames are resized so their short side is crop_size * resize_ratio and centre-cropped
    square (as the frozen encoder does); 1.0 keeps the whole view of small sim frames."""
    clip_frames: int = 4
    """Frames in a real video clip (a multiple of encoder.tubelet_size)."""
    clip_stride: int = 2
    """Env steps between consecutive frames of a video clip."""
    video_fraction: float = 0.25
    """Fraction of steps that train on real video clips; the others use single frames repeated
    over the tubelet, which is how the planner encodes frames."""
    ema: list[float] = field(default_factory=lambda: [0.996, 1.0])
    """[start, end] momentum of the EMA target encoder, ramped linearly over the steps."""
    batch_size: int = 64
    """Clips per step."""
    steps: int = 5000
    """Optimizer steps in all (a resumed run continues up to this)."""
    val_fraction: float = 0.1
    """Fraction of episodes (per dataset, seeded) held out from pretraining for the probe and val loss."""
    val_every: int = 250
    """Steps between evaluations of the loss on a fixed held-out batch."""
    probe_every: int = 1000
    """Steps between linear-probe evaluations (also run at the start and the end)."""
    probe_frames: int = 1536
    """Frames the probe encodes (two thirds from training episodes to fit, a third held out)."""
    probe_pool_grid: int = 4
    """The probe's features: latents average-pooled to probe_pool_grid x probe_pool_grid, flattened."""
    checkpoint_every: int = 500
    """Steps between checkpoints (training_state.pt and the exported encoder/)."""
    out_dir: str = "runs/pretrain_encoder"
    """Run directory: encoder/, training_state.pt, metrics.csv, loss_curve.png, frames/."""
    frame_cache: str | None = None
    """Directory of the decoded uint8 frame memmap; ``null``: ``<out_dir>/frames``."""
    resume: bool = True
    """Continue the run in out_dir if it has a training state (false: refuse to overwrite it)."""
    device: str = "auto"
    """auto (cuda if available), cpu, cuda, cuda:1 ..."""
    precision: str = "auto"
    """auto (bf16 autocast on CUDA, fp32 on CPU), fp32 or bf16."""
    seed: int = 0
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self) -> None:
        tubelet = self.encoder.tubelet_size
        checks = [
            (len(self.datasets) >= 1, "datasets is empty: give one or more LeRobot datasets, e.g. datasets=[data/mw-pick-place-40]"),
            (self.resize_ratio >= 1.0, f"resize_ratio={self.resize_ratio} must be >= 1.0"),
            (self.clip_frames >= tubelet and self.clip_frames % tubelet == 0,
             f"clip_frames={self.clip_frames} must be a positive multiple of encoder.tubelet_size={tubelet}"),
            (self.clip_stride >= 1, f"clip_stride={self.clip_stride} must be >= 1"),
            (0.0 <= self.video_fraction <= 1.0, f"video_fraction={self.video_fraction} must be in [0, 1]"),
            (self.batch_size >= 2, f"batch_size={self.batch_size} must be >= 2"),
            (self.steps >= 1, f"steps={self.steps} must be >= 1"),
            (0.0 <= self.val_fraction < 1.0, f"val_fraction={self.val_fraction} must be in [0, 1)"),
            (self.val_every >= 1, f"val_every={self.val_every} must be >= 1"),
            (self.probe_every >= 1, f"probe_every={self.probe_every} must be >= 1"),
            (self.probe_frames >= 6, f"probe_frames={self.probe_frames} must be >= 6"),
            (1 <= self.probe_pool_grid <= self.encoder.crop_size // self.encoder.patch_size,
             f"probe_pool_grid={self.probe_pool_grid} must be in [1, {self.encoder.crop_size // self.encoder.patch_size}] "
             "(the encoder's token grid side)"),
            (self.checkpoint_every >= 1, f"checkpoint_every={self.checkpoint_every} must be >= 1"),
            (self.precision in ("auto", "fp32", "bf16"), f"precision={self.precision!r} must be auto, fp32 or bf16"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        _check_range("ema", self.ema, 0.0, 1.0)


# --- ROS bridge

# The robot group's schema is the env's own config (envs never imports jepa_robot, so
# it lives there): one dataclass for RosArmEnv, the sim bridge and record-ros.
from envs.ros.config import RosArmConfig as RobotConfig  # noqa: E402

ROS_ACTION_SOURCES = ("command", "measured")


@dataclass
class SimBridgeConfig:
    """``jepa-robot sim-bridge``: a rosbridge v2 server backed by a Meta-World env."""

    robot: RobotConfig = field(default_factory=RobotConfig)
    """Topics, rate and gripper mapping to serve (config group ``robot``, normally ``sim``)."""
    task: str = "reach"
    """Meta-World task: ``reach``, ``push`` or ``pick-place``."""
    render_size: int = 64
    """Side of the rendered camera images, pixels; clients resize to ``robot.image_size``."""
    host: str = "127.0.0.1"
    """Interface to listen on (127.0.0.1: this machine only; 0.0.0.0: the network)."""
    port: int = 9090
    """TCP port; 0 picks a free one (printed on start)."""
    lockstep: bool = False
    """One env step per received command instead of stepping on the clock (repeatable tests)."""
    command_timeout_s: float = 0.5
    """A command older than this (or whose sender disconnected) stops the arm."""
    image_format: str = "png"
    """Compressed image format: ``png`` (lossless, as sim data) or ``jpeg``."""
    seed: int = 0
    """Scene seed before the first reset call."""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task={self.task!r}; valid: {sorted(TASKS)}")
        if not 16 <= self.render_size <= 512:
            raise ConfigError(f"render_size={self.render_size} must be in [16, 512]")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port={self.port} must be a TCP port (0: pick a free one)")
        if self.command_timeout_s <= 0:
            raise ConfigError(f"command_timeout_s={self.command_timeout_s} must be > 0")
        if self.image_format not in ("png", "jpeg"):
            raise ConfigError(f"image_format={self.image_format!r} must be png or jpeg")
        bad = [camera.name for camera in self.robot.cameras if camera.name not in CAMERA_VIEWS]
        if bad:
            raise ConfigError(f"robot.cameras {bad}: the sim bridge renders only {sorted(CAMERA_VIEWS)}")


@dataclass
class RecordRosConfig:
    """``jepa-robot record-ros``: record teleoperated episodes from ROS topics into a LeRobot dataset."""

    robot: RobotConfig = field(default_factory=RobotConfig)
    """The arm's topics, rate (the dataset's fps) and action/state layouts (config group ``robot``)."""
    root: str = MISSING
    """Dataset directory (created, or resumed if it holds a dataset with the same features)."""
    repo_id: str = MISSING
    """LeRobot repo id stored in the dataset (``user/name``)."""
    task: str = "teleop"
    """Task string stored with every frame."""
    episodes: int = 10
    """Episodes wanted, seeds ``seed_start ...``; seeds already recorded are skipped."""
    episode_steps: int = 100
    """Frames per episode, taken at ``robot.rate_hz``."""
    seed_start: int = 0
    """First episode seed (stored as ``episode_seed``, passed to the reset service); below 100000."""
    action_source: str = "command"
    """``command``: the teleoperation commands seen on the command topic; ``measured``: the pose change."""
    reset: bool = True
    """Call ``robot.reset_service`` with the seed before each episode, when the robot has one."""
    goal_dir: str | None = None
    """With a reset service: directory where it writes each seed's goal images."""
    video_codec: str = "h264"
    """Codec of the dataset's videos: ``h264``, ``hevc`` or ``libsvtav1``."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        if self.episodes < 1 or self.episode_steps < 1:
            raise ConfigError(f"episodes={self.episodes} and episode_steps={self.episode_steps} must be >= 1")
        if self.seed_start < 0 or self.seed_start + self.episodes > EVAL_SEED_START:
            raise ConfigError(
                f"seed_start={self.seed_start}, episodes={self.episodes}: seeds must lie in "
                f"[0, {EVAL_SEED_START}); seeds from {EVAL_SEED_START} are reserved for evaluation"
            )
        if self.action_source not in ROS_ACTION_SOURCES:
            raise ConfigError(f"action_source={self.action_source!r}; valid: {list(ROS_ACTION_SOURCES)}")
        if self.video_codec not in ("h264", "hevc", "libsvtav1"):
            raise ConfigError(f"video_codec={self.video_codec!r} must be h264, hevc or libsvtav1")
        if abs(self.robot.rate_hz - round(self.robot.rate_hz)) > 1e-9:
            raise ConfigError(f"robot.rate_hz={self.robot.rate_hz} must be a whole number (it is the dataset's fps)")


@dataclass
class RunRobotConfig:
    """``jepa-robot run-robot``: the MPC agent on an arm behind rosbridge."""

    checkpoint: str = MISSING
    """World-model checkpoint directory, or a built-in name (``default``)."""
    robot: RobotConfig = field(default_factory=RobotConfig)
    """Topics, rate, action layout and safety limits (config group ``robot``)."""
    planner: PlannerSettings = field(default_factory=PlannerSettings)
    agent: AgentConfig = field(default_factory=AgentConfig)
    goal: list[str] = field(default_factory=list)
    """Goal image file(s), sub-goals first. Empty: the goal images the robot's reset
    service writes for ``seed`` (the sim bridge does)."""
    goal_dir: str = "runs/run-robot/goals"
    """Where the reset service is asked to write goal images when ``goal`` is empty."""
    seed: int | None = None
    """Passed to the reset service (the sim bridge's scene); null for a real arm."""
    steps: int = 100
    """Control steps to run; every one is a bounded command."""
    dry_run: bool | None = None
    """Log commands instead of sending them; null: the robot config's ``dry_run``."""

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"steps={self.steps} must be >= 1")


# --- V-JEPA 2-AC import


@dataclass
class ImportVJEPA2ACConfig:
    """``jepa-robot import-vjepa2-ac``: convert Meta's published V-JEPA 2-AC file
    (``vjepa2-ac-vitg.pt``) into an encoder directory and a checkpoint (``jepa_robot.vjepa2_ac``)."""

    checkpoint: str = MISSING
    """The downloaded torch.save file (https://dl.fbaipublicfiles.com/vjepa2/vjepa2-ac-vitg.pt)."""
    out_dir: str = "models/vjepa2_ac"
    """Written atomically: ``encoder/`` (transformers VJEPA2Model) and ``checkpoint/``."""
    image_size: int = 256
    """Input side the encoder was trained at (not stored in the weights)."""
    num_frames: int = 64
    """Clip length the models were built for (the predictor takes num_frames / tubelet steps)."""
    encoder_heads: int | None = None
    """Encoder attention heads; ``null`` uses the published model's for its width (ViT-g: 22)."""
    predictor_heads: int | None = None
    """Predictor attention heads; ``null``: 16 for the published 1024-wide predictor."""
    strict: bool = True
    """Refuse keys the converter does not know (false: drop them with a warning)."""
    overwrite: bool = False
    """Replace an existing out_dir."""
    check: bool = True
    """Reload both parts through the ordinary loaders and run them once after writing."""

    def __post_init__(self) -> None:
        checks = [
            (self.image_size >= 1, f"image_size={self.image_size} must be >= 1"),
            (self.num_frames >= 1, f"num_frames={self.num_frames} must be >= 1"),
            (self.encoder_heads is None or self.encoder_heads >= 1, f"encoder_heads={self.encoder_heads} must be >= 1 or null"),
            (self.predictor_heads is None or self.predictor_heads >= 1,
             f"predictor_heads={self.predictor_heads} must be >= 1 or null"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
