"""World models over several cameras, end to end: a dataset recorded with the oblique view
and the wrist camera pretrains an encoder on both views' video, trains a predictor whose
time steps hold both views' tokens, fits a readout on both, and plans in eval and plan
with goal images of both cameras; a one-camera checkpoint keeps working."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
import torch
from PIL import Image

from jepa_robot.cli import main
from jepa_robot.config import compose
from jepa_robot.config.training import PretrainEncoderConfig, TrainConfig
from jepa_robot.data.dataset import DatasetError, open_dataset
from jepa_robot.world_model.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_config
from jepa_robot.world_model.model import WorldModel

CAMERAS = ("oblique", "wrist")
KEYS = [f"observation.images.{camera}" for camera in CAMERAS]
SMALL_PLANNER = ["planner=cem", "planner.options.samples=8", "planner.options.elites=2",
                 "planner.options.iterations=1", "planner.options.horizon=1"]


@pytest.fixture(scope="module")
def two_camera_dataset(tmp_path_factory):
    """3 reach episodes of 12 steps at 32 px, recorded with the oblique and wrist cameras."""
    from envs.metaworld.env import MetaWorldGoalEnv
    from envs.metaworld.experts import Exploration
    from envs.recording import record_episodes

    root = tmp_path_factory.mktemp("views") / "reach2"
    record_episodes(make_env=lambda: MetaWorldGoalEnv("reach", image_size=32, step_budget=12, cameras=CAMERAS),
                    root=root, repo_id="test/reach2", episodes=3, exploration=Exploration(noise_std=0.1),
                    progress=False)
    return root


@pytest.fixture(scope="module")
def two_view_run(two_camera_dataset, tiny_encoder_dir, tmp_path_factory):
    """A predictor over both cameras (every camera by default), trained briefly."""
    from jepa_robot.training.train import train

    work = tmp_path_factory.mktemp("two_views")
    overrides = [f"dataset={two_camera_dataset}", "encoder=local", f"encoder.name={tiny_encoder_dir}",
                 "encoder.pool_grid=2", "predictor=tiny", "frameskip=2", "window=3", "rollout_steps=1",
                 "batch_size=8", "steps=12", "val_every=6", "val_batches=1", "checkpoint_every=6",
                 f"out_dir={work / 'run'}", f"cache_dir={work / 'cache'}", "val_fraction=0.34",
                 "progress=false", "optim.lr=3e-3"]
    return train(compose("train", overrides, TrainConfig)), work


def test_a_dataset_opens_with_every_camera_or_the_ones_named(two_camera_dataset):
    _, spec = open_dataset(str(two_camera_dataset))
    assert spec.image_keys == tuple(KEYS) and spec.image_key == KEYS[0]
    assert "observation.images.oblique, observation.images.wrist" in spec.describe()
    _, wrist = open_dataset(str(two_camera_dataset), image_keys=["observation.images.wrist"])
    assert wrist.image_keys == ("observation.images.wrist",)
    with pytest.raises(DatasetError, match="no image key 'observation.images.top'"):
        open_dataset(str(two_camera_dataset), image_keys=["observation.images.oblique", "observation.images.top"])
    with pytest.raises(DatasetError, match="each once"):
        open_dataset(str(two_camera_dataset), image_keys=[KEYS[0], KEYS[0]])


def test_the_predictor_reads_both_views_tokens_in_turn(two_view_run, tiny_encoder_dir):
    result, work = two_view_run
    checkpoint = load_checkpoint(result.checkpoint)
    assert checkpoint.config["data"]["image_keys"] == KEYS
    config = checkpoint.predictor.config
    assert config.views == 2 and config.grid == 2 and config.num_tokens == 2 * 4  # 2x2 pooled tokens per view
    assert np.isfinite(result.val_loss_per_step).all()
    # one latent cache per camera; the training windows put the oblique tokens first
    from jepa_robot.data.latent_cache import build_latent_caches, view_latents
    from jepa_robot.training.train import LatentSource
    from jepa_robot.world_model.encoders import load_encoder

    dataset, spec = open_dataset(str(checkpoint.config["data"]["dataset"]))
    encoder = load_encoder(str(tiny_encoder_dir), resize_ratio=1.0, pool_grid=2)
    caches = build_latent_caches(dataset, spec, encoder, work / "cache", progress=False)
    assert [c.manifest["image_key"] for c in caches] == KEYS
    indices = np.array([[0, 2], [13, 15]])
    cached = LatentSource(dataset, spec.image_keys, encoder, caches)(indices)
    fresh = LatentSource(dataset, spec.image_keys, encoder, None)(indices)
    assert cached.shape == (2, 2, 8, encoder.embed_dim)
    torch.testing.assert_close(cached, fresh, atol=2e-2, rtol=0)  # the cache holds float16
    np.testing.assert_array_equal(view_latents(caches, [5])[0, 4:], caches[1].latents[5])


def test_the_world_model_takes_every_camera_and_plans_toward_both_views(two_view_run, tmp_path, capsys):
    result, work = two_view_run
    world_model = WorldModel.load(result.checkpoint)
    assert world_model.cameras == CAMERAS and world_model.views == 2
    frames = {camera: np.full((32, 32, 3), 60 + 40 * i, np.uint8) for i, camera in enumerate(CAMERAS)}
    latent = world_model.encode_image(frames)
    assert latent.shape == (8, world_model.encoder.embed_dim)
    # both views go through the encoder in one batch; the oblique view's tokens come first
    torch.testing.assert_close(latent[:4], world_model.encoder.encode(frames["oblique"][None])[0])
    torch.testing.assert_close(latent[4:], world_model.encoder.encode(frames["wrist"][None])[0])
    two_goals = world_model.encode_images([frames, {c: f[::-1].copy() for c, f in frames.items()}])
    assert two_goals.shape == (2, 8, world_model.encoder.embed_dim)
    torch.testing.assert_close(two_goals[0], latent)
    with pytest.raises(ValueError, match="sees 2 cameras"):
        world_model.encode_image(frames["oblique"])
    with pytest.raises(ValueError, match=r"no frames from \['wrist'\]"):
        world_model.encode_observation({"images": {"oblique": frames["oblique"]}})

    # eval: both cameras rendered, their goal images, a video showing both
    out = tmp_path / "eval"
    assert main(["eval", f"checkpoint={result.checkpoint}", "tasks=[reach]", "episodes=1", "references=[]",
                 "videos=1", f"out_dir={out}", "progress=false", "workers=1", *SMALL_PLANNER]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["tasks"]["reach"]["n"] == 1 and report["cameras"] == list(CAMERAS)
    with av.open(str(next((out / "videos").glob("*.mp4")))) as container:
        stream = container.streams.video[0]
        two_wide = stream.codec_context.width

    # plan: goal image files, one per camera for each goal, in the model's camera order
    files = []
    for camera, value in zip(CAMERAS, (90, 30), strict=True):
        files.append(tmp_path / f"goal_{camera}.png")
        Image.fromarray(np.full((32, 32, 3), value, np.uint8)).save(files[-1])
    video = tmp_path / "plan.mp4"
    assert main(["plan", f"checkpoint={result.checkpoint}", f"goal=[{files[0]},{files[1]}]", "steps=4",
                 f"video={video}", *SMALL_PLANNER]) == 0
    assert main(["plan", f"checkpoint={result.checkpoint}", f"goal=[{files[0]}]", "steps=4",
                 f"video={tmp_path / 'refused.mp4'}", *SMALL_PLANNER]) != 0
    assert "give their goal images in that order, 2 files per goal; got 1" in capsys.readouterr().err
    assert not (tmp_path / "refused.mp4").exists()
    # two camera panels, two goal panels (256 px each, 4 px gaps) and the energy plot
    assert two_wide == (2 * (2 * 256 + 4) + int(1.6 * 256) + 2 * 4) // 2 * 2


def test_a_readout_reads_both_views(two_view_run, two_camera_dataset, tmp_path):
    result, work = two_view_run
    import shutil

    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(result.checkpoint, checkpoint)
    assert main(["fit-readout", f"checkpoint={checkpoint}", f"dataset={two_camera_dataset}", "holdout=2",
                 "epochs=1", "hidden=16", f"cache_dir={work / 'cache'}", "progress=false"]) == 0
    world_model = WorldModel.load(checkpoint)
    assert world_model.readout.config.latent_shape == (8, world_model.encoder.embed_dim)


def test_pretraining_learns_from_every_view(two_camera_dataset, tmp_path):
    from jepa_robot.training.pretrain import load_corpus

    def corpus(*extra):
        config = compose("pretrain-encoder", [f"datasets=[{two_camera_dataset}]", f"out_dir={tmp_path / 'run'}",
                                              "encoder.crop_size=32", "progress=false", *extra],
                         PretrainEncoderConfig)
        return load_corpus(config, tmp_path / f"frames{len(extra)}")

    both, wrist = corpus(), corpus(f"image_keys=[{KEYS[1]}]")
    assert len(both.frames) == 2 * len(wrist.frames) == 2 * 36
    np.testing.assert_array_equal(both.frames[36:], wrist.frames)  # the wrist clips follow the oblique ones
    assert len(both.train_episodes) + len(both.val_episodes) == 6  # each view's episodes are clips of their own


def test_a_one_camera_checkpoint_of_the_old_format_still_loads(tiny_checkpoint):
    """Checkpoints written before views name one ``data.image_key``; they load as one view."""
    saved = json.loads((tiny_checkpoint / "config.json").read_text())
    assert saved["data"]["image_key"] == "observation.images.oblique" and "image_keys" not in saved["data"]
    assert read_checkpoint_config(tiny_checkpoint)["data"]["image_keys"] == ["observation.images.oblique"]
    assert WorldModel.load(tiny_checkpoint).cameras == ("oblique",)


def test_views_and_cameras_that_disagree_are_refused(two_view_run, tmp_path):
    import shutil

    result, _ = two_view_run
    broken = tmp_path / "broken"
    shutil.copytree(result.checkpoint, broken)
    config = json.loads((broken / "config.json").read_text())
    config["data"]["image_keys"] = KEYS[:1]
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="reads 2 view"):
        load_checkpoint(broken)


def test_the_energy_weighs_each_camera_as_configured(two_view_run):
    from jepa_robot.agent import MPCAgent, build_planner
    from jepa_robot.config import ConfigError
    from jepa_robot.config.planning import AgentConfig, PlannerSettings

    settings = PlannerSettings(name="cem", options={"horizon": 1, "samples": 8, "elites": 2, "iterations": 1},
                               energy_views={"wrist": 0}, task_energy_views={"push": {"wrist": 3, "oblique": 1}})
    world_model = WorldModel.load(two_view_run[0].checkpoint)
    agent = MPCAgent.from_settings(world_model, settings, AgentConfig())
    assert agent.planner.energy.token_weights == (1.0,) * 4 + (0.0,) * 4  # the oblique view alone
    push = MPCAgent.from_settings(world_model, settings.for_task("push"), AgentConfig())
    assert push.planner.energy.token_weights == (1.0,) * 4 + (3.0,) * 4
    assert settings.for_task("reach").energy_views == {"wrist": 0.0}
    # the agent plans with it: the wrist view's change does not move the energy
    frames = {camera: np.full((32, 32, 3), 80, np.uint8) for camera in CAMERAS}
    agent.reset([frames])
    action = agent.act({"images": frames, "state": np.array([0.0, 0.6, 0.2, 1.0], np.float32)})
    assert action.shape == (4,) and np.isfinite(agent.replans[0].energy)

    with pytest.raises(ValueError, match=r"names \['top'\]; the world model sees \['oblique', 'wrist'\]"):
        build_planner(PlannerSettings(energy_views={"top": 1}), 4, cameras=CAMERAS, tokens_per_view=4)
    with pytest.raises(ValueError, match="leaves no view"):
        build_planner(PlannerSettings(energy_views={"oblique": 0, "wrist": 0}), 4, cameras=CAMERAS, tokens_per_view=4)
    with pytest.raises(ConfigError, match="readout reads every view"):
        PlannerSettings(energy="readout", energy_views={"wrist": 2})
    with pytest.raises(ConfigError, match="weights must be >= 0"):
        PlannerSettings(energy_views={"wrist": -1})
    with pytest.raises(ConfigError, match="unknown tasks"):
        PlannerSettings(task_energy_views={"stack": {"wrist": 1}})
    # composed from the command line
    from jepa_robot.config.planning import PlanConfig

    config = compose("plan", ["checkpoint=default", "planner=cem", "+planner.energy_views.wrist=2"], PlanConfig)
    assert config.planner.energy_views == {"wrist": 2.0}
