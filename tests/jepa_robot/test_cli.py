import json
import shutil
import subprocess
import sys

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
        (["exploration.noise_std=nan"], "exploration.noise_std=nan must be a finite number"),
        (["exploration.noise_std=inf"], "exploration.noise_std=inf must be a finite number"),
        (["env.camera_jitter=[4,2]"], r"env.camera_jitter=\[4.0, 2.0\] must be \[azimuth_deg"),
        (["env.camera_jitter=[4,-2,0]"], "must be >= 0"),
        (["env.camera_jitter=[4,2,1]"], "the distance must be finite and within"),
        (["env.cameras=[oblique,gripperPOV]"], r"must name cameras from \['oblique'.*'wrist', 'behind_gripper'\]"),
    ],
)
def test_bad_config_values_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        compose("collect", overrides, CollectConfig)


def test_a_camera_move_is_checked_and_reaches_the_env_and_the_report():
    from jepa_robot.config.planning import EvalConfig, PlanConfig
    from jepa_robot.data.collect import make_env
    from jepa_robot.evaluation import protocol_summary

    config = compose("collect", ["env.camera_jitter=[4,2,0.03]", "env.cameras=[oblique,wrist]"], CollectConfig)
    env = make_env(config.env)
    assert env.camera_jitter == (4.0, 2.0, 0.03) and env.cameras == ("oblique", "wrist")
    env.close()
    config = compose("eval", ["checkpoint=default", "camera_offset=[4,2,0]"], EvalConfig)
    assert protocol_summary(config)["camera_offset"] == [4.0, 2.0, 0.0]
    assert "camera_offset" not in protocol_summary(compose("eval", ["checkpoint=default"], EvalConfig))
    for name, schema in (("eval", EvalConfig), ("plan", PlanConfig), ("demo", EvalConfig)):
        with pytest.raises(ConfigError, match="camera_offset=.* the elevation must be finite and within"):
            compose(name, ["checkpoint=default", "camera_offset=[0,25,0]"], schema)


def test_collect_and_inspect_end_to_end(tmp_path, capsys):
    root = tmp_path / "pick"
    collect = ["collect", "env=metaworld_pick_place", f"root={root}", "repo_id=me/pick", "env.step_budget=15",
               "env.image_size=32", "preview_episodes=1", "progress=false"]
    assert main([*collect, "episodes=2"]) == 0
    assert "recorded 2 episodes" in capsys.readouterr().out
    preview = root / "preview.mp4"  # inside the dataset root, which lerobot and a resume ignore
    assert preview.is_file() and preview.stat().st_size > 1000
    assert LeRobotDataset("x/y", root=root, video_backend="pyav").meta.total_episodes == 2
    assert main([*collect, "episodes=3", "preview_episodes=0"]) == 0  # resumes beside the preview
    assert "recorded 1 episodes" in capsys.readouterr().out and preview.is_file()

    assert main(["inspect", f"dataset={root}"]) == 0
    out = capsys.readouterr().out
    assert f"dataset   me/pick at {root}" in out  # the repo id it was recorded with
    assert "observation.images.oblique 32x32x3" in out and "3 (45 frames" in out


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


@pytest.mark.parametrize(
    "overrides, message",
    [
        # before: the composed encoder was silently the default ViT-L from the hub
        (["dataset=d", "encoder=local"], r"encoder.name must be given \(e.g. encoder.name=...\)"),
        (["dataset=d", "optim.lr=nan"], "optim.lr=nan must be a finite number"),
        (["dataset=d", "encoder.resize_ratio=nan"], "encoder.resize_ratio=nan must be a finite number"),
    ],
)
def test_bad_train_config_values_are_refused_at_compose_time(overrides, message):
    from jepa_robot.config.training import TrainConfig

    with pytest.raises(ConfigError, match=message):
        compose("train", overrides, TrainConfig)


def one_line_error(capsys, command):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"jepa-robot {command}: error: ")
    return err


def test_an_encoder_directory_without_its_files_is_a_one_line_error(small_dataset, tmp_path, capsys):
    """Before: EncoderUnavailableError escaped the command as a traceback."""
    (tmp_path / "emptied-encoder").mkdir()
    code = main(["train", f"dataset={small_dataset[0]}", "encoder=local", f"encoder.name={tmp_path / 'emptied-encoder'}",
                 f"out_dir={tmp_path / 'run'}", f"cache_dir={tmp_path / 'cache'}", "progress=false"])
    assert code == 2
    assert "emptied-encoder has no config.json" in one_line_error(capsys, "train")
    assert main(["train", f"dataset={small_dataset[0]}", "encoder=local"]) == 2
    assert "encoder.name must be given" in one_line_error(capsys, "train")


def test_an_uncached_hub_encoder_offline_fails_at_once_naming_the_shipped_one(tmp_path, capsys, monkeypatch):
    """Before: five hub retries, then a 96-line traceback, after opening the dataset."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # read at import: patched
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # the dataset does not exist: the encoder is checked before it is opened
    assert main(["train", f"dataset={tmp_path / 'none'}", "encoder=vjepa2_vitl", f"out_dir={tmp_path / 'run'}"]) == 2
    err = one_line_error(capsys, "train")
    assert "'facebook/vjepa2-vitl-fpc64-256' (revision main) are not in the Hugging Face cache" in err
    assert "huggingface-cli download" in err and "encoder=default_model" in err
    assert not (tmp_path / "run").exists()


def test_a_checkpoint_config_missing_a_field_is_a_one_line_error(tiny_checkpoint, tmp_path, capsys):
    """Before: KeyError: 'frameskip', with a traceback."""
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(tiny_checkpoint, checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    del config["data"]["frameskip"]
    (checkpoint / "config.json").write_text(json.dumps(config))
    assert main(["eval", f"checkpoint={checkpoint}", "episodes=1", f"out_dir={tmp_path / 'eval'}", "progress=false"]) == 2
    err = one_line_error(capsys, "eval")
    assert f"{checkpoint / 'config.json'}: the field 'data.frameskip' is missing" in err
    assert not (tmp_path / "eval").exists()


def test_a_bug_keeps_its_traceback_and_exit_code_1(tmp_path):
    """Only the project's user-facing errors become one-line messages (exit 2)."""
    script = (
        "import sys\n"
        "from jepa_robot import cli\n"
        "def broken(config):\n"
        "    raise KeyError('a bug')\n"
        "cli.COMMANDS['inspect'] = cli.Command('inspect', cli.COMMANDS['inspect'].schema, broken)\n"
        "sys.exit(cli.main(['inspect', 'dataset=d']))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "KeyError: 'a bug'" in result.stderr


def test_run_robot_says_what_happened_to_the_arm(monkeypatch, capsys):
    """Before: a lost connection was reported as "arm commanded to zero", though no command
    could be sent over it."""
    from envs.ros.safety import RobotConnectionError, RobotSafetyStop
    from jepa_robot import robot

    def lost(config):
        raise RobotConnectionError("rosbridge connection lost")

    monkeypatch.setattr(robot, "run_robot", lost)
    assert main(["run-robot", "checkpoint=x"]) == 1
    err = capsys.readouterr().err
    assert "commanded to zero" not in err and "rosbridge connection lost" in err
    assert "no command, not even a stop, could be sent" in err and "command timeout" in err

    def stopped(config):
        raise RobotSafetyStop("watchdog: sensor data too old")

    monkeypatch.setattr(robot, "run_robot", stopped)
    assert main(["run-robot", "checkpoint=x"]) == 1
    assert "stopped (a zero command was sent to the arm): watchdog" in capsys.readouterr().err
