"""Schemas of ``jepa-robot train``, ``pretrain-encoder``, ``fit-readout`` and ``import-vjepa2-ac``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from jepa_robot.config import ConfigError, check_finite
from jepa_robot.world_model.architecture import PredictorArchitecture


@dataclass
class EncoderConfig:
    """The frozen encoder (``jepa_robot.world_model.encoders``)."""

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
        check_finite("encoder.", resize_ratio=self.resize_ratio)
        if self.resize_ratio < 1.0:
            raise ConfigError(f"encoder.resize_ratio={self.resize_ratio} must be >= 1.0")
        if self.batch_size < 1:
            raise ConfigError(f"encoder.batch_size={self.batch_size} must be >= 1")


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
        check_finite(
            "optim.", lr=self.lr, warmup_start_lr=self.warmup_start_lr, decay_fraction=self.decay_fraction,
            final_lr=self.final_lr, weight_decay=self.weight_decay, grad_clip=self.grad_clip,
        )
        if self.lr <= 0 or self.warmup_start_lr < 0 or self.final_lr < 0:
            raise ConfigError("optim learning rates must be positive")
        if not 0.0 <= self.decay_fraction <= 1.0:
            raise ConfigError(f"optim.decay_fraction={self.decay_fraction} must be in [0, 1]")


@dataclass
class TrainConfig:
    """``jepa-robot train``: train an action-conditioned predictor on a LeRobot dataset."""

    dataset: str = MISSING
    """Local dataset directory or hub repo id."""
    image_keys: list[str] | None = None
    """The camera views the model sees, in token order (``observation.images.<camera>``,
    all of one frame size); ``null``: every camera in the dataset. Each view is encoded
    by the same frozen encoder; a time step's tokens are each view's in turn."""
    action_key: str = "action"
    state_key: str | None = "observation.state"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    predictor: PredictorArchitecture = field(default_factory=PredictorArchitecture)
    optim: OptimConfig = field(default_factory=OptimConfig)
    frameskip: int = 5
    """Env steps per predictor step; the frameskip actions in between are concatenated."""
    macro_steps: int = 1
    """1: the ordinary (low-level) predictor. K >= 2: a high-level predictor for
    hierarchical planning (``agent.hierarchy``), whose steps are K predictor steps
    (K * frameskip env steps) apart, conditioned on a macro-action that an encoder trained
    with it learns from those K * frameskip actions (``jepa_robot.world_model.macro``).
    ``window`` and ``rollout_steps`` then count high-level steps."""
    macro_action_dim: int = 8
    """Width of a macro-action (macro_steps >= 2 only)."""
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
    """Run directory: checkpoint/, training_state.safetensors, metrics.csv, loss_curve.png."""
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
        check_finite("", state_loss_weight=self.state_loss_weight, val_fraction=self.val_fraction)
        checks = [
            (self.frameskip >= 1, f"frameskip={self.frameskip} must be >= 1"),
            (self.window >= 2, f"window={self.window} must be >= 2"),
            (self.macro_steps >= 1, f"macro_steps={self.macro_steps} must be >= 1"),
            (self.macro_action_dim >= 1, f"macro_action_dim={self.macro_action_dim} must be >= 1"),
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
class EncoderSizeConfig:
    """Architecture of the V-JEPA 2 model pretrained from scratch: the ``VJEPA2Config``
    fields given here override ``jepa_robot.world_model.encoders.tiny_vjepa2_config`` (the rest keep its values)."""

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
        check_finite(
            "encoder.", mlp_ratio=self.mlp_ratio, pred_mlp_ratio=self.pred_mlp_ratio, drop_path_rate=self.drop_path_rate
        )
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
        check_finite("augment.", color_jitter=self.color_jitter)
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
    image_keys: list[str] | None = None
    """Camera keys whose video the encoder learns from, in every dataset; ``null``: every
    camera of each dataset (each view's frames are clips of their own)."""
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
    """Steps between checkpoints (training_state.safetensors and the exported encoder/)."""
    out_dir: str = "runs/pretrain_encoder"
    """Run directory: encoder/, training_state.safetensors, metrics.csv, loss_curve.png, frames/."""
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
        check_finite(
            "", resize_ratio=self.resize_ratio, video_fraction=self.video_fraction, val_fraction=self.val_fraction
        )
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


@dataclass
class FitReadoutConfig:
    """``jepa-robot fit-readout``: fit a state readout (latents -> state) for a world model.

    The readout lets the planner use ``planner.energy=readout`` (``jepa_robot.world_model.readout``).
    """

    checkpoint: str = MISSING
    """World-model checkpoint directory, or a built-in name (``default``)."""
    dataset: str = MISSING
    """LeRobot v3 dataset recorded with the checkpoint's cameras (a local directory or hub id)."""
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
        check_finite("", lr=self.lr)
        if self.lr <= 0:
            raise ConfigError(f"lr={self.lr} must be > 0")
        if self.state_keys is not None and not self.state_keys:
            raise ConfigError("state_keys=[] names no column; null picks the defaults")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads={self.threads} must be >= 1")


@dataclass
class ImportVJEPA2ACConfig:
    """``jepa-robot import-vjepa2-ac``: convert Meta's published V-JEPA 2-AC file
    (``vjepa2-ac-vitg.pt``) into an encoder directory and a checkpoint (``jepa_robot.world_model.vjepa2_ac``)."""

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


def _check_range(key: str, values: list[float], low: float, high: float) -> None:
    """``values`` must be ``[min, max]`` with ``low <= min <= max <= high``."""
    if len(values) != 2 or not low <= values[0] <= values[1] <= high:
        raise ConfigError(f"{key}={list(values)} must be [min, max] with {low} <= min <= max <= {high}")
