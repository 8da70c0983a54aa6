"""Does the predictor move the object? Roll the world model out with recorded actions and
read the hand and the object off the predicted latents with the checkpoint's readout.

    uv run python benchmarks/readout_rollout.py --checkpoint default --dataset data/mw-all \
        --out benchmarks/results/readout_rollout.json

For held-out episodes (``episode_index % holdout == 0``, the ones the readout was not fit
on), every ``--stride`` frames: encode the frame, roll the predictor ``--steps`` predictor
steps ahead with the actions that were actually taken, and compare the readout of each
predicted latent with the recorded state at that time. Two references per step: the
readout of the real future frame (the readout's own error) and "copy" (the start frame's
readout, as if nothing moved). Reported per readout column and separately for the start
frames where the object really moved more than ``--moving-cm`` over the horizon: if the
predicted object error there is no better than copy's, an object term in the energy
cannot steer the planner, whatever its weight.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from jepa_robot.data import episode_bounds, episode_frames, episode_vectors, open_dataset
from jepa_robot.evaluation import write_json_atomic
from jepa_robot.readout import readout_targets
from jepa_robot.world_model import Context, WorldModel


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--holdout", type=int, default=10)
    parser.add_argument("--steps", type=int, default=3, help="predictor steps ahead")
    parser.add_argument("--stride", type=int, default=5, help="frames between start frames")
    parser.add_argument("--moving-cm", type=float, default=1.0)
    parser.add_argument("--max-episodes", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    world_model = WorldModel.load(args.checkpoint)
    readout = world_model.require_readout()
    dataset, spec = open_dataset(args.dataset, image_key=world_model.image_key)
    keys, _, states = readout_targets(dataset)
    names = readout.config.state_names
    if states.shape[1] != readout.config.state_dim:
        raise SystemExit(f"{args.dataset}: columns {keys} give {states.shape[1]} values, the "
                         f"readout predicts {readout.config.state_dim} ({names})")
    actions = episode_vectors(dataset, spec.action_key)
    tasks = np.asarray(dataset.hf_dataset.with_format("numpy")["task_index"]).reshape(-1)
    object_dims = [i for i, name in enumerate(names) if name.startswith("object_")]
    skip, horizon = world_model.frameskip, args.steps
    episodes = [e for e in range(dataset.meta.total_episodes) if e % args.holdout == 0]
    episodes = episodes[: args.max_episodes]

    bounds = episode_bounds(dataset)
    rows = []  # per start frame: task, moved, errors [3 kinds, steps, dims]
    for episode in episodes:
        start, end = bounds[episode]
        frames = episode_frames(dataset, spec.image_key, episode).numpy()
        latents = world_model.encode(frames)
        with torch.no_grad():
            read = readout(latents).numpy()
        for t in range(0, end - start - horizon * skip, args.stride):
            future = [t + skip * (k + 1) for k in range(horizon)]
            taken = torch.from_numpy(actions[start + t: start + t + horizon * skip])
            context = Context(latents=latents[t:t + 1],
                              states=world_model.normalise_state(states[start + t, :world_model.state_dim][None])
                              if world_model.state_dim else None,
                              past_actions=latents.new_zeros(0, world_model.predictor.config.action_dim))
            planned = taken.reshape(1, horizon, skip * world_model.env_action_dim)
            with torch.no_grad():
                predicted = readout(world_model.rollout(context, planned, action_repeat=False))[0].numpy()
            truth = states[[start + f for f in future]]
            errors = np.stack([predicted - truth, read[future] - truth,
                               np.repeat(read[t][None], horizon, 0) - truth])
            moved = (np.linalg.norm(states[start + future[-1], object_dims] - states[start + t, object_dims])
                     if object_dims else 0.0)
            rows.append((int(tasks[start + t]), float(moved), errors))

    task_names = {int(i): name for i, name in zip(dataset.meta.tasks["task_index"], dataset.meta.tasks.index)}
    report = {"checkpoint": str(args.checkpoint), "dataset": args.dataset, "steps": horizon,
              "frameskip": skip, "holdout_episodes": len(episodes), "names": names, "tasks": {}}
    for task_index in sorted({r[0] for r in rows}):
        for subset, keep in (("all", lambda r: True), ("object_moving", lambda r: r[1] * 100 > args.moving_cm)):
            chosen = [r[2] for r in rows if r[0] == task_index and keep(r)]
            if not chosen:
                continue
            errors = np.stack(chosen)  # [starts, 3, steps, dims]
            rmse = np.sqrt((errors ** 2).mean(0))  # [3, steps, dims]
            entry = {kind: {f"step_{k + 1}": dict(zip(names, np.round(rmse[i, k], 5).tolist()))
                            for k in range(horizon)}
                     for i, kind in enumerate(("predicted", "readout_of_real_frame", "copy_start"))}
            entry["start_frames"] = len(chosen)
            report["tasks"].setdefault(task_names.get(task_index, str(task_index)), {})[subset] = entry
    report["seconds"] = time.perf_counter() - started
    for task, subsets in report["tasks"].items():
        for subset, entry in subsets.items():
            last = f"step_{horizon}"
            line = ", ".join(
                f"{name} {100 * entry['predicted'][last][name]:.2f}/{100 * entry['readout_of_real_frame'][last][name]:.2f}"
                f"/{100 * entry['copy_start'][last][name]:.2f}"
                for name in names if name != "gripper")
            print(f"{task} [{subset}, {entry['start_frames']} starts] RMSE cm at step {horizon}, "
                  f"predicted/real-frame/copy: {line}")
    if args.out:
        write_json_atomic(args.out, report)
    return report


if __name__ == "__main__":
    main()
