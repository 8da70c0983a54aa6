"""Planning latency, throughput and energy reached: our planners beside stable-worldmodel's.

    uv run --group bench python benchmarks/planner_speed.py                 # CPU, 2 threads
    uv run --group bench python benchmarks/planner_speed.py --checkpoint runs/x/checkpoint
    uv run --group bench python benchmarks/planner_speed.py --device cuda --samples 800

Every solver minimises the *same* cost function: the L1 distance between the last
predicted latent of a fixed world model (the predictor's KV-cached ``rollout``) and a
goal latent, with actions clamped to the box [-1, 1]. The world model is a randomly
initialised ``ACPredictor`` (default: 16 latent tokens of 192 dims, as a 4x4-pooled
tiny encoder gives, hidden 128, depth 4) or the predictor of ``--checkpoint``. The goal
is the model's own prediction for a random action sequence, so a zero-energy plan
exists. Each plan call starts cold (no warm start) from a fixed seed; the table gives
the mean latency over ``--repeats`` calls (after one warm-up), the throughput in
candidate-steps per second (samples x iterations x horizon / latency), and the energy
of the plan returned (mean over calls), then the time ratio of our CEM and MPPI to
stable-worldmodel's ``CEMSolver`` and ``MPPISolver`` with the same samples, elites,
iterations and horizon.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jepa_robot.world_model.predictor import ACPredictor, PredictorConfig
from planners import ActionBounds, L1Energy, make_planner


class CostFunction:
    """L1 distance of the final predicted latent to the goal; counts its calls."""

    def __init__(self, predictor: ACPredictor, context: torch.Tensor, state: torch.Tensor | None,
                 goal: torch.Tensor) -> None:
        self.predictor, self.context, self.state, self.goal = predictor, context, state, goal
        self.energy = L1Energy(steps="final")
        self.candidates = 0

    def rollout(self, actions: torch.Tensor) -> torch.Tensor:
        """actions ``[B, H, A]`` -> predicted latents ``[B, H, N, D]`` (differentiable when
        gradients are on, for the gradient planner; sampling planners call it under no_grad)."""
        self.candidates += actions.shape[0]
        predicted, _ = self.predictor.rollout(self.context, self.state, actions.clamp(-1.0, 1.0))
        return predicted

    @torch.no_grad()
    def cost(self, actions: torch.Tensor) -> torch.Tensor:
        return self.energy(self.rollout(actions), self.goal)

    # stable-worldmodel's Costable protocol: candidates [E, N, H, A] -> costs [E, N]
    def get_cost(self, info_dict: dict, action_candidates: torch.Tensor) -> torch.Tensor:
        envs, samples = action_candidates.shape[:2]
        flat = action_candidates.reshape(envs * samples, *action_candidates.shape[2:])
        return self.cost(flat).reshape(envs, samples)

    def criterion(self, info_dict: dict, action_candidates: torch.Tensor) -> torch.Tensor:
        return self.get_cost(info_dict, action_candidates)


def build_world_model(args, device) -> tuple[ACPredictor, CostFunction]:
    if args.checkpoint:
        from jepa_robot.world_model.checkpoint import load_checkpoint

        predictor = load_checkpoint(args.checkpoint, device=device).predictor
    else:
        torch.manual_seed(0)
        predictor = ACPredictor(PredictorConfig(
            latent_dim=args.latent_dim, num_tokens=args.num_tokens, action_dim=args.action_dim,
            state_dim=4, hidden_dim=args.hidden_dim, depth=args.depth, heads=args.heads,
        )).to(device).eval()
    config = predictor.config
    generator = torch.Generator().manual_seed(1)
    context = torch.nn.functional.layer_norm(
        torch.randn(1, 1, config.num_tokens, config.latent_dim, generator=generator), (config.latent_dim,)
    ).to(device)
    state = torch.randn(1, 1, config.state_dim, generator=generator).to(device) if config.state_dim else None
    target_actions = (torch.rand(1, args.horizon, config.action_dim, generator=generator) * 2 - 1).to(device)
    with torch.no_grad():
        goal = predictor.rollout(context, state, target_actions)[0][0, -1]
    return predictor, CostFunction(predictor, context, state, goal)


def time_ours(name: str, options: dict[str, Any], cost: CostFunction, args) -> dict[str, Any]:
    planner = make_planner(name, bounds=ActionBounds.box(cost.predictor.config.action_dim),
                           energy=cost.energy, action_dim=cost.predictor.config.action_dim,
                           horizon=args.horizon, **options)
    times, energies = [], []
    for call in range(args.repeats + 1):
        planner.reset()
        cost.candidates = 0
        start = time.perf_counter()
        result = planner.plan(cost.rollout, cost.goal)
        seconds = time.perf_counter() - start
        if call:  # the first call warms up
            times.append(seconds)
            energies.append(float(cost.cost(result.actions)[0]))
    return {"solver": f"jepa_robot {name}", "calls_per_plan": cost.candidates, **options,
            **timing(times, energies, cost.candidates, args.horizon)}


def time_swm(name: str, cost: CostFunction, args) -> dict[str, Any] | None:
    try:
        import gymnasium as gym
        from stable_worldmodel.policy import PlanConfig
        from stable_worldmodel.solver.cem import CEMSolver
        from stable_worldmodel.solver.mppi import MPPISolver
    except ImportError:
        print("stable-worldmodel is not installed: run with `uv run --group bench ...`")
        return None
    action_dim = cost.predictor.config.action_dim
    common = dict(num_samples=args.samples, n_steps=args.iterations, topk=args.elites,
                  device=cost.goal.device, seed=0)
    times, energies = [], []
    for call in range(args.repeats + 1):
        solver = (CEMSolver if name == "cem" else MPPISolver)(cost, **common)
        solver.configure(action_space=gym.spaces.Box(-1, 1, (1, action_dim), np.float32), n_envs=1,
                         config=PlanConfig(horizon=args.horizon, receding_horizon=1, action_block=1))
        cost.candidates = 0
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # it prints its solve time
            outputs = solver.solve({"goal": cost.goal[None]})
        seconds = time.perf_counter() - start
        if call:
            times.append(seconds)
            energies.append(float(cost.cost(outputs["actions"].to(cost.goal.device).float())[0]))
    return {"solver": f"stable-worldmodel {name}", "samples": args.samples, "elites": args.elites,
            "iterations": args.iterations, "calls_per_plan": cost.candidates,
            **timing(times, energies, cost.candidates, args.horizon)}


def timing(times: list[float], energies: list[float], candidates: int, horizon: int) -> dict[str, Any]:
    mean = statistics.fmean(times)
    return {
        "latency_s_mean": mean,
        "latency_s_p50": statistics.median(times),
        "candidate_steps_per_s": candidates * horizon / mean,
        "energy_mean": statistics.fmean(energies),
        "energy_min": min(energies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None, help="use this checkpoint's predictor")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--elites", type=int, default=30)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--horizon", type=int, default=5)
    parser.add_argument("--latent-dim", type=int, default=192)
    parser.add_argument("--num-tokens", type=int, default=16)
    parser.add_argument("--hidden-dim", type=int, default=128)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--action-dim", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="benchmarks/results/planner_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    predictor, cost = build_world_model(args, device)

    sampling = {"samples": args.samples, "elites": args.elites, "iterations": args.iterations}
    rows = [
        time_ours("cem", sampling, cost, args),
        time_ours("icem", sampling, cost, args),
        time_ours("mppi", sampling, cost, args),
        time_ours("gradient", {"samples": 8, "iterations": 30}, cost, args),
    ]
    for name in ("cem", "mppi"):
        row = time_swm(name, cost, args)
        if row is not None:
            rows.append(row)

    by_solver = {row["solver"]: row for row in rows}
    ratios = {}
    for name in ("cem", "mppi"):
        ours, theirs = by_solver.get(f"jepa_robot {name}"), by_solver.get(f"stable-worldmodel {name}")
        if ours and theirs:
            ratios[name] = theirs["latency_s_mean"] / ours["latency_s_mean"]

    print(f"world model: {sum(p.numel() for p in predictor.parameters()) / 1e6:.2f}M params, "
          f"N={predictor.config.num_tokens} tokens x D={predictor.config.latent_dim}, "
          f"horizon {args.horizon}, {args.device}, {args.threads} threads\n")
    print("| solver | candidates/plan | latency mean (s) | p50 (s) | cand-steps/s | energy mean | energy min |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['solver']} | {row['calls_per_plan']} | {row['latency_s_mean']:.3f} | "
              f"{row['latency_s_p50']:.3f} | {row['candidate_steps_per_s']:.0f} | "
              f"{row['energy_mean']:.4f} | {row['energy_min']:.4f} |")
    for name, ratio in ratios.items():
        print(f"\n{name}: stable-worldmodel latency / ours = {ratio:.2f}")

    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "args": vars(args), "machine": platform.platform(), "torch": torch.__version__,
            "predictor_params": sum(p.numel() for p in predictor.parameters()),
            "rows": rows, "latency_ratio_swm_over_ours": ratios,
        }, indent=2))


if __name__ == "__main__":
    main()
