"""The predictor's architecture settings (``jepa-robot train``'s ``predictor``): a plain
dataclass, so that a config is checked without importing torch.
``jepa_robot.world_model.predictor`` builds the model from it (its ``PredictorConfig``
extends it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class PredictorArchitecture:
    """The predictor's size and options: what ``jepa-robot train`` takes as ``predictor.*``.
    :class:`PredictorConfig` adds the widths that the data and the encoder decide."""

    hidden_dim: int = 384
    """Transformer width (1024 in V-JEPA 2-AC)."""
    depth: int = 6
    """Number of transformer blocks (24 in V-JEPA 2-AC)."""
    heads: int = 6
    """Attention heads; hidden_dim / heads must be >= 6 so every RoPE axis gets channels."""
    mlp_ratio: float = 4.0
    """MLP hidden width = int(hidden_dim * mlp_ratio)."""
    predict_state: bool = True
    """Add a head that predicts the next state from the state token (ignored if state_dim == 0)."""
    residual_latents: bool = False
    """Predict the change of each frame token: ``z_{t+1} = LN(z_t + proj(.))`` instead of
    ``LN(proj(.))``. A predictor narrower than the latents (hidden_dim < latent_dim)
    cannot pass a frame through unchanged otherwise, so small moves drown in the error
    of copying the frame through its bottleneck. Off for V-JEPA 2-AC (its weights
    predict the latent itself) and in configs saved before this field existed."""

    def __post_init__(self) -> None:
        for name in ("hidden_dim", "depth", "heads"):
            check_int(name, getattr(self, name), minimum=1)
        if isinstance(self.mlp_ratio, bool) or not isinstance(self.mlp_ratio, (int, float)):
            raise ValueError(f"predictor mlp_ratio must be a number, got {self.mlp_ratio!r}")
        self.mlp_ratio = float(self.mlp_ratio)
        if not (self.mlp_ratio > 0 and int(self.hidden_dim * self.mlp_ratio) >= 1):
            raise ValueError(f"predictor mlp_ratio must be > 0, got {self.mlp_ratio}")
        for name in ("predict_state", "residual_latents"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"predictor {name} must be a bool, got {getattr(self, name)!r}")
        if self.hidden_dim % self.heads:
            raise ValueError(
                f"predictor hidden_dim={self.hidden_dim} is not divisible by heads={self.heads}"
            )
        if self.hidden_dim // self.heads < 6:
            raise ValueError(
                f"predictor head width hidden_dim / heads = {self.hidden_dim // self.heads}"
                " is too small; 3D RoPE needs at least 6 channels per head"
            )


def check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"PredictorConfig.{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"PredictorConfig.{name} must be >= {minimum}, got {value}")
