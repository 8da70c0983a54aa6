"""Two-level world models: `jepa-robot train macro_steps=K` trains the high level on the
same data, cache and encoder as the low level, and the hierarchical agent plans with both
in eval, plan and run-robot (toy dynamics: tests/planners/test_hierarchy_toy.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from jepa_robot.agent import HierarchicalAgent, MPCAgent, make_agent, run_episode
from jepa_robot.cli import main
from jepa_robot.config import ConfigError
from jepa_robot.config.planning import AgentConfig, EvalConfig, HierarchySettings, PlannerSettings
from jepa_robot.world_model.checkpoint import CheckpointError, load_checkpoint
from jepa_robot.world_model.macro import HighLevelPredictor
from jepa_robot.world_model.model import HighLevelModel, WorldModel

SMALL = {"samples": 16, "elites": 4, "iterations": 2, "horizon": 2}


@pytest.fixture(scope="module")
def two_levels(two_level_checkpoints):
    return two_level_checkpoints


def hierarchical_config(high_checkpoint, **agent) -> AgentConfig:
    planner = PlannerSettings(name="cem", options=dict(SMALL))
    return AgentConfig(hierarchy=HierarchySettings(checkpoint=str(high_checkpoint), planner=planner), **agent)


def test_the_high_level_trains_from_the_same_data_and_saves_its_macro_actions(two_levels, tiny_encoder_dir):
    low, high = two_levels
    checkpoint = load_checkpoint(high.checkpoint)
    assert isinstance(checkpoint.predictor, HighLevelPredictor) and checkpoint.is_high_level
    macro = checkpoint.config["macro_actions"]
    assert macro == {"steps": 2, "input_dim": 16, "dim": 3, "hidden": 256}  # 2 steps x frameskip 2 x 4-D actions
    assert checkpoint.predictor.config.action_dim == 3
    assert checkpoint.config["data"]["frameskip"] == 2  # the low level's: one step spans 2 x 2 env steps
    spread = checkpoint.stats["macro_action"]
    assert len(spread["low"]) == len(spread["high"]) == 3
    assert all(-1 <= lo < hi <= 1 for lo, hi in zip(spread["low"], spread["high"], strict=True))
    assert len(checkpoint.stats["action"]["mean"]) == 16
    assert len(high.val_loss_per_step) == 2  # window 3: two high-level steps predicted
    assert high.final_train_loss < 10 and all(np.isfinite(high.val_loss_per_step))
    # the same latents: the run reused the low level's cache (one cache file, one encoder)
    assert load_checkpoint(low.checkpoint).encoder_reference == checkpoint.encoder_reference


def test_each_level_is_refused_where_the_other_belongs(two_levels, tiny_checkpoint):
    low, high = two_levels
    with pytest.raises(CheckpointError, match="high-level checkpoint .*agent.hierarchy.checkpoint"):
        WorldModel.load(high.checkpoint)
    world_model = WorldModel.load(low.checkpoint)
    with pytest.raises(CheckpointError, match="not a high-level checkpoint"):
        HighLevelModel.load(low.checkpoint, world_model)
    # the tiny checkpoint pools its encoder's tokens 2x2: another latent space
    with pytest.raises(CheckpointError, match="another encoder"):
        HighLevelModel.load(high.checkpoint, WorldModel.load(tiny_checkpoint))


def test_the_high_level_rolls_out_macro_actions_in_the_low_level_latent_space(two_levels):
    low, high = two_levels
    world_model = WorldModel.load(low.checkpoint)
    high_level = HighLevelModel.load(high.checkpoint, world_model)
    assert high_level.macro_steps == 2 and high_level.env_steps == 4 and high_level.macro_dim == 3
    bounds = high_level.macro_bounds
    assert list(bounds.low) == high_level.macro_low and list(bounds.high) == high_level.macro_high
    latent = world_model.encode(np.zeros((1, 32, 32, 3), np.uint8))[0]
    predicted = high_level.rollout(latent, np.array([0.0, 0.6, 0.2, 1.0]), torch.zeros(5, 3, 3))
    assert predicted.shape == (5, 3, *latent.shape)
    with pytest.raises(ValueError, match="4-D states; none"):
        high_level.rollout(latent, None, torch.zeros(5, 3, 3))
    with pytest.raises(ValueError, match="4-D states, got"):
        high_level.rollout(latent, np.zeros(3), torch.zeros(5, 3, 3))
    # env actions -> macro-actions as in training: 4 env actions (2 predictor steps x frameskip 2)
    macro = high_level.macro_actions(np.zeros((2, 4, 4), np.float32))
    assert macro.shape == (2, 3) and bool((macro.abs() <= 1).all())
    with pytest.raises(ValueError, match="spans 4 env actions"):
        high_level.macro_actions(np.zeros((2, 5, 4), np.float32))


def test_the_hierarchical_agent_plans_subgoals_on_schedule(two_levels):
    from envs.metaworld.env import MetaWorldGoalEnv

    low, high = two_levels
    world_model = WorldModel.load(low.checkpoint)
    planner = PlannerSettings(name="cem", options=dict(SMALL))
    flat = make_agent(world_model, planner, AgentConfig())
    assert type(flat) is MPCAgent
    agent = make_agent(world_model, planner, hierarchical_config(high.checkpoint, subgoal_steps=4,
                                                                 subgoal_threshold=0.0))
    assert isinstance(agent, HierarchicalAgent)
    env = MetaWorldGoalEnv("reach", image_size=32, step_budget=12)
    try:
        observation, _ = env.reset(seed=3)
        goal = np.full((32, 32, 3), 120, np.uint8)  # far from every frame the arm shows
        with pytest.raises(ValueError, match="one goal image"):
            agent.reset([goal, goal])
        agent.reset([goal])
        result = run_episode(env, agent, observation, steps=12)
    finally:
        env.close()
    # a new sub-goal every 4 env steps (2 predictor steps), each followed by a low-level replan
    assert [plan.step for plan in agent.high_plans] == [0, 4, 8]
    assert [replan.step for replan in result.replans] == [0, 2, 4, 6, 8, 10]
    with_high = [replan for replan in result.replans if replan.high_level_seconds > 0]
    assert [replan.step for replan in with_high] == [0, 4, 8]
    assert all(r.seconds >= r.high_level_seconds + r.plan_seconds for r in with_high)
    assert all(np.isfinite(plan.energy) for plan in agent.high_plans)
    assert agent.num_goals == 1 and agent.goal_index == 0


def test_within_reach_of_the_final_goal_the_agent_aims_at_it_without_a_high_level_plan(two_levels):
    from envs.metaworld.env import MetaWorldGoalEnv

    low, high = two_levels
    world_model = WorldModel.load(low.checkpoint)
    agent = make_agent(world_model, PlannerSettings(name="cem", options=dict(SMALL)),
                       hierarchical_config(high.checkpoint, subgoal_steps=4, subgoal_threshold=0.3))
    env = MetaWorldGoalEnv("reach", image_size=32, step_budget=6)
    try:
        observation, _ = env.reset(seed=3)
        agent.reset([observation["images"]["oblique"]])  # the goal is where it starts: distance 0
        result = run_episode(env, agent, observation, steps=6)
    finally:
        env.close()
    assert agent.high_plans == [] and len(result.replans) == 3
    assert all(replan.high_level_seconds == 0 for replan in result.replans)


def test_sub_goal_images_and_the_hierarchy_do_not_mix(two_levels):
    _, high = two_levels
    with pytest.raises(ConfigError, match="plans its own sub-goals"):
        EvalConfig(checkpoint="x", agent=hierarchical_config(high.checkpoint), subgoals=True)
    with pytest.raises(ConfigError, match="bounds"):
        HierarchySettings(checkpoint="x", planner=PlannerSettings(bounds={"low": -0.5, "high": 0.5}))


def test_eval_with_agent_hierarchical(two_levels, tmp_path, capsys):
    low, high = two_levels
    out = tmp_path / "eval"
    code = main(["eval", f"checkpoint={low.checkpoint}", "agent=hierarchical",
                 f"agent.hierarchy.checkpoint={high.checkpoint}", "agent.hierarchy.planner.options.samples=16",
                 "agent.hierarchy.planner.options.elites=4", "agent.hierarchy.planner.options.iterations=1",
                 "tasks=[reach]", "episodes=1", "references=[]", "videos=0", f"out_dir={out}",
                 "progress=false", "planner.options.samples=16", "planner.options.elites=4",
                 "planner.options.iterations=1", "planner.options.horizon=2"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    episode = report["tasks"]["reach"]["episodes"][0]
    assert episode["high_level_plans"] >= 1 and len(episode["high_level_seconds"]) == episode["high_level_plans"]
    assert report["config"]["agent"]["hierarchy"]["checkpoint"] == str(high.checkpoint)


def test_a_high_level_is_packaged_beside_its_model_and_loads_from_there(two_levels, tiny_checkpoint, tmp_path):
    from jepa_robot.world_model.checkpoint import package_high_level, package_model

    low, high = two_levels
    model = package_model(low.checkpoint, tmp_path / "model")
    high_level = package_high_level(high.checkpoint, model)
    assert high_level == model / "high_level"
    assert json.loads((high_level / "config.json").read_text())["encoder"]["source"] == "../encoder"
    world_model = WorldModel.load(model / "checkpoint")
    assert HighLevelModel.load(high_level, world_model).macro_dim == 3
    # another model's encoder: refused, and nothing written there
    other = package_model(tiny_checkpoint, tmp_path / "other")
    with pytest.raises(CheckpointError, match="another encoder"):
        package_high_level(high.checkpoint, other)
    assert not (other / "high_level").exists()
    with pytest.raises(CheckpointError, match="not a high-level checkpoint"):
        package_high_level(low.checkpoint, model)


def test_plan_with_agent_hierarchical_says_how_many_high_level_plans(two_levels, tmp_path, capsys):
    low, high = two_levels
    code = main(["plan", f"checkpoint={low.checkpoint}", "agent=hierarchical",
                 f"agent.hierarchy.checkpoint={high.checkpoint}", "agent.subgoal_switch=schedule",
                 "agent.hierarchy.planner.options.samples=16", "agent.hierarchy.planner.options.elites=4",
                 "agent.hierarchy.planner.options.iterations=1", "task=reach", "steps=20",
                 f"video={tmp_path / 'reach.mp4'}", "planner.options.samples=16", "planner.options.elites=4",
                 "planner.options.iterations=1", "planner.options.horizon=2"])
    assert code == 0, capsys.readouterr().err
    # 20 env steps, a sub-goal every 20 (the config's subgoal_steps): one high-level plan
    assert "(10 replans, 1 of them after a high-level plan" in capsys.readouterr().out
    assert (tmp_path / "reach.mp4").stat().st_size > 0


def test_the_energy_plot_marks_each_new_sub_goal_of_the_high_level():
    from jepa_robot.agent import Replan
    from jepa_robot.evaluation import energy_plot

    def replans(high_level_steps):
        return [Replan(step=s, seconds=0.3, plan_seconds=0.2, energy=1.0, iterations=3, goal_index=0,
                       goal_distance=0.5, high_level_seconds=0.1 if s in high_level_steps else 0.0)
                for s in range(0, 100, 5)]

    def purple_pixels(image):  # matplotlib's tab:purple, (148, 103, 189)
        return int((np.abs(image.astype(int) - [148, 103, 189]).sum(-1) < 60).sum())

    flat, _, _ = energy_plot(replans(set()), 100, 200, 320)
    marked, _, _ = energy_plot(replans({0, 20, 40}), 100, 200, 320)
    assert purple_pixels(flat) == 0 and purple_pixels(marked) > 50  # steps 20 and 40 (not the start)


def test_a_checkpoint_keeps_hierarchical_settings_and_a_bad_one_names_its_key(two_levels, tmp_path, capsys):
    import shutil

    from jepa_robot.config.planning import checkpoint_planning

    low, high = two_levels
    checkpoint = tmp_path / "low"
    shutil.copytree(low.checkpoint, checkpoint)
    assert main(["set-planning", f"checkpoint={checkpoint}", "agent=hierarchical",
                 f"agent.hierarchy.checkpoint={high.checkpoint}", "agent.hierarchy.planner.options.samples=32"]) == 0
    _, settings = checkpoint_planning(checkpoint)
    agent = settings["agent"]
    assert agent.hierarchical and agent.hierarchy.checkpoint == str(high.checkpoint)
    assert agent.hierarchy.planner.options["samples"] == 32 and agent.hierarchy.planner.energy_steps == "all"
    capsys.readouterr()
    code = main(["eval", f"checkpoint={checkpoint}", "agent.hierarchy.planner.energy=bogus", "--cfg"])
    assert code == 2 and "agent.hierarchy.planner.energy='bogus'" in capsys.readouterr().err
