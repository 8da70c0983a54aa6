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

Time to energy (``--curve-seeds N``, default 5): for N goals (each the prediction for
another random action sequence), every solver plans once from cold while the cost
function records, at each evaluation, the wall time since the call began and the
lowest energy evaluated so far. Per goal, the target is the final energy
stable-worldmodel's CEM (or MPPI) reached; the time each solver first gets as low is
read off its curve, and the table gives the median over goals of stable-worldmodel's
time divided by ours (above 1: ours gets there sooner; a solver that never gets there
counts as 0). The curves are plotted to ``--plot``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jepa_robot.world_model.predictor import ACPredictor, PredictorConfig
from planners import ActionBounds, L1Energy, make_planner


class TracedEnergy:
    """An energy that, while ``trace`` is a list, appends ``(seconds since start, lowest
    energy so far)`` at every evaluation: the same time-to-energy curve for any solver."""

    def __init__(self, energy: L1Energy) -> None:
        self.energy = energy
        self.trace: list[tuple[float, float]] | None = None
        self.start = 0.0

    def begin(self) -> None:
        self.trace, self.start = [], time.perf_counter()

    def end(self) -> list[tuple[float, float]]:
        trace, self.trace = self.trace or [], None
        return trace

    def __call__(self, predicted: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        energies = self.energy(predicted, goal)
        if self.trace is not None:
            best = float(energies.min())
            if self.trace:
                best = min(best, self.trace[-1][1])
            self.trace.append((time.perf_counter() - self.start, best))
        return energies


class CostFunction:
    """L1 distance of the final predicted latent to the goal; counts its calls."""

    def __init__(self, predictor: ACPredictor, context: torch.Tensor, state: torch.Tensor | None,
                 goal: torch.Tensor) -> None:
        self.predictor, self.context, self.state, self.goal = predictor, context, state, goal
        self.energy = TracedEnergy(L1Energy(steps="final"))
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


def our_solver(name: str, options: dict[str, Any], cost: CostFunction, args):
    """A callable that plans once from cold with our planner ``name``; returns the actions."""
    planner = make_planner(name, bounds=ActionBounds.box(cost.predictor.config.action_dim),
                           energy=cost.energy, action_dim=cost.predictor.config.action_dim,
                           horizon=args.horizon, **options)

    def solve() -> torch.Tensor:
        planner.reset()
        return planner.plan(cost.rollout, cost.goal).actions

    return solve


def swm_solver(name: str, cost: CostFunction, args):
    """A callable that plans once with stable-worldmodel's ``CEMSolver`` or ``MPPISolver``
    (None if it is not installed)."""
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

    def solve() -> torch.Tensor:
        solver = (CEMSolver if name == "cem" else MPPISolver)(cost, **common)
        solver.configure(action_space=gym.spaces.Box(-1, 1, (1, action_dim), np.float32), n_envs=1,
                         config=PlanConfig(horizon=args.horizon, receding_horizon=1, action_block=1))
        with contextlib.redirect_stdout(io.StringIO()):  # it prints its solve time
            outputs = solver.solve({"goal": cost.goal[None]})
        return outputs["actions"].to(cost.goal.device).float()

    return solve


def time_solver(label: str, solve, cost: CostFunction, args, **settings) -> dict[str, Any]:
    """Latency and energy of ``solve`` over ``args.repeats`` calls after one warm-up."""
    times, energies = [], []
    for call in range(args.repeats + 1):
        cost.candidates = 0
        start = time.perf_counter()
        actions = solve()
        seconds = time.perf_counter() - start
        if call:  # the first call warms up
            times.append(seconds)
            energies.append(float(cost.cost(actions)[0]))
    return {"solver": label, "calls_per_plan": cost.candidates, **settings,
            **timing(times, energies, cost.candidates, args.horizon)}


def set_goal(cost: CostFunction, seed: int, horizon: int) -> None:
    """Make the goal the model's own prediction for the random action sequence of ``seed``."""
    generator = torch.Generator().manual_seed(1000 + seed)
    target = torch.rand(1, horizon, cost.predictor.config.action_dim, generator=generator) * 2 - 1
    with torch.no_grad():
        cost.goal = cost.predictor.rollout(cost.context, cost.state, target.to(cost.context))[0][0, -1]


def traced(solve, cost: CostFunction) -> list[tuple[float, float]]:
    cost.energy.begin()
    solve()
    return cost.energy.end()


def time_to(curve: list[tuple[float, float]], energy: float) -> float:
    """When ``curve`` first gets to ``energy`` or below (inf if never)."""
    return next((t for t, e in curve if e <= energy * (1 + 1e-6)), math.inf)


def time_to_energy(solvers: dict[str, Any], cost: CostFunction, args) -> dict[str, Any]:
    """Curves of every solver on ``args.curve_seeds`` goals, and per stable-worldmodel
    solver the median ratio of its time to its own final energy to each of ours."""
    curves: dict[str, list] = {label: [] for label in solvers}
    for seed in range(args.curve_seeds):
        set_goal(cost, seed, args.horizon)
        for label, solve in solvers.items():
            curves[label].append(traced(solve, cost))
    ratios: dict[str, dict[str, float]] = {}
    for theirs in (label for label in solvers if label.startswith("stable-worldmodel")):
        ratios[theirs] = {}
        for ours in (label for label in solvers if label.startswith("jepa_robot")):
            per_goal = []
            for their_curve, our_curve in zip(curves[theirs], curves[ours], strict=True):
                target = their_curve[-1][1]
                their_time, our_time = time_to(their_curve, target), time_to(our_curve, target)
                per_goal.append(their_time / our_time if math.isfinite(our_time) else 0.0)
            ratios[theirs][ours] = {"median": statistics.median(per_goal), "per_goal": per_goal}
    return {"curves": curves, "ratios": ratios}


def median_curve(per_goal: list[list[tuple[float, float]]], grid: np.ndarray) -> np.ndarray:
    """The median over goals of each goal's lowest energy so far, at the times of ``grid``
    (NaN before every goal has its first evaluation)."""
    values = np.full((len(per_goal), len(grid)), np.nan)
    for row, curve in zip(values, per_goal, strict=True):
        times, energies = (np.asarray(v) for v in zip(*curve, strict=True))
        index = np.searchsorted(times, grid, side="right") - 1
        row[index >= 0] = energies[index[index >= 0]]
    return np.median(values, axis=0)


def plot_curves(curves: dict[str, list], path: Path, title: str) -> None:
    """Median time-to-energy curve per solver (solid: ours, dashed: stable-worldmodel)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    end = max(curve[-1][0] for per_goal in curves.values() for curve in per_goal)
    grid = np.linspace(0.0, end, 400)
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for index, (label, per_goal) in enumerate(curves.items()):
        axes.plot(grid, median_curve(per_goal, grid), color=f"C{index}", linewidth=1.8,
                  linestyle="--" if label.startswith("stable") else "-", label=label)
    axes.set_yscale("log")
    axes.set_xlabel("wall time since the plan call began (s)")
    axes.set_ylabel(f"lowest energy so far, median of {len(next(iter(curves.values())))} goals")
    axes.set_title(title, fontsize=8)
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3, which="both")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


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
    parser.add_argument("--curve-seeds", type=int, default=5, help="goals for the time-to-energy curves (0: none)")
    parser.add_argument("--plot", default="benchmarks/results/planner_time_to_energy.png")
    parser.add_argument("--out", default="benchmarks/results/planner_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    predictor, cost = build_world_model(args, device)

    sampling = {"samples": args.samples, "elites": args.elites, "iterations": args.iterations}
    solvers = {f"jepa_robot {name}": our_solver(name, sampling, cost, args) for name in ("cem", "icem", "mppi")}
    gradient = {"samples": 8, "iterations": 30}
    rows = [time_solver(label, solve, cost, args, **sampling) for label, solve in solvers.items()]
    rows.append(time_solver("jepa_robot gradient", our_solver("gradient", gradient, cost, args), cost, args,
                            **gradient))
    for name in ("cem", "mppi"):
        solve = swm_solver(name, cost, args)
        if solve is not None:
            solvers[f"stable-worldmodel {name}"] = solve
            rows.append(time_solver(f"stable-worldmodel {name}", solve, cost, args, **sampling))

    by_solver = {row["solver"]: row for row in rows}
    ratios = {}
    for name in ("cem", "mppi"):
        ours, theirs = by_solver.get(f"jepa_robot {name}"), by_solver.get(f"stable-worldmodel {name}")
        if ours and theirs:
            ratios[name] = theirs["latency_s_mean"] / ours["latency_s_mean"]

    description = (f"{sum(p.numel() for p in predictor.parameters()) / 1e6:.2f}M params, "
                   f"N={predictor.config.num_tokens} tokens x D={predictor.config.latent_dim}, "
                   f"horizon {args.horizon}, {args.samples} samples x {args.iterations} iterations, "
                   f"{args.device}, {args.threads} threads")
    print(f"world model: {description}\n")
    print("| solver | candidates/plan | latency mean (s) | p50 (s) | cand-steps/s | energy mean | energy min |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['solver']} | {row['calls_per_plan']} | {row['latency_s_mean']:.3f} | "
              f"{row['latency_s_p50']:.3f} | {row['candidate_steps_per_s']:.0f} | "
              f"{row['energy_mean']:.4f} | {row['energy_min']:.4f} |")
    for name, ratio in ratios.items():
        print(f"\n{name}: stable-worldmodel latency / ours = {ratio:.2f}")

    to_energy = None
    if args.curve_seeds and any(label.startswith("stable") for label in solvers):
        to_energy = time_to_energy(solvers, cost, args)
        print(f"\ntime to stable-worldmodel's final energy, theirs / ours, median over {args.curve_seeds} goals"
              " (per goal in brackets):\n")
        ours = [label for label in solvers if label.startswith("jepa")]
        print("| stable-worldmodel solver | " + " | ".join(ours) + " |")
        print("|---|" + "---|" * len(ours))
        for theirs, versus in to_energy["ratios"].items():
            cells = [f"{r['median']:.2f} ({', '.join(f'{x:.1f}' for x in r['per_goal'])})" for r in versus.values()]
            print(f"| {theirs} | " + " | ".join(cells) + " |")
        if args.plot:
            plot_curves(to_energy["curves"], Path(args.plot), f"time to energy\n{description}")
            print(f"\ncurves: {args.plot}")

    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "args": vars(args), "machine": platform.platform(), "torch": torch.__version__,
            "predictor_params": sum(p.numel() for p in predictor.parameters()),
            "rows": rows, "latency_ratio_swm_over_ours": ratios, "time_to_energy": to_energy,
        }, indent=2))


if __name__ == "__main__":
    main()
