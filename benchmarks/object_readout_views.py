"""Does a wrist camera let a world model see the object? The object's readout error from the
oblique view alone against the oblique and wrist views together, where the oblique view
shows the object and where the arm hides it.

    uv run python benchmarks/object_readout_views.py --dataset data/mv-all \
        --encoder default --out benchmarks/results/object_readout_views.json

The dataset must hold both cameras (``collect env.cameras=[oblique,wrist]``). Its frames are
encoded once per camera with the encoder (``--encoder default``: the shipped model's, or an
encoder directory with ``--pool-grid``) into the latent cache, and one state readout
(``jepa_robot.world_model.readout``, as ``fit-readout`` fits it) is fit per camera set on the
same frames, every 10th episode held out. Both readouts are then scored on frames rendered
on tuning seeds (150000+) of push and pick-place, two kinds of episode:

- ``expert``: the noise-free task-aimed expert, as in clean demonstrations;
- ``hand_to_goal``: the hand servoed straight to the goal image's hand position with the
  gripper open, leaving the object where it started (what a planner that cannot see the
  object does, docs/default_model.md).

Per frame, MuJoCo's segmentation renderer counts the object's pixels in the oblique view;
frames with fewer than ``--few`` are "hidden". Reported per task, episode kind and
visibility: frames and the median object error (cm) of each readout.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from envs.metaworld.env import MetaWorldGoalEnv
from envs.metaworld.experts import ScriptedExpert
from envs.metaworld.goals import GoalNotReachedError, make_goal_images
from envs.metaworld.tasks import EPISODE_BUDGET
from jepa_robot.data.dataset import open_dataset
from jepa_robot.data.latent_cache import build_latent_caches, view_latents
from jepa_robot.files import write_json_atomic
from jepa_robot.world_model.encoders import load_encoder
from jepa_robot.world_model.model import WorldModel
from jepa_robot.world_model.readout import fit_readout, readout_targets

CAMERA_SETS = {"oblique": ("oblique",), "oblique+wrist": ("oblique", "wrist")}
OBJECT_BODY = "obj"
"""Meta-World v3's body of the puck (push) and the block (pick-place)."""
SERVO_GAIN = 5.0
"""Action per metre of hand error, clipped to [-1, 1]."""


def encoder_of(name: str, pool_grid: int):
    """A checkpoint's encoder (a built-in name or a directory with ``stats.json``), or an
    encoder directory pooled to ``pool_grid``."""
    if name == "default" or Path(name, "stats.json").is_file():
        return WorldModel.load(name, with_readout=False).encoder
    return load_encoder(name, pool_grid=pool_grid, resize_ratio=1.0)


class ObjectPixels:
    """The object's visible pixels in the oblique view (segmentation render)."""

    def __init__(self, env: MetaWorldGoalEnv) -> None:
        import mujoco

        model = env._sim.model
        body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, OBJECT_BODY)
        self.geoms = np.flatnonzero(model.geom_bodyid == body)
        self.geom_type = int(mujoco.mjtObj.mjOBJ_GEOM)
        self.renderer = mujoco.Renderer(model, env.image_size, env.image_size)
        self.renderer.enable_segmentation_rendering()
        self.option = mujoco.MjvOption()
        self.option.sitegroup[:] = 0  # as the env renders: sites hidden
        self.env = env

    def count(self) -> int:
        self.renderer.update_scene(self.env._sim.data, camera=self.env.camera_view("oblique"), scene_option=self.option)
        segmentation = self.renderer.render()
        return int(((segmentation[..., 1] == self.geom_type) & np.isin(segmentation[..., 0], self.geoms)).sum())


def episode(env: MetaWorldGoalEnv, pixels: ObjectPixels, task: str, seed: int, kind: str, every: int) -> list[dict]:
    goal, observation, _ = make_goal_images(env, seed)  # leaves env reset to seed
    expert = ScriptedExpert(task, seed=seed)
    frames = []
    for step in range(EPISODE_BUDGET[task] + 1):
        if step % every == 0:
            frames.append({"images": observation["images"], "object": env.object_position().copy(),
                           "pixels": pixels.count()})
        if kind == "expert":
            action = expert.aimed_action(env.privileged_obs, env.task_point())
        else:
            move = np.clip(SERVO_GAIN * (goal.goal_state[:3] - env.state()[:3]), -1.0, 1.0)
            action = np.append(move, -1.0).astype(np.float32)
        observation, *_ = env.step(action)
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="a dataset recorded with the oblique and wrist cameras")
    parser.add_argument("--encoder", default="default", help="'default' (the shipped model's) or an encoder directory")
    parser.add_argument("--pool-grid", type=int, default=4, help="token pooling of an encoder directory")
    parser.add_argument("--cache-dir", default="data/latents")
    parser.add_argument("--seeds", type=int, default=10, help="tuning seeds per task, from 150000")
    parser.add_argument("--every", type=int, default=2, help="score every n-th frame")
    parser.add_argument("--few", type=int, default=4, help="fewer object pixels than this: hidden")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/object_readout_views.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    encoder = encoder_of(args.encoder, args.pool_grid)
    keys = [f"observation.images.{c}" for c in CAMERA_SETS["oblique+wrist"]]
    dataset, spec = open_dataset(args.dataset, image_keys=keys, state_key=None)
    caches = dict(zip(CAMERA_SETS["oblique+wrist"], build_latent_caches(dataset, spec, encoder, args.cache_dir),
                      strict=True))
    _, names, states = readout_targets(dataset)
    episodes = np.asarray(dataset.hf_dataset.with_format("numpy")["episode_index"]).reshape(-1)
    columns = [names.index(n) for n in ("object_x", "object_y", "object_z")]
    readouts, held_out = {}, {}
    for label, cameras in CAMERA_SETS.items():
        readout, metrics = fit_readout(view_latents([caches[c] for c in cameras], slice(None)), states, episodes,
                                       epochs=args.epochs, state_names=names, progress=True)
        readouts[label] = readout.eval()
        held_out[label] = {n: round(100 * float(metrics["held_out_rmse"][names.index(n)]), 2)
                           for n in ("hand_x", "hand_y", "hand_z", "object_x", "object_y", "object_z")}
        print(f"{label}: held-out RMSE (cm) {held_out[label]}", flush=True)

    results = {}
    for task in ("push", "pick-place"):
        env = MetaWorldGoalEnv(task, image_size=spec.image_shape[0], cameras=CAMERA_SETS["oblique+wrist"])
        pixels = ObjectPixels(env)
        for kind in ("expert", "hand_to_goal"):
            frames = []
            for seed in range(150000, 150000 + args.seeds):
                try:
                    frames += episode(env, pixels, task, seed, kind, args.every)
                except GoalNotReachedError:
                    continue
            truth = np.stack([f["object"] for f in frames])
            shown = np.array([f["pixels"] for f in frames]) >= args.few
            latents = {c: torch.cat([encoder.encode(np.stack([f["images"][c] for f in frames[i: i + 256]]))
                                     for i in range(0, len(frames), 256)]) for c in CAMERA_SETS["oblique+wrist"]}
            row = {}
            for label, cameras in CAMERA_SETS.items():
                with torch.no_grad():
                    read = readouts[label](torch.cat([latents[c] for c in cameras], dim=1)).numpy()[:, columns]
                error = 100 * np.linalg.norm(read - truth, axis=1)
                row[label] = {visibility: {"frames": int(chosen.sum()),
                                           "median_error_cm": round(float(np.median(error[chosen])), 2)}
                              for visibility, chosen in (("visible", shown), ("hidden", ~shown)) if chosen.any()}
            results.setdefault(task, {})[kind] = row
        env.close()

    print("\n| task | episodes | oblique view | frames | object error, oblique (cm) | object error, oblique + wrist (cm) |")
    print("|---|---|---|---|---|---|")
    for task, kinds in results.items():
        for kind, row in kinds.items():
            for visibility in ("visible", "hidden"):
                if visibility in row["oblique"]:
                    print(f"| {task} | {kind} | {visibility} | {row['oblique'][visibility]['frames']} | "
                          f"{row['oblique'][visibility]['median_error_cm']} | "
                          f"{row['oblique+wrist'][visibility]['median_error_cm']} |")
    write_json_atomic(Path(args.out), {
        "dataset": args.dataset, "encoder": args.encoder, "frames": spec.frames, "episodes": spec.episodes,
        "seeds": [150000, 150000 + args.seeds - 1], "every": args.every, "few_pixels": args.few,
        "held_out_rmse_cm": held_out, "results": results, "seconds": round(time.perf_counter() - started, 1),
        "torch_threads": args.threads})
    print(f"wrote {args.out} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
