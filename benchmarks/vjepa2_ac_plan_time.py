"""Plan time per action at V-JEPA 2-AC's planning settings, on reduced models (CPU).

    uv run python benchmarks/vjepa2_ac_plan_time.py                 # 2 threads, CPU
    uv run python benchmarks/vjepa2_ac_plan_time.py --repeats 3 --full-encoder

The planner is the paper's (``configs/planner/vjepa2_ac_paper.yaml``: CEM, 800 samples,
top 10, 10 iterations, horizon 1, L1 energy on the final step, 7-D DROID actions in the
V-JEPA 2-AC bounds, no warm start), run by :mod:`planners` on our KV-cached
:meth:`ACPredictor.rollout` (context of one frame, ``next_state_fn=droid_next_state``,
the reference RoPE quirk on). One action = encode the current frame + one ``plan`` call
(the goal is encoded once per episode and not counted). The models are randomly
initialised - timing does not depend on the weights - and reduced so a CPU can run
800 x 10 candidates:

* ``tiny-64``: V-JEPA 2 encoder 64 px / patch 8 (8x8 = 64 tokens x 192, 6 layers, 2.7M)
  and a 4 x 256 predictor (4 heads of 64, like the paper's head width);
* ``tiny-16``: the same with the token grid average-pooled to 4x4 (16 tokens);
* ``paper-predictor``: the published predictor size (24 x 1024, 16 heads) on the published
  token count (256 x 1408): too slow for a full 800 x 10 plan on CPU, so one rollout of
  ``--paper-candidates`` candidates is timed and the full plan is *estimated* from it
  (labelled as such).

``--full-encoder`` also times one frame through a randomly initialised ViT-g/16 (1B
parameters, 256 px) - the encoder cost per action of the published model.

FLOPs are counted analytically (matmuls and attention, 2 per multiply-add). Prints a
Markdown table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from jepa_robot.world_model.encoders import load_encoder, save_tiny_random_encoder
from jepa_robot.world_model.predictor import ACPredictor, PredictorConfig
from jepa_robot.world_model.vjepa2_ac import droid_next_state
from planners import ActionBounds, make_energy, make_planner

ROOT = Path(__file__).resolve().parents[1]
PAPER_PLANNER = ROOT / "configs" / "planner" / "vjepa2_ac_paper.yaml"


def predictor_flops(tokens_per_step: int, frame_tokens: int, latent_dim: int, hidden: int, depth: int,
                    mlp_hidden: int, action_dim: int = 7) -> float:
    """FLOPs of one predicted block (horizon 1, one context frame: the block attends to itself)."""
    per_token_layer = 2 * (4 * hidden * hidden + 2 * hidden * mlp_hidden) + 4 * tokens_per_step * hidden
    embed = 2 * frame_tokens * latent_dim * hidden + 2 * 2 * action_dim * hidden
    readout = 2 * frame_tokens * hidden * latent_dim
    return tokens_per_step * depth * per_token_layer + embed + readout


def encoder_flops(tokens: int, dim: int, depth: int, mlp_hidden: int, patch_in: int) -> float:
    per_token_layer = 2 * (4 * dim * dim + 2 * dim * mlp_hidden) + 4 * tokens * dim
    return tokens * depth * per_token_layer + 2 * tokens * patch_in * dim


def paper_planner(action_dim: int = 7):
    cfg = OmegaConf.to_container(OmegaConf.load(PAPER_PLANNER))
    planner = make_planner(cfg["name"], action_dim=action_dim, bounds=ActionBounds(**cfg["bounds"]),
                           energy=make_energy(cfg["energy"], steps=cfg["energy_steps"]), **cfg["options"])
    return planner, cfg


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def make_predictor(latent_dim: int, tokens: int, hidden: int, depth: int, heads: int, seed: int) -> ACPredictor:
    torch.manual_seed(seed)
    config = PredictorConfig(latent_dim=latent_dim, num_tokens=tokens, action_dim=7, state_dim=7,
                             hidden_dim=hidden, depth=depth, heads=heads, max_steps=2, predict_state=False,
                             rope_reference_quirk=True)
    return ACPredictor(config).eval()


def run_tiny(name: str, pool_grid: int | None, args, workdir: Path) -> dict:
    encoder_dir = workdir / "tiny-encoder"
    if not encoder_dir.exists():
        save_tiny_random_encoder(encoder_dir, seed=args.seed)
    encoder = load_encoder(encoder_dir, device="cpu", pool_grid=pool_grid, resize_ratio=1.0)
    n, d = encoder.num_tokens, encoder.embed_dim
    predictor = make_predictor(d, n, args.hidden, args.depth, args.heads, args.seed)
    planner, cfg = paper_planner()
    rng = np.random.default_rng(args.seed)
    frame, goal_frame = (rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8) for _ in range(2))
    goal = encoder.encode(goal_frame)[0]
    state = torch.tensor([[0.5, 0.0, 0.3, 3.1, 0.0, 0.2, 0.0]])

    def act():
        latent = encoder.encode(frame)
        def rollout(actions):
            return predictor.rollout(latent[:, None], state[:, None], actions, next_state_fn=droid_next_state)[0]
        return planner.plan(rollout, goal)

    encode_times = timed(lambda: encoder.encode(frame), max(3, args.repeats))
    act()  # warm-up (allocator, thread pool)
    plan_times, iterations = [], []
    for _ in range(args.repeats):
        planner.reset()
        start = time.perf_counter()
        result = act()
        plan_times.append(time.perf_counter() - start)
        iterations.append(result.iterations)
    c = predictor.config
    samples, iters = cfg["options"]["samples"], cfg["options"]["iterations"]
    flops_plan = samples * iters * predictor_flops(c.tokens_per_step, n, d, c.hidden_dim, c.depth,
                                                   int(c.hidden_dim * c.mlp_ratio))
    per_action = statistics.median(plan_times)
    encode = statistics.median(encode_times)
    return {
        "name": name, "kind": "measured",
        "encoder": f"V-JEPA 2 tiny random, 64 px, {n} tokens x {d}" + (f" (pooled {pool_grid}x{pool_grid})" if pool_grid else ""),
        "predictor": f"{c.depth} x {c.hidden_dim}, {c.heads} heads ({sum(p.numel() for p in predictor.parameters()) / 1e6:.1f}M)",
        "tokens_per_candidate": c.tokens_per_step, "samples": samples, "iterations": iters,
        "iterations_run": iterations, "horizon": cfg["options"]["horizon"],
        "encode_s": encode, "seconds_per_action": per_action, "plan_s": per_action - encode,
        "all_seconds_per_action": plan_times, "predictor_tflop_per_action": flops_plan / 1e12,
        "gflops_per_s": flops_plan / max(per_action - encode, 1e-9) / 1e9,
    }


def run_paper_predictor(args) -> dict:
    n, d = 256, 1408
    predictor = make_predictor(d, n, 1024, 24, 16, args.seed)
    c = predictor.config
    g = torch.Generator().manual_seed(args.seed)
    latent = torch.nn.functional.layer_norm(torch.randn(1, 1, n, d, generator=g), (d,))
    state = torch.zeros(1, 1, 7)
    actions = 0.05 * torch.randn(args.paper_candidates, 1, 7, generator=g)

    def call():
        with torch.no_grad():
            return predictor.rollout(latent, state, actions, next_state_fn=droid_next_state)

    call()  # warm-up
    times = timed(call, args.repeats)
    best = statistics.median(times)
    per_candidate = best / args.paper_candidates
    flops = predictor_flops(c.tokens_per_step, n, d, 1024, 24, 4096)
    planner_cfg = paper_planner()[1]["options"]
    candidates_per_plan = planner_cfg["samples"] * planner_cfg["iterations"]
    return {
        "name": "paper-predictor", "kind": "measured rollout, estimated plan",
        "encoder": "none (random 256 x 1408 latents)",
        "predictor": f"24 x 1024, 16 heads ({sum(p.numel() for p in predictor.parameters()) / 1e6:.0f}M)",
        "tokens_per_candidate": c.tokens_per_step, "rollout_candidates": args.paper_candidates,
        "rollout_s": best, "all_rollout_s": times, "s_per_candidate": per_candidate,
        "gflops_per_s": flops * args.paper_candidates / best / 1e9,
        "predictor_tflop_per_action": flops * candidates_per_plan / 1e12,
        "estimated_plan_s": per_candidate * candidates_per_plan,
    }


def run_full_encoder(args) -> dict:
    from transformers import VJEPA2Config, VJEPA2Model

    config = VJEPA2Config(crop_size=256, patch_size=16, tubelet_size=2, frames_per_clip=64, hidden_size=1408,
                          num_hidden_layers=40, num_attention_heads=22, mlp_ratio=48 / 11,
                          pred_hidden_size=48, pred_num_attention_heads=1, pred_num_hidden_layers=1,
                          pred_num_mask_tokens=1, pred_mlp_ratio=1.0)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    model = VJEPA2Model(config).eval()
    build_s = time.perf_counter() - start
    clip = torch.randn(1, 2, 3, 256, 256)

    def call():
        with torch.no_grad():
            return model.encoder(pixel_values_videos=clip).last_hidden_state

    call()
    times = timed(call, args.repeats)
    flops = encoder_flops(256, 1408, 40, 6144, 3 * 2 * 16 * 16)
    return {"name": "vit-g encoder", "kind": "measured", "frame_s": statistics.median(times), "all_frame_s": times,
            "params_m": sum(p.numel() for p in model.encoder.parameters()) / 1e6, "build_s": build_s,
            "tflop_per_frame": flops / 1e12, "gflops_per_s": flops / statistics.median(times) / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=256, help="reduced predictor width")
    parser.add_argument("--depth", type=int, default=4, help="reduced predictor depth")
    parser.add_argument("--heads", type=int, default=4, help="reduced predictor heads")
    parser.add_argument("--repeats", type=int, default=2, help="timed actions per row (median)")
    parser.add_argument("--paper-candidates", type=int, default=16)
    parser.add_argument("--full-encoder", action="store_true", help="also time one ViT-g frame")
    parser.add_argument("--skip", nargs="*", default=[], choices=["tiny-64", "tiny-16", "paper-predictor"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "vjepa2_ac_plan_time.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="vjepa2-ac-plan-") as tmp:
        for name, pool in (("tiny-64", None), ("tiny-16", 4)):
            if name not in args.skip:
                rows.append(run_tiny(name, pool, args, Path(tmp)))
                print(f"{name}: {rows[-1]['seconds_per_action']:.2f} s per action", flush=True)
    if "paper-predictor" not in args.skip:
        rows.append(run_paper_predictor(args))
        print(f"paper-predictor: {rows[-1]['s_per_candidate']:.3f} s per candidate", flush=True)
    encoder_row = run_full_encoder(args) if args.full_encoder else None

    print(f"\nV-JEPA 2-AC planning settings (CEM 800 x 10, top 10, horizon 1, L1, 7-D), CPU "
          f"{platform.processor() or platform.machine()}, {args.threads} threads, fp32\n")
    print("| setup | tokens / candidate | predictor | encode (s) | plan (s) | s per action | predictor TFLOP / action | GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["name"] == "paper-predictor":
            print(f"| {r['name']} ({r['rollout_candidates']} candidates timed) | {r['tokens_per_candidate']} | "
                  f"{r['predictor']} | - | estimate {r['estimated_plan_s']:.0f} | estimate (predictor only) | "
                  f"{r['predictor_tflop_per_action']:.0f} | {r['gflops_per_s']:.0f} |")
        else:
            print(f"| {r['name']}: {r['encoder']} | {r['tokens_per_candidate']} | {r['predictor']} | "
                  f"{r['encode_s']:.3f} | {r['plan_s']:.2f} | {r['seconds_per_action']:.2f} | "
                  f"{r['predictor_tflop_per_action']:.2f} | {r['gflops_per_s']:.0f} |")
    if encoder_row:
        print(f"\nViT-g/16 encoder, one 256 px frame: {encoder_row['frame_s']:.2f} s "
              f"({encoder_row['tflop_per_frame']:.2f} TFLOP, {encoder_row['gflops_per_s']:.0f} GFLOP/s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "planner": str(PAPER_PLANNER.relative_to(ROOT)), "threads": args.threads, "device": "cpu",
        "machine": platform.machine(), "rows": rows, "full_encoder": encoder_row,
    }, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
