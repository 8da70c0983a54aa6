"""``encoder=default_model``: the shipped encoder, by name, from any working directory."""

from __future__ import annotations

import json

from jepa_robot.config import compose
from jepa_robot.config.training import TrainConfig
from jepa_robot.world_model.checkpoint import BUILTIN_CHECKPOINTS
from jepa_robot.world_model.encoders import load_encoder


def test_the_default_model_encoder_group_loads_the_shipped_encoder_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing named like the encoder here
    encoder_config = compose("train", ["dataset=data/x", "encoder=default_model"], TrainConfig).encoder
    encoder = load_encoder(encoder_config.name, pool_grid=encoder_config.pool_grid,
                           resize_ratio=encoder_config.resize_ratio, device="cpu")
    shipped = json.loads((BUILTIN_CHECKPOINTS["default"] / "config.json").read_text())["encoder"]
    # the same weights and preprocessing the default model's predictor was trained on
    reference = encoder.reference()
    for key in ("weights_sha256", "pool_grid", "resize_ratio", "crop_size", "num_tokens"):
        assert reference[key] == shipped[key], key
