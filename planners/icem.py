"""iCEM (Pinneri et al., 2020): CEM with temporally correlated noise and elite reuse.

Changes from plain CEM: noise has a power spectrum ``1/f**noise_exponent`` along
the horizon (smooth, low-frequency action sequences), a fraction of each
iteration's elites is carried into the next, and the elites of the previous
``plan`` call are shifted by one step and carried into the first iteration.
"""

from __future__ import annotations

import functools
import math
import time

import torch
from torch import Tensor

from planners.base import (
    BestSoFar,
    Planner,
    PlanResult,
    Rollout,
    shift_plan,
    top_elites,
)
from planners.configs import ICEMConfig
from planners.energy import Energy


def colored_noise(
    shape: tuple[int, ...], exponent: float, generator: torch.Generator, like: Tensor
) -> Tensor:
    """Unit-variance Gaussian noise ``shape`` with spectrum ``1/f**exponent`` on the last axis.

    Random Fourier coefficients scaled by ``f**(-exponent/2)``, then an inverse
    real FFT, divided by the exact theoretical std (the ``colorednoise`` package's
    recipe, whose normalisation leaves the variance somewhat above 1).
    """
    draw = functools.partial(torch.randn, generator=generator, device=like.device, dtype=like.dtype)
    length = shape[-1]
    if length == 1 or exponent == 0:
        return draw(shape)
    coefficient_shape = (*shape[:-1], length // 2 + 1)
    frequencies = torch.fft.rfftfreq(length, device=like.device, dtype=like.dtype)
    frequencies[0] = 1.0 / length  # the DC term would be infinite; give it the lowest frequency
    scale = frequencies ** (-exponent / 2)
    real, imaginary = draw(coefficient_shape) * scale, draw(coefficient_shape) * scale
    imaginary[..., 0] = 0  # the DC (and, for even lengths, Nyquist) terms must be real
    real[..., 0] *= math.sqrt(2)
    # Variance each coefficient adds to every output sample (times length**2): the
    # real-only DC and Nyquist terms count once, the complex ones twice.
    coefficient_variance = 4 * scale.square()
    coefficient_variance[0] /= 2
    if length % 2 == 0:
        imaginary[..., -1] = 0
        real[..., -1] *= math.sqrt(2)
        coefficient_variance[-1] /= 2
    sigma = coefficient_variance.sum().sqrt() / length
    return torch.fft.irfft(torch.complex(real, imaginary), n=length, dim=-1) / sigma


class ICEMPlanner(Planner):
    """iCEM with a fixed sample count per iteration; actions clipped to the bounds.

    Returns the best candidate evaluated (the mean is always one); the next call
    warm-starts its mean from the returned plan and reuses the shifted elites.
    """

    config_class = ICEMConfig
    config: ICEMConfig

    def reset(self) -> None:
        super().reset()
        self.previous_elites: Tensor | None = None
        """Elites kept at the end of the last call, ``[E, K', H, A]``, or None."""

    def _shifted_previous_elites(self, num_envs: int, like: Tensor) -> Tensor | None:
        """The last call's kept elites shifted by one step, if they fit this call."""
        previous, config = self.previous_elites, self.config
        if not config.warm_start or previous is None or previous.shape[0] != num_envs:
            return None
        if previous.shape[2:] != (config.horizon, config.action_dim):
            return None
        return shift_plan(previous.to(like), config.warm_start_fill, self.bounds.center(like))

    def plan(
        self,
        rollout: Rollout,
        goal: Tensor,
        *,
        num_envs: int | None = None,
        energy: Energy | None = None,
    ) -> PlanResult:
        started = time.perf_counter()
        config = self.config
        energy = energy if energy is not None else self.energy
        goals = self._goals_per_env(goal, num_envs)
        num_envs = goals.shape[0]
        like = self._action_like(goal)
        horizon, action_dim = config.horizon, config.action_dim

        mean = self._initial_plan(num_envs, like)  # [E, H, A]
        std = torch.full_like(mean, config.init_std)
        best = BestSoFar(num_envs, mean)
        kept = self._shifted_previous_elites(num_envs, like)  # [E, K', H, A] or None
        num_kept = round(config.keep_elite_fraction * config.elites)

        with torch.no_grad():
            for _ in self._iterations(like.device):
                # Noise runs along the horizon, so draw it as [E, N, A, H] and swap.
                noise = colored_noise(
                    (num_envs, config.samples, action_dim, horizon),
                    config.noise_exponent,
                    self._generator_for(like.device),
                    like,
                )
                candidates = mean.unsqueeze(1) + std.unsqueeze(1) * noise.transpose(-1, -2)
                candidates[:, 0] = mean
                if kept is not None and kept.shape[1] > 0:
                    candidates[:, -kept.shape[1] :] = kept
                candidates = self.bounds.project(candidates)  # [E, N, H, A]
                energies = self._evaluate(rollout, energy, candidates, goals)  # [E, N]
                best.update(candidates, energies)

                elites, _ = top_elites(candidates, energies, config.elites)  # [E, K, H, A]
                kept = elites[:, :num_kept]
                elite_std = elites.std(dim=1, unbiased=False)
                mean = config.momentum * mean + (1 - config.momentum) * elites.mean(1)
                std = config.momentum * std + (1 - config.momentum) * elite_std
                std = std.clamp_min(config.min_std)

        result = best.result(started)
        self.previous_plan, self.previous_elites = result.actions, kept
        return result
