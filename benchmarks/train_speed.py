"""Training throughput from the latent cache vs encoding frames on the fly.

    uv run python benchmarks/train_speed.py --dataset data/mw-pick-place-40

Both runs train the same predictor on the same windows with the same encoder (the
tiny V-JEPA 2 configuration, randomly initialised unless --encoder names a directory);
the cache is built first and its build time is reported separately. Prints a
Markdown table and writes JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--encoder", default=None, help="encoder directory (default: a tiny random V-JEPA 2)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--predictor", default="tiny")
    parser.add_argument("--out", default="benchmarks/results/train_speed.json")
    args = parser.parse_args()

    import torch

    from jepa_robot.config import compose
    from jepa_robot.config.training import TrainConfig
    from jepa_robot.data.dataset import open_dataset
    from jepa_robot.data.latent_cache import build_latent_cache
    from jepa_robot.training.train import train
    from jepa_robot.world_model.encoders import load_encoder, save_tiny_random_encoder

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        encoder_dir = args.encoder or str(save_tiny_random_encoder(Path(tmp) / "encoder"))
        dataset, spec = open_dataset(args.dataset)
        encoder = load_encoder(encoder_dir, device="cpu", resize_ratio=1.0)
        start = time.perf_counter()
        build_latent_cache(dataset, spec, encoder, Path(tmp) / "cache", progress=False)
        cache_seconds = time.perf_counter() - start

        results = {"dataset": args.dataset, "frames": spec.frames, "cache_build_s": cache_seconds, "runs": {}}
        for use_cache in (True, False):
            config = compose(
                "train",
                [
                    f"dataset={args.dataset}", "encoder=local", f"encoder.name={encoder_dir}",
                    f"predictor={args.predictor}", f"steps={args.steps}", f"batch_size={args.batch_size}",
                    f"val_every={args.steps}", "val_batches=1", f"checkpoint_every={args.steps}",
                    f"out_dir={tmp}/run-{use_cache}", f"cache_dir={tmp}/cache", f"use_cache={str(use_cache).lower()}",
                    "progress=false", "device=cpu",
                ],
                TrainConfig,
            )
            result = train(config)
            results["runs"]["cache" if use_cache else "on_the_fly"] = {
                "windows_per_s": result.windows_per_second,
                "seconds": result.seconds,
                "steps": result.steps,
            }
            print(("cache" if use_cache else "on the fly"), json.dumps(results["runs"]), flush=True)

    cached, fly = results["runs"]["cache"], results["runs"]["on_the_fly"]
    print(f"\n{spec.frames} frames; cache built in {cache_seconds:.1f} s "
          f"({spec.frames / cache_seconds:.0f} frames/s)\n")
    print("| frames from | windows/s | s per step |")
    print("|---|---|---|")
    for name, run in (("latent cache", cached), ("decode + encode on the fly", fly)):
        print(f"| {name} | {run['windows_per_s']:.1f} | {run['seconds'] / run['steps']:.2f} |")
    print(f"\nspeed-up from the cache: {cached['windows_per_s'] / fly['windows_per_s']:.1f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
