"""A state readout: a small network from a frame's latent tokens to the robot's proprio state.

The L1 energy weighs every latent element alike, so near the goal it is moved more by
the arm's pose (which the planner cannot command) than by where the hand is
(docs/default_model.md). A readout fit on recorded frames (their
cached latents against their recorded ``observation.state``) lets the planner compare a
predicted latent with the goal image's latent in the state's own units instead: the
``readout`` energy (``planners.energy.ReadoutDistance``). The goal is still only an
image; the readout is a fixed function of latents, fit once on training data.

The network is an MLP on the frame's tokens, flattened.

```
<checkpoint>/
  readout.safetensors  the network and its input / output normalisation
  readout.json         shape, state names, held-out error, the encoder it was fit on
```

``readout.json`` is written last, so a checkpoint either has a complete readout or none.

From the command line (encodes the dataset once into the latent cache, then fits):

    jepa-robot fit-readout checkpoint=runs/mw/checkpoint dataset=data/mw-all

```python
readout, metrics = fit_readout(latents, states, episodes)      # held-out RMSE per state dim
save_readout("runs/mw/checkpoint", readout, metrics, encoder_reference)
readout = load_readout("runs/mw/checkpoint", encoder_reference)  # None if it has none
```
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm import tqdm

from jepa_robot.world_model.checkpoint import (  # noqa: F401 (READOUT_*: re-exported)
    READOUT_CONFIG,
    READOUT_WEIGHTS,
    CheckpointError,
    encoder_differences,
    read_format_json,
)

READOUT_FORMAT = "jepa_robot.readout/1"
DEFAULT_STATE_KEYS = ("observation.state",)
OPTIONAL_STATE_KEYS = ("observation.environment_state",)
"""Fit too when the dataset has them (simulated recordings: the object's position)."""

@dataclass
class ReadoutConfig:
    """Everything needed to rebuild a :class:`StateReadout`."""

    latent_shape: tuple[int, int]
    """``(tokens, dim)`` of one frame's latent."""
    state_dim: int
    hidden: int = 512
    dropout: float = 0.1
    state_names: list[str] = field(default_factory=list)


class StateReadout(nn.Module):
    """``latents [..., N, D] -> states [..., S]`` in the state's raw units: the tokens
    flattened, two hidden layers of ``hidden`` (with dropout)."""

    def __init__(self, config: ReadoutConfig) -> None:
        super().__init__()
        self.config = config
        tokens, dim = config.latent_shape
        inputs = tokens * dim
        self.net = nn.Sequential(
            nn.Linear(inputs, config.hidden), nn.GELU(), nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.hidden), nn.GELU(),
            nn.Linear(config.hidden, config.state_dim),
        )
        # Normalisation, fit on the training frames and saved with the weights.
        self.register_buffer("in_mean", torch.zeros(inputs))
        self.register_buffer("in_std", torch.ones(inputs))
        self.register_buffer("out_mean", torch.zeros(config.state_dim))
        self.register_buffer("out_std", torch.ones(config.state_dim))

    def forward(self, latents: Tensor) -> Tensor:
        shape = tuple(self.config.latent_shape)
        if tuple(latents.shape[-2:]) != shape:
            raise ValueError(f"the readout takes latents [..., {shape[0]}, {shape[1]}], "
                             f"got {tuple(latents.shape)}")
        flat = latents.flatten(-2).to(self.in_mean.dtype)
        normalised = self.net((flat - self.in_mean) / self.in_std)
        return normalised * self.out_std + self.out_mean


def fit_readout(
    latents: np.ndarray,
    states: np.ndarray,
    episodes: np.ndarray,
    holdout: int = 10,
    epochs: int = 20,
    batch_size: int = 256,
    lr: float = 1e-3,
    hidden: int = 512,
    state_names: list[str] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> tuple[StateReadout, dict[str, Any]]:
    """Fit a readout (``hidden``: :class:`ReadoutConfig`) on every frame; every
    ``holdout``-th episode is held out and scored.

    ``latents [F, N, D]`` (a latent cache, float16 is fine), ``states [F, S]``,
    ``episodes [F]`` (the episode index of each frame). Returns the readout and its
    held-out error: RMSE per state dimension, in the state's units (``held_out_rmse``).
    """
    if (latents.ndim != 3 or states.ndim != 2
            or not len(latents) == len(states) == len(episodes)):
        raise ValueError(f"latents {latents.shape}, states {states.shape} and episodes "
                         f"{np.shape(episodes)} must be [F, N, D], [F, S] and [F]")
    if holdout < 2:
        raise ValueError(f"holdout={holdout}: every n-th episode is held out, n must be >= 2")
    held_out = np.asarray(episodes) % holdout == 0
    if held_out.all() or not held_out.any():
        raise ValueError(f"holdout={holdout} leaves no training or no held-out frames "
                         f"({len(np.unique(episodes))} episodes)")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    frames = len(latents)
    x = torch.from_numpy(np.asarray(latents, dtype=np.float32).reshape(len(latents), -1))
    y = torch.from_numpy(np.asarray(states, dtype=np.float32))
    train = torch.from_numpy(~held_out)
    config = ReadoutConfig(latent_shape=tuple(latents.shape[1:]), state_dim=y.shape[1],
                           hidden=hidden, state_names=list(state_names or []))
    readout = StateReadout(config)
    readout.in_mean.copy_(x[train].mean(0))
    readout.in_std.copy_(x[train].std(0) + 1e-5)
    readout.out_mean.copy_(y[train].mean(0))
    readout.out_std.copy_(y[train].std(0) + 1e-8)
    x_train = (x[train] - readout.in_mean) / readout.in_std
    y_train = (y[train] - readout.out_mean) / readout.out_std
    steps_per_epoch = max(1, len(x_train) // batch_size)
    optimiser = torch.optim.AdamW(readout.net.parameters(), lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, lr, total_steps=epochs * steps_per_epoch)
    bar = tqdm(total=epochs * steps_per_epoch, desc="fit readout", unit="step", disable=not progress)
    for _ in range(epochs):
        readout.train()
        order = torch.randperm(len(x_train), generator=generator)
        for i in range(steps_per_epoch):
            rows = order[i * batch_size:(i + 1) * batch_size]
            loss = nn.functional.smooth_l1_loss(readout.net(x_train[rows]), y_train[rows], beta=0.1)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            bar.update()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    readout.eval()
    with torch.no_grad():
        predicted = readout(x[~train].view(-1, *latents.shape[1:]))
    error = predicted - y[~train]
    metrics = {
        "frames": frames, "held_out_frames": int((~train).sum()), "holdout": holdout,
        "epochs": epochs, "held_out_rmse": error.square().mean(0).sqrt().tolist(),
        "state_names": list(state_names or []),
    }
    return readout, metrics


def save_readout(checkpoint_dir: str | Path, readout: StateReadout, metrics: dict[str, Any],
                 encoder_reference: dict[str, Any]) -> Path:
    """Write the readout into a checkpoint directory, replacing any earlier one.

    The weights go in first under a temporary name; ``readout.json`` is renamed into
    place last, so an interrupted save leaves the previous readout (or none) intact.
    """
    directory = Path(checkpoint_dir)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    tag = uuid.uuid4().hex
    weights_tmp = directory / f".{READOUT_WEIGHTS}.tmp-{tag}"
    config_tmp = directory / f".{READOUT_CONFIG}.tmp-{tag}"
    config = {
        "format": READOUT_FORMAT,
        "readout": {**asdict(readout.config), "latent_shape": list(readout.config.latent_shape)},
        "encoder": encoder_reference,
        "weights": READOUT_WEIGHTS,
        "metrics": metrics,
    }
    try:
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in readout.state_dict().items()}
        save_file(state, str(weights_tmp))
        config_tmp.write_text(json.dumps(config, indent=2, sort_keys=True))
        # The old config is removed first: weights without a config are ignored by a reader.
        (directory / READOUT_CONFIG).unlink(missing_ok=True)
        os.replace(weights_tmp, directory / READOUT_WEIGHTS)
        os.replace(config_tmp, directory / READOUT_CONFIG)
    finally:
        weights_tmp.unlink(missing_ok=True)
        config_tmp.unlink(missing_ok=True)
    return directory / READOUT_CONFIG


def load_readout(checkpoint_dir: str | Path, encoder_reference: dict[str, Any] | None = None,
                 device: str | torch.device = "cpu") -> StateReadout | None:
    """The checkpoint's readout, or None if it has none; one fit on another encoder's
    latents is refused."""
    directory = Path(checkpoint_dir)
    path = directory / READOUT_CONFIG
    if not path.is_file():
        return None
    config = read_format_json(path, READOUT_FORMAT)
    if encoder_reference is not None:
        diff = encoder_differences(config["encoder"], encoder_reference)
        if diff:
            raise CheckpointError(f"{path} was fit on latents of another encoder: " + "; ".join(diff))
    settings = dict(config["readout"])
    settings["latent_shape"] = tuple(settings["latent_shape"])
    # Readouts written with the network's kind named (always "mlp" here) still load.
    kind = settings.pop("kind", "mlp")
    if kind != "mlp":
        raise CheckpointError(f"{path}: a {kind!r} readout; this version reads only MLP readouts "
                              "(refit it with `jepa-robot fit-readout`)")
    settings.pop("width", None)
    settings.pop("fold", None)
    readout = StateReadout(ReadoutConfig(**settings))
    weights = directory / config.get("weights", READOUT_WEIGHTS)
    try:
        readout.load_state_dict(load_file(str(weights), device="cpu"), strict=True)
    except Exception as error:  # noqa: BLE001 - a missing file or mismatched tensors
        raise CheckpointError(f"{weights} does not fit the readout in {path}: {error}") from error
    # Frozen: planners differentiate through it with respect to the latents only.
    return readout.requires_grad_(False).to(device).eval()


def readout_columns(features: dict[str, dict], state_keys: list[str] | None) -> list[str]:
    """The dataset columns a readout predicts: ``state_keys`` as given (each must be a
    float vector feature), or by default ``observation.state`` plus
    ``observation.environment_state`` when the dataset has it."""
    keys = (list(DEFAULT_STATE_KEYS) + [k for k in OPTIONAL_STATE_KEYS if k in features]
            if state_keys is None else list(state_keys))
    for key in keys:
        if key not in features:
            vectors = sorted(k for k, v in features.items()
                             if v.get("dtype") in ("float32", "float64") and len(v.get("shape", ())) == 1)
            raise ValueError(f"the dataset has no {key!r} column; float vector columns: {vectors}")
        if features[key].get("dtype") not in ("float32", "float64") or len(features[key]["shape"]) != 1:
            raise ValueError(f"{key!r} is {features[key].get('dtype')} {tuple(features[key]['shape'])}; "
                             "a readout predicts float vectors")
    return keys


def column_names(features: dict[str, dict], key: str) -> list[str]:
    """Per-dimension names of a vector feature (``key[i]`` where the dataset has none)."""
    size = int(features[key]["shape"][0])
    names = features[key].get("names")
    if isinstance(names, dict):  # some datasets nest them: {"motors": [...]}
        names = next(iter(names.values()), None)
    if isinstance(names, list) and len(names) == size:
        return [str(name) for name in names]
    return [f"{key}[{i}]" for i in range(size)]


def readout_targets(dataset, state_keys: list[str] | None = None
                    ) -> tuple[list[str], list[str], np.ndarray]:
    """What a readout is fit to in a LeRobot ``dataset``: the columns
    (:func:`readout_columns`), one name per value, and every frame's values ``[F, S]``."""
    from jepa_robot.data.dataset import episode_vectors

    features = dataset.meta.features
    keys = readout_columns(features, state_keys)
    names = [name for key in keys for name in column_names(features, key)]
    return keys, names, np.concatenate([episode_vectors(dataset, key) for key in keys], axis=1)
