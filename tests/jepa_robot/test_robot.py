"""``jepa-robot run-robot``: the MPC agent over the rosbridge protocol, against the sim bridge."""

from __future__ import annotations

import pytest

from envs.metaworld.env import MetaWorldGoalEnv
from envs.ros.sim_bridge import SimBridge
from jepa_robot.cli import main
from jepa_robot.config import configs_dir, to_schema

SMALL_PLANNER = ["planner.options.samples=16", "planner.options.elites=4",
                 "planner.options.iterations=2", "planner.options.horizon=2"]


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    from omegaconf import OmegaConf

    from envs.ros.arm import RosArmConfig

    robot = to_schema(OmegaConf.merge(OmegaConf.load(configs_dir() / "robot" / "sim.yaml"),
                                      {"port": 0, "host": "127.0.0.1", "image_size": 32}), RosArmConfig)
    bridge = SimBridge(MetaWorldGoalEnv("reach", image_size=32), robot, port=0, goal_root=tmp_path_factory.mktemp("goals"))
    bridge.start()
    yield bridge
    bridge.stop()


def run_robot(bridge, checkpoint, tmp_path, *extra):
    return main(["run-robot", f"checkpoint={checkpoint}", f"robot.port={bridge.port}",
                 "robot.host=127.0.0.1", "robot.image_size=32", "robot.handle_signals=false",
                 "seed=100000", "steps=6", f"goal_dir={tmp_path.name}", *SMALL_PLANNER, *extra])


@pytest.mark.timeout(90)
def test_the_agent_drives_the_sim_arm_over_the_bridge(bridge, tiny_checkpoint, tmp_path, capsys):
    before = len(bridge.commands_on(bridge.robot.command_topic))
    assert run_robot(bridge, tiny_checkpoint, tmp_path) == 0
    out = capsys.readouterr().out
    assert "6 steps" in out and "replans" in out
    # the goal image came from the bridge's reset service (in its goal root), and commands reached the arm
    assert list((bridge.goal_root / tmp_path.name).glob("*.png"))
    assert len(bridge.commands_on(bridge.robot.command_topic)) - before >= 6


@pytest.mark.timeout(120)
def test_the_hierarchical_agent_drives_the_sim_arm_too(bridge, two_level_checkpoints, tmp_path, capsys):
    low, high = two_level_checkpoints
    before = len(bridge.commands_on(bridge.robot.command_topic))
    assert run_robot(bridge, low.checkpoint, tmp_path, "agent=hierarchical",
                     f"agent.hierarchy.checkpoint={high.checkpoint}",
                     "agent.hierarchy.planner.options.samples=16", "agent.hierarchy.planner.options.elites=4",
                     "agent.hierarchy.planner.options.iterations=1") == 0
    assert "6 steps" in capsys.readouterr().out
    assert len(bridge.commands_on(bridge.robot.command_topic)) - before >= 6


@pytest.mark.timeout(90)
def test_a_dry_run_sends_no_command(bridge, tiny_checkpoint, tmp_path, capsys):
    # a dry run calls no service either, so the goal comes from a file
    import numpy as np
    from PIL import Image

    goal = tmp_path / "goal.png"
    Image.fromarray(np.full((32, 32, 3), 120, np.uint8)).save(goal)
    before = bridge.commands_on(bridge.robot.command_topic)
    assert run_robot(bridge, tiny_checkpoint, tmp_path, "dry_run=true", f"goal=[{goal}]") == 0
    assert "dry run" in capsys.readouterr().out
    after = bridge.commands_on(bridge.robot.command_topic)
    # only zero twists (stops) may reach the arm in a dry run
    new = after[len(before):]
    assert all(not any(c.msg["twist"]["linear"][a] for a in "xyz") for c in new)


def test_a_model_robot_mismatch_is_refused_before_connecting(tiny_checkpoint, tmp_path, capsys):
    # franka_servo has 7-D DROID actions; the tiny model was trained on 4-D Meta-World ones
    code = main(["run-robot", f"checkpoint={tiny_checkpoint}", "robot=franka_servo", "robot.port=1",
                 f"goal=[{tmp_path / 'g.png'}]"])
    assert code == 2
    assert "4-D" in capsys.readouterr().err


def test_reset_service_goals_are_the_models_camera_in_agent_order(tmp_path):
    """The sim bridge writes a file per camera, sub-goals first; run-robot keeps the
    world model's camera's (and any file that names no camera), in that order."""
    from pathlib import Path

    import numpy as np

    from envs.metaworld.goals import GoalImages
    from envs.ros.sim_bridge import _write_goal_images
    from jepa_robot.robot import camera_goal_files

    image = np.zeros((8, 8, 3), np.uint8)
    views = {"oblique": image, "workspace": image}
    goal = GoalImages(seed=7, goal=views, goal_state=np.zeros(4, np.float32), subgoals=[views, views],
                      subgoal_phases=["grasp", "lift"])
    files = _write_goal_images(tmp_path, goal) + [str(tmp_path / "mine.png")]
    kept = [{c: Path(p).name for c, p in views.items()}
            for views in camera_goal_files(files, ["workspace"], ["oblique", "workspace"])]
    assert kept == [{"workspace": "subgoal_7_0_grasp_workspace.png"}, {"workspace": "subgoal_7_1_lift_workspace.png"},
                    {"workspace": "goal_7_workspace.png"}, {"workspace": "mine.png"}]
    # a model over both cameras: one goal per stem with both views; a file naming no camera is no goal
    both = camera_goal_files(files, ["oblique", "workspace"], ["oblique", "workspace"])
    assert [{c: Path(p).name for c, p in views.items()} for views in both][-1] == {
        "oblique": "goal_7_oblique.png", "workspace": "goal_7_workspace.png"}
    assert len(both) == 3
    with pytest.raises(ValueError, match="lack a view"):
        camera_goal_files(files[:-2], ["oblique", "workspace"], ["oblique", "workspace"])
