"""Typed configs for the ``jepa-robot`` commands, and Hydra composition.

YAML files in ``configs/`` give the defaults and the config groups (``env=...``);
the dataclasses here are the schema they are merged into, so a misspelt key or a
value of the wrong type fails loudly, and ``__post_init__`` checks ranges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from envs.metaworld_goal import CAMERA_VIEWS, EVAL_SEED_START, TASKS

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad config value or override."""


@dataclass
class EnvConfig:
    """A goal-image Meta-World task (see ``envs.metaworld_goal``)."""

    task: str = "reach"
    """One of ``reach``, ``push``, ``pick-place``."""
    image_size: int = 64
    """Square image side in pixels (16-512); 64 suits the small embedded encoder."""
    cameras: list[str] = field(default_factory=lambda: ["oblique"])
    """Named camera views (``oblique``, ``front``, ``top``); the first is the primary one."""
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
    """How recorded actions stray from the scripted expert (``envs.experts``)."""

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
        from envs.experts import Exploration

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


def configs_dir() -> Path:
    """The Hydra config directory: inside the package when installed from a wheel,
    else ``configs/`` at the top of the source tree."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parent / "configs"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no configs directory beside {here}")


def compose(config_name: str, overrides: list[str], schema: type[T]) -> T:
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


def to_schema(config: DictConfig | dict[str, Any], schema: type[T]) -> T:
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
    """Distance to the goal latent: l1 (V-JEPA 2-AC) or l2."""
    energy_steps: str = "final"
    """final: only the last predicted step counts; all: summed over the horizon."""
    bounds: BoundsSettings = field(default_factory=BoundsSettings)

    def __post_init__(self) -> None:
        from planners import PLANNERS

        if self.name not in PLANNERS:
            raise ConfigError(f"planner.name={self.name!r}; valid: {sorted(PLANNERS)}")
        if self.energy not in ("l1", "l2"):
            raise ConfigError(f"planner.energy={self.energy!r} must be l1 or l2")
        if self.energy_steps not in ("final", "all"):
            raise ConfigError(f"planner.energy_steps={self.energy_steps!r} must be final or all")


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
    """``jepa-robot eval``: the evaluation protocol (DESIGN.md) for a checkpoint and a planner."""

    checkpoint: str = MISSING
    """World-model checkpoint directory."""
    planner: PlannerSettings = field(default_factory=PlannerSettings)
    agent: AgentConfig = field(default_factory=AgentConfig)
    tasks: list[str] = field(default_factory=lambda: ["reach", "push", "pick-place"])
    episodes: int = 50
    """Episodes per task; episode i uses seed seed_start + i."""
    seed_start: int = EVAL_SEED_START
    subgoals: bool = False
    """Plan through the expert's sub-goal images (grasp, lift) before the final goal."""
    references: list[str] = field(default_factory=lambda: list(REFERENCES))
    """Baselines run on the same seeds and budgets: random actions, the scripted expert."""
    workers: int = 1
    """Episodes run in this many processes at once (each loads the model once)."""
    threads_per_worker: int | None = None
    """torch threads per worker; null: the machine's cores split among the workers."""
    videos: int = 2
    """Episodes per task whose video (observation | goal | energy) is written."""
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
        if self.seed_start < EVAL_SEED_START:
            raise ConfigError(
                f"seed_start={self.seed_start}: evaluation seeds start at {EVAL_SEED_START} "
                "(lower seeds are training data)"
            )
        if self.workers < 1 or self.videos < 0:
            raise ConfigError("workers must be >= 1 and videos >= 0")
        if self.threads_per_worker is not None and self.threads_per_worker < 1:
            raise ConfigError(f"threads_per_worker={self.threads_per_worker} must be >= 1")


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
        if self.goal and self.subgoals:
            raise ConfigError("give goal image files or subgoals=true, not both")
