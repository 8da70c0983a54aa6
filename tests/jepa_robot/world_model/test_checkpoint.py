"""File-writing helpers of jepa_robot.world_model.checkpoint and the device choice of jepa_robot.world_model.encoders."""

from __future__ import annotations

import json

import pytest
import torch

from jepa_robot.files import atomic_file, portable_path, write_json_atomic
from jepa_robot.world_model.encoders import resolve_device


def test_an_atomic_write_replaces_the_file_whole_or_not_at_all(tmp_path):
    path = tmp_path / "report.json"
    write_json_atomic(path, {"b": 1, "a": 2})
    assert json.loads(path.read_text()) == {"b": 1, "a": 2}
    with pytest.raises(RuntimeError, match="disk full"), atomic_file(path) as tmp:
        tmp.write_text("{half")
        raise RuntimeError("disk full")
    assert json.loads(path.read_text()) == {"b": 1, "a": 2}  # the old file stands
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary left


def test_two_writers_never_share_a_temporary_name(tmp_path):
    path = tmp_path / "state.json"
    with atomic_file(path) as first, atomic_file(path) as second:
        assert first != second
        first.write_text("1")
        second.write_text("2")
    assert path.read_text() == "1"  # the last rename wins; neither write is torn


def test_portable_paths_are_relative_inside_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    assert portable_path(tmp_path / "data") == "data"
    outside = tmp_path.parent.resolve()
    assert portable_path(outside) == str(outside)


def test_device_choice():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == resolve_device("auto")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


# --------------------------------------------------------------------------- run-directory lock
HOLD_LOCK = """
import sys, time
from jepa_robot.files import run_lock
with run_lock(sys.argv[1], "holder-test"):
    print("locked", flush=True)
    time.sleep(600)
"""


def _hold_lock_in_a_process(directory):
    """A real process holding ``directory``'s lock (stopped by the caller)."""
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(directory)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    return process


def test_a_locked_run_directory_is_refused_naming_the_holder_and_taken_over_once_it_is_killed(tmp_path):
    """Before: two runs into one out_dir both went ahead. Now the second is refused, naming
    the first; a holder killed with SIGKILL leaves its name in the lock file, and the next
    run takes the lock over."""
    import os
    import signal
    import socket

    from jepa_robot.errors import JepaRobotError, RunLockedError
    from jepa_robot.files import LOCK_FILE, run_lock

    holder = _hold_lock_in_a_process(tmp_path / "run")
    try:
        with pytest.raises(RunLockedError) as refused, run_lock(tmp_path / "run", "second"):
            pass
        message = str(refused.value)
        assert f"pid {holder.pid} on host {socket.gethostname()}" in message and "holder-test" in message
        assert "started 20" in message and "another out_dir" in message
        assert isinstance(refused.value, JepaRobotError)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert json.loads((tmp_path / "run" / LOCK_FILE).read_text())["pid"] == holder.pid  # stale: never released
    with run_lock(tmp_path / "run", "third"):
        assert json.loads((tmp_path / "run" / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert (tmp_path / "run" / LOCK_FILE).read_text() == ""  # released: names no holder
    with run_lock(tmp_path / "run", "fourth"):  # and free again
        pass


def test_what_a_killed_atomic_replace_left_is_put_back_or_removed(tmp_path):
    from jepa_robot.files import recover_directory, remove_temporaries

    checkpoint = tmp_path / "checkpoint"
    # killed between setting the old checkpoint aside and renaming the new one into place
    (tmp_path / ".checkpoint.old-123").mkdir()
    (tmp_path / ".checkpoint.old-123" / "config.json").write_text("{}")
    (tmp_path / ".checkpoint.tmp-0123abcd").mkdir()
    (tmp_path / ".metrics.csv.tmp-beef").write_text("half")
    (tmp_path / "metrics.csv").write_text("kept")
    recover_directory(checkpoint)
    assert (checkpoint / "config.json").read_text() == "{}"
    removed = remove_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".checkpoint.tmp-0123abcd", ".metrics.csv.tmp-beef"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "metrics.csv"]


# --------------------------------------------------------------------------- checkpoint config
@pytest.mark.parametrize("section, field", [("data", "frameskip"), ("encoder", "source"), ("predictor", "action_dim")])
def test_a_checkpoint_config_missing_a_field_names_the_file_and_the_field(tiny_checkpoint, tmp_path, section, field):
    """Before: a KeyError ('frameskip') from deep inside loading."""
    import shutil

    from jepa_robot.world_model.checkpoint import CheckpointError, load_checkpoint

    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(tiny_checkpoint, checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    del config[section][field]
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=rf"checkpoint/config.json: the field '{section}.{field}' is missing"):
        load_checkpoint(checkpoint)


def test_a_rewritten_checkpoint_keeps_its_planning_and_a_readout_of_the_same_encoder(tmp_path):
    """Training saves its checkpoint again and again (and again when a finished run is
    continued with more steps): the planning settings and the state readout added to it
    later are kept; a readout fit on another encoder is not."""
    from jepa_robot.world_model.checkpoint import load_checkpoint, read_planning, save_checkpoint, write_planning
    from jepa_robot.world_model.predictor import ACPredictor, PredictorConfig
    from jepa_robot.world_model.readout import (
        READOUT_CONFIG,
        READOUT_WEIGHTS,
        ReadoutConfig,
        StateReadout,
        load_readout,
        save_readout,
    )

    predictor = ACPredictor(PredictorConfig(latent_dim=8, num_tokens=4, action_dim=2, state_dim=0,
                                            hidden_dim=16, depth=1, heads=2))
    encoder = {"source": "enc", "weights_sha256": "abc"}
    data = {"image_key": "observation.images.oblique", "image_shape": [32, 32, 3], "frameskip": 1}
    directory = save_checkpoint(tmp_path / "checkpoint", predictor, encoder, data, {})
    write_planning(directory, {"name": "mppi"}, {"execute_steps": 2})
    readout = StateReadout(ReadoutConfig(latent_shape=(4, 8), state_dim=3, hidden=8))
    save_readout(directory, readout, {}, encoder)

    save_checkpoint(directory, predictor, encoder, data, {})  # the next save of the same run
    assert read_planning(directory)["planner"] == {"name": "mppi"}
    assert load_readout(directory, encoder) is not None
    assert load_checkpoint(directory).predictor.config == predictor.config

    save_checkpoint(directory, predictor, {"source": "enc", "weights_sha256": "other"}, data, {})
    assert read_planning(directory)["agent"] == {"execute_steps": 2}
    assert not (directory / READOUT_CONFIG).exists() and not (directory / READOUT_WEIGHTS).exists()
