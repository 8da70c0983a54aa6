"""How well does the state readout read the hand and the object where a grasp is won or
missed? Held-out recorded frames, binned by where the hand is relative to the object.

    uv run python benchmarks/readout_near_object.py --checkpoint default --dataset data/mw-all \
        --out benchmarks/results/readout_near_object.json          # ~1 min with a warm cache

Frames of held-out episodes (``episode_index % holdout == 0``, those ``jepa-robot
fit-readout`` did not fit on) from tasks with an object (push, pick-place), encoded
through the latent cache and read with the checkpoint's readout. Binned by the hand's
distance from the object in the table plane (``--bins-cm``) and by height: ``low`` when
the hand is within ``--low-cm`` above the object (where the fingers can close on it or
knock it), ``high`` otherwise. Per bin: the number of frames, the median absolute error
of the hand and of the object per axis (cm), and the median signed error of the hand in
y (the axis the oblique camera sees in depth). A planner grasping the object needs the
hand read to well under the object's half-width exactly in the ``low`` bins near it; the
frame counts say how much of the training data is there at all.
"""
from __future__ import annotations

import argparse
import time
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch

from envs.metaworld_goal import STATE_AND_OBJECT_NAMES, TASKS_WITH_OBJECT
from jepa_robot.data import open_dataset
from jepa_robot.evaluation import write_json_atomic
from jepa_robot.latent_cache import build_latent_cache
from jepa_robot.readout import readout_targets
from jepa_robot.world_model import WorldModel

HAND, OBJECT = slice(0, 3), slice(4, 7)
"""Columns of the readout (hand xyz, gripper, object xyz)."""


def bin_errors(truth: np.ndarray, read: np.ndarray, bins_m: list[float], low_m: float,
               min_frames: int = 1) -> list[dict]:
    """Rows of per-bin errors for frames ``truth`` / ``read`` ``[N, 7]`` (metres)."""
    planar = np.linalg.norm(truth[:, 0:2] - truth[:, 4:6], axis=1)
    low = truth[:, 2] < truth[:, 6] + low_m
    hand_error, object_error = read[:, HAND] - truth[:, HAND], read[:, OBJECT] - truth[:, OBJECT]
    edges = [0.0, *bins_m, np.inf]
    rows = []
    for lower, upper in pairwise(edges):
        for height, is_low in (("low", True), ("high", False)):
            mask = (planar >= lower) & (planar < upper) & (low == is_low)
            if mask.sum() < min_frames:
                continue
            rows.append({
                "planar_cm": [round(lower * 100, 1), None if np.isinf(upper) else round(upper * 100, 1)],
                "height": height,
                "frames": int(mask.sum()),
                "hand_abs_error_cm": (np.median(np.abs(hand_error[mask]), axis=0) * 100).round(2).tolist(),
                "hand_y_error_cm": round(float(np.median(hand_error[mask, 1]) * 100), 2),
                "object_abs_error_cm": (np.median(np.abs(object_error[mask]), axis=0) * 100).round(2).tolist(),
            })
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--holdout", type=int, default=10)
    parser.add_argument("--bins-cm", type=float, nargs="+", default=[2.0, 5.0, 10.0])
    parser.add_argument("--low-cm", type=float, default=6.0)
    parser.add_argument("--cache-dir", default="data/latents")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if sorted(args.bins_cm) != args.bins_cm or args.bins_cm[0] <= 0:
        raise SystemExit(f"--bins-cm {args.bins_cm}: give increasing positive edges")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    world_model = WorldModel.load(args.checkpoint)
    readout = world_model.require_readout()
    if list(readout.config.state_names) != STATE_AND_OBJECT_NAMES:
        raise SystemExit(f"the readout predicts {readout.config.state_names}; this benchmark "
                         f"needs {STATE_AND_OBJECT_NAMES} (a simulated recording's hand, gripper, object)")
    dataset, spec = open_dataset(args.dataset, image_key=world_model.image_key)
    keys, names, states = readout_targets(dataset)
    if names != STATE_AND_OBJECT_NAMES:
        raise SystemExit(f"{args.dataset}: columns {keys} hold {names}, not {STATE_AND_OBJECT_NAMES}")
    columns = dataset.hf_dataset.with_format("numpy")
    episodes = np.asarray(columns["episode_index"]).reshape(-1)
    task_of = np.asarray(columns["task_index"]).reshape(-1)
    task_names = {int(index): str(name) for name, index in
                  zip(dataset.meta.tasks.index, dataset.meta.tasks["task_index"])}
    cache = build_latent_cache(dataset, spec, world_model.encoder, args.cache_dir, progress=True)

    report: dict = {"checkpoint": args.checkpoint, "dataset": str(spec.root), "holdout": args.holdout,
                    "low_cm": args.low_cm, "tasks": {}}
    for task_index, task in sorted(task_names.items()):
        if task not in TASKS_WITH_OBJECT:
            continue  # no object to grasp
        frames = np.flatnonzero((episodes % args.holdout == 0) & (task_of == task_index))
        if len(frames) == 0:
            continue
        with torch.no_grad():
            read = np.concatenate([
                world_model.readout(torch.from_numpy(np.asarray(cache.latents[frames[i:i + 4096]],
                                                                dtype=np.float32))).numpy()
                for i in range(0, len(frames), 4096)])
        rows = bin_errors(states[frames].astype(np.float64), read.astype(np.float64),
                          [b / 100 for b in args.bins_cm], args.low_cm / 100)
        report["tasks"][task] = {"frames": len(frames), "bins": rows}
        print(f"{task}: {len(frames)} held-out frames")
        for row in rows:
            upper = row["planar_cm"][1]
            print(f"  hand {row['planar_cm'][0]:g}-{'' if upper is None else f'{upper:g}'} cm from the "
                  f"object, {row['height']:4s}: {row['frames']:5d} frames; hand |err| "
                  f"{row['hand_abs_error_cm']} cm (y {row['hand_y_error_cm']:+.2f}), object |err| "
                  f"{row['object_abs_error_cm']} cm")
    report["seconds"] = round(time.perf_counter() - started, 1)
    if args.out:
        write_json_atomic(args.out, report)
        print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
