"""The planner registry, configs, and the package's import boundary."""

from __future__ import annotations

import ast
import dataclasses
import sys
from pathlib import Path

import pytest
import torch

import planners
from planners import PLANNERS, ActionBounds, L1Energy, Planner, make_planner, planner_class

PACKAGE_DIR = Path(planners.__file__).parent
ALLOWED_IMPORTS = {"torch", "numpy", "planners"} | set(sys.stdlib_module_names)


@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_every_registered_planner_builds_and_plans(name):
    bounds = ActionBounds.box(3)
    config_fields = {field.name for field in dataclasses.fields(planner_class(name).config_class)}
    elites = {"elites": 4} if "elites" in config_fields else {}
    planner = make_planner(
        name,
        horizon=2,
        action_dim=3,
        samples=16,
        iterations=2,
        bounds=bounds,
        energy=L1Energy(),
        **elites,
    )
    assert isinstance(planner, Planner)
    assert isinstance(planner, planner_class(name))
    assert (planner.config.horizon, planner.config.samples) == (2, 16)
    assert planner.bounds is bounds

    result = planner.plan(lambda actions: actions.cumsum(1), torch.ones(3))
    assert result.actions.shape == (1, 2, 3)
    assert result.iterations == 2


def test_registry_names_the_four_planners():
    assert sorted(PLANNERS) == ["cem", "gradient", "icem", "mppi"]


def test_the_torch_free_config_registry_agrees_with_the_planners():
    """Configs are checked without torch through ``planner_config_class``; it must give
    each planner's own ``config_class``."""
    from planners import planner_config_class

    for name in PLANNERS:
        assert planner_config_class(name) is planner_class(name).config_class, name


def test_unknown_planner_lists_the_valid_names():
    with pytest.raises(ValueError) as error:
        make_planner("random-shooting")
    for name in PLANNERS:
        assert name in str(error.value)


def test_misspelt_or_bad_config_fails_loudly():
    with pytest.raises(TypeError, match="sampels"):
        make_planner("cem", sampels=100)
    with pytest.raises(ValueError, match="elites"):
        make_planner("cem", samples=10, elites=20)
    with pytest.raises(ValueError, match="warm_start_fill"):
        make_planner("mppi", warm_start_fill="zeros")
    with pytest.raises(ValueError, match="bounds have 2 dims"):
        make_planner("icem", action_dim=4, bounds=ActionBounds.box(2))


def test_default_configs_follow_the_anchors():
    assert make_planner("mppi").config.samples == 512  # TD-MPC2
    assert make_planner("mppi").config.elites == 64
    assert make_planner("cem").config.samples == 300  # DINO-WM / LeWorldModel


def test_planners_import_only_torch_numpy_and_the_standard_library():
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                assert module.split(".")[0] in ALLOWED_IMPORTS, f"{path.name} imports {module}"
