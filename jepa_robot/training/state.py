"""The training state a killed ``train`` or ``pretrain-encoder`` run resumes from.

One file, ``<out_dir>/training_state.safetensors``, written atomically at every
checkpoint. Loading it never runs code from it, so a run directory someone else handed
over is safe to resume:

- the tensors (model weights, the optimizer's per-parameter moments, torch's RNG
  states) are safetensors tensors, named ``<section>/<name>`` (``predictor/...``,
  ``optimizer/<parameter index>/exp_avg``, ``rng/torch``);
- everything else (the step, the optimizer's param_groups and non-tensor values, the
  numpy RNG states, the run's config) is one JSON document in the file's metadata under
  ``jepa_robot.training_state``; ``safetensors`` or any JSON tool reads it.

The state is self-contained: a run resumes from it alone, so a run killed between
writing its checkpoint and its training state continues from the state, consistently.

Older versions pickled the state into ``training_state.pt``; such a file is refused,
never unpickled (unpickling runs whatever code the file holds).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from jepa_robot.errors import TrainingStateError
from jepa_robot.files import atomic_file

STATE_FILE = "training_state.safetensors"
LEGACY_STATE_FILE = "training_state.pt"
FORMAT = "jepa_robot.training_state/1"
_METADATA_KEY = "jepa_robot.training_state"
_OPTIMIZER = "optimizer"


@dataclass
class TrainingState:
    """A loaded training state: ``tensors[section][name]`` and the JSON ``info``."""

    path: Path
    step: int
    tensors: dict[str, dict[str, torch.Tensor]]
    info: dict[str, Any]

    def field(self, name: str) -> Any:
        """The JSON field ``name`` of ``info``; a missing one is named with the file."""
        if name not in self.info:
            raise TrainingStateError(f"{self.path}: the field {name!r} is missing")
        return self.info[name]

    def section(self, name: str) -> dict[str, torch.Tensor]:
        """The tensors saved under ``name`` (e.g. a model's state_dict)."""
        if name not in self.tensors:
            raise TrainingStateError(f"{self.path} has no {name!r} tensors; it was written by another command")
        return self.tensors[name]

    def load_module(self, module: torch.nn.Module, section: str) -> None:
        """Load ``section`` into ``module`` (strict: every weight, no other)."""
        try:
            module.load_state_dict(self.section(section), strict=True)
        except RuntimeError as error:
            first = str(error).strip().splitlines()[0]
            raise TrainingStateError(f"{self.path}: the {section!r} weights do not fit this model: {first}") from error

    def load_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Restore the optimizer's moments, step counts and param_groups."""
        state: dict[int, dict[str, Any]] = {}
        for key, tensor in self.tensors.get(_OPTIMIZER, {}).items():
            index, name = key.split("/", 1)
            state.setdefault(int(index), {})[name] = tensor
        saved = self.info.get(_OPTIMIZER, {})
        for index, values in saved.get("scalars", {}).items():
            state.setdefault(int(index), {}).update(values)
        current = optimizer.state_dict()["param_groups"]
        groups = saved.get("param_groups")
        if not isinstance(groups, list) or len(groups) != len(current):
            raise TrainingStateError(f"{self.path}: the optimizer state has other parameter groups than this run")
        # JSON has no tuples: give back the tuple values (AdamW's betas) their type
        groups = [
            {key: tuple(value) if isinstance(now.get(key), tuple) else value for key, value in group.items()}
            for group, now in zip(groups, current, strict=True)
        ]
        try:
            optimizer.load_state_dict({"state": state, "param_groups": groups})
        except (ValueError, KeyError) as error:
            raise TrainingStateError(f"{self.path}: the optimizer state does not fit this model: {error}") from error


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state_dict split into tensors (``<index>/<name>``) and JSON
    (``param_groups``; ``scalars``, the non-tensor per-parameter values)."""
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state_dict["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}/{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def torch_rng_tensors(device: torch.device) -> dict[str, torch.Tensor]:
    """torch's CPU RNG state (and the CUDA device's), as uint8 tensors."""
    tensors = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        tensors["cuda"] = torch.cuda.get_rng_state(device)
    return tensors


def restore_torch_rng(state: TrainingState, device: torch.device) -> None:
    """Set torch's RNG states to those saved by :func:`torch_rng_tensors`."""
    rng = state.section("rng")
    torch.set_rng_state(rng["torch"])
    if device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"], device)


def save_training_state(
    path: str | Path,
    step: int,
    tensors: dict[str, dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    info: dict[str, Any],
) -> Path:
    """Write the state atomically: ``tensors`` by section, ``optimizer``'s state, and
    ``info`` (JSON-serialisable: numbers, strings, lists, dicts) beside the ``step``."""
    path = Path(path)
    moments, optimizer_info = optimizer_tensors(optimizer)
    flat: dict[str, torch.Tensor] = {}
    for section, named in {**tensors, _OPTIMIZER: moments}.items():
        for name, tensor in named.items():
            flat[f"{section}/{name}"] = tensor.detach().cpu().contiguous()
    document = {"format": FORMAT, "step": int(step), **info, _OPTIMIZER: optimizer_info}
    with atomic_file(path) as tmp:
        save_file(flat, str(tmp), metadata={_METADATA_KEY: json.dumps(document)})
    return path


def load_training_state(path: str | Path) -> TrainingState:
    """Read a state written by :func:`save_training_state` (no pickle involved)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors: dict[str, dict[str, torch.Tensor]] = {}
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                section, _, name = key.partition("/")
                tensors.setdefault(section, {})[name] = handle.get_tensor(key)
    except (SafetensorError, OSError) as error:
        raise TrainingStateError(f"{path} is not a readable training state: {error}") from error
    try:
        info = json.loads(metadata[_METADATA_KEY])
    except (KeyError, json.JSONDecodeError) as error:
        raise TrainingStateError(f"{path} has no readable {_METADATA_KEY!r} metadata: {error}") from error
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        found = info.get("format") if isinstance(info, dict) else None
        raise TrainingStateError(f"{path}: format {found!r}, expected {FORMAT!r}")
    if not isinstance(info.get("step"), int):
        raise TrainingStateError(f"{path}: the field 'step' is missing or not an integer")
    return TrainingState(path, info["step"], tensors, info)


def refuse_legacy_state(out_dir: Path) -> None:
    """Refuse a run directory holding an old pickled ``training_state.pt``."""
    legacy = out_dir / LEGACY_STATE_FILE
    if legacy.exists():
        raise TrainingStateError(
            f"{legacy} is a training state in the old pickle format, which is not loaded (unpickling a file runs "
            f"any code it holds); to train here from scratch, move it away, or choose another out_dir"
        )


__all__ = [
    "LEGACY_STATE_FILE",
    "STATE_FILE",
    "TrainingState",
    "load_training_state",
    "refuse_legacy_state",
    "restore_torch_rng",
    "save_training_state",
    "torch_rng_tensors",
]
