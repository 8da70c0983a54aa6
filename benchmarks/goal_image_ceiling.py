"""How closely must a planner match the goal image for the protocol to score a success?

    uv run python benchmarks/goal_image_ceiling.py              # ~2 min on one core
    uv run python benchmarks/goal_image_ceiling.py --out benchmarks/results/goal_image_ceiling.json

The protocol's goal image is the task-aimed scripted expert's success frame closest to
the target (envs/goals.py, docs/protocol.md). A goal-image planner can at best reproduce
that frame, so its success is bounded by where that frame sits:

1. For every task, on the protocol's seeds: the goal frame's own distance to the target
   (the env's success distance, ``goal_distance_m``) against the task's success radius.
   (The first protocol took the frame a few steps after Meta-World's own expert first
   succeeded; that expert steers the *hand* to the target while reach-v3 judges the
   gripper's centre, ~4.4 cm below it, so reach's frames sat 4.2-4.9 cm from the target,
   just inside the 5 cm radius. This script measured that, and why it mattered: item 2.)
2. For reach: a privileged servo (it reads the hand position, which no planner here
   does) drives the hand to the goal frame's hand position plus an offset of ``r`` cm in
   a random direction, for the protocol's 100-step budget; success is the env's flag at
   the last step, as in ``jepa-robot eval``. The success rate per ``r`` is what a planner
   that ends ``r`` cm from the goal image's hand position can expect. Compare it with
   ``final_hand_to_goal_frame_m`` in an eval report.

3. With ``--checkpoint``: the same servo aimed at where the checkpoint's state readout
   puts the hand in the goal image (rendered through the checkpoint's camera). That is
   the best a planner whose goal is that readout can do, however well it plans: its
   success rate bounds reach for the readout energy and ``planner.arm_state``.
4. With ``--checkpoint`` and ``--correct-bias ALPHA``: that servo, but aimed at the
   readout's goal hand minus the readout's own bias, estimated on the frames the arm
   sees as it goes (the readout of each frame minus the measured hand, an exponential
   average with weight ALPHA). It uses only what an agent has (images and the measured
   proprio state), and asks whether a better goal hand is worth more successes.

Every servo also records how far past the goal frame's hand, towards the target, the
hand ended (``toward_target_cm_median``, over won and lost episodes): with goal frames at
the radius's edge that one component decided most episodes.

Camera-less envs for the servo (nothing is rendered; the bias-corrected one renders the
checkpoint's camera, ~2 min more for 50 seeds); its gain and the gripper command
(0) are those of Meta-World's reach expert.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from envs.goals import make_goal_images
from envs.metaworld_goal import EPISODE_BUDGET, TASKS, MetaWorldGoalEnv
from jepa_robot.evaluation import write_json_atomic

SUCCESS_RADIUS_M = {"reach": 0.05, "push": 0.05, "pick-place": 0.07}
"""Meta-World v3's success thresholds (sawyer_reach_v3: reach_dist <= 0.05; push:
TARGET_RADIUS = 0.05; pick-place: obj_to_target <= 0.07)."""
SERVO_GAIN = 5.0
"""Action per metre of hand error, clipped to [-1, 1]; SawyerReachV3Policy's ``p``."""


HandReader = Callable[[dict[str, np.ndarray]], np.ndarray]
"""A goal image per camera -> where a model reads the hand in it (metres)."""


def goal_frame(env: MetaWorldGoalEnv, seed: int, read_hand: HandReader | None = None
               ) -> tuple[np.ndarray, float, np.ndarray | None]:
    """The protocol's goal frame for ``seed`` (``make_goal_images``): the hand position
    there, the env's success distance there and, with ``read_hand`` (on an env that renders
    its camera), where it reads the hand in that frame."""
    goal, _, _ = make_goal_images(env, seed)
    read = None if read_hand is None else read_hand(goal.goal)
    return goal.goal_state[:3].copy(), float(goal.goal_distance_m), read


def servo_episode(env: MetaWorldGoalEnv, seed: int, target: np.ndarray,
                  read_hand: HandReader | None = None, alpha: float = 0.1) -> tuple[bool, np.ndarray]:
    """Drive the hand to ``target`` for the reach budget; (success at the last step,
    the final hand position).

    With ``read_hand`` (and an ``env`` that renders the camera it reads), aim at
    ``target - bias`` instead: ``bias`` is the exponential average, weight ``alpha``, of
    ``read_hand(frame) - measured hand`` over the frames seen so far."""
    observation, _ = env.reset(seed=seed)
    info: dict = {"success": False}
    bias = None
    for _ in range(EPISODE_BUDGET["reach"]):
        hand = observation["state"][:3].astype(np.float64)
        aim = target
        if read_hand is not None:
            seen = read_hand(observation["images"]) - hand
            bias = seen if bias is None else (1 - alpha) * bias + alpha * seen
            aim = target - bias
        move = np.clip(SERVO_GAIN * (aim - hand), -1.0, 1.0)
        observation, _, _, _, info = env.step(np.append(move, 0.0).astype(np.float32))
    return bool(info["success"]), observation["state"][:3].astype(np.float64)


def toward_target_cm(env: MetaWorldGoalEnv, goal_hand: np.ndarray, final_hand: np.ndarray) -> float:
    """How far past the goal frame's hand, towards the target, the hand ended (cm; negative:
    short of it). Reads the target of the episode ``env`` last ran (privileged)."""
    direction = np.asarray(env._sim._target_pos, dtype=np.float64) - goal_hand
    return float((final_hand - goal_hand) @ direction / np.linalg.norm(direction) * 100)


def split_by_outcome(values: list[float], outcomes: list[bool]) -> dict[str, float | None]:
    """Median of ``values`` over the won and over the lost episodes (None where there are none)."""
    values_, won = np.asarray(values), np.asarray(outcomes, dtype=bool)
    return {key: (float(np.median(values_[mask])) if mask.any() else None)
            for key, mask in (("won", won), ("lost", ~won))}


def describe_toward(split: dict[str, float | None]) -> str:
    """``split_by_outcome``'s medians as one line of text, in cm."""
    return ", ".join(f"{key} {'-' if value is None else f'{value:+.2f}'}" for key, value in split.items())


def readout_hand_reader(checkpoint: str) -> tuple[MetaWorldGoalEnv, HandReader]:
    """A reach env that renders ``checkpoint``'s camera, and a reader that puts the hand
    where the checkpoint's state readout does."""
    import torch

    from jepa_robot.world_model import WorldModel

    world_model = WorldModel.load(checkpoint)
    readout = world_model.require_readout()
    env = MetaWorldGoalEnv("reach", image_size=world_model.image_shape[0],
                           cameras=(world_model.camera,))

    def read_hand(images: dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            latent = world_model.encode(images[world_model.camera][None])
            return readout(latent)[0, :3].cpu().numpy().astype(np.float64)

    return env, read_hand


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=50, help="protocol seeds 100000..")
    parser.add_argument("--seed-start", type=int, default=100000)
    parser.add_argument("--offsets-cm", type=float, nargs="+", default=[0, 0.5, 1, 1.5, 2, 3, 4])
    parser.add_argument("--directions", type=int, default=2,
                        help="random directions per seed and offset")
    parser.add_argument("--checkpoint", help="also servo to this checkpoint's readout of the "
                        "goal image (e.g. default)")
    parser.add_argument("--correct-bias", type=float, metavar="ALPHA",
                        help="with --checkpoint: also servo with the readout's bias removed "
                        "(an exponential average of its error on the frames seen, weight ALPHA)")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args(argv)
    seeds = range(args.seed_start, args.seed_start + args.episodes)
    started = time.perf_counter()
    result: dict = {"seeds": [seeds[0], seeds[-1]], "goal_frame": {}, "reach_servo": []}

    if args.correct_bias is not None and not (args.checkpoint and 0 < args.correct_bias <= 1):
        parser.error("--correct-bias needs --checkpoint and a weight in (0, 1]")
    print("| task | success radius, cm "
          "| goal frame's distance to target, cm (median / min / max) |")
    print("|---|---|---|")
    reach_goals, render_env, reach_reader = {}, None, None
    for task in TASKS:
        env, read_hand = MetaWorldGoalEnv(task, cameras=()), None
        if task == "reach" and args.checkpoint:  # render the goal frames for the readout
            env, read_hand = readout_hand_reader(args.checkpoint)
        frames = {seed: goal_frame(env, seed, read_hand)
                  for seed in tqdm(seeds, desc=f"{task} goals", leave=False)}
        if task == "reach":
            reach_goals = frames
        if read_hand is not None and args.correct_bias is not None:
            render_env, reach_reader = env, read_hand  # kept for the bias-corrected servo
        else:
            env.close()
        distances = np.array([distance for _, distance, _ in frames.values()]) * 100
        result["goal_frame"][task] = {
            "success_radius_cm": SUCCESS_RADIUS_M[task] * 100,
            "distance_cm": {"median": float(np.median(distances)),
                            "min": float(distances.min()), "max": float(distances.max())},
        }
        print(f"| {task} | {SUCCESS_RADIUS_M[task] * 100:.0f} | {np.median(distances):.1f} / "
              f"{distances.min():.1f} / {distances.max():.1f} |")

    print("\n| reach: servo ends this far from the goal frame's hand, cm (target / reached, "
          "median) | success | N |")
    print("|---|---|---|")
    env = MetaWorldGoalEnv("reach", cameras=())
    rng = np.random.default_rng(0)
    for offset in args.offsets_cm:
        outcomes, reached, toward = [], [], []
        for seed in tqdm(seeds, desc=f"servo {offset} cm", leave=False):
            hand, _, _ = reach_goals[seed]
            for _ in range(args.directions if offset > 0 else 1):
                direction = rng.normal(size=3)
                target = hand + offset / 100 * direction / np.linalg.norm(direction)
                success, final_hand = servo_episode(env, seed, target)
                outcomes.append(success)
                reached.append(np.linalg.norm(final_hand - hand) * 100)
                toward.append(toward_target_cm(env, hand, final_hand))
        rate = float(np.mean(outcomes))
        result["reach_servo"].append({"offset_cm": offset, "success_rate": rate, "n": len(outcomes),
                                      "reached_offset_cm_median": float(np.median(reached)),
                                      "toward_target_cm_median": split_by_outcome(toward, outcomes)})
        print(f"| {offset:g} / {np.median(reached):.1f} | {rate:.0%} | {len(outcomes)} |")
    if args.checkpoint:
        outcomes, reached, errors, toward, ends = [], [], [], [], []
        for seed in tqdm(seeds, desc="servo to the readout", leave=False):
            hand, _, read = reach_goals[seed]
            success, final_hand = servo_episode(env, seed, read)
            outcomes.append(success)
            reached.append(np.linalg.norm(final_hand - hand) * 100)
            toward.append(toward_target_cm(env, hand, final_hand))
            errors.append((read - hand) * 100)
            ends.append((final_hand - hand) * 100)
        errors, ends = np.array(errors), np.array(ends)
        rate = float(np.mean(outcomes))
        result["reach_servo_to_readout"] = {
            "checkpoint": args.checkpoint, "success_rate": rate, "n": len(outcomes),
            "reached_offset_cm_median": float(np.median(reached)),
            "end_error_cm": {"mean": ends.mean(0).round(3).tolist(), "std": ends.std(0).round(3).tolist()},
            "toward_target_cm_median": split_by_outcome(toward, outcomes),
            "readout_error_cm": {"mean": errors.mean(0).round(3).tolist(),
                                 "std": errors.std(0).round(3).tolist(),
                                 "norm_median": float(np.median(np.linalg.norm(errors, axis=1)))},
        }
        print(f"| readout of the goal image ({args.checkpoint}) / {np.median(reached):.1f} "
              f"| {rate:.0%} | {len(outcomes)} |")
        print(f"readout's hand error on the goal images, cm (x / y / z): mean "
              f"{np.round(errors.mean(0), 2).tolist()}, std {np.round(errors.std(0), 2).tolist()}; "
              "past the goal frame's hand towards the target, cm (median): "
              + describe_toward(result["reach_servo_to_readout"]["toward_target_cm_median"]))
    if render_env is not None:
        outcomes, ends, toward = [], [], []
        for seed in tqdm(seeds, desc="bias-corrected servo", leave=False):
            hand, _, read = reach_goals[seed]
            success, final_hand = servo_episode(render_env, seed, read, reach_reader, args.correct_bias)
            outcomes.append(success)
            ends.append((final_hand - hand) * 100)
            toward.append(toward_target_cm(render_env, hand, final_hand))
        render_env.close()
        ends = np.array(ends)
        rate = float(np.mean(outcomes))
        result["reach_servo_bias_corrected"] = {
            "alpha": args.correct_bias, "success_rate": rate, "n": len(outcomes),
            "end_error_cm": {"mean": ends.mean(0).round(3).tolist(), "std": ends.std(0).round(3).tolist(),
                             "norm_median": float(np.median(np.linalg.norm(ends, axis=1)))},
            "toward_target_cm_median": split_by_outcome(toward, outcomes),
        }
        print(f"bias-corrected (alpha {args.correct_bias:g}): {rate:.0%} of {len(outcomes)}; ends "
              f"{np.median(np.linalg.norm(ends, axis=1)):.2f} cm from the goal frame's hand (median), "
              f"mean {np.round(ends.mean(0), 2).tolist()}, std {np.round(ends.std(0), 2).tolist()} cm; "
              "past it towards the target, cm (median): "
              + describe_toward(result["reach_servo_bias_corrected"]["toward_target_cm_median"]))
    env.close()
    result["seconds"] = time.perf_counter() - started
    print(f"\n{result['seconds']:.0f} s")
    if args.out:
        write_json_atomic(Path(args.out), result)
    return result


if __name__ == "__main__":
    main()
