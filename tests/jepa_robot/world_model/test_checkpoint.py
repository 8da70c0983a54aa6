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
