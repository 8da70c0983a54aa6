"""Env steps per second with rendering, and seconds to record episodes.

    uv run python benchmarks/env_speed.py                 # steps/s on one core, all tasks
    uv run python benchmarks/env_speed.py --record 100    # + record 100 episodes per task

Runs with one torch/OpenMP thread and pins the process to one CPU core, so the
steps/s figure is per core. Recording goes through ``jepa-robot collect``'s code path
(scripted expert with the default exploration, LeRobot dataset, H.264 videos) into a
temporary directory that is deleted afterwards. Prints a Markdown table and writes
JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def steps_per_second(task: str, image_size: int, steps: int) -> tuple[float, float]:
    """(env steps/s with rendering, milliseconds per rendered frame)."""
    from envs.metaworld.env import MetaWorldGoalEnv
    from envs.metaworld.experts import Exploration, ScriptedExpert

    env = MetaWorldGoalEnv(task, image_size=image_size)
    expert = ScriptedExpert(task, Exploration(noise_std=0.1), seed=0)
    env.reset(seed=0)
    env.images()  # create the renderer outside the timed loop
    done = 0
    start = time.perf_counter()
    while done < steps:
        env.reset(seed=done)
        for _ in range(env.step_budget):
            env.step(expert.act(env.privileged_obs))  # renders as part of the observation
            done += 1
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(200):
        env.images()
    render_ms = (time.perf_counter() - start) / 200 * 1000
    env.close()
    return done / seconds, render_ms


def record_seconds(task: str, episodes: int, image_size: int) -> dict:
    from jepa_robot.config import compose
    from jepa_robot.config.data import CollectConfig
    from jepa_robot.data.collect import collect

    with tempfile.TemporaryDirectory() as tmp:
        config = compose(
            "collect",
            [
                f"env=metaworld_{task.replace('-', '_')}",
                f"env.image_size={image_size}",
                f"episodes={episodes}",
                f"root={tmp}/ds",
                "preview_episodes=0",
                "progress=false",
            ],
            CollectConfig,
        )
        start = time.perf_counter()
        summary = collect(config)
        seconds = time.perf_counter() - start
        size_mb = sum(p.stat().st_size for p in Path(tmp, "ds").rglob("*") if p.is_file()) / 1e6
    return {
        "episodes": summary.episodes,
        "frames": summary.frames,
        "seconds": seconds,
        "successes": summary.successes,
        "interrupted": summary.interrupted,
        "dataset_mb": size_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["reach", "push", "pick-place"])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1000, help="timed env steps per task")
    parser.add_argument("--record", type=int, default=0, help="episodes to record per task (0: skip)")
    parser.add_argument("--out", default="benchmarks/results/env_speed.json")
    args = parser.parse_args()

    warnings.filterwarnings("ignore")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    import torch

    torch.set_num_threads(1)
    results = {"image_size": args.image_size, "cpu": os.cpu_count(), "tasks": {}}
    for task in args.tasks:
        steps_per_s, render_ms = steps_per_second(task, args.image_size, args.steps)
        row = {"steps_per_s": steps_per_s, "render_ms_per_frame": render_ms}
        if args.record:
            row["record"] = record_seconds(task, args.record, args.image_size)
        results["tasks"][task] = row
        print(task, json.dumps(row), flush=True)

    print(f"\n| task | env steps/s with {args.image_size} px rendering (1 core) | ms per rendered frame |"
          + (f" record {args.record} episodes (s) | frames | expert-noise successes | dataset MB |" if args.record else ""))
    print("|---|---|---|" + ("---|---|---|---|" if args.record else ""))
    for task, row in results["tasks"].items():
        line = f"| {task} | {row['steps_per_s']:.0f} | {row['render_ms_per_frame']:.1f} |"
        if args.record:
            rec = row["record"]
            line += f" {rec['seconds']:.0f} | {rec['frames']} | {rec['successes']}/{rec['episodes']} | {rec['dataset_mb']:.1f} |"
        print(line)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
