"""Rollout throughput of a planning predictor against this CPU's fp32 matmul peak.

    uv run python benchmarks/rollout_efficiency.py                       # shipped default model
    uv run python benchmarks/rollout_efficiency.py --checkpoint runs/x/checkpoint --threads 1 2 4

Planning is rollouts: the planners spend nearly all their time in
:meth:`ACPredictor.rollout`. This times that call (under ``torch.inference_mode``, as
the planners run it) for the shapes planning uses - B candidates of H steps from a
context of C frames (C = 2 puts one block in the key/value cache before the candidates
branch) - and counts its floating-point operations with PyTorch's own
``torch.utils.flop_counter.FlopCounterMode`` (matmuls and attention; elementwise work
such as GELU and layer norms counts nothing but costs time). In the same run, at the
same thread count, it measures the fp32 matmul peak: the best of a 2048^3 ``torch.mm``
and the predictor's own largest projection at the largest batch. Each row prints the
achieved GFLOP/s, the peak, and their ratio.

Timings are medians of ``--repeats`` calls after warm-up calls; run on an idle machine.
Writes JSON to ``--out`` when given.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from jepa_robot.world_model.checkpoint import load_checkpoint, resolve_checkpoint
from jepa_robot.world_model.predictor import ACPredictor


def median_seconds(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak(rows: int, width: int, hidden: int, repeats: int) -> dict[str, float]:
    """fp32 GFLOP/s of a large square matmul and of the predictor's widest projection
    (``rows x width @ width x hidden``), at the current thread count."""
    peaks = {}
    for name, (m, k, n) in {"square_2048": (2048, 2048, 2048), "mlp_fc1": (rows, width, hidden)}.items():
        a, b = torch.randn(m, k), torch.randn(k, n)
        out = torch.empty(m, n)
        seconds = median_seconds(lambda a=a, b=b, out=out: torch.mm(a, b, out=out), repeats)
        peaks[name] = 2 * m * k * n / seconds / 1e9
    return peaks


def rollout_inputs(predictor: ACPredictor, batch: int, horizon: int, context: int):
    config = predictor.config
    generator = torch.Generator().manual_seed(0)
    latents = F.layer_norm(torch.randn(1, context, config.num_tokens, config.latent_dim, generator=generator),
                           (config.latent_dim,))
    states = torch.randn(1, context, config.state_dim, generator=generator) if config.state_dim else None
    actions = torch.rand(batch, context - 1 + horizon, config.action_dim, generator=generator) * 2 - 1
    actions[:, : context - 1] = actions[:1, : context - 1]  # a context's past actions are shared
    return latents, states, actions


def measure(predictor: ACPredictor, batch: int, horizon: int, context: int, repeats: int) -> dict[str, float]:
    latents, states, actions = rollout_inputs(predictor, batch, horizon, context)

    def call():
        with torch.inference_mode():
            return predictor.rollout(latents, states, actions)

    with FlopCounterMode(display=False) as counter:
        call()
    flops = counter.get_total_flops()
    seconds = median_seconds(call, repeats)
    return {"B": batch, "H": horizon, "C": context, "seconds": seconds, "gflop": flops / 1e9,
            "gflops_per_s": flops / seconds / 1e9, "candidate_steps_per_s": batch * horizon / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="default", help="checkpoint whose predictor is timed")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 128, 300])
    parser.add_argument("--horizons", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--contexts", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", default=None, help="write results as JSON here")
    args = parser.parse_args()

    predictor = load_checkpoint(resolve_checkpoint(args.checkpoint)).predictor.eval()
    config = predictor.config
    params = sum(p.numel() for p in predictor.parameters())
    print(f"predictor of {args.checkpoint}: {params / 1e6:.2f}M params, hidden {config.hidden_dim}, "
          f"depth {config.depth}, heads {config.heads}, {config.tokens_per_step} tokens per step "
          f"({config.num_tokens} x {config.latent_dim}), torch {torch.__version__}, "
          f"{torch.backends.cpu.get_cpu_capability()}\n")
    print("| threads | C | H | B | ms per rollout | GFLOP | GFLOP/s | matmul peak GFLOP/s | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    results = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        widest = max(args.batches) * config.tokens_per_step
        peaks = matmul_peak(widest, config.hidden_dim, int(config.hidden_dim * config.mlp_ratio), args.repeats)
        peak = max(peaks.values())
        for context in args.contexts:
            for horizon in args.horizons:
                for batch in args.batches:
                    row = measure(predictor, batch, horizon, context, args.repeats)
                    row.update(threads=threads, peak_gflops_per_s=peak, peaks=peaks,
                               ratio=row["gflops_per_s"] / peak)
                    results.append(row)
                    print(f"| {threads} | {context} | {horizon} | {batch} | {row['seconds'] * 1e3:.1f} | "
                          f"{row['gflop']:.2f} | {row['gflops_per_s']:.1f} | {peak:.1f} | {row['ratio']:.2f} |",
                          flush=True)
    for threads in args.threads:
        ratios = [r["ratio"] for r in results if r["threads"] == threads]
        print(f"\n{threads} thread(s): ratio to the matmul peak, median {statistics.median(ratios):.2f} "
              f"(min {min(ratios):.2f}, max {max(ratios):.2f})")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "checkpoint": args.checkpoint, "predictor": config.to_dict(), "machine": platform.platform(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "rows": results,
        }, indent=2))


if __name__ == "__main__":
    main()
