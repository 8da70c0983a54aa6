"""What changes in the image while the arm holds still at the goal? Meta-World's
Sawyer under zero actions, seen through a world model's encoder.

    uv run python benchmarks/hold_drift.py                       # the default model, ~1 min
    uv run python benchmarks/hold_drift.py --checkpoint runs/x/checkpoint --task reach

Meta-World moves the arm through a mocap body welded to the hand; the 7 joints are
otherwise free. With the xyz action at 0 the hand moves little (it creeps ~2 cm in 60
steps), but the arm keeps moving in its null space, so the frame keeps changing. A
goal-image cost sees that as distance to the goal frame that no hand motion removes.

For each seed: the noise-free expert runs to the protocol's goal frame (success plus
``SETTLE_STEPS``, as ``make_goal_images`` does), then the action is 0 (gripper 0, the
reach expert's) for ``--steps`` steps. Printed every ``--every`` steps, as the median
over seeds: how far the hand moved, the largest joint excursion, the share of pixels
that changed, and the encoder's L1 latent distance to the goal frame (the planner's
energy unit).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from envs.experts import ScriptedExpert
from envs.goals import SETTLE_STEPS, make_goal_images
from envs.metaworld_goal import TASKS, MetaWorldGoalEnv
from jepa_robot.world_model import WorldModel

ARM_JOINTS = 7
"""qpos[:7] are the Sawyer's arm joints (then the two fingers, then the objects)."""


def main(argv: list[str] | None = None) -> np.ndarray:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--task", default="reach", choices=sorted(TASKS))
    parser.add_argument("--seeds", type=int, default=10, help="protocol seeds 100000..")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--every", type=int, default=10)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    world_model = WorldModel.load(args.checkpoint)
    camera = world_model.camera
    env = MetaWorldGoalEnv(args.task, image_size=world_model.image_shape[0], cameras=(camera,))
    rows: list[list[tuple[float, float, float, float]]] = []
    for seed in range(100000, 100000 + args.seeds):
        # make_goal_images gives the protocol's goal frame and how many expert steps reach
        # it; replaying those (deterministic) leaves the sim in that state, to hold from.
        goal, _, _ = make_goal_images(env, seed)
        expert = ScriptedExpert(args.task, seed=seed)
        for _ in range(goal.expert_steps + SETTLE_STEPS):
            observation, *_ = env.step(expert.expert_action(env.privileged_obs))
        goal_frame = observation["images"][camera]
        np.testing.assert_array_equal(goal_frame, goal.goal[camera],
                                      err_msg=f"seed {seed}: the replay missed the goal frame")
        goal_latent = world_model.encode(goal_frame[None])[0]
        goal_hand, goal_joints = env.state()[:3].copy(), env.get_sim_state()[0][:ARM_JOINTS].copy()
        row = []
        for hold in range(1, args.steps + 1):
            observation, *_ = env.step(np.zeros(4, dtype=np.float32))
            if hold % args.every:
                continue
            frame = observation["images"][camera]
            latent = world_model.encode(frame[None])[0]
            changed = (np.abs(frame.astype(int) - goal_frame.astype(int)).sum(-1) > 30).mean()
            row.append((
                float(np.linalg.norm(env.state()[:3] - goal_hand) * 100),
                float(np.abs(env.get_sim_state()[0][:ARM_JOINTS] - goal_joints).max()),
                float(changed * 100),
                float((latent - goal_latent).abs().mean()),
            ))
        rows.append(row)
    env.close()
    # [steps // every, 4]: hand moved (cm), joint excursion (rad), pixels changed (%), latent L1
    table = np.median(np.asarray(rows), axis=0)
    print(f"{args.task}, {args.seeds} seeds, {args.checkpoint} encoder ({camera} camera); "
          "medians over seeds")
    print("| steps held | hand moved, cm | largest joint excursion, rad | pixels changed, % "
          "| L1 latent distance to the goal frame |")
    print("|---|---|---|---|---|")
    for index, (hand, joint, pixels, latent) in enumerate(table):
        steps = (index + 1) * args.every
        print(f"| {steps} | {hand:.2f} | {joint:.2f} | {pixels:.1f} | {latent:.3f} |")
    return table


if __name__ == "__main__":
    main()
