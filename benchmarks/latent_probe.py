"""How precisely do an encoder's latents locate the hand and the object, in centimetres?

    uv run python benchmarks/latent_probe.py --dataset data/mw-all --cache data/latents/<key>
    uv run python benchmarks/latent_probe.py --dataset data/mw-all \
        --encoder jepa_robot/models/default/encoder          # encodes (and caches) first

A ridge regression from every token of a frame's latent (flattened) to the hand position
and to the object position, fit on the recorded episodes and scored on held-out ones
(every ``--holdout``-th episode). Its RMSE bounds how finely any cost built on these
latents could place the hand or the object; the planner's L1 energy weighs every token
alike, and uses less than this (benchmarks/README.md, "The default model").

The dataset stores the hand (``observation.state``) but not the object. Each episode is
replayed in the simulator from its ``episode_seed`` with its recorded actions (MuJoCo
is deterministic): the object's position is read at every frame, and the replayed hand
is checked against the recorded one, so a replay that went astray is refused.
"""
from __future__ import annotations

import argparse

import numpy as np
from tqdm import tqdm

from envs.metaworld_goal import MetaWorldGoalEnv
from jepa_robot.data import open_dataset
from jepa_robot.encoders import load_encoder
from jepa_robot.latent_cache import build_latent_cache, load_latent_cache

OBJECT_SLICE = slice(4, 7)
"""Meta-World's 39-D observation: hand xyz, gripper, then the first object's xyz."""
REPLAY_TOLERANCE_M = 1e-4


def replay_object_positions(task: str, seed: int, actions: np.ndarray, hands: np.ndarray,
                            env: MetaWorldGoalEnv) -> np.ndarray:
    """Object xyz at every frame of one recorded episode ``[T, 3]``, by replaying it."""
    env.reset(seed=seed)
    objects = np.empty((len(actions), 3), dtype=np.float32)
    for t, action in enumerate(actions):
        observed = env.privileged_obs
        if np.abs(observed[:3] - hands[t]).max() > REPLAY_TOLERANCE_M:
            raise RuntimeError(f"{task} seed {seed}: the replay left the recorded hand path at "
                               f"frame {t}; the dataset was not recorded with this simulator")
        objects[t] = observed[OBJECT_SLICE]
        env.step(action)
    return objects


def ridge_rmse(features: np.ndarray, targets: np.ndarray, train: np.ndarray,
               penalty: float) -> np.ndarray:
    """Held-out RMSE per target column of a ridge fit on the ``train`` rows."""
    mean_x, mean_y = features[train].mean(0), targets[train].mean(0)
    design = features[train] - mean_x
    weights = np.linalg.solve(design.T @ design + penalty * np.eye(design.shape[1]),
                              design.T @ (targets[train] - mean_y))
    predicted = (features[~train] - mean_x) @ weights + mean_y
    return np.sqrt(((predicted - targets[~train]) ** 2).mean(0))


def main(argv: list[str] | None = None) -> dict[str, dict[str, list[float]]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--cache", help="a complete latent cache directory of that dataset")
    source.add_argument("--encoder", help="a local encoder directory: encode the dataset (cached)")
    parser.add_argument("--pool-grid", type=int, default=4, help="with --encoder: tokens per side")
    parser.add_argument("--cache-root", default="data/latents", help="with --encoder")
    parser.add_argument("--holdout", type=int, default=10, help="every n-th episode is held out")
    parser.add_argument("--penalty", type=float, default=1.0, help="ridge penalty")
    args = parser.parse_args(argv)
    dataset, spec = open_dataset(args.dataset)
    if args.cache:
        latents = load_latent_cache(args.cache).latents
    else:
        encoder = load_encoder(args.encoder, device="cpu", pool_grid=args.pool_grid,
                               resize_ratio=1.0)
        latents = build_latent_cache(dataset, spec, encoder, args.cache_root).latents
    columns = dataset.hf_dataset.with_format("numpy")
    episode = np.asarray(columns["episode_index"])
    hands = np.asarray(columns["observation.state"], dtype=np.float32)[:, :3]
    actions = np.asarray(columns["action"], dtype=np.float32)
    seeds = np.asarray(columns["episode_seed"]).reshape(-1)
    task_of_index = {int(i): name for name, i in dataset.meta.tasks["task_index"].items()}
    tasks = np.array([task_of_index[int(i)] for i in np.asarray(columns["task_index"]).reshape(-1)])

    objects = np.empty_like(hands)
    envs: dict[str, MetaWorldGoalEnv] = {}
    for e in tqdm(np.unique(episode), desc="replay episodes", unit="ep"):
        rows = np.nonzero(episode == e)[0]
        task = str(tasks[rows[0]])
        env = envs.setdefault(task, MetaWorldGoalEnv(task, cameras=()))
        objects[rows] = replay_object_positions(task, int(seeds[rows[0]]), actions[rows],
                                                hands[rows], env)
    for env in envs.values():
        env.close()

    features = np.asarray(latents, dtype=np.float32).reshape(len(latents), -1)
    train = episode % args.holdout != 0
    results: dict[str, dict[str, list[float]]] = {}
    print(f"ridge probe from {features.shape[1]} latent values per frame; held-out RMSE, cm")
    print("| episodes | frames | hand x / y / z | object x / y / z |")
    print("|---|---|---|---|")
    for task in [*sorted(set(tasks.tolist())), "all"]:
        rows = np.ones(len(tasks), bool) if task == "all" else tasks == task
        rmse = 100 * ridge_rmse(features[rows], np.hstack([hands, objects])[rows], train[rows],
                                args.penalty)
        results[task] = {"hand_cm": rmse[:3].tolist(), "object_cm": rmse[3:].tolist()}
        print(f"| {task} | {rows.sum()} | {' / '.join(f'{v:.2f}' for v in rmse[:3])} | "
              f"{' / '.join(f'{v:.2f}' for v in rmse[3:])} |")
    return results


if __name__ == "__main__":
    main()
