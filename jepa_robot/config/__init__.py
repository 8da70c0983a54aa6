"""Typed configs for the ``jepa-robot`` commands, and Hydra composition.

YAML files in ``configs/`` give the defaults and the config groups (``env=...``);
the dataclasses are the schema they are merged into, so a misspelt key or a value of
the wrong type fails loudly, and ``__post_init__`` checks ranges. One module per part
of the project, with the commands that part runs:

- ``config.data``: ``collect``, ``inspect``, ``merge`` (the env, exploration noise);
- ``config.training``: ``train``, ``pretrain-encoder``, ``fit-readout``,
  ``import-vjepa2-ac`` (the encoder, optimiser, masks, augmentation);
- ``config.planning``: ``eval``, ``demo``, ``plan`` (planner, agent);
- ``config.robot``: ``sim-bridge``, ``record-ros``, ``run-robot`` (the ``robot`` group's
  schema is ``envs.ros.config.RosArmConfig``).

Schemas that belong to a component live with it and are used here as they are:
``planners.ActionBounds`` (``planner.bounds``), the planners' own config classes
(``planner.options``, checked when the config is composed),
``jepa_robot.world_model.architecture.PredictorArchitecture`` (``train``'s ``predictor``).

Composing and checking a config imports none of torch, lerobot, Gymnasium or MuJoCo, so
``--cfg`` and a bad override answer in about a second; the modules these schemas come
from are plain Python for that reason.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from jepa_robot.errors import JepaRobotError


class ConfigError(JepaRobotError, ValueError):
    """A bad config value or override."""


def configs_dir() -> Path:
    """The Hydra config directory: inside the package when installed from a wheel,
    else ``configs/`` at the top of the source tree."""
    here = Path(__file__).resolve().parents[1]  # the jepa_robot package
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
            if "planning_source" in getattr(schema, "__dataclass_fields__", {}):
                # it plans with a checkpoint: the checkpoint's planner and agent settings
                from jepa_robot.config.planning import compose_planning

                composed = compose_planning(config_name, list(overrides))
            else:
                composed = hydra_compose(config_name=config_name, overrides=list(overrides))
    except HydraException as error:
        raise ConfigError(f"bad override in {overrides}: {error}") from error
    return to_schema(composed, schema)


def to_schema[T](config: DictConfig | dict[str, Any], schema: type[T]) -> T:
    """Merge ``config`` into ``schema`` and build the dataclass (its ``__post_init__``
    checks run). A value the config leaves ``???`` (required) is refused even where the
    schema has a default, which the merge would otherwise keep silently (``encoder=local``
    without ``encoder.name`` must not load the default encoder)."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), config)
        _refuse_required_left_unset(config, merged)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as error:
        raise ConfigError(str(error).splitlines()[0] + _full_key(error)) from error


def _refuse_required_left_unset(config: DictConfig | dict[str, Any], merged: DictConfig) -> None:
    """Raise for a key that ``config`` marks ``???`` but ``merged`` holds a value for."""
    source = config if isinstance(config, DictConfig) else OmegaConf.create(config)
    for key in sorted(OmegaConf.missing_keys(source)):
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(merged, parent) if parent else merged
        if isinstance(node, DictConfig) and leaf in node and not OmegaConf.is_missing(node, leaf):
            raise ConfigError(f"{key} must be given (e.g. {key}=...): the chosen config leaves it ??? (required)")


def check_finite(prefix: str, **values: float) -> None:
    """Refuse a NaN or infinite float config value, naming its key (``prefix`` + name):
    a range check such as ``value < 0`` lets NaN through."""
    for name, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{prefix}{name}={value} must be a finite number")


def check_camera(name: str, move: list[float], spread: bool = False) -> None:
    """``envs.metaworld.tasks.check_camera_move`` with its complaint as a ``ConfigError``."""
    from envs.metaworld.tasks import check_camera_move

    try:
        check_camera_move(name, move, spread)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _full_key(error: OmegaConfBaseException) -> str:
    key = getattr(error, "full_key", None)
    return f" (key: {key})" if key else ""
