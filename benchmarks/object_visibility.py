"""How many pixels of the object does each camera show? Segmentation renders of push and
pick-place episodes, per named camera view.

    uv run python benchmarks/object_visibility.py --checkpoint default \
        --out benchmarks/results/object_visibility.json      # ~4 min on one core

A world model can only plan with the object if its encoder sees it. For every task with
an object (push, pick-place), camera view (``envs.metaworld_goal.CAMERA_VIEWS``) and
protocol seed, two kinds of episode are rendered with MuJoCo's segmentation renderer at
``--size`` px, and the object geom's visible pixels are counted on every frame:

- ``expert``: the noise-free scripted expert, as in the recorded demonstrations; its
  last frame (after success) stands in for the goal frame.
- ``hand_to_goal``: the hand servoed straight to the goal frame's hand position,
  leaving the object where it started (what a planner does when it cannot see the
  object: ``benchmarks/README.md``, "The default model").

Reported per task, camera and episode kind: the median visible pixels, and the share of
frames where the object is hidden (0 pixels) or nearly so (fewer than ``--few`` pixels).

With ``--checkpoint``, the same frames from that model's camera are encoded and the
object is read off them with its state readout: the median error and ``hand_pull`` (the
least-squares slope of the error on the hand's offset from the object in the table
plane; 0: no lean toward the hand, 1: the object is read where the hand is), separately
for frames where the object shows at least ``--few`` pixels and where it shows fewer.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from envs.experts import ScriptedExpert
from envs.goals import make_goal_images
from envs.metaworld_goal import (
    CAMERA_VIEWS,
    EPISODE_BUDGET,
    TASKS_WITH_OBJECT,
    MetaWorldGoalEnv,
    _make_camera,
)
from jepa_robot.evaluation import write_json_atomic

OBJECT_BODY = "obj"
"""Meta-World v3's body of the puck (push) and the block (pick-place)."""
SERVO_GAIN = 5.0
"""Action per metre of hand error, clipped to [-1, 1] (Meta-World's reach expert's ``p``)."""


class ObjectPixels:
    """Counts the object's visible pixels in segmentation renders of ``env``'s scene."""

    def __init__(self, env: MetaWorldGoalEnv, size: int) -> None:
        # Imported here, after envs.metaworld_goal has chosen MuJoCo's headless GL (EGL).
        import mujoco

        self.geom_type = int(mujoco.mjtObj.mjOBJ_GEOM)
        model = env.unwrapped._sim.model
        body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, OBJECT_BODY)
        if body < 0:
            raise ValueError(f"{env.task}: the model has no body named {OBJECT_BODY!r}")
        self.geoms = np.flatnonzero(model.geom_bodyid == body)
        self.renderer = mujoco.Renderer(model, size, size)
        self.renderer.enable_segmentation_rendering()
        self.cameras = {name: _make_camera(view) for name, view in CAMERA_VIEWS.items()}
        self.option = mujoco.MjvOption()
        self.option.sitegroup[:] = 0  # as the env renders: sites hidden
        self.data = env.unwrapped._sim.data

    def count(self) -> dict[str, int]:
        counts = {}
        for name, camera in self.cameras.items():
            self.renderer.update_scene(self.data, camera=camera, scene_option=self.option)
            segmentation = self.renderer.render()
            is_geom = segmentation[..., 1] == self.geom_type
            counts[name] = int((is_geom & np.isin(segmentation[..., 0], self.geoms)).sum())
        return counts

    def close(self) -> None:
        self.renderer.close()


def frame_record(env: MetaWorldGoalEnv, pixels: ObjectPixels, camera: str | None) -> dict:
    """Object pixels per camera, the true hand and object, and (with ``camera``) the RGB frame."""
    record = {"pixels": pixels.count(), "hand": env.state()[:3].copy(),
              "object": env.object_position().copy()}
    if camera is not None:
        record["image"] = env.images()[camera]
    return record


def expert_episode(env: MetaWorldGoalEnv, pixels: ObjectPixels, task: str, seed: int,
                   camera: str | None = None) -> list[dict]:
    expert = ScriptedExpert(task, seed=seed)
    expert.exploration.noise_std = 0.0
    expert.exploration.perturb_prob = 0.0
    env.reset(seed=seed)
    frames = [frame_record(env, pixels, camera)]
    for _ in range(EPISODE_BUDGET[task]):
        env.step(expert.expert_action(env.privileged_obs))
        frames.append(frame_record(env, pixels, camera))
    return frames


def hand_to_goal_episode(env: MetaWorldGoalEnv, pixels: ObjectPixels, task: str, seed: int,
                         camera: str | None = None) -> list[dict]:
    goal, _, _ = make_goal_images(env, seed)  # leaves env reset to seed
    target = goal.goal_state[:3]
    frames = [frame_record(env, pixels, camera)]
    for _ in range(EPISODE_BUDGET[task]):
        move = np.clip(SERVO_GAIN * (target - env.state()[:3]), -1.0, 1.0)
        env.step(np.append(move, -1.0).astype(np.float32))  # gripper open
        frames.append(frame_record(env, pixels, camera))
    return frames


def readout_errors(world_model, frames: list[dict], few: int) -> dict:
    """The checkpoint's readout of the object on ``frames`` (its own camera's images):
    median error (cm) and pull toward the hand, where the object shows >= ``few`` pixels
    on that camera and where it shows fewer."""
    names = list(world_model.readout.config.state_names)
    columns = [names.index(n) for n in ("object_x", "object_y", "object_z")]
    with torch.no_grad():
        latents = world_model.encode(np.stack([f["image"] for f in frames]))
        read = world_model.readout(latents).numpy()[:, columns]
    truth = np.stack([f["object"] for f in frames])
    hand = np.stack([f["hand"] for f in frames])
    shown = np.array([f["pixels"][world_model.camera] for f in frames]) >= few
    error, offset = read - truth, (hand - truth)[:, :2]
    result = {}
    for label, chosen in (("visible", shown), ("hidden_or_few", ~shown)):
        if chosen.sum() < 10:
            continue
        e, o = error[chosen], offset[chosen]
        result[label] = {
            "frames": int(chosen.sum()),
            "median_error_cm": round(float(100 * np.median(np.linalg.norm(e, axis=1))), 2),
            "hand_pull": round(float((e[:, :2] * o).sum() / max((o * o).sum(), 1e-12)), 3),
        }
    return result


def summary(counts: np.ndarray, few: int) -> dict:
    return {"frames": len(counts), "median_px": float(np.median(counts)),
            "hidden": round(float((counts == 0).mean()), 3),
            "under_few": round(float((counts < few).mean()), 3)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=10, help="protocol seeds 100000..")
    parser.add_argument("--seed-start", type=int, default=100000)
    parser.add_argument("--tasks", nargs="+", choices=TASKS_WITH_OBJECT, default=list(TASKS_WITH_OBJECT))
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--few", type=int, default=4, help="'nearly hidden' below this many pixels")
    parser.add_argument("--checkpoint", help="also read the object off the frames with this "
                        "checkpoint's state readout (default: only count pixels)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    world_model = camera = None
    if args.checkpoint:
        from jepa_robot.world_model import WorldModel

        world_model = WorldModel.load(args.checkpoint)
        world_model.require_readout()
        camera = world_model.camera
        if args.size != world_model.image_shape[0]:
            raise SystemExit(f"--size {args.size}: {args.checkpoint} takes {world_model.image_shape[0]} px frames")
    started = time.perf_counter()
    seeds = range(args.seed_start, args.seed_start + args.episodes)
    report: dict = {"size": args.size, "seeds": [seeds[0], seeds[-1]], "few": args.few, "tasks": {}}
    print(f"| task | camera | episode kind | median object px (all frames) | hidden | < {args.few} px "
          "| median px, expert's last frame |\n|---|---|---|---|---|---|---|")
    for task in args.tasks:
        env = MetaWorldGoalEnv(task, image_size=args.size, cameras=(camera,) if camera else ())
        pixels = ObjectPixels(env, args.size)
        runs = {"expert": [], "hand_to_goal": []}
        try:
            for seed in tqdm(seeds, desc=task, unit="seed"):
                runs["expert"].append(expert_episode(env, pixels, task, seed, camera))
                runs["hand_to_goal"].append(hand_to_goal_episode(env, pixels, task, seed, camera))
        finally:  # free the GL context before MuJoCo's exit hook ends the EGL display
            pixels.close()
            env.close()
        entry = report["tasks"][task] = {}
        for view in CAMERA_VIEWS:
            entry[view] = {}
            for kind, episodes in runs.items():
                counts = np.array([f["pixels"][view] for episode in episodes for f in episode])
                entry[view][kind] = summary(counts, args.few)
            last = np.array([episode[-1]["pixels"][view] for episode in runs["expert"]])
            entry[view]["expert_last_frame_median_px"] = float(np.median(last))
            for kind in runs:
                s = entry[view][kind]
                print(f"| {task} | {view} | {kind} | {s['median_px']:g} | {100 * s['hidden']:.0f}% | "
                      f"{100 * s['under_few']:.0f}% | {entry[view]['expert_last_frame_median_px']:g} |")
        if world_model is not None:
            entry["readout"] = {kind: readout_errors(world_model, [f for episode in episodes for f in episode],
                                                     args.few)
                                for kind, episodes in runs.items()}
    if world_model is not None:
        print(f"\nThe readout of {args.checkpoint} ({camera} camera), object error where the object "
              f"shows >= {args.few} px / fewer:\n\n| task | episode kind | frames | median error, cm "
              "| hand_pull |\n|---|---|---|---|---|")
        for task, entry in report["tasks"].items():
            for kind, parts in entry["readout"].items():
                print(f"| {task} | {kind} | " + " | ".join(
                    "/".join(str(parts[p][k]) if p in parts else "-" for p in ("visible", "hidden_or_few"))
                    for k in ("frames", "median_error_cm", "hand_pull")) + " |")
    report["checkpoint"] = args.checkpoint
    report["seconds"] = time.perf_counter() - started
    if args.out:
        write_json_atomic(args.out, report)
    return report


if __name__ == "__main__":
    main()
