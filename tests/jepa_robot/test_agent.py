"""The MPC agent and the world model's verbs."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from jepa_robot.agent import MPCAgent, build_planner, run_episode
from jepa_robot.config import ConfigError
from jepa_robot.config.planning import AgentConfig, PlannerSettings
from jepa_robot.world_model.model import Context, WorldModel
from planners import ActionBounds


def cem(**options) -> PlannerSettings:
    return PlannerSettings(name="cem", options={"horizon": 2, "samples": 16, "elites": 4,
                                                "iterations": 2, **options})


@pytest.fixture(scope="module")
def world_model(tiny_checkpoint):
    return WorldModel.load(tiny_checkpoint)


def frame(value: int = 100) -> np.ndarray:
    return np.full((32, 32, 3), value, np.uint8)


def observation(value: int = 100, state=(0.0, 0.6, 0.2, 0.5)) -> dict:
    return {"images": {"oblique": frame(value)}, "state": np.asarray(state, np.float32)}


def test_world_model_loads_its_encoder_and_maps_actions(world_model):
    assert world_model.cameras == ("oblique",) and world_model.frameskip == 2 and world_model.image_size == 32
    assert world_model.env_action_dim == 4 and world_model.state_dim == 4
    planned = torch.tensor([[0.5, -0.5, 0.25, 1.0]])
    assert world_model.env_actions(planned[0], action_repeat=True).tolist() == [[0.5, -0.5, 0.25, 1.0]] * 2
    both = torch.arange(8.0)
    assert world_model.env_actions(both, action_repeat=False).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    latents = world_model.encode(np.stack([frame(), frame(50)]))
    assert latents.shape == (2, 4, 64)
    # the context holds the step between the frames held for frameskip=2 env steps and
    # normalised by the checkpoint's std of 0.5
    context = world_model.context(latents, np.zeros((2, 4), np.float32), planned, action_repeat=True)
    assert torch.allclose(context.past_actions, torch.tensor([[1.0, -1.0, 0.5, 2.0] * 2]))
    assert context.states.shape == (2, 4)
    with pytest.raises(ValueError, match="2 context frames need 1 past actions"):
        world_model.context(latents, np.zeros((2, 4), np.float32), None, action_repeat=True)
    with pytest.raises(ValueError, match="takes 4-D states"):
        world_model.context(latents[:1], None, None, action_repeat=True)
    with pytest.raises(ValueError, match="trained on"):
        world_model.encode_image(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match=r"sees cameras \['oblique'\]; no frames from \['oblique'\]"):
        world_model.encode_observation({"images": {"wrist": np.zeros((32, 32, 3), np.uint8)}})


def test_agent_replans_every_predictor_step_within_bounds(world_model):
    planner = cem()
    planner.bounds = ActionBounds(low=-0.5, high=0.5)
    agent = MPCAgent.from_settings(world_model, planner, AgentConfig())
    agent.reset([frame(200)])
    actions = np.stack([agent.act(observation(100 + i)) for i in range(7)])
    assert actions.shape == (7, 4) and np.all(np.abs(actions) <= 0.5 + 1e-6)
    # frameskip 2, one predictor step executed per plan: a plan at steps 0, 2, 4, 6
    assert [r.step for r in agent.replans] == [0, 2, 4, 6]
    np.testing.assert_array_equal(actions[0], actions[1])  # action_repeat holds the action
    assert all(r.seconds >= r.plan_seconds > 0 and np.isfinite(r.energy) for r in agent.replans)


def test_execute_steps_and_context_frames(world_model):
    config = AgentConfig(execute_steps=2, context_frames=3)
    agent = MPCAgent.from_settings(world_model, cem(), config)
    seen = []
    original = world_model.rollout

    def spy(context, actions, action_repeat):
        seen.append((context.latents.shape[0], context.past_actions.shape[0]))
        return original(context, actions, action_repeat)

    world_model.rollout = spy
    try:
        agent.reset([frame(200)])
        for i in range(12):
            agent.act(observation(100 + i))
    finally:
        del world_model.rollout
    # plans at env steps 0, 4, 8 (2 predictor steps of 2 env steps each per plan)
    assert [r.step for r in agent.replans] == [0, 4, 8]
    # context grows to 3 frames with the 2 actions between them, never beyond
    assert {shape for shape in seen} == {(1, 0), (3, 2)}


def test_subgoals_follow_the_schedule(world_model):
    agent = MPCAgent.from_settings(world_model, cem(), AgentConfig(subgoal_steps=4))
    agent.reset([frame(10), frame(20), frame(30)])
    indices = []
    for _ in range(12):
        agent.act(observation())
        indices.append(agent.goal_index)
    assert indices == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert [r.goal_index for r in agent.replans] == [0, 0, 1, 1, 2, 2]


def test_subgoals_switch_on_distance(world_model):
    # a threshold no distance can stay under: never switches before the cap
    strict = MPCAgent.from_settings(world_model, cem(), AgentConfig(
        subgoal_switch="distance", subgoal_threshold=0.0, subgoal_steps=1000))
    strict.reset([frame(10), frame(30)])
    for _ in range(6):
        strict.act(observation())
    assert strict.goal_index == 0
    # a threshold every distance is under: moves on at the first predictor step
    loose = MPCAgent.from_settings(world_model, cem(), AgentConfig(
        subgoal_switch="distance", subgoal_threshold=1e9, subgoal_steps=1000))
    loose.reset([frame(10), frame(30)])
    loose.act(observation())
    assert loose.goal_index == 1 and loose.replans[0].goal_index == 1


def test_mismatches_are_refused(world_model):
    with pytest.raises(ValueError, match="needs 4-D"):
        MPCAgent(world_model, build_planner(cem(), action_dim=8), AgentConfig())
    with pytest.raises(ValueError, match="derived from the checkpoint"):
        build_planner(cem(action_dim=4), action_dim=4)
    # a misspelt or bad option is refused when the settings are made, before any model loads
    with pytest.raises(ConfigError, match=r"unknown \['horizn'\] for planner 'cem'"):
        cem(horizn=3)
    with pytest.raises(ConfigError, match="samples=0 must be >= 1"):
        cem(samples=0)
    with pytest.raises(ConfigError, match="planner.name"):
        PlannerSettings(name="rrt")
    agent = MPCAgent.from_settings(world_model, cem(), AgentConfig())
    with pytest.raises(RuntimeError, match="reset"):
        agent.act(observation())
    agent.reset([frame()])
    with pytest.raises(ValueError, match=r"no frames from \['oblique'\] \(given: \['front'\]\)"):
        agent.act({"images": {"front": frame()}, "state": np.zeros(4, np.float32)})
    with pytest.raises(ValueError, match="4-D states"):
        agent.act({"images": {"oblique": frame()}, "state": np.zeros(7, np.float32)})


class PointMass:
    """A 2-D point that moves by its action: enough of an env to close the loop."""

    def __init__(self):
        self.position = np.array([-0.8, 0.6])

    def observation(self):
        return {"images": {"oblique": frame()}, "state": self.position.astype(np.float32)}

    def step(self, action):
        self.position = self.position + 0.1 * np.clip(action, -1, 1)
        return self.observation(), 0.0, False, False, {"success": np.linalg.norm(self.position) < 0.1}


class PositionModel:
    """A world model whose latent is the position itself: the agent's loop, with known dynamics."""

    cameras, tokens_per_view, frameskip, state_dim, env_action_dim = ("oblique",), 1, 1, 2, 2
    device = torch.device("cpu")
    readout = None

    def __init__(self, env):
        self.env = env

    def planned_action_dim(self, action_repeat):
        return 2

    def encode_images(self, images):  # goal frames encode to the origin
        assert all(image[0, 0, 0] == 7 for image in images)
        return torch.zeros(len(images), 1, 2)

    def encode_observation(self, observation):  # an observation to the current position
        return torch.tensor(self.env.position, dtype=torch.float32).reshape(1, 2)

    def context(self, latents, states, past_actions, action_repeat):
        return Context(latents, torch.as_tensor(states), past_actions)

    def env_actions(self, planned, action_repeat):
        return planned.reshape(1, 2).numpy()

    def rollout(self, context, actions, action_repeat):
        return context.latents[-1] + 0.1 * actions.cumsum(1).unsqueeze(2)


def test_closed_loop_reaches_a_goal_with_known_dynamics():
    env = PointMass()
    agent = MPCAgent.from_settings(PositionModel(env), PlannerSettings(
        name="cem", energy_steps="all",
        options={"horizon": 3, "samples": 64, "elites": 8, "iterations": 4}),
        AgentConfig())
    agent.reset([np.full((32, 32, 3), 7, np.uint8)])
    result = run_episode(env, agent, env.observation(), steps=20)
    assert result.success and np.linalg.norm(env.position) < 0.1
    energies = [r.energy for r in agent.replans]
    assert energies[-1] < 0.2 * energies[0]


def test_a_checkpoint_finds_its_encoder_by_a_relative_path(tiny_checkpoint, tiny_encoder_dir, tmp_path):
    """How shipped models travel: <model>/encoder beside <model>/checkpoint, source '../encoder'."""
    import shutil

    from jepa_robot.world_model.checkpoint import package_model

    private = shutil.copytree(tiny_checkpoint, tmp_path / "private-checkpoint")
    private.chmod(0o700)  # as a checkpoint of a run made under a strict umask
    model = package_model(private, tmp_path / "model")
    assert sorted(p.name for p in model.iterdir()) == ["checkpoint", "encoder"]
    umask = os.umask(0)
    os.umask(umask)
    for directory in (model, *model.iterdir()):  # shareable: the usual mode, whatever the source's
        assert directory.stat().st_mode & 0o777 == 0o777 & ~umask
    moved = tmp_path / "elsewhere"
    shutil.move(model, moved)
    world_model = WorldModel.load(moved / "checkpoint")
    assert world_model.encode(frame()[None]).shape == (1, 4, 64)
    # the weights hash still guards it: other weights under that name are refused
    from jepa_robot.world_model.encoders import save_tiny_random_encoder

    shutil.rmtree(moved / "encoder")
    save_tiny_random_encoder(moved / "encoder", seed=1, crop_size=32, hidden_size=64,
                             num_hidden_layers=2, num_attention_heads=2)
    with pytest.raises(ValueError, match="weights_sha256"):
        WorldModel.load(moved / "checkpoint")


def test_an_unknown_builtin_or_missing_checkpoint_is_named(tmp_path):
    from jepa_robot.world_model.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match=str(tmp_path / "none")):
        WorldModel.load(tmp_path / "none")
