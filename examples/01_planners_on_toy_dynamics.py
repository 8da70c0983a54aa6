"""Every planner on a toy problem with a known optimum: the planners library on its own.

    uv run python examples/01_planners_on_toy_dynamics.py

A planner needs only a batched rollout callable and a goal. Here the "world model" is
a 2-D point that moves by its action each step (latent = position); the goal is the
point (0.6, -0.4), reachable in 3 steps of at most 0.25 per axis. Each planner should
bring the final predicted position to within a few hundredths of the goal.
"""

from __future__ import annotations

import torch

from planners import PLANNERS, ActionBounds, L2Energy, make_planner

START = torch.tensor([0.0, 0.0])
GOAL = torch.tensor([0.6, -0.4])
STEP = 0.25


def rollout(actions: torch.Tensor) -> torch.Tensor:
    """actions [B, H, 2] in [-1, 1] -> positions [B, H, 2] after each step."""
    return START + STEP * actions.cumsum(dim=1)


def main() -> dict[str, float]:
    errors = {}
    for name in PLANNERS:
        planner = make_planner(
            name, horizon=3, action_dim=2, iterations=30, seed=0,
            bounds=ActionBounds.box(2), energy=L2Energy(steps="final"),
            **({"samples": 16, "learning_rate": 0.1} if name == "gradient" else {"samples": 128}),
        )
        result = planner.plan(rollout, GOAL)
        final = rollout(result.actions)[0, -1]
        errors[name] = float((final - GOAL).norm())
        print(f"{name:>8}: final position {final.numpy().round(3)}, error {errors[name]:.4f}, "
              f"{result.iterations} iterations in {1e3 * result.seconds:.0f} ms")
    return errors


if __name__ == "__main__":
    main()
