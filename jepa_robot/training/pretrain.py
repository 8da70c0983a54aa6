"""``jepa-robot pretrain-encoder``: pretrain a small V-JEPA 2 encoder from scratch on robot video.

The objective is V-JEPA's: a clip is cut into patch tokens; a multi-block mask picks the
*target* tokens (several random rectangles, ~60-85% of the grid, the same spatial mask at
every time step) and leaves the rest as *context*. The online encoder sees only the
context tokens (transformers' ``VJEPA2Layer`` blocks with the token positions passed to
their RoPE attention, as V-JEPA's masked encoder does); ``VJEPA2Model``'s own predictor
fills in the target positions from mask tokens; its output is regressed (L1) onto the
*target encoder*'s features of the full clip at those positions, layer-normalised without
weights and under stop-gradient. The target encoder is an EMA of the online encoder
(momentum ramped e.g. 0.996 -> 1.0). Both are transformers ``VJEPA2Model`` parts.

Clips come in two kinds, chosen per step: single frames repeated over the tubelet (the
way the planner encodes frames, so most steps use them) and short real clips of
``clip_frames`` frames ``clip_stride`` env steps apart (temporal context for the same
weights, at about twice the tokens per clip).

Collapse shows in the metrics: ``train/target_std`` is the per-dimension std of the
target features over the batch's tokens, averaged over dimensions; it falls to 0 when
every token maps to the same vector. The linear probe (``probe/r2``) is ridge regression
from the frozen, pooled latents to the robot state on held-out episodes, beside the same
probe on the randomly initialised encoder (``probe/r2_random``) and on raw pixels.

Run directory (``out_dir``): ``frames/`` (decoded uint8 frames, a memmap built once),
``training_state.safetensors`` (online model, EMA target, optimizer, RNG, step; no
pickle: ``jepa_robot.training.state``; a killed run resumes bit-exactly), ``encoder/``
(the EMA target encoder with the predictor, written with ``save_pretrained`` at every
checkpoint, atomically; ``load_encoder`` loads it), ``metrics.csv``, ``loss_curve.png``
and ``pretrain_curves.png``. A run holds the directory's lock while it runs
(``jepa_robot.files.run_lock``): a second run into it is refused.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from jepa_robot.config.training import PretrainEncoderConfig
from jepa_robot.data.dataset import DatasetError, episode_bounds, episode_frames, episode_vectors, open_dataset
from jepa_robot.data.latent_cache import dataset_fingerprint
from jepa_robot.errors import RunDirectoryError, TrainingDivergedError, TrainingStateError
from jepa_robot.files import atomic_directory, recover_directory, remove_temporaries, run_lock, write_json_atomic
from jepa_robot.training.state import (
    STATE_FILE,
    load_training_state,
    refuse_legacy_state,
    restore_torch_rng,
    save_training_state,
    torch_rng_tensors,
)
from jepa_robot.training.train import (
    METRICS,
    DistributedContext,
    MetricsWriter,
    WindowSampler,
    _refuse_mismatch,
    _resolve_device,
    _split_episodes,
    learning_rate,
    plot_metrics,
)
from jepa_robot.world_model.encoders import IMAGENET_MEAN, IMAGENET_STD, VJEPA2Encoder, tiny_vjepa2_config

log = logging.getLogger(__name__)

ENCODER_DIR = "encoder"
FRAMES_FILE = "frames.npy"
FRAMES_MANIFEST = "manifest.json"
PRETRAINING_INFO = "pretraining.json"
FRAME_CACHE_VERSION = 1
_MASK_TRIES = 20
_PROBE_ALPHAS = tuple(10.0**k for k in range(-3, 6))
"""Ridge penalties, relative to the number of fitted frames (features are standardised)."""
_PROBE_FOLDS = 4


# --------------------------------------------------------------------------- frames
@dataclass
class Corpus:
    """Every frame of the datasets, decoded once, and what is known about each frame."""

    frames: np.ndarray
    """uint8 [frames, size, size, 3] (a read-only memmap): resized, centre-cropped square."""
    bounds: list[tuple[int, int]]
    """(first, end) global frame indices of every episode of every dataset."""
    train_episodes: list[int]
    val_episodes: list[int]
    """Held out from pretraining: the probe's test frames and the fixed validation batch."""
    probe_targets: np.ndarray | None
    """float32 [frames, K] values of ``probe_key`` (NaN rows for datasets without it)."""
    probe_names: list[str]


def _square_frames(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> uint8 [T, size, size, 3]: short side resized to ``size``
    (bilinear, antialiased) and centre-cropped, as ``VJEPA2Encoder`` preprocesses."""
    t, h, w, _ = frames.shape
    if (h, w) == (size, size):
        return frames
    x = frames.permute(0, 3, 1, 2).float()
    if min(h, w) != size:
        new = (size, max(size, int(size * w / h))) if h <= w else (max(size, int(size * h / w)), size)
        x = F.interpolate(x, size=new, mode="bilinear", align_corners=False, antialias=True)
        h, w = new
    top, left = round((h - size) / 2.0), round((w - size) / 2.0)
    x = x[..., top : top + size, left : left + size]
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def build_frame_cache(sources: list[tuple[Any, Any]], directory: Path, size: int, progress: bool = True) -> np.ndarray:
    """Decode every frame of ``sources`` (``(LeRobotDataset, DatasetSpec)`` pairs) once into
    ``directory/frames.npy``, uint8 [frames, size, size, 3], and return it memory-mapped.

    Episode by episode; the manifest counts the episodes done (written after the data), so a
    killed build resumes, and a cache made from other datasets or another size is rebuilt.
    """
    directory.mkdir(parents=True, exist_ok=True)
    manifest_path, frames_path = directory / FRAMES_MANIFEST, directory / FRAMES_FILE
    episodes = [(index, episode) for index, (dataset, _) in enumerate(sources) for episode in range(len(episode_bounds(dataset)))]
    total = sum(spec.frames for _, spec in sources)
    expected = {
        "version": FRAME_CACHE_VERSION,
        "datasets": [
            {"root": str(spec.root), "fingerprint": dataset_fingerprint(spec.root), "image_key": spec.image_key, "frames": spec.frames}
            for _, spec in sources
        ],
        "shape": [total, size, size, 3],
    }
    manifest: dict[str, Any] | None = None
    if manifest_path.exists() and frames_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if {k: manifest.get(k) for k in expected} != expected:
            log.warning("frame cache %s was made from other datasets or another size; rebuilding it", directory)
            manifest = None
    if manifest is not None and manifest.get("complete"):
        return np.load(frames_path, mmap_mode="r")
    if manifest is None:
        manifest = {**expected, "complete": False, "episodes_done": 0}
        cache = np.lib.format.open_memmap(frames_path, mode="w+", dtype=np.uint8, shape=tuple(expected["shape"]))
        write_json_atomic(manifest_path, manifest, sort_keys=True)
    else:
        cache = np.load(frames_path, mmap_mode="r+")
    offsets = np.cumsum([0] + [spec.frames for _, spec in sources])
    done = int(manifest["episodes_done"])
    bar = tqdm(total=len(episodes), initial=done, desc="decode frames", unit="episode", disable=not progress)
    for position in range(done, len(episodes)):
        index, episode = episodes[position]
        dataset, spec = sources[index]
        start, end = episode_bounds(dataset)[episode]
        frames = _square_frames(episode_frames(dataset, spec.image_key, episode), size)
        cache[offsets[index] + start : offsets[index] + end] = frames.numpy()
        cache.flush()  # the data before the manifest that counts it
        manifest["episodes_done"] = position + 1
        write_json_atomic(manifest_path, manifest, sort_keys=True)
        bar.update(1)
    bar.close()
    manifest["complete"] = True
    write_json_atomic(manifest_path, manifest, sort_keys=True)
    del cache
    return np.load(frames_path, mmap_mode="r")


def load_corpus(config: PretrainEncoderConfig, cache_dir: Path) -> Corpus:
    """Open the datasets, decode their frames into the cache, split episodes, read probe targets."""
    sources = []  # one per dataset and camera view: each view's video is clips of its own
    for path in config.datasets:
        dataset, spec = open_dataset(path, image_keys=config.image_keys, action_key=config.action_key, state_key=None)
        sources += [(dataset, dataclasses.replace(spec, image_keys=(key,))) for key in spec.image_keys]
    size = round(config.encoder.crop_size * config.resize_ratio)
    frames = build_frame_cache(sources, cache_dir, size, config.progress)

    bounds: list[tuple[int, int]] = []
    train_episodes: list[int] = []
    val_episodes: list[int] = []
    targets: list[np.ndarray | None] = []
    names: list[str] = []
    offset = 0
    for dataset, spec in sources:
        local = episode_bounds(dataset)
        train, val = _split_episodes(len(local), config.val_fraction, config.seed)
        train_episodes += [len(bounds) + e for e in train]
        val_episodes += [len(bounds) + e for e in val]
        bounds += [(offset + a, offset + b) for a, b in local]
        offset += spec.frames
        key = config.probe_key
        if key is not None and key in dataset.meta.features:
            values = episode_vectors(dataset, key)
            if values.shape[0] != spec.frames:
                raise DatasetError(f"{spec.root}: {key} has {values.shape[0]} rows for {spec.frames} frames")
            if names and values.shape[1] != len(names):
                raise DatasetError(
                    f"{spec.root}: probe_key {key!r} is {values.shape[1]}-D but {len(names)}-D in an earlier "
                    "dataset; probe datasets with the same state layout, or set probe_key=null"
                )
            names = list(dataset.meta.features[key].get("names") or [f"{key}[{i}]" for i in range(values.shape[1])])
            targets.append(values)
        else:
            targets.append(None)
    probe_targets = None
    if names:
        probe_targets = np.concatenate(
            [t if t is not None else np.full((spec.frames, len(names)), np.nan, np.float32) for t, (_, spec) in zip(targets, sources, strict=True)]
        )
    elif config.probe_key is not None:
        log.warning("no dataset has the probe key %r: the linear probe is off", config.probe_key)
    return Corpus(frames, bounds, train_episodes, val_episodes, probe_targets, names)


# --------------------------------------------------------------------------- masks
def sample_target_grid(rng: np.random.Generator, grid: int, mask) -> np.ndarray:
    """bool [grid * grid]: the union of ``mask.num_blocks`` random rectangles, redrawn until
    it covers a fraction of the grid inside ``mask.target_ratio`` (else the closest draw,
    always leaving at least one target and one context token)."""
    low, high = mask.target_ratio
    log_aspect = np.log(mask.aspect_ratio)
    best, best_gap = None, math.inf
    for _ in range(_MASK_TRIES):
        target = np.zeros((grid, grid), dtype=bool)
        for _ in range(mask.num_blocks):
            area = rng.uniform(*mask.block_scale) * grid * grid
            aspect = math.exp(rng.uniform(*log_aspect))
            height = int(np.clip(round(math.sqrt(area * aspect)), 1, grid))
            width = int(np.clip(round(math.sqrt(area / aspect)), 1, grid))
            top, left = rng.integers(0, grid - height + 1), rng.integers(0, grid - width + 1)
            target[top : top + height, left : left + width] = True
        fraction = target.mean()
        if low <= fraction <= high and 0 < target.sum() < grid * grid:
            return target.ravel()
        gap = max(low - fraction, fraction - high)
        if gap < best_gap:
            best, best_gap = target.ravel(), gap
    assert best is not None
    if best.all():
        best[rng.integers(0, best.size)] = False
    elif not best.any():
        best[rng.integers(0, best.size)] = True
    return best


def sample_masks(rng: np.random.Generator, batch: int, grid: int, slots: int, mask) -> tuple[torch.Tensor, torch.Tensor]:
    """Context and target token indices for a batch of clips with ``slots`` tubelets in time.

    Returns int64 ``[batch, n_context]`` and ``[batch, n_target]``, each row sorted. Every
    clip gets its own spatial mask, repeated at every time slot; as in V-JEPA, rows are cut
    to the batch's smallest count (a random subset of each clip's tokens) so they stack.
    """
    targets = [sample_target_grid(rng, grid, mask) for _ in range(batch)]
    num_target = min(int(t.sum()) for t in targets)
    num_context = min(int((~t).sum()) for t in targets)
    spatial = grid * grid
    over_time = spatial * np.arange(slots)[:, None]

    def pick(where: np.ndarray, count: int) -> np.ndarray:
        chosen = np.sort(rng.choice(np.flatnonzero(where), count, replace=False))
        return (chosen[None, :] + over_time).reshape(-1)

    context = np.stack([pick(~t, num_context) for t in targets])
    target = np.stack([pick(t, num_target) for t in targets])
    return torch.from_numpy(context), torch.from_numpy(target)


# --------------------------------------------------------------------------- views
def _normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def random_views(frames: np.ndarray, rng: np.random.Generator, augment, crop: int, device: torch.device) -> torch.Tensor:
    """uint8 [B, T, S, S, 3] -> normalised float [B, T, 3, crop, crop]: one random resized
    crop box (and colour jitter) per clip, the same for all of its frames."""
    b, t, size = frames.shape[0], frames.shape[1], frames.shape[2]
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 1, 4, 2, 3).float().div_(255.0)
    x = x.reshape(b * t, 3, size, size)
    scale = rng.uniform(*augment.crop_scale, size=b)
    aspect = np.exp(rng.uniform(*np.log(augment.crop_aspect), size=b))
    width = np.minimum(np.sqrt(scale * aspect), 1.0)  # fractions of the frame side
    height = np.minimum(np.sqrt(scale / aspect), 1.0)
    centre_x = width / 2 + rng.uniform(size=b) * (1 - width)
    centre_y = height / 2 + rng.uniform(size=b) * (1 - height)
    theta = np.zeros((b, 2, 3), dtype=np.float32)
    theta[:, 0, 0], theta[:, 0, 2] = width, 2 * centre_x - 1
    theta[:, 1, 1], theta[:, 1, 2] = height, 2 * centre_y - 1
    theta_t = torch.from_numpy(theta).to(device).repeat_interleave(t, dim=0)
    grid = F.affine_grid(theta_t, [b * t, 3, crop, crop], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if augment.color_jitter > 0:
        factors = rng.uniform(1 - augment.color_jitter, 1 + augment.color_jitter, size=(3, b)).astype(np.float32)
        brightness, contrast, saturation = (torch.from_numpy(f).to(device).repeat_interleave(t).view(-1, 1, 1, 1) for f in factors)
        x = x * brightness
        gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
        x = (x - gray.mean(dim=(2, 3), keepdim=True)) * contrast + gray.mean(dim=(2, 3), keepdim=True)
        gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
        x = (gray + (x - gray) * saturation).clamp_(0.0, 1.0)
    return _normalise(x).view(b, t, 3, crop, crop)


def centre_views(frames: np.ndarray, crop: int, device: torch.device) -> torch.Tensor:
    """uint8 [B, T, S, S, 3] -> normalised float [B, T, 3, crop, crop]: the centre crop the
    frozen encoder takes (no augmentation)."""
    b, t, size = frames.shape[0], frames.shape[1], frames.shape[2]
    top = round((size - crop) / 2.0)
    x = torch.from_numpy(np.ascontiguousarray(frames[:, :, top : top + crop, top : top + crop]))
    x = x.to(device).permute(0, 1, 4, 2, 3).float().div_(255.0)
    return _normalise(x.reshape(b * t, 3, crop, crop)).view(b, t, 3, crop, crop)


# --------------------------------------------------------------------------- objective
def _gather_tokens(tokens: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """[B, N, D] at int64 [B, K] -> [B, K, D]."""
    return torch.gather(tokens, 1, indices.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def encode_context(encoder, pixels: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """The masked (context) encoder: transformers' ``VJEPA2Encoder`` run on the context
    tokens only, each block told their positions for its RoPE attention.

    ``pixels`` [B, T, 3, H, W], ``context`` int64 [B, K] -> [B, K, D]. With every index
    in ``context`` it equals ``encoder(pixels).last_hidden_state``.
    """
    tokens = _gather_tokens(encoder.embeddings(pixels), context)
    for layer in encoder.layer:
        tokens = layer(tokens, context)[0]
    return encoder.layernorm(tokens)


def jepa_loss(model, target_model, pixels: torch.Tensor, context: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """V-JEPA loss of one batch: L1 between the predictor's output at the target tokens and
    the EMA target encoder's features there (weightless layer norm, no gradient).

    ``model`` and ``target_model`` are ``VJEPA2Model``; ``pixels`` [B, T, 3, H, W];
    ``context`` [B, Nc] and ``target`` [B, Nt] token indices. Returns ``loss`` and, for
    monitoring, ``target_std`` (per-dimension std of all target features over the batch's
    tokens, averaged over dimensions: 0 means collapse) and ``pred_std`` (the same of the
    predictions).
    """
    with torch.no_grad():
        features = target_model.encoder(pixel_values_videos=pixels).last_hidden_state.float()
        features = F.layer_norm(features, (features.shape[-1],))
        wanted = _gather_tokens(features, target)
    context_tokens = encode_context(model.encoder, pixels, context.to(pixels.device))
    batch, num_tokens, dim = features.shape
    # The predictor gathers its context from a full-length sequence: put the context back in place.
    full = context_tokens.new_zeros(batch, num_tokens, dim).scatter(
        1, context.unsqueeze(-1).expand(-1, -1, dim), context_tokens
    )
    predicted = model.predictor(encoder_hidden_states=full, context_mask=[context], target_mask=[target]).last_hidden_state.float()
    loss = (predicted - wanted).abs().mean()
    with torch.no_grad():
        target_std = features.reshape(-1, dim).std(dim=0).mean()
        pred_std = predicted.detach().reshape(-1, dim).std(dim=0).mean()
    return {"loss": loss, "target_std": target_std, "pred_std": pred_std}


@torch.no_grad()
def ema_update(target_params: list[torch.Tensor], online_params: list[torch.Tensor], momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online, in place."""
    torch._foreach_mul_(target_params, momentum)
    torch._foreach_add_(target_params, online_params, alpha=1.0 - momentum)


def ema_momentum(step: int, total: int, ema: list[float]) -> float:
    """Linear ramp from ``ema[0]`` at step 0 to ``ema[1]`` at the last step."""
    return ema[0] + (ema[1] - ema[0]) * min(1.0, step / max(1, total))


# --------------------------------------------------------------------------- probe
def _ridge_weights(x: torch.Tensor, y: torch.Tensor, alphas: list[float]) -> list[torch.Tensor]:
    """Ridge solutions [d, k] of centred ``x`` [n, d] -> ``y`` [n, k], one per penalty."""
    u, s, vt = torch.linalg.svd(x, full_matrices=False)
    uty = u.T @ y
    return [vt.T @ ((s / (s * s + alpha))[:, None] * uty) for alpha in alphas]


def _r2(predicted: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """R^2 per output dimension (NaN where ``y`` does not vary)."""
    total = ((y - y.mean(0)) ** 2).sum(0)
    r2 = 1 - ((predicted - y) ** 2).sum(0) / total
    return torch.where(total > 1e-12, r2, torch.full_like(r2, math.nan))


def ridge_probe(fit_x: np.ndarray, fit_y: np.ndarray, fit_groups: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> np.ndarray:
    """Held-out R^2 per target dimension of a ridge regression ``x -> y``.

    Features and targets are standardised on the fit frames. Each target dimension gets its
    own penalty among :data:`_PROBE_ALPHAS` (times the frame count), chosen by cross-validation
    over the fit episodes (``_PROBE_FOLDS`` folds of whole episodes); the probe is then refitted
    on all fit frames and scored on ``test``.
    """
    x = torch.from_numpy(fit_x).double()
    y = torch.from_numpy(fit_y).double()
    mean_x, std_x = x.mean(0), x.std(0).clamp_min(1e-6)
    mean_y, std_y = y.mean(0), y.std(0).clamp_min(1e-6)
    x, y = (x - mean_x) / std_x, (y - mean_y) / std_y
    groups = np.unique(fit_groups)
    choice = torch.full((y.shape[1],), _PROBE_ALPHAS.index(1.0))
    if len(groups) >= 2:
        folds = min(_PROBE_FOLDS, len(groups))
        scores = torch.zeros(len(_PROBE_ALPHAS), y.shape[1], dtype=torch.float64)
        for fold in range(folds):
            held = torch.from_numpy(np.isin(fit_groups, groups[fold::folds]))
            inner_x, inner_y = x[~held], y[~held]
            centre_x, centre_y = inner_x.mean(0), inner_y.mean(0)
            scores += torch.stack([
                torch.nan_to_num(_r2((x[held] - centre_x) @ w + centre_y, y[held]), nan=-1.0)
                for w in _ridge_weights(inner_x - centre_x, inner_y - centre_y, [a * len(inner_x) for a in _PROBE_ALPHAS])
            ])  # [alphas, k]
        choice = scores.argmax(0)
    solutions = _ridge_weights(x, y, [a * len(x) for a in _PROBE_ALPHAS])
    weights = torch.stack([solutions[int(a)][:, j] for j, a in enumerate(choice)], dim=1)
    tx = (torch.from_numpy(test_x).double() - mean_x) / std_x
    predicted = (tx @ weights) * std_y + mean_y
    return _r2(predicted, torch.from_numpy(test_y).double()).numpy()


@dataclass
class ProbeSet:
    """The frames a probe encodes: fit frames from training episodes, test frames held out."""

    fit_frames: np.ndarray
    fit_y: np.ndarray
    fit_groups: np.ndarray
    test_frames: np.ndarray
    test_y: np.ndarray
    names: list[str]

    @classmethod
    def from_corpus(cls, corpus: Corpus, total: int) -> ProbeSet | None:
        """Evenly spread frames (deterministic), or None when there is nothing to probe."""
        if corpus.probe_targets is None or not corpus.val_episodes:
            return None

        def frames_of(episodes: list[int], count: int) -> tuple[np.ndarray, np.ndarray]:
            index = np.concatenate([np.arange(*corpus.bounds[e]) for e in episodes])
            group = np.concatenate([np.full(corpus.bounds[e][1] - corpus.bounds[e][0], e) for e in episodes])
            keep = np.isfinite(corpus.probe_targets[index]).all(axis=1)
            index, group = index[keep], group[keep]
            pick = np.unique(np.linspace(0, len(index) - 1, min(count, len(index))).round().astype(int)) if len(index) else index
            return index[pick], group[pick]

        fit, fit_groups = frames_of(corpus.train_episodes, total - total // 3)
        test, _ = frames_of(corpus.val_episodes, total // 3)
        if len(fit) < 2 or len(test) < 2:
            return None
        return cls(
            fit_frames=np.asarray(corpus.frames[fit]),
            fit_y=corpus.probe_targets[fit],
            fit_groups=fit_groups,
            test_frames=np.asarray(corpus.frames[test]),
            test_y=corpus.probe_targets[test],
            names=corpus.probe_names,
        )

    def score(self, features) -> dict[str, float]:
        """Probe metrics of a feature function ``uint8 [n, S, S, 3] -> float [n, F]``."""
        r2 = ridge_probe(features(self.fit_frames), self.fit_y, self.fit_groups, features(self.test_frames), self.test_y)
        return {"r2": float(np.nanmean(r2)) if np.isfinite(r2).any() else math.nan, **{n: float(v) for n, v in zip(self.names, r2, strict=True)}}


def latent_features(encoder: VJEPA2Encoder, batch_size: int = 128):
    """Probe features: the frozen encoder's latents, pooled to its ``pool_grid`` and flattened."""

    def features(frames: np.ndarray) -> np.ndarray:
        return encoder.encode(frames, batch_size=batch_size).flatten(1).cpu().numpy()

    return features


def pixel_features(crop: int, grid: int = 8):
    """Probe features of the raw-pixel reference: the centre crop average-pooled to grid x grid."""

    def features(frames: np.ndarray) -> np.ndarray:
        x = centre_views(frames[:, None], crop, torch.device("cpu"))[:, 0]
        return F.adaptive_avg_pool2d(x, grid).flatten(1).numpy()

    return features


# --------------------------------------------------------------------------- export
def export_encoder(target_model, model, directory: Path, info: dict[str, Any]) -> Path:
    """Write the EMA target encoder (with the online predictor, so the directory is a whole
    V-JEPA model) with ``save_pretrained`` to ``directory``, atomically (temporary sibling,
    renamed into place; the previous export is replaced only once the new one is complete)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    exported = copy.deepcopy(target_model).cpu()
    exported.predictor.load_state_dict(model.predictor.state_dict())
    with atomic_directory(directory) as tmp:
        exported.save_pretrained(tmp)
        (tmp / PRETRAINING_INFO).write_text(json.dumps(info, indent=2, sort_keys=True))
    return directory


# --------------------------------------------------------------------------- run
@dataclass
class PretrainResult:
    out_dir: Path
    encoder_dir: Path
    """The exported encoder: ``jepa_robot.world_model.encoders.load_encoder(encoder_dir)``."""
    steps: int
    resumed_from: int
    seconds: float
    """Wall time of the training loop (with evaluations and checkpoints)."""
    clips_per_second: float
    """Training throughput: clips per second of optimizer steps (data, forward, backward, EMA)."""
    final_loss: float
    """Training loss of the last step."""
    val_loss: float
    """Loss on the fixed held-out batch at the end."""
    target_std: float
    """Per-dimension std of the target features at the last step (collapse: -> 0)."""
    parameters: dict[str, int] = field(default_factory=dict)
    probe_r2: float | None = None
    """Linear-probe R^2 (held-out episodes) of the exported encoder; None if no probe ran."""
    probe_r2_random: float | None = None
    """The same probe on the randomly initialised encoder (step 0)."""
    probe_r2_pixels: float | None = None
    """The same probe on 8x8 average-pooled pixels."""
    probe_r2_per_dim: dict[str, float] = field(default_factory=dict)


def _vjepa2_config(config: PretrainEncoderConfig):
    return tiny_vjepa2_config(**config.encoder.overrides(), frames_per_clip=max(config.clip_frames, config.encoder.tubelet_size))


def pretrain_encoder(config: PretrainEncoderConfig) -> PretrainResult:
    """Pretrain (or resume) a V-JEPA 2 encoder as ``config`` says; returns what happened.

    The run holds ``out_dir``'s lock: a second run into the same directory is refused
    with ``RunLockedError``."""
    device = _resolve_device(config.device, DistributedContext())
    out_dir = Path(config.out_dir)
    with run_lock(out_dir, "jepa-robot pretrain-encoder"):
        return _pretrain_encoder(config, device, out_dir)


def _pretrain_encoder(config: PretrainEncoderConfig, device: torch.device, out_dir: Path) -> PretrainResult:
    from transformers import VJEPA2Model

    state_path = out_dir / STATE_FILE
    encoder_dir = out_dir / ENCODER_DIR
    refuse_legacy_state(out_dir)
    recover_directory(encoder_dir)  # what a killed run left half done
    remove_temporaries(out_dir)
    if state_path.exists() and not config.resume:
        raise RunDirectoryError(f"{out_dir} already holds a run; pass resume=true to continue it or choose another out_dir")

    corpus = load_corpus(config, Path(config.frame_cache) if config.frame_cache else out_dir / "frames")
    if not corpus.train_episodes:
        raise DatasetError("no training episodes: lower val_fraction")
    images = WindowSampler(corpus.bounds, corpus.train_episodes, window=1, frameskip=1)
    clips = WindowSampler(corpus.bounds, corpus.train_episodes, window=config.clip_frames, frameskip=config.clip_stride)
    if config.video_fraction > 0 and len(clips) == 0:
        log.warning(
            "no episode is long enough for a %d-frame clip with stride %d: training on single frames only",
            config.clip_frames, config.clip_stride,
        )

    vjepa_config = _vjepa2_config(config)
    crop, tubelet = config.encoder.crop_size, config.encoder.tubelet_size
    grid = crop // config.encoder.patch_size
    torch.manual_seed(config.seed)
    model = VJEPA2Model(vjepa_config).to(device)
    target_model = copy.deepcopy(model)
    target_model.requires_grad_(False)
    target_model.eval()
    model.train()
    online_params = list(model.encoder.parameters())
    target_params = list(target_model.encoder.parameters())
    parameters = {
        "encoder": sum(p.numel() for p in model.encoder.parameters()),
        "predictor": sum(p.numel() for p in model.predictor.parameters()),
    }
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.optim.lr,
        betas=(0.9, 0.999),
    )
    autocast = (device.type == "cuda" and config.precision in ("auto", "bf16")) or config.precision == "bf16"
    rng = np.random.default_rng(config.seed)

    run_identity = {
        "encoder": asdict(config.encoder),
        "datasets": [str(Path(d).expanduser().resolve()) if Path(d).expanduser().exists() else d for d in config.datasets],
        "frame_size": int(corpus.frames.shape[1]),
        "frames": int(corpus.frames.shape[0]),
    }
    step = 0
    probes: dict[str, dict[str, float]] = {}
    saved = load_training_state(state_path) if state_path.exists() else None
    if saved is not None:
        _refuse_mismatch(out_dir, "encoder or data", saved.field("identity"), run_identity)
        saved.load_module(model, "model")
        saved.load_module(target_model.encoder, "target_encoder")
        saved.load_optimizer(optimizer)
        try:
            rng.bit_generator.state = saved.field("rng")
        except (TypeError, ValueError, KeyError) as error:
            raise TrainingStateError(f"{state_path}: the field 'rng' is not a numpy RNG state: {error}") from error
        restore_torch_rng(saved, device)
        step = saved.step
        probes = saved.info.get("probes", {})
        log.info("resuming %s at step %d", out_dir, step)
    resumed_from = step

    probe_set = ProbeSet.from_corpus(corpus, config.probe_frames)
    probe_encoder = VJEPA2Encoder(
        target_model, source=str(encoder_dir.resolve()), pool_grid=config.probe_pool_grid, resize_ratio=config.resize_ratio
    ).to(device)

    def run_probe() -> dict[str, float]:
        if probe_set is None:
            return {}
        return probe_set.score(latent_features(probe_encoder))

    # A fixed validation batch of held-out single frames (training frames when nothing is held out).
    val_rng = np.random.default_rng([config.seed, 1])
    val_episodes = corpus.val_episodes or corpus.train_episodes
    val_pool = np.concatenate([np.arange(*corpus.bounds[e]) for e in val_episodes])
    val_frames = np.asarray(corpus.frames[np.sort(val_rng.choice(val_pool, config.batch_size))])[:, None].repeat(tubelet, axis=1)
    val_context, val_target = sample_masks(val_rng, config.batch_size, grid, 1, config.mask)
    val_pixels = centre_views(val_frames, crop, device)

    def validate() -> float:
        model.eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = jepa_loss(model, target_model, val_pixels, val_context.to(device), val_target.to(device))["loss"]
        model.train()
        return float(loss)

    metrics = MetricsWriter(out_dir / METRICS, resume_step=step if saved is not None else None)
    if step == 0:
        probes = {}
        if probe_set is not None:
            probes["random"] = run_probe()
            probes["pixels"] = probe_set.score(pixel_features(crop))
        row: dict[str, float] = {"val/loss": validate()}
        row.update(_probe_row(probes))
        metrics.write(0, row)

    def save(at_step: int) -> None:
        info = {
            "format": "jepa_robot.pretrain_encoder/1",
            "step": at_step,
            "objective": "V-JEPA masked latent prediction, L1, EMA target (exported), weightless-LN targets",
            "datasets": run_identity["datasets"],
            "resize_ratio": config.resize_ratio,
            "probe": probes,
            "config": asdict(config),
        }
        metrics.flush()  # first: the rows up to the state's step must be on disk when it is
        export_encoder(target_model, model, encoder_dir, info)
        save_training_state(
            state_path,
            at_step,
            {
                "model": model.state_dict(),
                "target_encoder": target_model.encoder.state_dict(),
                "rng": torch_rng_tensors(device),
            },
            optimizer,
            {"identity": run_identity, "rng": rng.bit_generator.state, "probes": probes, "config": asdict(config)},
        )

    started = time.perf_counter()
    step_seconds = 0.0
    clips_seen = 0
    last: dict[str, float] = {}
    val_loss = math.nan
    bar = tqdm(total=config.steps, initial=step, desc="pretrain encoder", unit="step", disable=not config.progress)
    while step < config.steps:
        step_started = time.perf_counter()
        lr = learning_rate(step, config.steps, config.optim)
        for group in optimizer.param_groups:
            group["lr"] = lr
        video = rng.random() < config.video_fraction and len(clips) > 0
        if video:
            indices = clips.frame_indices(clips.starts[rng.integers(0, len(clips), config.batch_size)])
            frames = corpus.frames[indices.reshape(-1)].reshape(*indices.shape, *corpus.frames.shape[1:])
        else:
            indices = images.starts[rng.integers(0, len(images), config.batch_size)]
            frames = np.repeat(corpus.frames[indices][:, None], tubelet, axis=1)
        pixels = random_views(frames, rng, config.augment, crop, device)
        context, target = sample_masks(rng, config.batch_size, grid, pixels.shape[1] // tubelet, config.mask)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            out = jepa_loss(model, target_model, pixels, context.to(device), target.to(device))
        if not torch.isfinite(out["loss"]):
            raise TrainingDivergedError(f"loss is {out['loss'].item()} at step {step}; lower optim.lr?")
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        grad_norm = (
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
            if config.optim.grad_clip > 0
            else torch.tensor(0.0)
        )
        optimizer.step()
        momentum = ema_momentum(step, config.steps, config.ema)
        ema_update(target_params, online_params, momentum)
        step += 1
        clips_seen += config.batch_size
        last = {k: float(v.detach()) for k, v in out.items()}
        step_seconds += time.perf_counter() - step_started
        row = {
            "train/loss": last["loss"],
            f"train/{'video' if video else 'image'}_loss": last["loss"],
            "train/target_std": last["target_std"],
            "train/pred_std": last["pred_std"],
            "train/lr": lr,
            "train/ema_momentum": momentum,
            "train/grad_norm": float(grad_norm),
        }
        if step % config.val_every == 0 or step == config.steps:
            val_loss = validate()
            row["val/loss"] = val_loss
        if probe_set is not None and (step % config.probe_every == 0 or step == config.steps):
            probes["encoder"] = run_probe()
            row.update(_probe_row(probes))
        metrics.write(step, row)
        bar.update(1)
        bar.set_postfix(loss=f"{last['loss']:.4f}", std=f"{last['target_std']:.3f}")
        if step % config.checkpoint_every == 0 or step == config.steps:
            save(step)
    bar.close()
    seconds = time.perf_counter() - started
    metrics.close()
    plot_metrics(out_dir / METRICS, out_dir / "loss_curve.png")
    plot_pretrain_curves(out_dir / METRICS, out_dir / "pretrain_curves.png")
    if not encoder_dir.exists():  # resumed a finished run: nothing trained, export anyway
        save(step)
    if math.isnan(val_loss):
        val_loss = validate()
    final = probes.get("encoder", {})
    return PretrainResult(
        out_dir=out_dir,
        encoder_dir=encoder_dir,
        steps=step,
        resumed_from=resumed_from,
        seconds=seconds,
        clips_per_second=clips_seen / step_seconds if step_seconds > 0 else math.nan,
        final_loss=last.get("loss", math.nan),
        val_loss=val_loss,
        target_std=last.get("target_std", math.nan),
        parameters=parameters,
        probe_r2=final.get("r2"),
        probe_r2_random=probes.get("random", {}).get("r2"),
        probe_r2_pixels=probes.get("pixels", {}).get("r2"),
        probe_r2_per_dim={k: v for k, v in final.items() if k != "r2"},
    )


def _probe_row(probes: dict[str, dict[str, float]]) -> dict[str, float]:
    """Metrics columns: ``probe/r2`` (current encoder), ``probe/r2_random``, ``probe/r2_pixels``,
    and ``probe/r2_<dim>`` per target dimension of the current encoder."""
    row = {}
    for kind, scores in probes.items():
        suffix = "" if kind == "encoder" else f"_{kind}"
        row[f"probe/r2{suffix}"] = scores.get("r2", math.nan)
        if kind == "encoder":
            row.update({f"probe/r2_{name}": v for name, v in scores.items() if name != "r2"})
    return row


def plot_pretrain_curves(csv_path: Path, png_path: Path) -> Path | None:
    """Collapse monitor and probe: target feature std and probe R^2 against steps."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return None

    def series(key: str) -> tuple[list[int], list[float]]:
        points = [(int(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        return ([p[0] for p in points], [p[1] for p in points])

    figure, (std_axis, probe_axis) = plt.subplots(1, 2, figsize=(10, 3.5))
    std_axis.plot(*series("train/target_std"), label="target features")
    std_axis.plot(*series("train/pred_std"), label="predictions", alpha=0.7)
    std_axis.set_title("per-dimension std (collapse -> 0)")
    std_axis.set_xlabel("step")
    std_axis.set_ylim(bottom=0)
    std_axis.legend(fontsize=7)
    steps, values = series("probe/r2")
    probe_axis.plot(steps, values, marker="o", markersize=3, label="encoder")
    if not values:
        probe_axis.text(0.5, 0.5, "no probe (probe_key=null or nothing held out)", ha="center", transform=probe_axis.transAxes)
    for key, style in (("probe/r2_random", "--"), ("probe/r2_pixels", ":")):
        _, reference = series(key)
        if reference:
            probe_axis.axhline(reference[0], linestyle=style, color="gray", label=key.removeprefix("probe/r2_"))
    probe_axis.set_title("linear probe R^2 (held-out episodes)")
    probe_axis.set_xlabel("step")
    probe_axis.legend(fontsize=7)
    for axis in (std_axis, probe_axis):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(png_path, dpi=120)
    plt.close(figure)
    return png_path


def describe(result: PretrainResult) -> str:
    def fmt(value: float | None) -> str:
        return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"

    per_dim = ", ".join(f"{k} {fmt(v)}" for k, v in result.probe_r2_per_dim.items())
    return (
        f"pretrained {result.steps - result.resumed_from} steps (to step {result.steps}) in {result.seconds:.1f} s "
        f"({result.clips_per_second:.1f} clips/s); loss {result.final_loss:.4f}, held-out loss {result.val_loss:.4f}, "
        f"target std {result.target_std:.3f}\n"
        f"linear probe R^2 (held-out episodes): encoder {fmt(result.probe_r2)}"
        f"{f' ({per_dim})' if per_dim else ''}, random init {fmt(result.probe_r2_random)}, pixels {fmt(result.probe_r2_pixels)}\n"
        f"encoder ({result.parameters.get('encoder', 0) / 1e6:.2f}M params, predictor "
        f"{result.parameters.get('predictor', 0) / 1e6:.2f}M): {result.encoder_dir}"
    )


__all__ = [
    "PretrainResult",
    "build_frame_cache",
    "describe",
    "encode_context",
    "jepa_loss",
    "pretrain_encoder",
    "ridge_probe",
    "sample_masks",
]
