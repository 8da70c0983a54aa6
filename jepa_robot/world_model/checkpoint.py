"""World-model checkpoints: a self-describing directory that loads with one call.

```
<checkpoint>/
  config.json        predictor config, data layout (keys, frameskip), encoder reference,
                     training settings and step: all that is needed to rebuild it
  model.safetensors  predictor weights
  stats.json         action and state normalisation (mean, std per dimension)
  readout.json       optional: a state readout for planner.energy=readout, with
  readout.safetensors  its weights (jepa_robot.world_model.readout; `jepa-robot fit-readout`)
  planning.json      optional: the planner and agent settings the model was tuned with,
                     which every command that plans with it uses unless told otherwise
                     (`jepa-robot set-planning`; schemas in jepa_robot.config.planning)
```

A *high-level* checkpoint (``jepa-robot train macro_steps=K``;
``jepa_robot.world_model.macro``) has the same files; its ``config.json`` adds
``macro_actions`` (the macro-action encoder's shape, whose weights sit in
``model.safetensors`` beside the predictor's) and its ``stats.json`` adds
``macro_action``, the range of the training data's macro-actions.

Written to a temporary sibling directory and renamed into place, so a reader never
sees a half-written checkpoint, and a crash while saving leaves the previous one.
Loading against an encoder whose reference differs is refused.

Importing this module loads no torch (it is imported when a config is composed, to
find a checkpoint's planning file); loading and saving weights import it when called.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jepa_robot.errors import JepaRobotError
from jepa_robot.files import atomic_directory, write_json_atomic

if TYPE_CHECKING:
    import torch

    from jepa_robot.world_model.macro import HighLevelPredictor
    from jepa_robot.world_model.predictor import ACPredictor

FORMAT = "jepa_robot.checkpoint/1"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
STATS = "stats.json"
PLANNING = "planning.json"
READOUT_CONFIG = "readout.json"
"""A state readout's settings (``jepa_robot.world_model.readout``, ``jepa-robot fit-readout``)."""
READOUT_WEIGHTS = "readout.safetensors"
MACRO = "macro_actions"
"""The ``config.json`` section that makes a checkpoint a high-level one."""
PLANNING_FORMAT = "jepa_robot.planning/1"
PLANNING_SECTIONS = ("planner", "agent")
"""The sections of ``planning.json``: ``PlannerSettings`` and ``AgentConfig`` as dicts."""

BUILTIN_CHECKPOINTS: dict[str, Path] = {
    "default": Path(__file__).parents[1] / "models" / "default" / "checkpoint",
    "default_high_level": Path(__file__).parents[1] / "models" / "default" / "high_level",
}
"""World models shipped inside the package, loadable by name (``checkpoint=default``)."""

REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "predictor": ("latent_dim", "num_tokens", "action_dim", "state_dim"),
    "encoder": ("source",),
    "data": ("image_keys", "image_shape", "frameskip"),
}
"""The fields of ``config.json`` every reader of a checkpoint relies on, by section.
``data.image_keys`` lists the camera views in token order; a checkpoint written before
views has a single ``data.image_key``, read as ``image_keys=[image_key]``."""


class CheckpointError(JepaRobotError, ValueError):
    """A missing, incomplete or mismatched checkpoint."""


@dataclass
class Checkpoint:
    """What a checkpoint holds, loaded."""

    directory: Path
    predictor: ACPredictor | HighLevelPredictor
    config: dict[str, Any]
    stats: dict[str, dict[str, list[float]]]

    @property
    def encoder_reference(self) -> dict[str, Any]:
        return self.config["encoder"]

    @property
    def frameskip(self) -> int:
        return int(self.config["data"]["frameskip"])

    @property
    def is_high_level(self) -> bool:
        return MACRO in self.config


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """A built-in checkpoint name or a checkpoint directory -> the directory."""
    if str(name_or_path) in BUILTIN_CHECKPOINTS:
        path = BUILTIN_CHECKPOINTS[str(name_or_path)]
        if not path.is_dir():
            raise CheckpointError(
                f"the built-in checkpoint {name_or_path!r} is not in this installation (expected at "
                f"{path}); examples/build_default_model.sh builds and packages it"
            )
        return path
    return Path(name_or_path)


def save_checkpoint(
    directory: str | Path,
    predictor: ACPredictor | HighLevelPredictor,
    encoder_reference: dict[str, Any],
    data: dict[str, Any],
    stats: dict[str, dict[str, list[float]]],
    training: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory atomically (replacing an existing one).

    What later commands added to the checkpoint being replaced is kept: its planning
    settings (``planning.json``, ``jepa-robot set-planning``) and its state readout
    (``jepa-robot fit-readout``), the readout only if it was fit on the same encoder (it
    reads the encoder's latents, whatever the predictor)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    config = {
        "format": FORMAT,
        "predictor": predictor.config.to_dict(),
        "encoder": encoder_reference,
        "data": data,
        "training": training or {},
    }
    macro = getattr(predictor, "macro_config", None)
    if macro is not None:
        config[MACRO] = macro.to_dict()
    from safetensors.torch import save_file

    with atomic_directory(directory) as tmp:
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in predictor.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS))
        (tmp / STATS).write_text(json.dumps(stats, indent=2))
        for name in _added_later(directory, encoder_reference):
            shutil.copy2(directory / name, tmp / name)
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))  # last: marks complete
    return directory


def _added_later(directory: Path, encoder_reference: dict[str, Any]) -> list[str]:
    """The files of the checkpoint at ``directory`` that ``save_checkpoint`` keeps."""
    kept = [PLANNING] if (directory / PLANNING).is_file() else []
    try:
        readout = json.loads((directory / READOUT_CONFIG).read_text())
        same_encoder = not encoder_differences(readout["encoder"], encoder_reference)
    except (OSError, ValueError, KeyError, TypeError):
        same_encoder = False
    if same_encoder and (directory / READOUT_WEIGHTS).is_file():
        kept += [READOUT_CONFIG, READOUT_WEIGHTS]
    return kept


def encoder_differences(saved: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """What differs between two encoder references. A local encoder is identified by
    its weights hash, not its path, so a checkout in another directory still matches."""
    ignore = {"source"} if saved.get("weights_sha256") and actual.get("weights_sha256") else set()
    return [
        f"{key}: checkpoint {saved.get(key)!r} vs encoder {actual.get(key)!r}"
        for key in sorted((set(saved) | set(actual)) - ignore)
        if saved.get(key) != actual.get(key)
    ]


def read_checkpoint_config(directory: str | Path) -> dict[str, Any]:
    """A checkpoint's ``config.json``, checked for the fields loading relies on
    (``REQUIRED_FIELDS``): a missing one is a ``CheckpointError`` naming file and field."""
    directory = Path(directory)
    path = directory / CONFIG
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a checkpoint: {CONFIG} is missing")
    config = read_format_json(path, FORMAT)
    data = config.get("data")
    if isinstance(data, dict) and "image_keys" not in data and isinstance(data.get("image_key"), str):
        data["image_keys"] = [data.pop("image_key")]  # one camera, saved before views
    for section, names in REQUIRED_FIELDS.items():
        if not isinstance(config.get(section), dict):
            raise CheckpointError(f"{path}: the field {section!r} is missing or not an object")
        for name in names:
            if name not in config[section]:
                raise CheckpointError(f"{path}: the field '{section}.{name}' is missing")
    keys = config["data"]["image_keys"]
    if not (isinstance(keys, list) and keys and all(isinstance(k, str) for k in keys)):
        raise CheckpointError(f"{path}: data.image_keys must be a non-empty list of camera keys, got {keys!r}")
    views = config["predictor"].get("views", 1)
    if views != len(keys):
        raise CheckpointError(f"{path}: the predictor reads {views} view(s), data.image_keys names {len(keys)}")
    return config


def read_format_json(path: Path, expected_format: str) -> dict[str, Any]:
    """A JSON file whose ``format`` field must be ``expected_format``."""
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} is not a JSON object")
    if config.get("format") != expected_format:
        raise CheckpointError(f"{path}: format {config.get('format')!r}, expected {expected_format!r}")
    return config


def load_checkpoint(
    directory: str | Path,
    encoder_reference: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> Checkpoint:
    """Load a checkpoint; with ``encoder_reference``, refuse one made for another encoder."""
    from safetensors.torch import load_file

    from jepa_robot.world_model.macro import HighLevelPredictor, MacroConfig
    from jepa_robot.world_model.predictor import ACPredictor, PredictorConfig

    directory = Path(directory)
    config = read_checkpoint_config(directory)
    if encoder_reference is not None:
        diff = encoder_differences(config["encoder"], encoder_reference)
        if diff:
            raise CheckpointError(
                f"checkpoint {directory} was trained on latents of another encoder: " + "; ".join(diff)
            )
    for name in (WEIGHTS, STATS):
        if not (directory / name).is_file():
            raise CheckpointError(f"checkpoint {directory} is incomplete: {name} is missing")
    try:
        predictor_config = PredictorConfig.from_dict(config["predictor"])
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{directory / CONFIG}: the field 'predictor' is not a predictor config: {error}") from error
    if MACRO in config:
        try:
            predictor = HighLevelPredictor(predictor_config, MacroConfig.from_dict(config[MACRO]))
        except (ValueError, TypeError) as error:
            raise CheckpointError(f"{directory / CONFIG}: the field {MACRO!r} does not fit: {error}") from error
    else:
        predictor = ACPredictor(predictor_config)
    try:
        state = load_file(str(directory / WEIGHTS), device="cpu")
        predictor.load_state_dict(state, strict=True)
    except Exception as error:  # noqa: BLE001 - safetensors / torch raise several kinds
        raise CheckpointError(f"{directory / WEIGHTS} does not fit the predictor in {CONFIG}: {error}") from error
    try:
        stats = json.loads((directory / STATS).read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{directory / STATS} is not valid JSON: {error}") from error
    return Checkpoint(directory, predictor.to(device).eval(), config, stats)


def read_planning(directory: str | Path) -> dict[str, dict[str, Any]] | None:
    """The ``planner`` and ``agent`` sections of a checkpoint's ``planning.json``, or None
    when it has none. Checked here as JSON (format, both sections objects, nothing else);
    their fields are checked against the schemas by ``jepa_robot.config.planning``."""
    path = Path(directory) / PLANNING
    if not path.is_file():
        return None
    content = read_format_json(path, PLANNING_FORMAT)
    unknown = sorted(set(content) - {"format", *PLANNING_SECTIONS})
    if unknown:
        raise CheckpointError(f"{path}: unknown fields {unknown}; valid: {['format', *PLANNING_SECTIONS]}")
    for section in PLANNING_SECTIONS:
        if not isinstance(content.get(section), dict):
            raise CheckpointError(f"{path}: the field {section!r} is missing or not an object")
    return {section: content[section] for section in PLANNING_SECTIONS}


def write_planning(directory: str | Path, planner: dict[str, Any], agent: dict[str, Any]) -> Path:
    """Write a checkpoint's ``planning.json`` atomically (replacing one already there)."""
    directory = Path(directory)
    read_checkpoint_config(directory)  # only into a checkpoint
    path = directory / PLANNING
    write_json_atomic(path, {"format": PLANNING_FORMAT, "planner": planner, "agent": agent})
    return path


def package_model(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Copy a checkpoint and the local encoder it names into one relocatable directory.

    ``out_dir/encoder`` holds the encoder's ``config.json`` and weights;
    ``out_dir/checkpoint`` the checkpoint, its encoder source rewritten to
    ``../encoder`` (resolved against the checkpoint when loaded; the weights hash
    still has to match). This is how the built-in ``default`` model is shipped.
    Written to a temporary sibling and renamed, replacing ``out_dir``.
    """
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    config = read_checkpoint_config(checkpoint)
    reference = config["encoder"]
    source = Path(reference.get("source", ""))
    if not reference.get("weights_sha256") or not source.is_dir():
        raise CheckpointError(
            f"{checkpoint}: only a checkpoint on a local encoder directory can be packaged "
            f"(its encoder is {reference.get('source')!r})"
        )
    with atomic_directory(out_dir) as tmp:
        (tmp / "encoder").mkdir()
        for name in ("config.json", "model.safetensors"):
            if not (source / name).is_file():
                raise CheckpointError(f"encoder directory {source} has no {name}")
            shutil.copy2(source / name, tmp / "encoder" / name)
        (tmp / "checkpoint").mkdir()  # not copytree: it would copy a private source's mode
        for path in checkpoint.iterdir():
            if path.is_file():
                shutil.copy2(path, tmp / "checkpoint" / path.name)
        config["encoder"] = {**reference, "source": "../encoder"}
        (tmp / "checkpoint" / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))
    return out_dir


def package_high_level(checkpoint: str | Path, model_dir: str | Path) -> Path:
    """Copy a high-level checkpoint into a packaged model directory (``package_model``'s
    output) as ``model_dir/high_level``, its encoder source rewritten to ``../encoder``.
    Refused unless it was trained on that directory's encoder. Written to a temporary
    sibling and renamed, replacing an earlier ``high_level``."""
    checkpoint, model_dir = Path(checkpoint), Path(model_dir)
    config = read_checkpoint_config(checkpoint)
    if MACRO not in config:
        raise CheckpointError(f"{checkpoint} is not a high-level checkpoint (no {MACRO!r} in {CONFIG})")
    packaged = read_checkpoint_config(model_dir / "checkpoint")["encoder"]
    difference = encoder_differences(config["encoder"], packaged)
    if difference:
        raise CheckpointError(f"{checkpoint} was trained on another encoder than {model_dir}'s: " + "; ".join(difference))
    with atomic_directory(model_dir / "high_level") as tmp:
        for path in checkpoint.iterdir():
            if path.is_file():
                shutil.copy2(path, tmp / path.name)
        config["encoder"] = {**config["encoder"], "source": "../encoder"}
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))
    return model_dir / "high_level"
