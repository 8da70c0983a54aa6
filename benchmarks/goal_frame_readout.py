"""How well does a checkpoint's readout read the protocol's goal and sub-goal frames?

    uv run python benchmarks/goal_frame_readout.py --checkpoint default
    uv run python benchmarks/goal_frame_readout.py --checkpoint default --tasks pick-place \
        --out benchmarks/results/goal_frame_readout.json          # ~1 min per task, 50 seeds

The readout energy compares the readout of predicted latents with the readout of the
goal image, so whatever the readout gets wrong about a goal frame, the planner aims for.
For each protocol seed this builds the goal frames exactly as ``jepa-robot eval`` does
(``envs.goals.make_goal_images``: sub-goals at the expert's phase changes, then the final
goal), encodes them with the checkpoint's encoder, reads them with its readout and
compares with the simulator's state at those frames (``subgoal_truth`` / ``goal_truth``,
privileged and used for nothing else). Per task and phase (``grasp``, ``lift``,
``final``) it reports the median absolute error per readout column and how many frames
are misread grossly: the object more than ``--object-cm`` off, or the gripper opening
more than ``--gripper`` off.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from envs.goals import make_goal_images
from envs.metaworld_goal import STATE_AND_OBJECT_NAMES as COLUMNS
from envs.metaworld_goal import MetaWorldGoalEnv
from jepa_robot.evaluation import write_json_atomic
from jepa_robot.world_model import WorldModel


def read_goal_frames(world_model: WorldModel, env: MetaWorldGoalEnv, seed: int
                     ) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(phase, truth [7], read [7])`` for every goal frame of ``seed``, sub-goals first."""
    goal, _, _ = make_goal_images(env, seed)
    camera = world_model.camera
    frames = [g[camera] for g in goal.subgoals] + [goal.goal[camera]]
    with torch.no_grad():
        read = world_model.readout(world_model.encode(np.stack(frames))).cpu().numpy()
    truths = [*goal.subgoal_truth, goal.goal_truth]
    phases = [*goal.subgoal_phases, "final"]
    return list(zip(phases, truths, read, strict=True))


def summarise_phase(truth: np.ndarray, read: np.ndarray, object_cm: float, gripper: float) -> dict:
    """Median absolute error per column (metres; the gripper in its 0-1 units) and the
    number of gross misreads, for ``truth`` and ``read`` of shape [frames, 7]."""
    error = np.abs(read - truth)
    object_error = np.linalg.norm(read[:, 4:7] - truth[:, 4:7], axis=1)
    return {
        "frames": len(truth),
        "median_abs_error": dict(zip(COLUMNS, np.round(np.median(error, 0), 5).tolist(), strict=True)),
        "object_error_m": {"median": round(float(np.median(object_error)), 5),
                           "max": round(float(object_error.max()), 5)},
        "object_misread": int((object_error > object_cm / 100).sum()),
        "gripper_misread": int((error[:, 3] > gripper).sum()),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--tasks", nargs="+", default=["pick-place", "push"])
    parser.add_argument("--episodes", type=int, default=50, help="protocol seeds 100000..")
    parser.add_argument("--seed-start", type=int, default=100000)
    parser.add_argument("--object-cm", type=float, default=2.0, help="a gross object misread")
    parser.add_argument("--gripper", type=float, default=0.2, help="a gross gripper misread")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    world_model = WorldModel.load(args.checkpoint)
    readout = world_model.require_readout()
    if list(readout.config.state_names) != COLUMNS:
        raise SystemExit(f"the readout predicts {readout.config.state_names}; this check needs "
                         f"{COLUMNS} (a readout fit on a simulated recording)")
    report = {"checkpoint": str(args.checkpoint),
              "seeds": [args.seed_start, args.seed_start + args.episodes - 1],
              "object_cm": args.object_cm, "gripper": args.gripper, "tasks": {}}
    print("| task | goal frame | frames | median error, cm: hand x / y / z, object x / y / z "
          "| gripper (median) | object > 2 cm off | gripper > 0.2 off |")
    print("|---|---|---|---|---|---|---|")
    for task in args.tasks:
        env = MetaWorldGoalEnv(task, image_size=world_model.image_shape[0],
                               cameras=(world_model.camera,))
        rows: dict[str, list] = {}
        for seed in tqdm(range(args.seed_start, args.seed_start + args.episodes), desc=task,
                         unit="seed"):
            for phase, truth, read in read_goal_frames(world_model, env, seed):
                rows.setdefault(phase, []).append((truth, read))
        env.close()
        report["tasks"][task] = {}
        for phase, pairs in rows.items():
            truth, read = (np.stack(x) for x in zip(*pairs, strict=True))
            entry = summarise_phase(truth, read, args.object_cm, args.gripper)
            report["tasks"][task][phase] = entry
            med = entry["median_abs_error"]
            cm = " / ".join(f"{100 * med[c]:.2f}" for c in COLUMNS if c != "gripper")
            print(f"| {task} | {phase} | {entry['frames']} | {cm} | {med['gripper']:.3f} "
                  f"| {entry['object_misread']} | {entry['gripper_misread']} |")
    report["seconds"] = round(time.perf_counter() - started, 1)
    if args.out:
        write_json_atomic(args.out, report)
    return report


if __name__ == "__main__":
    main()
