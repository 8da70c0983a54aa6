"""``jepa-robot train``: fit an action-conditioned predictor on a LeRobot dataset.

Windows of ``window`` frames, ``frameskip`` env steps apart, are cut from the training
episodes; the ``frameskip`` actions between two frames are concatenated into one
predictor action. The loss is teacher forcing over every step plus an autoregressive
rollout of ``rollout_steps`` from the first frame (V-JEPA 2-AC), L1 by default, plus a
small loss on the predicted proprio state. Validation episodes are held out whole;
validation reports the rollout loss per step.

Frames come from the latent cache (each frame encoded once) or, with
``use_cache=false``, are decoded and encoded on the fly, which is what the cache saves.

Run directory (``out_dir``): ``checkpoint/`` (the model, loads with
``load_checkpoint``), ``training_state.safetensors`` (weights, optimizer, step, RNG, for
resuming; ``jepa_robot.training.state``), ``metrics.csv``, ``loss_curve.png``. Killing a
run and starting the same command again continues it from the last checkpoint, to the
same weights as an uninterrupted run. A run holds the directory's lock while it runs
(``jepa_robot.files.run_lock``): a second run into it is refused. Under ``torchrun`` it
trains with DDP.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm.auto import tqdm

from jepa_robot.config import ConfigError
from jepa_robot.config.training import TrainConfig
from jepa_robot.data.dataset import DatasetError, episode_bounds, episode_vectors, open_dataset
from jepa_robot.data.latent_cache import view_latents
from jepa_robot.errors import RunDirectoryError, TrainingDivergedError, TrainingStateError
from jepa_robot.files import atomic_file, portable_path, recover_directory, remove_temporaries, run_lock
from jepa_robot.training.state import (
    STATE_FILE,
    load_training_state,
    refuse_legacy_state,
    restore_torch_rng,
    save_training_state,
    torch_rng_tensors,
)
from jepa_robot.world_model.checkpoint import encoder_differences, save_checkpoint
from jepa_robot.world_model.macro import HighLevelPredictor, MacroConfig
from jepa_robot.world_model.predictor import ACPredictor, PredictorConfig

log = logging.getLogger(__name__)

METRICS = "metrics.csv"


# --------------------------------------------------------------------------- data
class WindowSampler:
    """Start indices of training windows, and the arrays each window reads.

    A window starting at global frame ``s`` reads frames ``s + k * frameskip`` for
    ``k < window`` and the actions ``s .. s + window * frameskip - 1``, all inside one
    episode.
    """

    def __init__(self, bounds: list[tuple[int, int]], episodes: list[int], window: int, frameskip: int) -> None:
        span = window * frameskip
        starts = [np.arange(first, end - span + 1) for first, end in (bounds[e] for e in episodes) if end - first >= span]
        self.starts = np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)
        self.window, self.frameskip = window, frameskip

    def __len__(self) -> int:
        return len(self.starts)

    def frame_indices(self, starts: np.ndarray) -> np.ndarray:
        """[B] starts -> [B, window] frame indices."""
        return starts[:, None] + self.frameskip * np.arange(self.window)[None, :]

    def action_indices(self, starts: np.ndarray) -> np.ndarray:
        """[B] starts -> [B, window, frameskip] action indices."""
        steps = np.arange(self.window * self.frameskip).reshape(self.window, self.frameskip)
        return starts[:, None, None] + steps[None]


class LatentSource:
    """Frame latents by global index, every view's tokens in turn: from the memory-mapped
    caches (one per view), or by decoding and encoding the frames on the fly."""

    def __init__(self, dataset, image_keys: tuple[str, ...], encoder, caches=None, batch_size: int = 64) -> None:
        self.dataset, self.image_keys, self.encoder, self.caches = dataset, image_keys, encoder, caches
        self.batch_size = batch_size

    def __call__(self, indices: np.ndarray) -> torch.Tensor:
        """[B, T] indices -> float32 [B, T, V * N, D]."""
        if self.caches is not None:
            latents = torch.from_numpy(view_latents(self.caches, indices.reshape(-1)).astype(np.float32))
        else:
            items = [self.dataset[int(i)] for i in indices.reshape(-1)]
            latents = torch.cat([self.encoder.encode(torch.stack([item[key] for item in items]),
                                                     batch_size=self.batch_size).cpu()
                                 for key in self.image_keys], dim=1)
        return latents.view(*indices.shape, *latents.shape[1:])


def normalisation_stats(values: np.ndarray) -> dict[str, list[float]]:
    std = values.std(axis=0)
    return {"mean": values.mean(axis=0).tolist(), "std": np.where(std < 1e-6, 1.0, std).tolist()}


def normalise(values: np.ndarray, stats: dict[str, list[float]]) -> np.ndarray:
    return (values - np.asarray(stats["mean"], np.float32)) / np.asarray(stats["std"], np.float32)


@dataclass
class Batch:
    latents: torch.Tensor  # [B, T, N, D]
    actions: torch.Tensor  # [B, T, A * frameskip], normalised
    states: torch.Tensor | None  # [B, T, S], normalised

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.latents.to(device, non_blocking=True),
            self.actions.to(device, non_blocking=True),
            None if self.states is None else self.states.to(device, non_blocking=True),
        )


class WindowData:
    """Training windows drawn from a ``WindowSampler``, over already normalised
    ``actions`` [frames, A] and ``states`` [frames, S] (shared by train and validation)."""

    def __init__(self, sampler, latents: LatentSource, actions: np.ndarray, states: np.ndarray | None) -> None:
        self.sampler, self.latents, self.actions, self.states = sampler, latents, actions, states

    def batch(self, starts: np.ndarray) -> Batch:
        frames = self.sampler.frame_indices(starts)
        actions = self.actions[self.sampler.action_indices(starts)]  # [B, T, skip, A]
        actions = actions.reshape(*actions.shape[:2], -1)
        states = None if self.states is None else torch.from_numpy(self.states[frames])
        return Batch(self.latents(frames), torch.from_numpy(actions), states)


# --------------------------------------------------------------------------- losses
class TrainingObjective(torch.nn.Module):
    """Teacher forcing + rollout + state losses in one ``forward`` (so DDP sees one call)."""

    def __init__(self, predictor: ACPredictor, loss: str, rollout_steps: int, state_loss_weight: float) -> None:
        super().__init__()
        self.predictor = predictor
        self.distance = F.l1_loss if loss == "l1" else F.mse_loss
        self.rollout_steps, self.state_loss_weight = rollout_steps, state_loss_weight

    def forward(self, latents, actions, states) -> dict[str, torch.Tensor]:
        predicted, predicted_states = self.predictor(latents, actions, states)
        losses = {"teacher_forcing": self.distance(predicted[:, :-1].float(), latents[:, 1:])}
        if predicted_states is not None and states is not None:
            losses["state"] = self.state_loss_weight * self.distance(predicted_states[:, :-1].float(), states[:, 1:])
        if self.rollout_steps > 0:
            context_states = None if states is None else states[:, :1]
            rolled, _ = self.predictor.rollout(latents[:, :1], context_states, actions[:, : self.rollout_steps])
            losses["rollout"] = self.distance(rolled.float(), latents[:, 1 : self.rollout_steps + 1])
        losses["loss"] = sum(losses.values())
        return losses


def _distance_per_step(predicted: torch.Tensor, target: torch.Tensor, loss: str) -> torch.Tensor:
    difference = predicted.float() - target
    return (difference.abs() if loss == "l1" else difference**2).mean(dim=(0, 2, 3))


@torch.no_grad()
def rollout_loss_per_step(predictor: ACPredictor, batch: Batch, loss: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per step [T-1]: the distance of an autoregressive rollout from the first frame to
    the true latents, and that of the "nothing moves" baseline (first frame repeated),
    which a useful model must beat."""
    steps = batch.latents.shape[1] - 1
    context_states = None if batch.states is None else batch.states[:, :1]
    rolled, _ = predictor.rollout(batch.latents[:, :1], context_states, batch.actions[:, :steps])
    target = batch.latents[:, 1:]
    return _distance_per_step(rolled, target, loss), _distance_per_step(batch.latents[:, :1].expand_as(target), target, loss)


def learning_rate(step: int, total: int, optim) -> float:
    """Warmup (linear from warmup_start_lr) -> constant -> linear decay to final_lr."""
    if step < optim.warmup_steps:
        return optim.warmup_start_lr + (optim.lr - optim.warmup_start_lr) * step / max(1, optim.warmup_steps)
    decay_start = total - int(round(optim.decay_fraction * total))
    if step < decay_start:
        return optim.lr
    progress = (step - decay_start) / max(1, total - decay_start)
    return optim.lr + (optim.final_lr - optim.lr) * progress


# --------------------------------------------------------------------------- run
@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def _setup_distributed(device_name: str) -> DistributedContext:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistributedContext(dist.get_rank(), world_size, int(os.environ.get("LOCAL_RANK", "0")))


def _resolve_device(name: str, context: DistributedContext) -> torch.device:
    """``encoders.resolve_device``, then under torchrun each process's own GPU."""
    from jepa_robot.world_model.encoders import resolve_device

    device = resolve_device(name)
    if device.type == "cuda":
        if context.enabled:
            device = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(device)
    return device


@dataclass
class TrainResult:
    out_dir: Path
    checkpoint: Path
    steps: int
    resumed_from: int
    seconds: float
    windows_per_second: float
    final_train_loss: float
    val_loss_per_step: list[float] = field(default_factory=list)
    val_baseline_per_step: list[float] = field(default_factory=list)
    """Copy-the-first-frame baseline on the same validation windows."""


def _split_episodes(num_episodes: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    order = np.random.default_rng(seed).permutation(num_episodes).tolist()
    num_val = int(round(val_fraction * num_episodes))
    if val_fraction > 0 and num_episodes >= 2:
        num_val = max(1, num_val)
    num_val = min(num_val, num_episodes - 1)
    return sorted(order[num_val:]), sorted(order[:num_val])


def train(config: TrainConfig) -> TrainResult:
    """Train (or resume) a predictor as ``config`` says; returns what happened.

    The run holds ``out_dir``'s lock (the main process under ``torchrun``): a second run
    into the same directory is refused with ``RunLockedError``."""
    context = _setup_distributed(config.device)
    device = _resolve_device(config.device, context)
    out_dir = Path(config.out_dir)
    with run_lock(out_dir, "jepa-robot train") if context.is_main else nullcontext():
        return _train(config, context, device, out_dir)


def _train(config: TrainConfig, context: DistributedContext, device: torch.device, out_dir: Path) -> TrainResult:
    from jepa_robot.data.latent_cache import build_latent_caches
    from jepa_robot.world_model.encoders import load_encoder

    checkpoint_dir = out_dir / "checkpoint"
    state_path = out_dir / STATE_FILE
    refuse_legacy_state(out_dir)
    if context.is_main:  # what a killed run left half done
        recover_directory(checkpoint_dir)
        remove_temporaries(out_dir)
    if state_path.exists() and not config.resume:
        raise RunDirectoryError(f"{out_dir} already holds a run; pass resume=true to continue it or choose another out_dir")

    dataset, spec = open_dataset(
        config.dataset, image_keys=config.image_keys, action_key=config.action_key, state_key=config.state_key
    )
    encoder = load_encoder(
        config.encoder.name,
        device=device,
        pool_grid=config.encoder.pool_grid,
        revision=config.encoder.revision,
        resize_ratio=config.encoder.resize_ratio,
    )
    reference = encoder.reference()
    saved = load_training_state(state_path) if state_path.exists() else None
    if saved is not None:
        previous = saved.field("encoder")
        if encoder_differences(previous, reference):
            raise RunDirectoryError(
                f"{out_dir} was trained with another encoder ({previous.get('source')}); use a new out_dir"
            )

    caches = None
    if config.use_cache:
        if context.is_main:
            caches = build_latent_caches(dataset, spec, encoder, config.cache_dir, config.encoder.batch_size,
                                         config.progress)
        context.barrier()
        if not context.is_main:
            caches = build_latent_caches(dataset, spec, encoder, config.cache_dir, config.encoder.batch_size, False)

    actions = episode_vectors(dataset, spec.action_key)
    states = episode_vectors(dataset, spec.state_key) if spec.state_key else None
    bounds = episode_bounds(dataset)
    train_episodes, val_episodes = _split_episodes(len(bounds), config.val_fraction, config.seed)
    train_frames = np.concatenate([np.arange(*bounds[e]) for e in train_episodes])
    stats = {"action": normalisation_stats(actions[train_frames])}
    if states is not None:
        stats["state"] = normalisation_stats(states[train_frames])
    # One step of the model spans `skip` env steps: frameskip, times macro_steps for a
    # high-level model. Stats of the concatenated actions: the per-step stats, tiled.
    skip = config.frameskip * config.macro_steps
    stacked_stats = {
        "action": {k: v * skip for k, v in stats["action"].items()},
        **({"state": stats["state"]} if states is not None else {}),
    }

    train_sampler = WindowSampler(bounds, train_episodes, config.window, skip)
    val_sampler = WindowSampler(bounds, val_episodes, config.window, skip)
    if len(train_sampler) == 0:
        raise DatasetError(
            f"no training window fits: episodes must have at least window*frameskip*macro_steps = "
            f"{config.window * skip} frames"
        )
    source = LatentSource(dataset, spec.image_keys, encoder, caches, config.encoder.batch_size)
    normalised_actions = normalise(actions, stats["action"])
    normalised_states = None if states is None else normalise(states, stats["state"])
    train_data = WindowData(train_sampler, source, normalised_actions, normalised_states)
    val_data = WindowData(val_sampler, source, normalised_actions, normalised_states)

    if states is not None and not config.predictor.predict_state:
        raise ConfigError(
            "predictor.predict_state=false with a state key: the rollout loss needs the next state; "
            "keep predict_state=true or train without proprio (state_key=null)"
        )
    macro = (MacroConfig(steps=config.macro_steps, input_dim=spec.action_dim * skip, dim=config.macro_action_dim)
             if config.macro_steps > 1 else None)
    predictor_config = PredictorConfig(
        latent_dim=encoder.embed_dim,
        num_tokens=encoder.num_tokens * len(spec.image_keys),
        views=len(spec.image_keys),
        action_dim=spec.action_dim * skip if macro is None else macro.dim,
        state_dim=spec.state_dim or 0,
        **{**asdict(config.predictor), "predict_state": states is not None},
        max_steps=max(32, config.window),
    )
    torch.manual_seed(config.seed)
    predictor = (ACPredictor(predictor_config) if macro is None
                 else HighLevelPredictor(predictor_config, macro)).to(device)
    objective = TrainingObjective(predictor, config.loss, config.rollout_steps, config.state_loss_weight)
    model = objective
    if context.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None
        )
    decay = [p for n, p in predictor.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in predictor.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.optim.lr,
        betas=(0.9, 0.999),
    )
    rng = np.random.default_rng([config.seed, context.rank])
    layout = {
        "image_keys": list(spec.image_keys), "image_shape": list(spec.image_shape),
        "action_key": spec.action_key, "state_key": spec.state_key,
        "frameskip": config.frameskip,
        **({"macro": macro.to_dict()} if macro is not None else {}),
    }
    step = 0
    if saved is not None:  # everything comes from the training state, which is whole at every step it was written
        saved_predictor = saved.field("predictor")
        with contextlib.suppress(ValueError, TypeError):  # fields added since the run began take their defaults
            saved_predictor = PredictorConfig.from_dict(saved_predictor).to_dict()
        _refuse_mismatch(out_dir, "predictor configuration", saved_predictor, predictor_config.to_dict())
        saved_layout = saved.field("data_layout")
        if isinstance(saved_layout, dict) and "image_keys" not in saved_layout:  # a run from before views: one camera
            saved_layout = {**saved_layout, "image_keys": layout["image_keys"][:1]}
        _refuse_mismatch(out_dir, "data layout", saved_layout, layout)
        saved.load_module(predictor, "predictor")
        saved.load_optimizer(optimizer)
        restore_torch_rng(saved, device)
        rng_states = saved.field("rng")
        rng = np.random.default_rng()
        try:
            rng.bit_generator.state = rng_states[min(context.rank, len(rng_states) - 1)]
        except (TypeError, ValueError, KeyError, IndexError) as error:
            raise TrainingStateError(f"{state_path}: the field 'rng' is not a numpy RNG state: {error}") from error
        step = saved.step
        log.info("resuming %s at step %d", out_dir, step)
    resumed_from = step

    autocast = device.type == "cuda" and config.precision in ("auto", "bf16")
    if config.precision == "bf16" and device.type != "cuda":
        autocast = True  # bf16 autocast also runs on CPU, if asked for explicitly
    metrics = MetricsWriter(out_dir / METRICS, resume_step=step if saved is not None else None) if context.is_main else None
    data_config = {
        "dataset": portable_path(spec.root),
        "repo_id": spec.repo_id,
        "image_keys": list(spec.image_keys),
        "action_key": spec.action_key,
        "state_key": spec.state_key,
        "action_names": dataset.meta.features[spec.action_key].get("names"),
        "fps": spec.fps,
        "frameskip": config.frameskip,
        "image_shape": list(spec.image_shape),
        "train_episodes": len(train_episodes),
        "val_episodes": len(val_episodes),
    }

    def save(at_step: int) -> None:
        rng_states = _gather_rng_states(rng, context)  # a collective: every rank takes part
        if not context.is_main:
            return
        if metrics is not None:  # first: the rows up to the state's step must be on disk when it is
            metrics.flush()
        saved_stats = stacked_stats
        if macro is not None:  # where the planner may search: the training data's macro-actions
            saved_stats = {**stacked_stats, "macro_action": _macro_range(predictor, train_data, train_sampler)}
        save_checkpoint(
            checkpoint_dir,
            predictor,
            reference,
            data_config,
            saved_stats,
            training={"step": at_step, "config": asdict(config)},
        )
        # Killed between the two writes, the run resumes from the state's step (the
        # state holds the weights too), and the next save rewrites the checkpoint.
        save_training_state(
            state_path,
            at_step,
            {"predictor": predictor.state_dict(), "rng": torch_rng_tensors(device)},
            optimizer,
            {
                "rng": rng_states,
                "encoder": reference,
                "predictor": predictor_config.to_dict(),
                "data_layout": layout,
                "config": asdict(config),
            },
        )

    started = time.perf_counter()
    windows_seen = 0
    last_losses: dict[str, float] = {}
    val_per_step: list[float] = []
    val_baseline: list[float] = []
    bar = tqdm(total=config.steps, initial=step, desc="train", unit="step", disable=not (config.progress and context.is_main))
    predictor.train()
    while step < config.steps:
        lr = learning_rate(step, config.steps, config.optim)
        for group in optimizer.param_groups:
            group["lr"] = lr
        starts = train_sampler.starts[rng.integers(0, len(train_sampler), config.batch_size)]
        batch = train_data.batch(starts).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            losses = model(batch.latents, batch.actions, batch.states)
        if not torch.isfinite(losses["loss"]):
            raise TrainingDivergedError(f"loss is {losses['loss'].item()} at step {step}; lower optim.lr?")
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        grad_norm = (
            torch.nn.utils.clip_grad_norm_(predictor.parameters(), config.optim.grad_clip)
            if config.optim.grad_clip > 0
            else torch.tensor(0.0)
        )
        optimizer.step()
        step += 1
        windows_seen += config.batch_size * context.world_size
        last_losses = {f"train/{k}": v.item() for k, v in losses.items()}
        row = {**last_losses, "train/lr": lr, "train/grad_norm": float(grad_norm)}
        if step % config.val_every == 0 or step == config.steps:
            predictor.eval()
            val_per_step, val_baseline = validate(predictor, val_data, config, device, autocast)
            predictor.train()
            row.update({f"val/rollout_loss_step{k + 1}": v for k, v in enumerate(val_per_step)})
            row.update({f"val/copy_first_frame_step{k + 1}": v for k, v in enumerate(val_baseline)})
        if metrics is not None:
            metrics.write(step, row)
        bar.update(1)
        bar.set_postfix(loss=f"{last_losses['train/loss']:.4f}")
        if step % config.checkpoint_every == 0 or step == config.steps:
            save(step)
            context.barrier()
    bar.close()
    seconds = time.perf_counter() - started
    if metrics is not None:
        metrics.close()
        plot_metrics(out_dir / METRICS, out_dir / "loss_curve.png")
    if context.enabled:
        dist.destroy_process_group()
    return TrainResult(
        out_dir=out_dir,
        checkpoint=checkpoint_dir,
        steps=step,
        resumed_from=resumed_from,
        seconds=seconds,
        windows_per_second=windows_seen / seconds if seconds > 0 else math.nan,
        final_train_loss=last_losses.get("train/loss", math.nan),
        val_loss_per_step=val_per_step,
        val_baseline_per_step=val_baseline,
    )


def validate(predictor, data: WindowData, config: TrainConfig, device, autocast: bool) -> tuple[list[float], list[float]]:
    """(rollout loss per step, copy-first-frame baseline per step) on up to
    ``val_batches`` fixed validation batches."""
    if len(data.sampler) == 0:
        return [], []
    starts = data.sampler.starts
    # Fixed, evenly spread windows, so numbers are comparable across evaluations.
    picks = starts[np.linspace(0, len(starts) - 1, min(len(starts), config.val_batches * config.batch_size)).astype(int)]
    model_total = baseline_total = 0.0
    for chunk in np.array_split(picks, max(1, math.ceil(len(picks) / config.batch_size))):
        batch = data.batch(chunk).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            model_loss, baseline_loss = rollout_loss_per_step(predictor, batch, config.loss)
        model_total = model_total + model_loss * len(chunk)
        baseline_total = baseline_total + baseline_loss * len(chunk)
    return (model_total / len(picks)).tolist(), (baseline_total / len(picks)).tolist()


MACRO_RANGE_WINDOWS = 4096


def _macro_range(predictor: HighLevelPredictor, data: WindowData, sampler: WindowSampler) -> dict[str, list[float]]:
    """The spread of the macro-actions of (up to ``MACRO_RANGE_WINDOWS``, evenly spread)
    training windows' high-level steps."""
    starts = sampler.starts[np.linspace(0, len(sampler) - 1, min(len(sampler), MACRO_RANGE_WINDOWS)).astype(int)]
    actions = data.actions[sampler.action_indices(starts)]  # [M, window, skip, A], normalised
    actions = torch.from_numpy(actions.reshape(-1, actions.shape[2] * actions.shape[3]))
    return predictor.macro_range(actions.to(next(predictor.parameters()).device))  # no dropout: mode irrelevant


def _refuse_mismatch(out_dir: Path, what: str, saved: dict[str, Any], wanted: dict[str, Any]) -> None:
    diff = [f"{k}: run has {saved.get(k)!r}, now {wanted.get(k)!r}" for k in sorted(set(saved) | set(wanted)) if saved.get(k) != wanted.get(k)]
    if diff:
        raise RunDirectoryError(f"{out_dir} holds a run with another {what} ({'; '.join(diff)}); use a new out_dir")


def _gather_rng_states(rng: np.random.Generator, context: DistributedContext) -> list[dict]:
    if not context.enabled:
        return [rng.bit_generator.state]
    states: list[Any] = [None] * context.world_size
    dist.all_gather_object(states, rng.bit_generator.state)
    return states


class MetricsWriter:
    """Append rows to a CSV (and TensorBoard when installed). On resume, rows past the
    checkpoint's step are dropped, so the file matches the continued run; a run that
    starts from scratch (``resume_step=None``) drops the rows a killed first try left."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = []
        if path.exists() and resume_step is not None:
            with path.open() as handle:
                self.rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= resume_step]
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(path.parent / "tensorboard"))
        except ImportError:
            self.tensorboard = None

    def write(self, step: int, values: dict[str, float]) -> None:
        self.rows.append({"step": step, **values})
        if self.tensorboard is not None:
            for key, value in values.items():
                self.tensorboard.add_scalar(key, value, step)
        if step % 50 == 0 or any(k.startswith("val/") for k in values):
            self.flush()

    def flush(self) -> None:
        fields = ["step"] + sorted({k for r in self.rows for k in r} - {"step"})
        with atomic_file(self.path) as tmp, tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(self.rows)

    def close(self) -> None:
        self.flush()
        if self.tensorboard is not None:
            self.tensorboard.close()


def plot_metrics(csv_path: Path, png_path: Path) -> Path | None:
    """Training and validation loss curves, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return None
    figure, axis = plt.subplots(figsize=(7, 4))
    for key in sorted(rows[0].keys() | {k for r in rows for k in r}):
        if not (key.startswith("train/") and key.endswith("loss") or key.startswith("val/")):
            continue
        points = [(int(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        if points:
            steps, values = zip(*points, strict=True)
            baseline = "copy_first_frame" in key
            axis.plot(
                steps, values, label=key, linestyle="--" if baseline else "-",
                marker="o" if key.startswith("val/") and not baseline else None, markersize=3,
            )
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.set_yscale("log")
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(png_path, dpi=120)
    plt.close(figure)
    return png_path


def describe(result: TrainResult) -> str:
    val = ", ".join(f"{v:.4f}" for v in result.val_loss_per_step) or "n/a"
    baseline = ", ".join(f"{v:.4f}" for v in result.val_baseline_per_step) or "n/a"
    return (
        f"trained {result.steps - result.resumed_from} steps (to step {result.steps}) in {result.seconds:.1f} s "
        f"({result.windows_per_second:.1f} windows/s); final train loss {result.final_train_loss:.4f}\n"
        f"val rollout loss per step: {val} (copy-first-frame baseline: {baseline})\n"
        f"checkpoint: {result.checkpoint}"
    )


__all__ = ["train", "TrainResult", "WindowSampler", "learning_rate", "describe"]
