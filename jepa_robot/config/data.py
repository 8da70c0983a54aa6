"""Schemas of ``jepa-robot collect``, ``inspect`` and ``merge``."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from envs.metaworld.tasks import CAMERA_NAMES, EVAL_SEED_START, TASKS
from jepa_robot.config import ConfigError, check_camera, check_finite


@dataclass
class EnvConfig:
    """A goal-image Meta-World task (see ``envs.metaworld.env``)."""

    task: str = "reach"
    """One of ``reach``, ``push``, ``pick-place``."""
    image_size: int = 64
    """Square image side in pixels (16-512); 64 suits the small embedded encoder."""
    cameras: list[str] = field(default_factory=lambda: ["oblique"])
    """Named cameras: free views (``oblique``, ``workspace``, ``front``, ``top``; see
    ``envs.metaworld.env.CAMERA_VIEWS``) and cameras on the arm (``wrist``,
    ``behind_gripper``; ``BODY_CAMERAS``), each recorded as ``observation.images.<name>``.
    The default model was trained on ``oblique``."""
    step_budget: int | None = None
    """Step budget; ``null`` uses the protocol's (reach 100, push 150, pick-place 200)."""
    camera_jitter: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    """Move every camera at each episode by a uniform draw within ``+-[azimuth degrees,
    elevation degrees, distance metres]`` (from the episode seed: a seed always gives the
    same view), so a model learns from views near the nominal one; e.g. ``[4, 2, 0.03]``.
    Each within +-30, +-20, +-0.3; zeros: the fixed view."""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"env.task={self.task!r} is not a task; valid: {sorted(TASKS)}")
        if not 16 <= self.image_size <= 512:
            raise ConfigError(f"env.image_size={self.image_size} must be in [16, 512]")
        bad = [c for c in self.cameras if c not in CAMERA_NAMES]
        if bad or not self.cameras:
            raise ConfigError(f"env.cameras={self.cameras} must name cameras from {list(CAMERA_NAMES)}")
        if self.step_budget is not None and self.step_budget < 1:
            raise ConfigError(f"env.step_budget={self.step_budget} must be >= 1")
        check_camera("env.camera_jitter", self.camera_jitter, spread=True)


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
        check_finite(
            "exploration.", noise_std=self.noise_std, perturb_prob=self.perturb_prob, random_fraction=self.random_fraction
        )
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
    """Where the preview goes; ``null`` puts it in the dataset root as ``<root>/preview.mp4``
    (lerobot's loaders and a resumed recording ignore it)."""
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
    image_keys: list[str] | None = None
    """Camera keys a world model would read; ``null``: every camera."""
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
