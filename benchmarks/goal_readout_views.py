"""Would more cameras, or unpooled tokens, let a readout pin the goal image's hand?

    uv run python benchmarks/goal_readout_views.py --datasets data/mv-reach data/mv-reach-clean \
        --views oblique oblique+top oblique+front top+front oblique+top+front \
        --out benchmarks/results/goal_readout_views.json      # ~15 min with the encoding
    uv run python benchmarks/goal_readout_views.py --datasets data/mw-all --pool-grid 8 \
        --views oblique --out benchmarks/results/goal_readout_unpooled.json   # ~15 min
    uv run python benchmarks/goal_readout_views.py --datasets data/mw-reach --pixel-epochs 10 \
        --out benchmarks/results/goal_readout_pixels.json      # ~6 min: latents against pixels
    uv run python benchmarks/goal_readout_views.py --datasets data/mw-all \
        --encoder runs/s16/enc-p4/encoder --out benchmarks/results/goal_readout_patch4.json
    uv run python benchmarks/goal_readout_views.py --datasets data/mw-all --pool-grid 8 \
        --token-epochs 10 --out benchmarks/results/goal_readout_token_grid_all.json  # ~18 min

Reach under the protocol is decided by millimetres: its goal frames sit 4.2-4.9 cm from
the target against a 5 cm radius (``goal_image_ceiling.py``), and the shipped readout
reads the goal image's hand to a spread of 0.4-0.6 cm. That spread is the encoder's view
of the scene: one 64 px camera, pooled to 4 x 4 tokens. This asks what a readout would
do with more of it, without training anything but readouts:

- ``--views``: cameras whose latents are read together (``oblique+top``: the two views'
  tokens side by side). The datasets must have been recorded with those cameras, e.g.
  ``jepa-robot collect env=metaworld_reach 'env.cameras=[oblique,top,front]' ...``.
- ``--pool-grid``: the token grid the encoder's patches are pooled to (the shipped model
  pools its 8 x 8 patches to 4 x 4; 8 reads every patch).
- ``--encoder DIR``: read another frozen encoder's latents (say a ``jepa-robot
  pretrain-encoder`` export with finer patches), pooled to 4 x 4 as the predictor sees them.
- ``--pixel-epochs N``: beside each latent readout, a small CNN trained for N epochs on
  the same frames' raw pixels (the views' images stacked as channels, plus two
  coordinate channels), supervised with the same columns and held-out episodes. It asks
  whether the hand is in the pixels more precisely than in the frozen encoder's latents:
  if the pixels read the goal finer, the camera is not the limit, the encoder is.
- ``--token-epochs N``: beside each latent readout, the same kind of CNN trained on the
  latents' token grid (each token a cell, its numbers the channels, with the coordinate
  channels). With ``--pool-grid 8`` it reads every patch. It asks whether the latents hold
  the hand as finely as the pixels, once read by a network that knows where each token
  sits (the readout MLP reads the tokens flattened).

Every frame of ``--datasets`` is encoded per camera with the frozen encoder (the
checkpoint's, or ``--encoder``'s; through the latent cache, so a rerun encodes nothing),
a readout like ``jepa-robot fit-readout``'s is fit per view set (every 10th episode held
out), and each reads the protocol's reach goal frames (``envs.goals.make_goal_images``, rendered through every
camera). Reported per view set: the held-out RMSE of the hand, the error on the goal
frames against the simulator's hand there (privileged, used for nothing else), and the
success of a privileged servo aimed at the read hand over the reach budget
(``goal_image_ceiling.servo_episode``): what a planner aiming at that readout can expect.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from envs.goals import make_goal_images
from envs.metaworld_goal import MetaWorldGoalEnv
from jepa_robot.data import open_dataset
from jepa_robot.encoders import load_encoder
from jepa_robot.evaluation import write_json_atomic
from jepa_robot.latent_cache import build_latent_cache, dataset_fingerprint
from jepa_robot.pretrain import build_frame_cache
from jepa_robot.readout import TokenGridNet, fit_readout, readout_targets
from jepa_robot.world_model import WorldModel, resolve_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from goal_image_ceiling import servo_episode  # the benchmark beside this one

HAND = slice(0, 3)
"""The readout's hand columns (``observation.state`` starts with hand x, y, z)."""


def dataset_latents(roots: list[str], cameras: list[str], encoder, cache_dir: str
                    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[str]]:
    """Per camera, every frame's latent ``[F, N, D]`` over all ``roots`` in order; the
    readout columns ``[F, S]``; a distinct episode number per frame; the column names."""
    latents: dict[str, list[np.ndarray]] = {camera: [] for camera in cameras}
    states, episodes, names = [], [], []
    offset = 0
    for root in roots:
        for camera in cameras:
            dataset, spec = open_dataset(root, image_key=f"observation.images.{camera}")
            latents[camera].append(np.asarray(build_latent_cache(dataset, spec, encoder, cache_dir).latents))
        _, names, values = readout_targets(dataset)
        states.append(values)
        episode = np.asarray(dataset.hf_dataset.with_format("numpy")["episode_index"]).reshape(-1)
        episodes.append(episode + offset)
        offset += int(episode.max()) + 1
    return ({camera: np.concatenate(parts) for camera, parts in latents.items()},
            np.concatenate(states), np.concatenate(episodes), names)


def dataset_frames(roots: list[str], cameras: list[str], size: int, cache_dir: str
                   ) -> dict[str, np.ndarray]:
    """Per camera, every frame of ``roots`` in order as uint8 ``[F, size, size, 3]``,
    decoded once into a frame cache under ``cache_dir`` (``jepa-robot pretrain-encoder``'s)."""
    frames = {}
    for camera in cameras:
        sources = [open_dataset(root, image_key=f"observation.images.{camera}") for root in roots]
        key = hashlib.sha256("|".join([camera, str(size), *(dataset_fingerprint(spec.root)
                                                           for _, spec in sources)]).encode())
        directory = Path(cache_dir) / f"frames-{key.hexdigest()[:16]}"
        frames[camera] = np.asarray(build_frame_cache(sources, directory, size))
    return frames


class ScaledReader(nn.Module):
    """A supervised reader whose ``normalised`` outputs are in units of the training
    frames' spread (``out_mean`` / ``out_std``, set by :func:`fit_reader`); ``forward``
    gives the states themselves."""

    def __init__(self, outputs: int) -> None:
        super().__init__()
        self.register_buffer("out_mean", torch.zeros(outputs))
        self.register_buffer("out_std", torch.ones(outputs))

    def normalised(self, inputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.normalised(inputs) * self.out_std + self.out_mean


class PixelReader(ScaledReader):
    """``uint8 [B, H, W, 3 * views] -> [B, S]``: four stride-2 stages of two 3x3
    convolutions, on the images plus two coordinate channels (the network can then tell
    where things are, not only what), then an MLP. Input and output normalised inside."""

    def __init__(self, channels: int, size: int, outputs: int) -> None:
        if size % 16:
            raise ValueError(f"the pixel reader halves {size} px frames four times; it needs a "
                             "multiple of 16")
        super().__init__(outputs)

        def stage(inputs: int, width: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(inputs, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
                nn.Conv2d(width, width, 3, 1, 1), nn.BatchNorm2d(width), nn.ReLU())

        self.body = nn.Sequential(stage(channels + 2, 32), stage(32, 64), stage(64, 96), stage(96, 128))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(128 * (size // 16) ** 2, 256), nn.ReLU(),
                                  nn.Linear(256, outputs))
        y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
        self.register_buffer("coordinates", torch.stack([x, y])[None])

    def normalised(self, images: torch.Tensor) -> torch.Tensor:
        pixels = images.permute(0, 3, 1, 2).float() / 127.5 - 1
        coordinates = self.coordinates.expand(len(pixels), -1, -1, -1)
        return self.head(self.body(torch.cat([pixels, coordinates], dim=1)))


class TokenReader(ScaledReader):
    """``float [B, N, D * views] -> [B, S]``: the package's token-grid readout network
    (``jepa_robot.readout.TokenGridNet``: the tokens on their ``g x g`` patch grid as
    channels, plus coordinate channels, four 3x3 convolutions, then an MLP), with ReLU and
    a 256-wide hidden layer like the :class:`PixelReader`, and trained like it. It asks
    whether the tokens hold the hand as finely as the pixels when read by a network that,
    like the CNN, knows where each token sits (the readout MLP reads them flattened)."""

    def __init__(self, channels: int, tokens: int, outputs: int, width: int = 128) -> None:
        super().__init__(outputs)
        self.net = TokenGridNet(tokens, channels, outputs, width, hidden=256, activation=nn.ReLU)

    def normalised(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(tokens.float().flatten(1))


def fit_pixel_reader(images: np.ndarray, states: np.ndarray, episodes: np.ndarray, epochs: int,
                     holdout: int = 10, batch_size: int = 128, lr: float = 2e-3, seed: int = 0
                     ) -> tuple[PixelReader, np.ndarray]:
    """Train a :class:`PixelReader` on ``images [F, H, W, C]`` (uint8) against ``states [F, S]``,
    every ``holdout``-th episode held out (as ``fit_readout``); returns it and its held-out
    RMSE per column."""
    torch.manual_seed(seed)
    reader = PixelReader(images.shape[-1], images.shape[1], states.shape[1])
    return fit_reader(reader, images, states, episodes, epochs, holdout, batch_size, lr, seed)


def fit_token_reader(latents: np.ndarray, states: np.ndarray, episodes: np.ndarray, epochs: int,
                     holdout: int = 10, batch_size: int = 128, lr: float = 2e-3, seed: int = 0
                     ) -> tuple[TokenReader, np.ndarray]:
    """Train a :class:`TokenReader` on ``latents [F, N, C]`` (a square token grid) against
    ``states [F, S]``, held out and scored as :func:`fit_pixel_reader`."""
    torch.manual_seed(seed)
    reader = TokenReader(latents.shape[-1], latents.shape[1], states.shape[1])
    return fit_reader(reader, latents, states, episodes, epochs, holdout, batch_size, lr, seed)


def fit_reader(reader: ScaledReader, inputs: np.ndarray, states: np.ndarray,
               episodes: np.ndarray, epochs: int, holdout: int, batch_size: int, lr: float, seed: int
               ) -> tuple[ScaledReader, np.ndarray]:
    """Supervise ``reader`` (output normalised by the training frames' mean and spread) on
    ``inputs [F, ...]`` against ``states [F, S]`` with a one-cycle AdamW schedule, every
    ``holdout``-th episode held out; returns it in eval mode and its held-out RMSE per column."""
    generator = torch.Generator().manual_seed(seed)
    held_out = np.asarray(episodes) % holdout == 0
    data, targets = torch.from_numpy(np.ascontiguousarray(inputs)), torch.from_numpy(states.astype(np.float32))
    train = torch.from_numpy(np.flatnonzero(~held_out))
    reader.out_mean.copy_(targets[train].mean(0))
    reader.out_std.copy_(targets[train].std(0) + 1e-8)
    steps_per_epoch = max(1, len(train) // batch_size)
    optimiser = torch.optim.AdamW(reader.parameters(), lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, lr, total_steps=epochs * steps_per_epoch)
    bar = tqdm(total=epochs * steps_per_epoch, desc=f"fit {type(reader).__name__}", unit="step", leave=False)
    for _ in range(epochs):
        reader.train()
        order = train[torch.randperm(len(train), generator=generator)]
        for i in range(steps_per_epoch):
            rows = order[i * batch_size:(i + 1) * batch_size]
            target = (targets[rows] - reader.out_mean) / reader.out_std
            loss = nn.functional.smooth_l1_loss(reader.normalised(data[rows]), target, beta=0.1)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            bar.update()
    bar.close()
    reader.eval()
    rows = np.flatnonzero(held_out)
    with torch.no_grad():
        read = torch.cat([reader(data[rows[i:i + 512]]) for i in range(0, len(rows), 512)])
    return reader, (read - targets[rows]).square().mean(0).sqrt().double().numpy()


def goal_frames(cameras: list[str], image_size: int, seeds: range) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The protocol's reach goal frame of every seed through each camera, and the
    simulator's hand position there."""
    env = MetaWorldGoalEnv("reach", image_size=image_size, cameras=tuple(cameras))
    images: dict[str, list[np.ndarray]] = {camera: [] for camera in cameras}
    hands = []
    for seed in tqdm(seeds, desc="reach goal frames", leave=False):
        goal, _, _ = make_goal_images(env, seed)
        for camera in cameras:
            images[camera].append(goal.goal[camera])
        hands.append(goal.goal_state[HAND])
    env.close()
    return {camera: np.stack(frames) for camera, frames in images.items()}, np.stack(hands)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="default", help="whose frozen encoder (default: the shipped one)")
    parser.add_argument("--encoder", help="a local encoder directory to read instead of the checkpoint's "
                                          "(e.g. a `jepa-robot pretrain-encoder` export; pooled to 4 x 4 "
                                          "unless --pool-grid says otherwise)")
    parser.add_argument("--datasets", nargs="+", required=True, help="recordings to fit the readouts on")
    parser.add_argument("--views", nargs="+", default=["oblique"],
                        help="camera sets, '+'-joined (e.g. oblique oblique+top)")
    parser.add_argument("--pool-grid", type=int, default=None,
                        help="tokens per side (default: the checkpoint's; 8 = every patch)")
    parser.add_argument("--episodes", type=int, default=50, help="protocol seeds 100000..")
    parser.add_argument("--seed-start", type=int, default=100000)
    parser.add_argument("--pixel-epochs", type=int, default=0,
                        help="also train a CNN on the frames' pixels for this many epochs (0: no)")
    parser.add_argument("--token-epochs", type=int, default=0,
                        help="also train a CNN on the latents' token grid for this many epochs "
                             "(0: no; --pool-grid 8 reads every patch)")
    parser.add_argument("--cache-dir", default="data/latents")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    view_sets = [view.split("+") for view in args.views]
    cameras = list(dict.fromkeys(camera for views in view_sets for camera in views))
    if args.encoder:
        if not Path(args.encoder).is_dir():
            parser.error(f"--encoder {args.encoder}: not a directory")
        encoder = load_encoder(args.encoder, device="cpu", resize_ratio=1.0)
        if args.pool_grid is None:  # as the shipped predictor sees its encoder's tokens
            args.pool_grid = min(4, encoder.patch_grid)
    else:
        encoder = WorldModel.load(resolve_checkpoint(args.checkpoint), with_readout=False).encoder
    image_size = encoder.image_size
    if args.pool_grid is not None:
        if not 1 <= args.pool_grid <= encoder.patch_grid:
            parser.error(f"--pool-grid {args.pool_grid}: the encoder has {encoder.patch_grid} x "
                         f"{encoder.patch_grid} patches; pool to 1..{encoder.patch_grid} per side")
        encoder.pool_grid = None if args.pool_grid == encoder.patch_grid else args.pool_grid
    seeds = range(args.seed_start, args.seed_start + args.episodes)
    latents, states, episodes, names = dataset_latents(args.datasets, cameras, encoder, args.cache_dir)
    pixels = (dataset_frames(args.datasets, cameras, image_size, args.cache_dir)
              if args.pixel_epochs else {})
    goal_images, goal_hands = goal_frames(cameras, image_size, seeds)
    with torch.no_grad():
        goal_latents = {camera: encoder.encode(frames).cpu().numpy() for camera, frames in goal_images.items()}
    result: dict = {"checkpoint": None if args.encoder else args.checkpoint, "encoder": args.encoder,
                    "datasets": args.datasets, "frames": len(states), "tokens_per_view": encoder.num_tokens,
                    "seeds": [seeds[0], seeds[-1]], "views": {}}
    print(f"{len(states)} frames, {encoder.num_tokens} tokens per view\n")
    print("| views | held-out hand RMSE, cm (x / y / z) | goal frames: mean error, cm | std, cm "
          "| median 3-D, cm | servo to the reading |")
    print("|---|---|---|---|---|---|")
    servo_env = MetaWorldGoalEnv("reach", cameras=())

    def score(tag: str, read: np.ndarray, held_out_rmse: np.ndarray) -> None:
        """One table row: the held-out error, the goal frames read as ``read`` [seeds, S], and
        the servo aimed at the read hand."""
        read = read[:, HAND].astype(np.float64)
        errors = (read - goal_hands) * 100
        wins = sum(servo_episode(servo_env, seed, target)[0]
                   for seed, target in tqdm(zip(seeds, read, strict=True), desc=f"servo {tag}",
                                            total=len(seeds), leave=False))
        row = {"held_out_hand_rmse_cm": (np.asarray(held_out_rmse[HAND]) * 100).round(3).tolist(),
               "held_out_rmse": dict(zip(names, np.round(held_out_rmse, 5).tolist(), strict=True)),
               "goal_error_cm": {"mean": errors.mean(0).round(3).tolist(), "std": errors.std(0).round(3).tolist(),
                                 "norm_median": round(float(np.median(np.linalg.norm(errors, axis=1))), 3)},
               "servo_success": wins, "n": len(seeds)}
        result["views"][tag] = row
        print(f"| {tag} | {' / '.join(f'{v:.2f}' for v in row['held_out_hand_rmse_cm'])} "
              f"| {' / '.join(f'{v:.2f}' for v in row['goal_error_cm']['mean'])} "
              f"| {' / '.join(f'{v:.2f}' for v in row['goal_error_cm']['std'])} "
              f"| {row['goal_error_cm']['norm_median']:.2f} | {wins}/{len(seeds)} |", flush=True)

    for views in view_sets:
        tag = "+".join(views)
        readout, metrics = fit_readout(np.concatenate([latents[c] for c in views], axis=1), states,
                                       episodes, state_names=names)
        with torch.no_grad():
            read = readout(torch.from_numpy(np.concatenate([goal_latents[c] for c in views], axis=1)))
        score(tag, read.numpy(), np.asarray(metrics["held_out_rmse"]))
        if args.pixel_epochs:
            reader, rmse = fit_pixel_reader(np.concatenate([pixels[c] for c in views], axis=-1), states,
                                            episodes, args.pixel_epochs)
            with torch.no_grad():
                read = reader(torch.from_numpy(np.concatenate([goal_images[c] for c in views], axis=-1)))
            score(f"{tag} (pixels)", read.numpy(), rmse)
        if args.token_epochs:  # the views' tokens side by side as channels of one grid
            reader, rmse = fit_token_reader(np.concatenate([latents[c] for c in views], axis=-1), states,
                                            episodes, args.token_epochs)
            with torch.no_grad():
                read = reader(torch.from_numpy(np.concatenate([goal_latents[c] for c in views], axis=-1)))
            score(f"{tag} (token grid)", read.numpy(), rmse)
    servo_env.close()
    result["seconds"] = time.perf_counter() - started
    print(f"\n{result['seconds']:.0f} s")
    if args.out:
        write_json_atomic(Path(args.out), result)
    return result


if __name__ == "__main__":
    main()
