"""State readout (jepa_robot.world_model.readout) and the readout energy (planners.energy)."""
import json

import numpy as np
import pytest
import torch

from jepa_robot.config import ConfigError
from jepa_robot.config.planning import PlannerSettings
from jepa_robot.world_model.checkpoint import CheckpointError
from jepa_robot.world_model.readout import (
    READOUT_CONFIG,
    ReadoutConfig,
    StateReadout,
    fit_readout,
    load_readout,
    save_readout,
)
from planners import make_energy


def _linear_data(frames=2000, tokens=4, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    latents = rng.normal(size=(frames, tokens, dim)).astype(np.float16)
    mixing = rng.normal(size=(tokens * dim, 3)).astype(np.float32)
    states = latents.reshape(frames, -1).astype(np.float32) @ mixing * 0.01
    episodes = np.repeat(np.arange(frames // 20), 20)
    return latents, states, episodes


def test_fit_readout_recovers_a_linear_state_on_held_out_episodes():
    latents, states, episodes = _linear_data()
    readout, metrics = fit_readout(latents, states, episodes, epochs=15, hidden=64, progress=False)
    spread = states.std(0)
    rmse = np.asarray(metrics["held_out_rmse"])
    assert metrics["held_out_frames"] == int((episodes % 10 == 0).sum())
    assert (rmse < 0.5 * spread).all(), (rmse, spread)  # predicting the mean scores 1.0
    with torch.no_grad():
        out = readout(torch.from_numpy(latents[:5].astype(np.float32)))
    assert out.shape == (5, 3)


def test_readout_saves_loads_and_refuses_another_encoder(tmp_path):
    latents, states, episodes = _linear_data(frames=400)
    readout, metrics = fit_readout(latents, states, episodes, epochs=1, hidden=16, progress=False)
    reference = {"source": "enc", "weights_sha256": "abc"}
    save_readout(tmp_path, readout, metrics, reference)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left
    loaded = load_readout(tmp_path, {"source": "elsewhere", "weights_sha256": "abc"})
    x = torch.from_numpy(latents[:3].astype(np.float32))
    with torch.no_grad():
        assert torch.allclose(loaded(x), readout(x))
    with pytest.raises(CheckpointError, match="another encoder"):
        load_readout(tmp_path, {"source": "enc", "weights_sha256": "def"})
    with pytest.raises(ValueError, match="takes latents"):
        loaded(torch.zeros(2, 5, 8))
    assert load_readout(tmp_path / "missing") is None
    (tmp_path / READOUT_CONFIG).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_readout(tmp_path)


def test_readout_energy_is_a_weighted_distance_in_readout_space():
    readout = lambda latents: latents.flatten(-2)[..., :2]  # noqa: E731 - the first two elements
    energy = make_energy("readout", steps="all", readout=readout, weights=(1.0, 2.0))
    predicted = torch.zeros(2, 3, 1, 4)
    predicted[1, :, 0, :2] = torch.tensor([3.0, 2.0])
    goal = torch.zeros(1, 4)
    goal[0, 3] = 100.0  # outside the readout: ignored
    values = energy(predicted, goal)
    assert values[0] == 0
    assert values[1] == pytest.approx(3 * 5.0)  # sqrt(3^2 + (2*2)^2) per step, 3 steps
    with pytest.raises(ValueError, match="readout weights"):
        make_energy("readout", readout=readout, weights=(1.0,))(predicted, goal)
    with pytest.raises(ValueError, match="needs a readout"):
        make_energy("readout")


def test_planner_settings_check_readout_weights():
    assert PlannerSettings(energy="readout", energy_weights=[1, 1, 1, 0.1]).energy == "readout"
    with pytest.raises(ConfigError, match="only apply"):
        PlannerSettings(energy="l1", energy_weights=[1.0])
    with pytest.raises(ConfigError, match=">= 0"):
        PlannerSettings(energy="readout", energy_weights=[-1.0])


def test_build_planner_without_a_readout_says_how_to_fit_one():
    from jepa_robot.agent import build_planner

    with pytest.raises(ValueError, match="fit-readout|readout.json"):
        build_planner(PlannerSettings(energy="readout", options={"horizon": 1}), 4, readout=None)


def test_fit_readout_command_writes_into_a_copy_and_leaves_the_source(tmp_path, capsys,
                                                                     small_dataset, tiny_checkpoint):
    from jepa_robot.cli import main
    from jepa_robot.world_model.model import WorldModel

    root, _, _ = small_dataset
    out = tmp_path / "with-readout"
    args = ["fit-readout", f"checkpoint={tiny_checkpoint}", f"dataset={root}", "holdout=2",
            "epochs=2", "hidden=16", f"cache_dir={tmp_path}/latents", "progress=false"]
    assert main([*args, f"out_dir={out}"]) == 0
    printed = capsys.readouterr().out
    assert "held-out RMSE" in printed and "object_x" in printed and str(out) in printed
    assert not (tiny_checkpoint / READOUT_CONFIG).exists()  # the source is left as it was
    assert WorldModel.load(tiny_checkpoint).readout is None
    readout = WorldModel.load(out).readout
    # observation.state (4) and, recorded in simulation, the object's xyz (3).
    assert readout.config.state_names == ["hand_x", "hand_y", "hand_z", "gripper",
                                          "object_x", "object_y", "object_z"]
    with torch.no_grad():
        assert readout(torch.zeros(2, 4, 64)).shape == (2, 7)  # 2x2 pooled tokens of 64 dims

    # An existing out_dir is refused and left alone; so is a column the dataset lacks.
    before = sorted(p.name for p in out.iterdir())
    assert main([*args, f"out_dir={out}"]) == 2
    assert "exists" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == before
    assert main([*args, f"out_dir={tmp_path}/other", "state_keys=[observation.velocity]"]) == 2
    assert "no 'observation.velocity' column" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


def test_fit_readout_command_in_place_replaces_the_readout(tmp_path, small_dataset, tiny_checkpoint):
    import shutil

    from jepa_robot.cli import main
    from jepa_robot.world_model.model import WorldModel

    root, _, _ = small_dataset
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(tiny_checkpoint, checkpoint)
    args = ["fit-readout", f"checkpoint={checkpoint}", f"dataset={root}", "holdout=2", "epochs=1",
            "hidden=16", f"cache_dir={tmp_path}/latents", "progress=false"]
    assert main([*args, "state_keys=[observation.state]"]) == 0
    assert WorldModel.load(checkpoint).readout.config.state_dim == 4
    (checkpoint / READOUT_CONFIG).write_text("{broken")  # a damaged readout is refit, not fatal
    assert main(args) == 0  # a second fit replaces the first (and reuses the latent cache)
    assert WorldModel.load(checkpoint).readout.config.state_dim == 7
    assert len(list((tmp_path / "latents").iterdir())) == 1
    assert main([*args, "hidden=0"]) == 2  # a bad value: refused, the readout kept
    assert WorldModel.load(checkpoint).readout.config.state_dim == 7
    assert not [p for p in checkpoint.iterdir() if p.name.startswith(".")]


def test_task_energy_weights_replace_the_shared_ones_for_their_task():
    settings = PlannerSettings(energy="readout", energy_weights=[1, 1, 1, 0.5],
                               task_energy_weights={"reach": [1, 1, 1, 0]})
    assert settings.for_task("reach").energy_weights == [1, 1, 1, 0]
    assert settings.for_task("push") is settings
    with pytest.raises(ConfigError, match="unknown tasks"):
        PlannerSettings(energy="readout", task_energy_weights={"stack": [1.0]})
    with pytest.raises(ConfigError, match="only apply"):
        PlannerSettings(energy="l1", task_energy_weights={"reach": [1.0]})
    with pytest.raises(ConfigError, match="task_energy_weights.reach"):
        PlannerSettings(energy="readout", task_energy_weights={"reach": [1.0, -1.0]})


def test_build_planner_refuses_weights_that_do_not_fit_the_readout():
    from jepa_robot.agent import build_planner
    from jepa_robot.world_model.readout import ReadoutConfig, StateReadout

    readout = StateReadout(ReadoutConfig(latent_shape=(4, 8), state_dim=3, hidden=8,
                                         state_names=["x", "y", "z"]))
    settings = PlannerSettings(energy="readout", energy_weights=[1, 1, 1, 0], options={"horizon": 1})
    with pytest.raises(ValueError, match=r"4 weights.*predicts 3 values \['x', 'y', 'z'\]"):
        build_planner(settings, 4, readout=readout)
    settings.energy_weights = [1, 1, 0]
    assert build_planner(settings, 4, readout=readout).energy.weights == (1, 1, 0)


def test_readouts_written_with_their_kind_named_load_and_other_kinds_are_refused(tmp_path):
    readout = StateReadout(ReadoutConfig(latent_shape=(4, 8), state_dim=3))
    save_readout(tmp_path, readout, {}, {"kind": "vjepa2"})
    path = tmp_path / READOUT_CONFIG
    config = json.loads(path.read_text())
    config["readout"].update(kind="mlp", width=128, fold=1)  # as older versions wrote them
    path.write_text(json.dumps(config))
    assert load_readout(tmp_path).config.latent_shape == (4, 8)
    config["readout"]["kind"] = "token_grid"
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="'token_grid' readout"):
        load_readout(tmp_path)
