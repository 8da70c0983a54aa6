"""The numbered scripts in examples/ run as smoke tests on a tiny budget.

Their names start with digits, so each is loaded from its file with importlib and its
``main(...)`` called with small keyword arguments.
"""

from __future__ import annotations

import importlib.util
import math
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str):
    """The module ``examples/<name>.py`` (a fresh copy each call)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_is_numbered_and_tested():
    scripts = sorted(path.stem for path in EXAMPLES.glob("*.py"))
    assert scripts == ["01_planners_on_toy_dynamics", "02_record_and_train",
                       "03_plan_with_default_model", "04_ros_loopback"]
    for name in scripts:
        source = (EXAMPLES / f"{name}.py").read_text()
        assert f"examples/{name}.py" in source  # the docstring's run line names the file
        assert 'if __name__ == "__main__":' in source


def test_every_planner_solves_the_toy_problem():
    errors = load("01_planners_on_toy_dynamics").main()
    assert set(errors) == {"cem", "icem", "mppi", "gradient"}
    assert all(error < 0.02 for error in errors.values()), errors


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_record_and_train_writes_a_loadable_world_model(tmp_path):
    from jepa_robot.data.dataset import open_dataset
    from jepa_robot.world_model.model import WorldModel

    result = load("02_record_and_train").main(
        tmp_path / "data", tmp_path / "run", episodes=2, step_budget=20, steps=5, batch_size=8)
    dataset, spec = open_dataset(str(tmp_path / "data"))
    assert dataset.meta.total_episodes == 2 and spec.image_shape == (64, 64, 3)
    assert result["steps"] == 5 and math.isfinite(result["final_train_loss"])
    # 20 frames per episode: one 4-frame window (frameskip 5) each; 3 validated rollout steps
    assert len(result["val_loss_per_step"]) == 3
    assert all(math.isfinite(v) for v in result["val_loss_per_step"] + result["val_baseline_per_step"])

    world_model = WorldModel.load(result["checkpoint"])
    assert world_model.cameras == ("oblique",) and world_model.image_size == 64
    assert world_model.frameskip == 5 and world_model.env_action_dim == 4
    latents = world_model.encode(np.zeros((1, 64, 64, 3), np.uint8))
    assert tuple(latents.shape) == (1, 16, 192)  # the shipped encoder, pooled to 4 x 4
    assert (tmp_path / "run" / "metrics.csv").is_file()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_default_model_plans_a_closed_loop_episode():
    result = load("03_plan_with_default_model").main(task="reach", seed=100_000, steps=10)
    assert result["steps"] == 10
    assert result["replans"] == 2  # one replan per predictor step (frameskip 5)
    assert len(result["energies"]) == 2 and all(math.isfinite(e) and e >= 0 for e in result["energies"])
    assert 0 < result["mean_plan_seconds"] < 30
    assert isinstance(result["success"], bool)
    assert 0 <= result["final_goal_distance_m"] < 1.0


@pytest.mark.timeout(60)
def test_ros_loopback_moves_the_arm_within_the_safety_box():
    wall = 0.03
    result = load("04_ros_loopback").main(steps=10, wall_m=wall)
    # observations arrived, in the simulator env's layout
    assert result["image_shape"] == (64, 64, 3)
    start, final, path = result["start_state"], result["final_state"], result["hand_path"]
    assert start.shape == (4,) and np.all(np.isfinite(path)) and len(path) == 11
    # the arm moved toward +x, slowed by the workspace box, and never crossed its wall
    assert final[0] - start[0] > 0.003, path[:, 0]
    assert path[:, 0].max() <= wall + 0.002, path[:, 0]
    assert "workspace_x" in result["clipped"]
    # every step sent one motion, none faster than the filter's speed limit
    assert result["motions_received"] == 10
    assert 0 < result["max_commanded_speed"] <= result["max_linear_speed"] + 1e-9
    # everything was closed: nothing listens on the port, no bridge or watchdog thread runs
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", result["port"])) != 0
    names = {thread.name for thread in threading.enumerate()}
    assert not names & {"sim-bridge", "ros-arm-watchdog"}, names
