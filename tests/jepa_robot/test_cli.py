import pytest
from lerobot.datasets.lerobot_dataset import LeRobotDataset

from jepa_robot.cli import main
from jepa_robot.config import ConfigError, compose, configs_dir
from jepa_robot.config.data import CollectConfig


def test_every_command_has_a_config_file():
    from jepa_robot.cli import COMMANDS

    for name in COMMANDS:
        assert (configs_dir() / f"{name}.yaml").is_file()


def test_collect_config_composes_with_group_overrides():
    config = compose("collect", ["env=metaworld_pick_place", "episodes=50"], CollectConfig)
    assert config.env.task == "pick-place" and config.episodes == 50
    assert config.root == "data/metaworld-pick-place"
    assert config.exploration.to_exploration().noise_std == 0.1
    config = compose("collect", ["exploration.perturb_steps=[2,4]"], CollectConfig)
    assert config.exploration.to_exploration().perturb_steps == (2, 4)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["episodez=3"], "episodez"),
        (["env=metaworld_stack"], "metaworld_stack"),
        (["env.image_size=8"], "image_size"),
        (["episodes=many"], "episodes"),
        (["episodes=10", "seed_start=99995"], "reserved for evaluation"),
        (["exploration.perturb_prob=3"], "perturb_prob"),
        (["exploration.perturb_steps=[5]"], "perturb_steps"),
        (["env.cameras=[corner9]"], "cameras"),
        (["video_codec=mjpeg"], "video_codec"),
    ],
)
def test_bad_config_values_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        compose("collect", overrides, CollectConfig)


def test_collect_and_inspect_end_to_end(tmp_path, capsys):
    root = tmp_path / "pick"
    code = main([
        "collect", "env=metaworld_pick_place", "episodes=2", f"root={root}", "env.step_budget=15",
        "env.image_size=32", "preview_episodes=1", "progress=false",
    ])
    assert code == 0
    assert "recorded 2 episodes" in capsys.readouterr().out
    assert LeRobotDataset("x/y", root=root, video_backend="pyav").meta.total_episodes == 2
    preview = tmp_path / "pick-preview.mp4"
    assert preview.is_file() and preview.stat().st_size > 1000

    assert main(["inspect", f"dataset={root}"]) == 0
    out = capsys.readouterr().out
    assert "observation.images.oblique 32x32x3" in out and "2 (30 frames" in out


def test_cli_errors_exit_2_with_a_message(capsys, tmp_path):
    assert main(["fly"]) == 2
    assert "unknown command 'fly'" in capsys.readouterr().err
    assert main(["collect", "episodes=0"]) == 2
    assert "episodes=0 must be >= 1" in capsys.readouterr().err
    assert main(["inspect", f"dataset={tmp_path}/none"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_help_and_cfg_print_without_running(capsys, tmp_path):
    assert main(["--help"]) == 0
    assert "collect" in capsys.readouterr().out
    assert main(["collect", f"root={tmp_path}/x", "--cfg"]) == 0
    assert "noise_std: 0.1" in capsys.readouterr().out
    assert not (tmp_path / "x").exists()
