"""Reach toward goal frames centred on the target: how much of the reach gap comes from
where the protocol's goal frames sit? A diagnostic beside the protocol, not the protocol.

    uv run python benchmarks/reach_tcp_goals.py                 # default model, ~5 min
    uv run python benchmarks/reach_tcp_goals.py --checkpoint runs/x/checkpoint \
        --episodes 50 --workers 2 --out benchmarks/results/reach_tcp_goals.json

The protocol's reach goal frame comes from Meta-World's expert, which steers the hand to
the target; success is judged at the fingers' centre (``tcp_center``), ~4.4 cm below
the hand, so the frame sits 4.2-4.9 cm from the target, against a 5 cm radius
(``goal_image_ceiling.py``). Here each seed's goal frame comes instead from a servo
that steers the fingers' centre onto the target and holds it there (privileged, like
the expert: it reads ``tcp_center`` and the target). Then the agent runs the protocol's
episode from ``reset(seed)`` with ``planner=default_model`` (or ``--planner``):
100 steps, success by the env's flag at the last step, the goal marker hidden.
"""
from __future__ import annotations

import argparse
import multiprocessing
import time
from pathlib import Path

import numpy as np
import torch

from envs.goals import SETTLE_STEPS
from envs.metaworld_goal import MetaWorldGoalEnv
from jepa_robot.config import EvalConfig, compose
from jepa_robot.evaluation import ModelRunner, success_summary, write_json_atomic

SERVO_GAIN = 5.0
"""Action per metre of error, clipped to [-1, 1]; SawyerReachV3Policy's ``p``."""
SERVO_STEPS = 150


def tcp_centred_goal(env: MetaWorldGoalEnv, seed: int, camera: str) -> tuple[np.ndarray, float]:
    """A goal frame with the fingers' centre on the target; (frame, its distance to the
    target in metres). Leaves ``env`` reset to ``seed``."""
    observation, _ = env.reset(seed=seed)
    sim = env._sim  # the Meta-World env: tcp_center and the target are privileged
    for _ in range(SERVO_STEPS + SETTLE_STEPS):
        move = np.clip(SERVO_GAIN * (sim._target_pos - sim.tcp_center), -1.0, 1.0)
        observation, _, _, _, info = env.step(np.append(move, 0.0).astype(np.float32))
    frame, distance = observation["images"][camera], float(info["goal_distance_m"])
    env.reset(seed=seed)
    return frame, distance


_runner: ModelRunner | None = None


def _init_worker(checkpoint: str, planner: str) -> None:
    global _runner
    torch.set_num_threads(1)
    config = compose("eval", [f"checkpoint={checkpoint}", f"planner={planner}"], EvalConfig)
    _runner = ModelRunner(config.checkpoint, config.planner, config.agent, False, None)


def _run_seed(seed: int) -> dict:
    env, camera = _runner.env("reach"), _runner.world_model.camera
    goal, goal_distance = tcp_centred_goal(env, seed, camera)
    record, _ = _runner.run("reach", seed, goals=[goal])
    return {"seed": seed, "success": record["success"], "goal_frame_distance_m": goal_distance,
            "final_goal_distance_m": record["final_goal_distance_m"]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--planner", default="default_model", help="a configs/planner name")
    parser.add_argument("--episodes", type=int, default=50, help="protocol seeds 100000..")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", help="write the episodes and the summary as JSON here")
    args = parser.parse_args(argv)
    seeds = list(range(100000, 100000 + args.episodes))
    started = time.perf_counter()
    if args.workers == 1:
        _init_worker(args.checkpoint, args.planner)
        episodes = [_run_seed(seed) for seed in seeds]
    else:
        context = multiprocessing.get_context("spawn")
        with context.Pool(args.workers, initializer=_init_worker,
                          initargs=(args.checkpoint, args.planner)) as pool:
            episodes = pool.map(_run_seed, seeds)
    summary = success_summary([e["success"] for e in episodes])
    goal_cm = np.array([e["goal_frame_distance_m"] for e in episodes]) * 100
    end_cm = np.array([e["final_goal_distance_m"] for e in episodes]) * 100
    low, high = summary["wilson_95"]
    print(f"reach, TCP-centred goal frames ({args.checkpoint}, planner={args.planner}): "
          f"{summary['successes']}/{summary['n']} = {summary['success_rate']:.0%} "
          f"[{low:.0%}, {high:.0%}]; goal frames {np.median(goal_cm):.1f} cm from the target "
          f"(median), episodes end {np.median(end_cm):.1f} cm from it (median); "
          f"{time.perf_counter() - started:.0f} s")
    result = {"checkpoint": args.checkpoint, "planner": args.planner, **summary,
              "episodes": episodes}
    if args.out:
        write_json_atomic(Path(args.out), result)
    return result


if __name__ == "__main__":
    main()
