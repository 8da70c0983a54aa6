"""``jepa-robot fit-readout``: fit a state readout (``jepa_robot.world_model.readout``) for a checkpoint.

    jepa-robot fit-readout checkpoint=runs/mw/checkpoint dataset=data/mw-all

The dataset's frames are encoded with the checkpoint's own encoder through the latent
cache (a second fit encodes nothing); the readout goes into the checkpoint directory, or
into a copy of the model at ``out_dir``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jepa_robot.data.dataset import DatasetError, open_dataset
from jepa_robot.data.latent_cache import build_latent_caches, view_latents
from jepa_robot.files import atomic_directory, portable_path
from jepa_robot.world_model.checkpoint import CheckpointError
from jepa_robot.world_model.model import IMAGE_KEY_PREFIX, WorldModel, resolve_checkpoint
from jepa_robot.world_model.readout import StateReadout, fit_readout, readout_targets, save_readout


def fit_checkpoint_readout(config) -> dict[str, Any]:
    """``jepa-robot fit-readout``: fit a readout on a dataset's frames for a checkpoint.

    ``config`` is a ``jepa_robot.config.training.FitReadoutConfig``. The dataset's frames are
    encoded with the checkpoint's own encoder (through the latent cache, so a second fit
    encodes nothing); the readout goes into the checkpoint directory, or into a copy of
    the model at ``out_dir``. Returns a summary (held-out RMSE per column, paths, time).
    """
    started = time.perf_counter()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    source = resolve_checkpoint(config.checkpoint)
    if config.out_dir is not None and Path(config.out_dir).exists():
        raise CheckpointError(f"out_dir={config.out_dir} exists; name a new directory "
                              "(or out_dir=null to write into the checkpoint)")
    world_model = WorldModel.load(source, with_readout=False)  # a broken old one is replaced
    dataset, spec = open_dataset(config.dataset, image_keys=[IMAGE_KEY_PREFIX + c for c in world_model.cameras],
                                 state_key=None)
    side = world_model.image_size
    if tuple(spec.image_shape) != (side, side, 3):
        raise DatasetError(f"{config.dataset}: {', '.join(spec.image_keys)} frames are {tuple(spec.image_shape)}; "
                           f"the world model {source} was trained on {side} x {side} frames")
    keys, names, states = readout_targets(dataset, config.state_keys)
    episodes = np.asarray(dataset.hf_dataset.with_format("numpy")["episode_index"]).reshape(-1)
    caches = build_latent_caches(dataset, spec, world_model.encoder, config.cache_dir,
                                 progress=config.progress)
    for cache in caches:
        if cache.num_frames != len(states):
            raise DatasetError(f"latent cache {cache.directory} has {cache.num_frames} frames, "
                               f"{config.dataset} {len(states)}")
    readout, metrics = fit_readout(
        view_latents(caches, slice(None)), states, episodes, holdout=config.holdout, epochs=config.epochs,
        batch_size=config.batch_size, lr=config.lr, hidden=config.hidden, state_names=names,
        seed=config.seed, progress=config.progress,
    )
    metrics.update(dataset=portable_path(spec.root), state_keys=keys)
    # The checkpoint's own reference: a packaged model's relative encoder path stays relative.
    reference = world_model.checkpoint.encoder_reference
    if config.out_dir is None:
        written = save_readout(source, readout, metrics, reference)
    else:
        written = _save_into_copy(source, Path(config.out_dir), readout, metrics, reference)
    return {"readout": str(written), "held_out_rmse": dict(zip(names, metrics["held_out_rmse"], strict=True)),
            "frames": metrics["frames"], "held_out_frames": metrics["held_out_frames"],
            "seconds": time.perf_counter() - started}


def _save_into_copy(source: Path, out_dir: Path, readout: StateReadout, metrics: dict[str, Any],
                    reference: dict[str, Any]) -> Path:
    """Copy the model at ``source`` to ``out_dir`` and write the readout into the copy;
    ``out_dir`` appears complete or not at all. A packaged model (its checkpoint names
    ``../encoder``) is copied whole, encoder included; any other, the checkpoint only."""
    packaged = str(reference.get("source", "")).startswith("..")
    with atomic_directory(out_dir) as tmp:
        if packaged:
            shutil.copytree(source.parent, tmp, dirs_exist_ok=True)
            checkpoint = tmp / source.name
        else:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
            checkpoint = tmp
        written = save_readout(checkpoint, readout, metrics, reference)
    return out_dir / written.relative_to(tmp)


def describe(summary: dict[str, Any]) -> str:
    rmse = ", ".join(f"{name} {value:.4g}" for name, value in summary["held_out_rmse"].items())
    lines = [(f"readout fit on {summary['frames'] - summary['held_out_frames']} frames in "
              f"{summary['seconds']:.0f} s; held-out RMSE ({summary['held_out_frames']} frames): {rmse}")]
    lines.append(f"wrote {summary['readout']}")
    return "\n".join(lines)
