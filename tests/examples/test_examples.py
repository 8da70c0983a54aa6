"""The scripts in examples/ run as smoke tests on a tiny budget."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_planner_solves_the_toy_problem():
    errors = load("planners_on_toy_dynamics").main()
    assert set(errors) == {"cem", "icem", "mppi", "gradient"}
    assert all(error < 0.02 for error in errors.values()), errors
