"""Record scripted-expert demos in Meta-World, then train a tiny world model on them.

    uv run python examples/02_record_and_train.py [DATA_DIR]      # default runs/examples/data

The two steps `jepa-robot collect` and `jepa-robot train` take, called from Python with
the same configs (``compose`` checks the overrides just as the CLI does):

1. record a few reach episodes of the scripted expert (with exploration noise) into a
   LeRobot v3 dataset at DATA_DIR (64 px frames from the ``oblique`` camera);
2. train a tiny predictor (``predictor=tiny``) on the latents of the shipped default
   model's encoder (``jepa_robot/models/default/encoder``, loaded offline with
   ``encoder=local``, its tokens pooled to 4 x 4 as the default model's are).

It writes the run to runs/examples/train (``checkpoint/``, ``metrics.csv``,
``loss_curve.png``) and returns the checkpoint directory and the final losses. With the
defaults (4 episodes of 40 steps, 300 training steps) it takes under a minute on 2 CPU
cores; the result is a smoke test, not a useful model (examples/build_default_model.sh
is the real recipe). Both steps resume: rerunning skips the recorded seeds and continues the run, so
raise ``steps`` to train on (a finished run trains no further and reports no new loss).
"""

from __future__ import annotations

import sys
from pathlib import Path

from jepa_robot.config import compose
from jepa_robot.config.data import CollectConfig
from jepa_robot.config.training import TrainConfig
from jepa_robot.data.collect import collect
from jepa_robot.training.train import describe, train
from jepa_robot.world_model.model import BUILTIN_CHECKPOINTS

# The shipped default model's encoder: a tiny V-JEPA 2 pretrained on Meta-World video.
DEFAULT_ENCODER = BUILTIN_CHECKPOINTS["default"].parent / "encoder"


def main(
    data_dir: str | Path = "runs/examples/data",
    out_dir: str | Path = "runs/examples/train",
    episodes: int = 4,
    step_budget: int = 40,
    steps: int = 300,
    batch_size: int = 16,
) -> dict:
    """Record ``episodes`` reach episodes of ``step_budget`` env steps into ``data_dir``,
    then train ``steps`` predictor steps into ``out_dir``."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)

    # 1. `jepa-robot collect env=metaworld_reach episodes=... root=DATA_DIR ...`
    collect_config = compose("collect", [
        "env=metaworld_reach",
        f"env.step_budget={step_budget}",
        f"episodes={episodes}",
        f"root={data_dir}",
        "repo_id=local/examples-reach",
        "preview_episodes=0",
        "progress=false",
    ], CollectConfig)
    recording = collect(collect_config)
    print(f"recorded {recording.episodes} episodes ({recording.frames} frames, "
          f"{recording.successes} successful); {data_dir} holds {recording.total_episodes}")

    # 2. `jepa-robot train dataset=DATA_DIR encoder=local encoder.name=... predictor=tiny ...`
    #    One predictor step spans frameskip=5 env steps; a training window is 4 frames, so
    #    each episode needs at least 20 env steps.
    train_config = compose("train", [
        f"dataset={data_dir}",
        "encoder=local",
        f"encoder.name={DEFAULT_ENCODER}",
        "encoder.pool_grid=4",
        "predictor=tiny",
        "frameskip=5",
        "window=4",
        "rollout_steps=2",
        f"batch_size={batch_size}",
        f"steps={steps}",
        "optim.warmup_steps=10",
        f"val_every={max(1, steps // 4)}",
        "val_batches=2",
        f"checkpoint_every={steps}",
        f"out_dir={out_dir}",
        f"cache_dir={out_dir / 'latents'}",
        "device=cpu",
        "progress=false",
    ], TrainConfig)
    result = train(train_config)
    print(describe(result))
    return {
        "checkpoint": result.checkpoint,
        "steps": result.steps,
        "final_train_loss": result.final_train_loss,
        "val_loss_per_step": result.val_loss_per_step,
        "val_baseline_per_step": result.val_baseline_per_step,
    }


if __name__ == "__main__":
    main(*sys.argv[1:2])
