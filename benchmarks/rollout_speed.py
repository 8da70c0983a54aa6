"""Predictor rollout throughput: key/value cache vs recomputing the whole sequence.

    uv run python benchmarks/rollout_speed.py                    # CPU, 2 threads, B=300
    uv run python benchmarks/rollout_speed.py --candidates 64 --contexts 1 2

Builds a randomly initialised :class:`jepa_robot.world_model.predictor.ACPredictor` (default: D=192,
N=64, hidden 384, depth 6, heads 6, A=4, S=4, state head on), then times
``rollout`` (KV cache) and ``rollout_recompute`` (no cache; every step reruns the
predictor on the whole sequence, as the released V-JEPA 2-AC planner does) under
``torch.no_grad()`` for one context (Bc=1) of C frames and B candidate action sequences
of H steps. Throughput is candidate-steps per second = B * H / seconds. Prints a
Markdown table (and the largest difference between the two paths as a sanity check)
and writes JSON to --out when given.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from jepa_robot.world_model.predictor import ACPredictor, PredictorConfig


def time_call(fn, repeats: int) -> tuple[float, tuple]:
    """Best wall time of ``repeats`` calls (seconds) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--candidates", type=int, default=300, help="B")
    parser.add_argument("--horizon", type=int, default=5, help="H")
    parser.add_argument("--contexts", type=int, nargs="+", default=[1, 3], help="values of C")
    parser.add_argument("--latent-dim", type=int, default=192)
    parser.add_argument("--num-tokens", type=int, default=64)
    parser.add_argument("--hidden-dim", type=int, default=384)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--action-dim", type=int, default=4)
    parser.add_argument("--state-dim", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per path (best)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="write results as JSON here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = PredictorConfig(
        latent_dim=args.latent_dim, num_tokens=args.num_tokens, action_dim=args.action_dim,
        state_dim=args.state_dim, hidden_dim=args.hidden_dim, depth=args.depth,
        heads=args.heads, max_steps=max(args.contexts) + args.horizon,
    )
    model = ACPredictor(config).to(args.device).eval()
    params = sum(p.numel() for p in model.parameters())

    rows = []
    for context_len in args.contexts:
        latents = F.layer_norm(
            torch.randn(1, context_len, config.num_tokens, config.latent_dim), (config.latent_dim,)
        ).to(args.device)
        states = torch.randn(1, context_len, config.state_dim).to(args.device) \
            if config.state_dim else None
        actions = torch.rand(args.candidates, context_len - 1 + args.horizon,
                             config.action_dim) * 2 - 1
        actions[:, : context_len - 1] = actions[:1, : context_len - 1]
        actions = actions.to(args.device)
        with torch.no_grad():
            # warm-up on a small batch (allocator, kernels)
            model.rollout(latents, states, actions[:2])
            model.rollout_recompute(latents, states, actions[:2])
            t_cache, (z_cache, _) = time_call(
                lambda z=latents, s=states, a=actions: model.rollout(z, s, a), args.repeats)
            t_full, (z_full, _) = time_call(
                lambda z=latents, s=states, a=actions: model.rollout_recompute(z, s, a), args.repeats)
        steps = args.candidates * args.horizon
        rows.append({
            "C": context_len, "H": args.horizon, "B": args.candidates,
            "cache_s": t_cache, "recompute_s": t_full,
            "cache_steps_per_s": steps / t_cache, "recompute_steps_per_s": steps / t_full,
            "speedup": t_full / t_cache,
            "max_abs_diff": (z_cache - z_full).abs().max().item(),
        })

    print(f"ACPredictor {params / 1e6:.1f}M params (D={config.latent_dim}, "
          f"N={config.num_tokens}, hidden {config.hidden_dim}, depth {config.depth}, "
          f"heads {config.heads}, A={config.action_dim}, S={config.state_dim}), "
          f"device {args.device}, {args.threads} threads, torch {torch.__version__}\n")
    print("| C | H | B | KV cache (s) | recompute (s) | KV cache (cand-steps/s) "
          "| recompute (cand-steps/s) | speed-up | max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['C']} | {r['H']} | {r['B']} | {r['cache_s']:.2f} | {r['recompute_s']:.2f} "
              f"| {r['cache_steps_per_s']:.0f} | {r['recompute_steps_per_s']:.0f} "
              f"| {r['speedup']:.2f}x | {r['max_abs_diff']:.1e} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"config": config.to_dict(), "threads": args.threads,
                       "device": args.device, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
