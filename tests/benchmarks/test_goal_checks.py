"""The diagnostic benchmarks (goal_image_ceiling, latent_probe,
readout_rollout, object_visibility, goal_frame_readout,
goal_readout_views, readout_near_object, grasp_tolerance) on a couple of seeds, and
grasp_attempts on a hand-made eval report."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_goal_frames_sit_inside_the_radius_and_an_offset_servo_misses(tmp_path):
    out = tmp_path / "ceiling.json"
    result = load("goal_image_ceiling").main(
        ["--episodes", "2", "--offsets-cm", "0", "12", "--directions", "1", "--out", str(out)])
    assert out.is_file()
    for entry in result["goal_frame"].values():
        distance = entry["distance_cm"]
        assert 0 < distance["min"] <= distance["max"] <= entry["success_radius_cm"]
    # reach's goal frame puts the fingers' centre on the target (the task-aimed expert)
    assert result["goal_frame"]["reach"]["distance_cm"]["max"] < 1.0
    on_goal, far = result["reach_servo"]
    assert on_goal["reached_offset_cm_median"] < 1.5 and on_goal["n"] == 2
    assert on_goal["success_rate"] == 1.0
    # 12 cm from a frame that is itself < 1 cm from the target: > 11 cm from it, a miss
    assert far["success_rate"] == 0.0 and far["reached_offset_cm_median"] > 10.0


def test_a_servo_to_the_readouts_goal_hand_bounds_the_readout_energy(readout_checkpoint):
    import numpy as np

    result = load("goal_image_ceiling").main(
        ["--episodes", "2", "--offsets-cm", "0", "--checkpoint", str(readout_checkpoint)])
    servo = result["reach_servo_to_readout"]
    assert servo["n"] == 2 and 0.0 <= servo["success_rate"] <= 1.0
    error = servo["readout_error_cm"]
    assert len(error["mean"]) == len(error["std"]) == 3 and error["norm_median"] > 0
    # the servo lands where the readout says; so its offset is about the readout's error
    assert abs(servo["reached_offset_cm_median"] - error["norm_median"]) < max(
        1.0, 0.5 * error["norm_median"]), servo
    assert np.isfinite(servo["reached_offset_cm_median"])


def test_the_bias_corrected_servo_runs_from_what_an_agent_sees(readout_checkpoint, capsys):
    ceiling = load("goal_image_ceiling")
    result = ceiling.main(["--episodes", "1", "--offsets-cm", "0", "--checkpoint",
                           str(readout_checkpoint), "--correct-bias", "1.0"])
    corrected = result["reach_servo_bias_corrected"]
    assert corrected["alpha"] == 1.0 and corrected["n"] == 1
    assert len(corrected["end_error_cm"]["std"]) == 3 and corrected["end_error_cm"]["norm_median"] >= 0
    # one episode: its offset towards the target is filed under its outcome, the other is empty
    toward = corrected["toward_target_cm_median"]
    assert (toward["won"] is None) != (toward["lost"] is None)
    with pytest.raises(SystemExit):  # a weight outside (0, 1], or no readout to correct
        ceiling.main(["--episodes", "1", "--correct-bias", "0.5"])
    assert "--correct-bias needs --checkpoint" in capsys.readouterr().err


def test_toward_target_is_the_offset_along_the_line_to_the_target():
    from types import SimpleNamespace

    import numpy as np

    ceiling = load("goal_image_ceiling")
    env = SimpleNamespace(_sim=SimpleNamespace(_target_pos=np.array([0.0, 0.8, 0.2])))
    goal_hand = np.array([0.0, 0.75, 0.2])  # 5 cm short of the target, along +y
    assert ceiling.toward_target_cm(env, goal_hand, goal_hand + [0.01, 0.003, 0.0]) == pytest.approx(0.3)
    assert ceiling.toward_target_cm(env, goal_hand, goal_hand - [0.0, 0.002, 0.0]) == pytest.approx(-0.2)
    assert ceiling.split_by_outcome([1.0, -1.0, 3.0], [True, False, True]) == {"won": 2.0, "lost": -1.0}
    assert ceiling.split_by_outcome([1.0], [True]) == {"won": 1.0, "lost": None}


def test_a_perfect_reader_makes_the_bias_corrected_servo_the_plain_one():
    import numpy as np

    from envs.metaworld_goal import MetaWorldGoalEnv

    ceiling = load("goal_image_ceiling")
    env = MetaWorldGoalEnv("reach", image_size=32, cameras=("oblique",))

    def read_hand(images):  # reads the hand exactly (the env's own state): no bias to remove
        return env.state()[:3].astype(np.float64)

    target = np.array([0.0, 0.7, 0.2])
    plain = ceiling.servo_episode(env, 100000, target)
    corrected = ceiling.servo_episode(env, 100000, target, read_hand, alpha=0.3)
    env.close()
    assert plain[0] == corrected[0]
    np.testing.assert_allclose(plain[1], corrected[1], atol=1e-6)


def test_latent_probe_replays_the_recorded_episodes(small_dataset, tiny_encoder_dir, tmp_path):
    import numpy as np
    import pytest

    from envs.metaworld_goal import MetaWorldGoalEnv

    probe = load("latent_probe")
    root, _, _ = small_dataset
    results = probe.main(["--dataset", str(root), "--encoder", str(tiny_encoder_dir),
                          "--pool-grid", "2", "--cache-root", str(tmp_path), "--holdout", "3"])
    assert set(results) == {"reach", "all"}
    for entry in results.values():
        assert all(np.isfinite(v) and v >= 0 for v in entry["hand_cm"] + entry["object_cm"])
    # a replay whose hand leaves the recorded path is refused, not scored
    env = MetaWorldGoalEnv("reach", cameras=())
    with pytest.raises(RuntimeError, match="left the recorded hand path"):
        probe.replay_object_positions("reach", 0, np.zeros((2, 4), np.float32),
                                      np.full((2, 3), 9.0, np.float32), env)
    env.close()


def test_readout_rollout_scores_predicted_states_against_the_recording(
        small_dataset, readout_checkpoint, tmp_path):
    import numpy as np

    root, checkpoint = small_dataset[0], readout_checkpoint
    out = tmp_path / "rollout.json"
    report = load("readout_rollout").main(
        ["--checkpoint", str(checkpoint), "--dataset", str(root), "--holdout", "2", "--steps", "2",
         "--stride", "3", "--threads", "1", "--out", str(out)])
    assert out.is_file() and report["steps"] == 2 and report["frameskip"] == 2
    entry = report["tasks"]["reach"]["all"]
    # held-out episodes 0 and 2, 12 frames each: starts 0, 3, 6 (8 = 12 - 2 * 2 is the last)
    assert entry["start_frames"] == 6
    for kind in ("predicted", "readout_of_real_frame", "copy_start"):
        values = [v for step in entry[kind].values() for v in step.values()]
        assert len(values) == 2 * 7 and all(np.isfinite(v) and v >= 0 for v in values)


def test_object_visibility_counts_the_pucks_pixels_and_scores_the_readout(readout_checkpoint, tmp_path):
    from envs.metaworld_goal import CAMERA_VIEWS, EPISODE_BUDGET

    checkpoint = readout_checkpoint
    out = tmp_path / "visibility.json"
    report = load("object_visibility").main(
        ["--episodes", "1", "--tasks", "push", "--size", "32", "--checkpoint", str(checkpoint),
         "--out", str(out)])
    assert out.is_file() and report["size"] == 32 and set(report["tasks"]) == {"push"}
    entry = report["tasks"]["push"]
    assert set(entry) == set(CAMERA_VIEWS) | {"readout"}
    frames = EPISODE_BUDGET["push"] + 1  # the reset frame and every step
    for view in CAMERA_VIEWS:
        for kind in ("expert", "hand_to_goal"):
            s = entry[view][kind]
            assert s["frames"] == frames
            assert 0.0 <= s["hidden"] <= s["under_few"] <= 1.0
    # the oblique camera (the default model's) shows the puck at the start of the episode
    assert entry["oblique"]["expert"]["median_px"] > 0
    for kind in ("expert", "hand_to_goal"):
        parts = entry["readout"][kind]
        assert sum(part["frames"] for part in parts.values()) <= frames and parts
        assert all(part["median_error_cm"] >= 0 for part in parts.values())


def test_goal_frame_readout_reads_every_phase_of_pick_place(readout_checkpoint, tmp_path):
    out = tmp_path / "goal_frames.json"
    report = load("goal_frame_readout").main(
        ["--checkpoint", str(readout_checkpoint), "--tasks", "pick-place", "--episodes", "2",
         "--out", str(out)])
    assert out.is_file() and report["seeds"] == [100000, 100001]
    phases = report["tasks"]["pick-place"]
    assert set(phases) == {"grasp", "lift", "final"}
    for entry in phases.values():
        assert entry["frames"] == 2
        assert all(v >= 0 for v in entry["median_abs_error"].values())
        assert 0 <= entry["object_misread"] <= 2 and 0 <= entry["gripper_misread"] <= 2


def test_goal_frame_readout_counts_gross_misreads():
    import numpy as np

    summarise = load("goal_frame_readout").summarise_phase
    truth = np.zeros((3, 7))
    read = truth.copy()
    read[0, 4] = 0.03   # object 3 cm off: gross
    read[1, 6] = 0.01   # 1 cm: not
    read[2, 3] = 0.5    # gripper half open against closed: gross
    entry = summarise(truth, read, object_cm=2.0, gripper=0.2)
    assert entry["object_misread"] == 1 and entry["gripper_misread"] == 1
    assert entry["object_error_m"]["max"] == 0.03
    assert entry["median_abs_error"]["object_z"] == 0.0


def test_hand_pull_is_one_when_the_object_is_read_where_the_hand_is():
    from types import SimpleNamespace

    import numpy as np
    import torch

    readout_errors = load("object_visibility").readout_errors
    rng = np.random.default_rng(0)
    frames = [{"object": rng.uniform(-0.2, 0.2, 3), "hand": rng.uniform(-0.2, 0.2, 3),
               "pixels": {"oblique": 10}, "image": np.zeros((4, 4, 3), np.uint8)} for _ in range(20)]

    def read(latents):  # a "readout" that puts the object where the hand is
        return latents

    read.config = SimpleNamespace(state_names=["object_x", "object_y", "object_z"])
    hands = torch.tensor(np.stack([f["hand"] for f in frames]), dtype=torch.float32)
    model = SimpleNamespace(camera="oblique", readout=read, encode=lambda images: hands)
    result = readout_errors(model, frames, few=4)
    assert set(result) == {"visible"} and result["visible"]["frames"] == 20
    assert abs(result["visible"]["hand_pull"] - 1.0) < 1e-3


def test_goal_readout_views_fits_a_readout_per_camera_set(tiny_checkpoint, tiny_encoder_dir, tmp_path):
    from envs.experts import Exploration
    from envs.metaworld_goal import MetaWorldGoalEnv
    from envs.recording import record_episodes

    root = tmp_path / "two-views"
    record_episodes(make_env=lambda: MetaWorldGoalEnv("reach", image_size=32, step_budget=12,
                                                      cameras=("oblique", "top")),
                    root=root, repo_id="test/two-views", episodes=3,
                    exploration=Exploration(noise_std=0.1), progress=False)
    out = tmp_path / "views.json"
    views = load("goal_readout_views")
    result = views.main(["--checkpoint", str(tiny_checkpoint), "--datasets", str(root),
                         "--views", "oblique", "oblique+top", "--episodes", "1",
                         "--cache-dir", str(tmp_path / "latents"), "--threads", "1", "--out", str(out)])
    assert out.is_file() and result["frames"] == 36 and result["tokens_per_view"] == 4
    assert set(result["views"]) == {"oblique", "oblique+top"}
    for row in result["views"].values():
        assert row["n"] == 1 and 0 <= row["servo_success"] <= 1
        assert len(row["held_out_hand_rmse_cm"]) == 3 and row["goal_error_cm"]["norm_median"] > 0
        assert list(row["held_out_rmse"])[:3] == ["hand_x", "hand_y", "hand_z"]
    # every patch (the tiny encoder's 4 x 4) instead of the checkpoint's 2 x 2 pooling
    unpooled = views.main(["--checkpoint", str(tiny_checkpoint), "--datasets", str(root),
                           "--pool-grid", "4", "--episodes", "1", "--cache-dir",
                           str(tmp_path / "latents"), "--threads", "1"])
    assert unpooled["tokens_per_view"] == 16 and set(unpooled["views"]) == {"oblique"}
    with pytest.raises(SystemExit):  # more tokens per side than the encoder has patches
        views.main(["--checkpoint", str(tiny_checkpoint), "--datasets", str(root), "--pool-grid", "5"])
    # beside the latent readout, a CNN on the same frames' pixels (both views as channels)
    pixels = views.main(["--checkpoint", str(tiny_checkpoint), "--datasets", str(root),
                         "--views", "oblique+top", "--pixel-epochs", "1", "--episodes", "1",
                         "--cache-dir", str(tmp_path / "latents"), "--threads", "1"])
    assert list(pixels["views"]) == ["oblique+top", "oblique+top (pixels)"]
    row = pixels["views"]["oblique+top (pixels)"]
    assert row["n"] == 1 and len(row["held_out_hand_rmse_cm"]) == 3 and row["goal_error_cm"]["norm_median"] > 0
    assert all(v > 0 for v in row["held_out_rmse"].values())
    assert len(list((tmp_path / "latents").glob("frames-*"))) == 2  # one frame cache per camera
    # another encoder directory read in place of the checkpoint's (a pretrain-encoder export),
    # pooled to 4 x 4: the tiny encoder's 4 x 4 patches, so 16 tokens
    other = views.main(["--encoder", str(tiny_encoder_dir), "--datasets", str(root), "--episodes", "1",
                        "--cache-dir", str(tmp_path / "latents"), "--threads", "1"])
    assert other["encoder"] == str(tiny_encoder_dir) and other["checkpoint"] is None
    assert other["tokens_per_view"] == 16
    assert other["views"]["oblique"]["n"] == 1
    with pytest.raises(SystemExit):
        views.main(["--encoder", str(tmp_path / "no-such-encoder"), "--datasets", str(root)])
    # beside the readout MLP, a CNN on the token grid (every patch: the tiny encoder's 4 x 4)
    tokens = views.main(["--checkpoint", str(tiny_checkpoint), "--datasets", str(root), "--pool-grid", "4",
                         "--token-epochs", "1", "--episodes", "1", "--cache-dir", str(tmp_path / "latents"),
                         "--threads", "1"])
    assert list(tokens["views"]) == ["oblique", "oblique (token grid)"]
    row = tokens["views"]["oblique (token grid)"]
    assert row["n"] == 1 and len(row["held_out_hand_rmse_cm"]) == 3 and row["goal_error_cm"]["norm_median"] > 0
    assert all(v > 0 for v in row["held_out_rmse"].values())


def test_the_pixel_reader_learns_where_a_square_is():
    import numpy as np
    import torch

    views = load("goal_readout_views")
    rng = np.random.default_rng(0)
    positions = rng.uniform(4, 26, size=(1000, 2))  # a bright square's corner, pixels
    images = np.zeros((1000, 32, 32, 3), dtype=np.uint8)
    for image, (x, y) in zip(images, positions.astype(int), strict=True):
        image[y:y + 4, x:x + 4] = 255
    episodes = np.arange(1000) // 10  # 100 "episodes" of 10 frames; every 10th held out
    reader, rmse = views.fit_pixel_reader(images, positions.astype(np.float32), episodes, epochs=8,
                                          batch_size=32)
    # within a pixel or so on held-out squares (guessing the mean would be ~6 px off)
    assert rmse.shape == (2,) and (rmse < 1.5).all(), rmse
    with torch.no_grad():
        read = reader(torch.from_numpy(images[:5])).numpy()
    assert np.abs(read - positions[:5]).max() < 4.0


def test_the_token_reader_learns_where_on_the_grid_a_token_stands_out():
    import numpy as np
    import torch

    views = load("goal_readout_views")
    rng = np.random.default_rng(0)
    grid, channels, frames = 4, 8, 1200
    cells = rng.integers(0, grid * grid, size=frames)  # which token carries the "hand"
    tokens = rng.normal(0, 0.1, size=(frames, grid * grid, channels)).astype(np.float32)
    tokens[np.arange(frames), cells] += 1.0  # the same feature in every cell: only where says which
    positions = np.stack([cells % grid, cells // grid], axis=1).astype(np.float32)
    episodes = np.arange(frames) // 10
    reader, rmse = views.fit_token_reader(tokens, positions, episodes, epochs=6, batch_size=32)
    # held out, within a fraction of a cell (guessing the mean would be ~1.1 cells off)
    assert rmse.shape == (2,) and (rmse < 0.4).all(), rmse
    with torch.no_grad():  # and it reads with the training frames' output scale
        read = reader(torch.from_numpy(tokens[:5])).numpy()
    assert np.abs(read - positions[:5]).max() < 1.0
    with pytest.raises(ValueError, match="square token grid"):
        views.fit_token_reader(tokens[:, :15], positions, episodes, epochs=1)
    with pytest.raises(ValueError, match="square token grid of even side"):
        views.TokenReader(channels, 9, 2)  # a 3 x 3 grid


def test_readout_near_object_bins_frames_by_where_the_hand_is():
    import numpy as np

    bin_errors = load("readout_near_object").bin_errors
    # hand_xyz, gripper, object_xyz; the object at the origin of the table plane
    truth = np.array([
        [0.01, 0.0, 0.05, 1.0, 0.0, 0.0, 0.02],   # 1 cm beside, low (3 cm above the object)
        [0.0, 0.03, 0.06, 1.0, 0.0, 0.0, 0.02],   # 3 cm beside, low
        [0.0, 0.03, 0.20, 1.0, 0.0, 0.0, 0.02],   # 3 cm beside, high
        [0.20, 0.0, 0.20, 1.0, 0.0, 0.0, 0.02],   # far, high
    ])
    read = truth.copy()
    read[1, 1] += 0.004   # hand read 4 mm long in y
    read[1, 4] -= 0.015   # object read 1.5 cm off in x
    rows = bin_errors(truth, read, [0.02, 0.05], low_m=0.06)
    by_bin = {(tuple(r["planar_cm"]), r["height"]): r for r in rows}
    assert set(by_bin) == {((0.0, 2.0), "low"), ((2.0, 5.0), "low"), ((2.0, 5.0), "high"),
                           ((5.0, None), "high")}
    assert all(r["frames"] == 1 for r in rows)
    near_miss = by_bin[((2.0, 5.0), "low")]
    assert near_miss["hand_abs_error_cm"] == [0.0, 0.4, 0.0] and near_miss["hand_y_error_cm"] == 0.4
    assert near_miss["object_abs_error_cm"] == [1.5, 0.0, 0.0]
    assert by_bin[((0.0, 2.0), "low")]["object_abs_error_cm"] == [0.0, 0.0, 0.0]


def test_readout_near_object_skips_tasks_without_an_object(small_dataset, readout_checkpoint, tmp_path):
    out = tmp_path / "near.json"
    report = load("readout_near_object").main(
        ["--checkpoint", str(readout_checkpoint), "--dataset", str(small_dataset[0]),
         "--holdout", "2", "--cache-dir", str(tmp_path / "latents"), "--threads", "1",
         "--out", str(out)])
    assert out.is_file() and report["tasks"] == {} and report["holdout"] == 2


def test_grasp_tolerance_loses_the_object_when_the_expert_aims_far_beside_it(tmp_path):
    out = tmp_path / "tolerance.json"
    report = load("grasp_tolerance").main(
        ["--tasks", "pick-place", "--offsets-cm", "0", "6", "--episodes", "2", "--out", str(out)])
    assert out.is_file() and report["seeds"] == [100000, 100001]
    on_target, far = report["tasks"]["pick-place"]
    # aimed at the block the expert solves these seeds; 6 cm beside it, it grips nothing
    assert on_target["success_rate"] == 1.0 and on_target["lifted_rate"] == 1.0
    assert far["success_rate"] == 0.0 and far["lifted_rate"] == 0.0
    assert all(abs(e["aim_error_cm"] - 6.0) < 1e-4 for e in far["episodes"])
    assert all(e["aim_error_cm"] == 0.0 for e in on_target["episodes"])


def test_grasp_attempts_bins_episodes_by_where_the_gripper_first_closed(tmp_path):
    import json

    from envs.metaworld_goal import STATE_AND_OBJECT_NAMES

    def row(step, hand, gripper, obj, read_obj=None):
        true = [*hand, gripper, *obj]
        read = [*hand, gripper, *(obj if read_obj is None else read_obj)]
        return {"step": step, "goal_index": 1, "energy": 0.1, "goal_distance": 0.1,
                "true": true, "read": read}

    block = (0.0, 0.6, 0.02)
    columns = {"true": STATE_AND_OBJECT_NAMES, "read": STATE_AND_OBJECT_NAMES}
    episodes = [
        # closes 0.5 cm from the block, lifts it, succeeds
        {"seed": 100000, "success": True, "trace_columns": columns, "trace": [
            row(5, (0.0, 0.6, 0.15), 1.0, block),
            row(10, (0.005, 0.6, 0.06), 0.5, block),
            row(15, (0.005, 0.6, 0.12), 0.5, (0.005, 0.6, 0.08))]},
        # closes 5 cm beside it; the readout puts the block under the hand
        {"seed": 100001, "success": False, "trace_columns": columns, "trace": [
            row(5, (0.0, 0.6, 0.15), 1.0, block),
            row(10, (0.05, 0.6, 0.06), 0.4, block, read_obj=(0.048, 0.6, 0.02))]},
        # never closes
        {"seed": 100002, "success": False, "trace_columns": columns, "trace": [
            row(5, (0.0, 0.6, 0.15), 1.0, block)]},
        # untraced episodes are left out
        {"seed": 100003, "success": False},
    ]
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"protocol": {"subgoals": True},
                                  "tasks": {"pick-place": {"episodes": episodes},
                                            "reach": {"episodes": episodes[:1]}}}))
    out = tmp_path / "attempts.json"
    result = load("grasp_attempts").main([str(report), "--bins-cm", "1", "4", "--out", str(out)])
    assert out.is_file() and list(result["tasks"]) == [f"pick-place (sub-goals) [{report}]"]
    entry = next(iter(result["tasks"].values()))
    assert entry["episodes"] == 3
    near, middle, far, never = entry["bins"]
    assert (near["episodes"], near["lifted"], near["success"]) == (1, 1, 1)
    assert middle["episodes"] == 0 and middle["read_offset_cm_median"] is None
    assert (far["episodes"], far["lifted"], far["success"]) == (1, 0, 0)
    # the readout's planar offset at the close: 0.2 cm, the block read 4.8 cm off
    assert abs(far["read_offset_cm_median"] - 0.2) < 1e-6
    assert abs(far["object_read_error_cm_median"] - 4.8) < 1e-6
    assert never["offset_cm"] is None and never["episodes"] == 1
    first = entry["attempts"][0]
    assert first["step"] == 10 and abs(first["planar_offset_cm"] - 0.5) < 1e-6
    assert abs(first["height_above_object_cm"] - 4.0) < 1e-6


def test_grasp_attempts_needs_a_trace_with_the_object_read(tmp_path):
    import json

    import pytest

    episode = {"seed": 1, "success": False, "trace": [{"step": 5, "true": [0.0] * 7}],
               "trace_columns": {"true": ["hand_x", "hand_y", "hand_z", "gripper", "object_x",
                                          "object_y", "object_z"], "read": []}}
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"tasks": {"push": {"episodes": [episode]}}}))
    with pytest.raises(ValueError, match="readout reads the hand, gripper and object"):
        load("grasp_attempts").main([str(report)])
    report.write_text(json.dumps({"tasks": {"reach": {"episodes": [episode]}}}))
    with pytest.raises(SystemExit):  # nothing to read: no traced push or pick-place episode
        load("grasp_attempts").main([str(report)])
    with pytest.raises(SystemExit):  # bin edges out of order
        load("grasp_attempts").main([str(report), "--bins-cm", "4", "2"])
