"""iCEM's coloured noise: unit variance, and smoother as the exponent grows."""

from __future__ import annotations

import pytest
import torch

from planners.icem import colored_noise


def lag_one_correlation(noise: torch.Tensor) -> float:
    """Correlation of neighbouring steps (the noise has mean 0, so no centring)."""
    return float((noise[..., 1:] * noise[..., :-1]).mean() / noise.var())


@pytest.mark.parametrize("length", [1, 2, 5, 6, 16])
def test_noise_has_unit_variance(length):
    generator = torch.Generator().manual_seed(0)
    noise = colored_noise((20000, length), 2.0, generator, torch.empty(0))
    assert noise.shape == (20000, length)
    assert noise.var().item() == pytest.approx(1.0, abs=0.05)
    assert noise.mean().item() == pytest.approx(0.0, abs=0.05)


def test_higher_exponent_gives_smoother_sequences():
    generator = torch.Generator().manual_seed(0)
    white, pink, brown = (
        colored_noise((4000, 16), exponent, generator, torch.empty(0))
        for exponent in (0.0, 1.0, 2.0)
    )
    assert abs(lag_one_correlation(white)) < 0.05
    assert lag_one_correlation(pink) > 0.3
    assert lag_one_correlation(brown) > lag_one_correlation(pink) + 0.2
