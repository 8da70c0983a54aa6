"""Does latent distance to a goal frame track the true distance? A check of an encoder
as a planning cost, before any predictor is trained.

    uv run python benchmarks/latent_cost_check.py --dataset data/mw-all --cache data/latents/<key>
    uv run python benchmarks/latent_cost_check.py --dataset data/mw-reach --blocks 1 \
        --encoder jepa_robot/models/default/encoder --pool-grid 8   # encodes (and caches) first

For every ``--every``-th episode: the L1 distance of each frame's cached latent to the
episode's last frame, against the hand's distance to its final position (the first
three state dims); prints the mean Spearman correlation per block of episodes (in
data/mw-all: reach, push, pick-place). 1.0 means the latent cost ranks frames exactly
as the hand distance does.

Then, for the reach block (the first), the cost's resolution near the goal: over the
frames whose hand is within ``--near`` metres of the episode's final position, a
least-squares fit of the latent distance on the per-axis hand offsets |dx|, |dy|, |dz|
and the gripper change. The slopes say how much latent distance a centimetre buys; the
intercept is what remains at zero offset (everything else that differs from the goal
frame: arm pose, codec noise, the object).
"""
from __future__ import annotations

import argparse

import numpy as np
from scipy.stats import spearmanr

from jepa_robot.data import open_dataset
from jepa_robot.encoders import load_encoder
from jepa_robot.latent_cache import build_latent_cache, load_latent_cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--cache", help="a complete latent cache directory of that dataset")
    source.add_argument("--encoder", help="a local encoder directory: encode the dataset (cached)")
    parser.add_argument("--pool-grid", type=int, default=4, help="with --encoder: tokens per side")
    parser.add_argument("--resize-ratio", type=float, default=1.0,
                        help="with --encoder: as encoder.resize_ratio (the default model's: 1.0)")
    parser.add_argument("--cache-root", default="data/latents",
                        help="with --encoder: where caches live")
    parser.add_argument("--every", type=int, default=7)
    parser.add_argument("--blocks", type=int, default=3, help="equal blocks of episodes to report apart")
    parser.add_argument("--near", type=float, default=0.12, help="metres: the near-goal fit's radius")
    args = parser.parse_args()
    dataset, spec = open_dataset(args.dataset)
    columns = dataset.hf_dataset.with_format("numpy")
    state = np.asarray(columns["observation.state"], dtype=np.float32)
    episode = np.asarray(columns["episode_index"])
    if args.cache:
        latents = load_latent_cache(args.cache).latents
    else:  # the same cache `jepa-robot train` builds and reuses for this encoder and grid
        encoder = load_encoder(args.encoder, device="cpu", pool_grid=args.pool_grid,
                               resize_ratio=args.resize_ratio)
        latents = build_latent_cache(dataset, spec, encoder, args.cache_root).latents
    blocks = np.array_split(np.unique(episode), args.blocks)
    for block in blocks:
        rhos = []
        for e in block[:: args.every]:
            d_latent, offsets = distances_to_last_frame(np.nonzero(episode == e)[0], state, latents)
            rhos.append(spearmanr(d_latent, np.linalg.norm(offsets[:, :3], axis=1)).statistic)
        print(f"episodes {block[0]}-{block[-1]}: Spearman {np.nanmean(rhos):.2f} over {len(rhos)} episodes")
    near_goal_fit(blocks[0], episode, state, latents, args.near)


def distances_to_last_frame(idx, state, latents):
    """L1 latent distance of each frame of one episode (rows ``idx``) to its last frame,
    and the absolute state offsets |dx|, |dy|, |dz|, |d gripper| from the last frame."""
    lat = np.asarray(latents[idx], dtype=np.float32)
    return np.abs(lat - lat[-1]).mean(axis=(1, 2)), np.abs(state[idx] - state[idx[-1]])


def near_goal_fit(block, episode, state, latents, radius: float) -> None:
    rows = np.concatenate([np.column_stack(distances_to_last_frame(np.nonzero(episode == e)[0], state, latents))
                           for e in block])
    near = np.linalg.norm(rows[:, 1:4], axis=1) < radius
    design = np.column_stack([rows[near, 1:], np.ones(near.sum())])
    coef, *_ = np.linalg.lstsq(design, rows[near, 0], rcond=None)
    print(f"episodes {block[0]}-{block[-1]}, {near.sum()} frames within {100 * radius:.0f} cm of the "
          f"final hand position: latent L1 = {coef[0]:.3f}|dx| + {coef[1]:.3f}|dy| + {coef[2]:.3f}|dz| "
          f"(per metre) + {coef[3]:.3f}|d gripper| + {coef[4]:.3f}")
    print(f"  so 5 cm along x / y / z adds {0.05 * coef[0]:.3f} / {0.05 * coef[1]:.3f} / "
          f"{0.05 * coef[2]:.3f} to the {coef[4]:.3f} left at zero offset")


if __name__ == "__main__":
    main()
