"""``jepa-robot eval`` / ``plan`` and the protocol's statistics."""

from __future__ import annotations

import json
import re

import av
import numpy as np
import pytest
from PIL import Image

from jepa_robot.cli import main
from jepa_robot.evaluation import (
    VIDEO_PIXELS,
    EpisodeTrace,
    format_table,
    run_reference,
    summarise,
    wilson_interval,
)

SMALL_PLANNER = [
    "planner.options.samples=16", "planner.options.elites=4", "planner.options.iterations=2",
    "planner.options.horizon=2",
]


def test_wilson_interval_matches_known_values():
    low, high = wilson_interval(25, 50)
    assert low == pytest.approx(0.3664, abs=1e-3) and high == pytest.approx(0.6336, abs=1e-3)
    low, high = wilson_interval(0, 50)
    assert low == 0.0 and high == pytest.approx(0.0713, abs=1e-3)
    low, high = wilson_interval(50, 50)
    assert high == 1.0 and low == pytest.approx(0.9287, abs=1e-3)  # exactly: the plot's error bars need it


def test_summarise_reports_mean_and_percentiles():
    stats = summarise([1.0, 2.0, 3.0, 4.0, 100.0])
    assert stats["mean"] == 22.0 and stats["p50"] == 3.0 and stats["count"] == 5
    assert stats["min"] == 1.0 and stats["max"] == 100.0
    assert 4.0 < stats["p95"] < 100.0
    assert summarise([]) is None


def test_references_run_the_protocol_budget():
    expert = run_reference("reach", 100000, "expert")
    random = run_reference("reach", 100000, "random")
    assert expert["success"] and expert["steps"] == 100
    assert run_reference("pick-place", 100000, "expert")["steps"] == 200
    assert not random["success"] and random["steps"] == 100
    # the same seed gives the same random episode
    assert run_reference("reach", 100000, "random")["success"] == random["success"]


def test_eval_runs_the_protocol_end_to_end(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(["eval", f"checkpoint={tiny_checkpoint}", "tasks=[reach]", "episodes=2", "workers=2",
                 "videos=1", "traces=1", f"out_dir={out}", *SMALL_PLANNER])
    assert code == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "reach" in printed and "95% CI" in printed
    report = json.loads((out / "report.json").read_text())
    reach = report["tasks"]["reach"]
    assert reach["n"] == 2 and [e["seed"] for e in reach["episodes"]] == [100000, 100001]
    assert 0.0 <= reach["wilson_95"][0] <= reach["success_rate"] <= reach["wilson_95"][1] <= 1.0
    # 100 env steps, frameskip 2, one predictor step per plan: 50 replans per episode
    assert reach["plan_time_per_replan_s"]["count"] == 100
    assert reach["plan_time_per_action_s"]["mean"] == pytest.approx(
        reach["plan_time_per_replan_s"]["mean"] / 2)
    assert reach["references"]["expert"]["n"] == 2 and reach["references"]["expert"]["success_rate"] == 1.0
    assert reach["references"]["random"]["n"] == 2
    assert report["protocol"]["budgets"] == {"reach": 100}
    assert report["protocol"]["seeds"] == [100000, 100001]
    assert report["protocol"]["split"] == "reporting" and report["protocol"]["reporting_seeds"]
    assert report["protocol"]["goals"] == "protocol" and reach["skipped"] == []
    # the simulator's hand-to-target distance, a diagnostic: min over the episode <= final
    for episode in reach["episodes"]:
        assert 0.0 <= episode["min_goal_distance_m"] <= episode["final_goal_distance_m"]
        assert (episode["final_goal_distance_m"] <= 0.05) == episode["success"]
    assert reach["goal_distance_m"]["final"]["count"] == 2
    # where the goal frame itself sits (the task-aimed expert puts the fingers' centre
    # within a centimetre of the target), and how far the hand ended from the goal frame's hand
    for episode in reach["episodes"]:
        assert 0.0 <= episode["goal_frame_distance_m"] <= 0.01
        assert 0 < episode["goal_step"] <= 100
        assert episode["final_hand_to_goal_frame_m"] >= 0.0
    frames = reach["goal_frame_distance_m"]
    assert frames["min"] <= frames["p50"] <= frames["max"] <= 0.01
    assert reach["final_hand_to_goal_frame_m"]["count"] == 2
    # traces=1: the first episode carries one row per predictor step (frameskip 2)
    trace = reach["episodes"][0]["trace"]
    assert "trace" not in reach["episodes"][1]
    assert [row["step"] for row in trace] == list(range(2, 101, 2))
    assert all(len(row["true"]) == 7 and row["goal_index"] == 0 for row in trace)
    assert all(row["energy"] >= 0 and "read" not in row for row in trace)  # no readout here
    assert reach["episodes"][0]["trace_columns"]["true"][3] == "gripper"
    assert trace[0]["true"][:3] != trace[-1]["true"][:3]  # the hand moved
    assert reach["goal_frame_distance_m"]["count"] == 2
    assert (out / "summary.png").stat().st_size > 0
    # videos=1, video_choice=mixed: a success if there is one, else the first failure
    videos = list((out / "videos").glob("*.mp4"))
    succeeded = [e["seed"] for e in reach["episodes"] if e["success"]]
    chosen = succeeded[0] if succeeded else 100000
    assert [v.name for v in videos] == [f"reach-{chosen}.mp4"]
    assert [e.get("video") for e in reach["episodes"] if "video" in e] == [str(videos[0])]
    with av.open(str(videos[0])) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    # the first observation, one frame per step, then 1 s (20 frames) of the closing caption
    assert len(frames) == 101 + 20
    assert frames[0].shape[0] > VIDEO_PIXELS and frames[0].shape[1] > 3 * VIDEO_PIXELS  # obs | goal | energy
    caption = frames[-1][-10:, :200].reshape(-1, 3).mean(0)  # the caption bar, left end
    assert (caption[1] > caption[0]) == any(e["success"] for e in reach["episodes"] if e["seed"] == chosen)
    assert np.abs(frames[-1].astype(int) - frames[0]).max() > 50  # the video moves
    assert "reach" in format_table(report)
    # the bar counted env steps while episodes ran (also in the two workers), not only at their ends
    counts = [int(n) for n in re.findall(r"\| *(\d+)/600 \[", captured.err)]
    assert counts[-1] == 600 and any(n % 100 for n in counts)


def test_episode_trace_puts_the_readout_beside_the_simulator_every_predictor_step():
    from types import SimpleNamespace

    import torch

    from jepa_robot.agent import Replan

    model = SimpleNamespace(
        encode_image=lambda images: torch.full((7, 1), float(images["oblique"].mean())),
        readout=lambda latents: latents[..., 0],  # [1, 7]: the frame's mean, 7 times
    )
    env = SimpleNamespace(state=lambda: np.array([0.1, 0.6, 0.2, 1.0]),
                          object_position=lambda: np.array([0.0, 0.7, 0.02]))
    agent = SimpleNamespace(replans=[])
    trace = EpisodeTrace(model, frameskip=5)
    frame = {"oblique": np.full((8, 8, 3), 3, np.uint8)}
    trace.add(4, env, frame, agent)  # nothing planned yet: no row
    agent.replans.append(Replan(step=0, seconds=0.1, plan_seconds=0.1, energy=0.25, iterations=3,
                                goal_index=1, goal_distance=0.5))
    for step in range(5, 15):
        trace.add(step, env, frame, agent)
    assert [row["step"] for row in trace.rows] == [10, 15]  # after each predictor step
    row = trace.rows[0]
    assert row["true"] == [0.1, 0.6, 0.2, 1.0, 0.0, 0.7, 0.02]
    assert row["read"] == [3.0] * 7
    assert (row["energy"], row["goal_index"], row["goal_distance"]) == (0.25, 1, 0.5)


def test_plan_toward_a_goal_image_file(tiny_checkpoint, tmp_path, capsys):
    goal = tmp_path / "goal.png"
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(goal)  # resized to the model's 32 px
    video = tmp_path / "plan.mp4"
    code = main(["plan", f"checkpoint={tiny_checkpoint}", "task=push", f"goal=[{goal}]", "steps=6",
                 f"video={video}", *SMALL_PLANNER])
    assert code == 0
    assert "push seed 100000" in capsys.readouterr().out
    with av.open(str(video)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 7 + 20  # 6 steps, then the closing caption


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["checkpoint=/nonexistent/ckpt"], "/nonexistent/ckpt"),
        (["checkpoint={ckpt}", "seed_start=5"], "evaluation seeds lie in [100000, 200000)"),
        (["checkpoint={ckpt}", "seed_start=199999", "episodes=2"], "nothing at or above 200000"),
        (["checkpoint={ckpt}", "seed_start=149999", "episodes=2"], "mix the reporting seeds"),
        (["checkpoint={ckpt}", "goals=hand"], "goals='hand'"),
        (["checkpoint={ckpt}", "goals=jepa_wms", "subgoals=true"], "no sub-goal images"),
        (["checkpoint={ckpt}", "tasks=[stack]"], "unknown"),
        (["checkpoint={ckpt}", "planner.options.horizn=3"], "horizn"),
        (["checkpoint={ckpt}", "planner=nope"], "planner"),
        (["checkpoint={ckpt}", "agent.subgoal_switch=never"], "subgoal_switch"),
    ],
)
def test_bad_eval_input_gets_a_clear_error(tiny_checkpoint, tmp_path, capsys, overrides, message):
    overrides = [o.format(ckpt=tiny_checkpoint) for o in overrides]
    if not any(o.startswith("episodes=") for o in overrides):
        overrides.append("episodes=1")
    code = main(["eval", *overrides, f"out_dir={tmp_path / 'out'}", "progress=false"])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "report.json").exists()


@pytest.mark.parametrize("task, phases", [("push", ["contact"]), ("pick-place", ["grasp", "lift"])])
def test_goal_frames_put_the_task_subgoals_first(task, phases):
    from envs.metaworld.env import MetaWorldGoalEnv
    from jepa_robot.evaluation import goal_frames

    env = MetaWorldGoalEnv(task, image_size=32)
    frames, _, goal = goal_frames(env, 100000, ["oblique"], subgoals=True)
    assert goal.subgoal_phases == phases and len(frames) == len(phases) + 1
    for frame, subgoal in zip(frames[:-1], goal.subgoals, strict=True):
        assert list(frame) == ["oblique"]
        np.testing.assert_array_equal(frame["oblique"], subgoal["oblique"])
    frames, _, _ = goal_frames(env, 100000, ["oblique"], subgoals=False)
    assert len(frames) == 1 and np.array_equal(frames[0]["oblique"], goal.goal["oblique"])
    env.close()


def test_a_seed_the_expert_cannot_solve_is_reported_and_skipped(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    """No goal image for a seed: the report lists it with the reason, counts neither the
    model nor the references on it, and runs the other seeds as usual."""
    from envs.metaworld import goals
    from jepa_robot import evaluation

    def goal_for(env, seed, source="protocol"):
        if seed == 150001:
            raise goals.GoalNotReachedError(f"the expert did not solve it from seed {seed}")
        return goals.make_goal_images(env, seed, source=source)

    monkeypatch.setattr(evaluation, "make_goal_images", goal_for)
    out = tmp_path / "eval"
    code = main(["eval", f"checkpoint={tiny_checkpoint}", "tasks=[reach]", "episodes=2",
                 "seed_start=150000", "videos=0", f"out_dir={out}", "progress=false",
                 "planner.options.samples=8", "planner.options.elites=2",
                 "planner.options.iterations=1", "planner.options.horizon=1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "seeds 150000-150001 (tuning seeds)" in printed
    assert "could not make a goal image for seed(s) 150001; skipped" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["protocol"]["split"] == "tuning" and not report["protocol"]["reporting_seeds"]
    reach = report["tasks"]["reach"]
    assert reach["skipped"] == [{"seed": 150001, "reason": "the expert did not solve it from seed 150001"}]
    assert reach["n"] == 1 and [e["seed"] for e in reach["episodes"]] == [150000]
    assert reach["references"]["expert"]["n"] == 1 and reach["references"]["random"]["n"] == 1


def test_plan_on_a_seed_without_a_goal_image_says_so(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    from envs.metaworld import goals
    from jepa_robot import evaluation

    def no_goal(env, seed, source="protocol"):
        raise goals.GoalNotReachedError(f"the expert did not solve it from seed {seed}")

    monkeypatch.setattr(evaluation, "make_goal_images", no_goal)
    code = main(["plan", f"checkpoint={tiny_checkpoint}", "seed=150003", f"video={tmp_path / 'v.mp4'}"])
    assert code == 2
    assert "did not solve it from seed 150003; choose another seed" in capsys.readouterr().err
    assert main(["plan", f"checkpoint={tiny_checkpoint}", "seed=200000"]) == 2
    assert "nothing at or above 200000" in capsys.readouterr().err


def test_jepa_wms_goals_run_the_anchor_rule(tiny_checkpoint, tmp_path):
    out = tmp_path / "eval"
    code = main(["eval", f"checkpoint={tiny_checkpoint}", "tasks=[reach]", "episodes=1", "goals=jepa_wms",
                 "videos=0", f"out_dir={out}", "progress=false", "references=[expert]",
                 "planner.options.samples=8", "planner.options.elites=2",
                 "planner.options.iterations=1", "planner.options.horizon=1"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["protocol"]["goals"] == "jepa_wms" and "100 steps" in report["protocol"]["goal_images"]
    episode = report["tasks"]["reach"]["episodes"][0]
    # Meta-World's hand-aimed expert leaves the fingers' centre about 4 cm from the target
    assert episode["goal_step"] == 100 and 0.03 < episode["goal_frame_distance_m"] < 0.05
    assert report["tasks"]["reach"]["references"]["expert"]["n"] == 1


def test_plan_refuses_an_unreadable_goal_image(tiny_checkpoint, tmp_path, capsys):
    bad = tmp_path / "goal.png"
    bad.write_text("not an image")
    assert main(["plan", f"checkpoint={tiny_checkpoint}", f"goal=[{bad}]", "steps=2"]) == 2
    assert "could not be read as an image" in capsys.readouterr().err


def test_a_pool_worker_that_cannot_start_fails_its_first_job_instead_of_respawning(tmp_path):
    """multiprocessing.Pool restarts a worker whose initializer raises, forever; the
    worker keeps the error and its first model job raises it, which ends the eval."""
    from omegaconf import OmegaConf

    from jepa_robot import evaluation
    from jepa_robot.config.planning import EvalConfig

    config = OmegaConf.to_yaml(OmegaConf.structured(EvalConfig(checkpoint=str(tmp_path / "missing"))))
    try:
        evaluation._init_pool_worker(config, 1)  # does not raise
        assert "missing" in evaluation._init_error
        with pytest.raises(evaluation.EvalWorkerError, match="could not load its model.*missing"):
            evaluation._run_job(evaluation.Job("reach", 100000, "model"))
    finally:
        evaluation._init_error, evaluation._runner = None, None


TINY_EVAL = ["tasks=[reach]", "episodes=1", "videos=0", "references=[]", "progress=false",
             "planner.options.samples=8", "planner.options.elites=2", "planner.options.iterations=1",
             "planner.options.horizon=1"]


def test_an_earlier_report_is_refused_unless_overwrite(tiny_checkpoint, tmp_path, capsys):
    """Before: a second eval into the same out_dir silently replaced the first one's report."""
    out = tmp_path / "eval"
    out.mkdir()
    earlier = b'{"format": "jepa_robot.eval/1", "tasks": {"reach": "an earlier run"}}'
    (out / "report.json").write_bytes(earlier)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    code = main(["eval", f"checkpoint={tiny_checkpoint}", f"out_dir={out}", *TINY_EVAL])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{out / 'report.json'} holds the report of an earlier eval" in err
    assert "another out_dir" in err and "overwrite=true" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # nothing written
    assert (out / "report.json").read_bytes() == earlier

    assert main(["eval", f"checkpoint={tiny_checkpoint}", f"out_dir={out}", "overwrite=true", *TINY_EVAL]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["tasks"]["reach"]["n"] == 1 and report["config"]["overwrite"] is True


def test_an_eval_into_a_directory_in_use_is_refused(tiny_checkpoint, tmp_path, capsys):
    import subprocess
    import sys

    from jepa_robot.files import LOCK_FILE

    hold = ("import sys, time\nfrom jepa_robot.files import run_lock\nwith run_lock(sys.argv[1], 'jepa-robot eval'):\n"
            "    print('locked', flush=True)\n    time.sleep(600)\n")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path / "eval")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["eval", f"checkpoint={tiny_checkpoint}", f"out_dir={tmp_path / 'eval'}", *TINY_EVAL]) == 2
    finally:
        holder.kill()
        holder.wait()
    assert f"is in use by jepa-robot eval (pid {holder.pid} on host" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == [LOCK_FILE]


def _episode(seed: int, success: bool, task: str = "pick-place") -> dict:
    return {"task": task, "seed": seed, "kind": "model", "success": success, "steps": 200}


def test_videos_alternate_successes_and_failures_whatever_order_episodes_end_in():
    from jepa_robot.evaluation import EpisodeRecording, VideoCandidates, choose_videos

    outcomes = {100000: False, 100001: False, 100002: True, 100003: False, 100004: True, 100005: True}
    records = [_episode(seed, ok) for seed, ok in outcomes.items()]
    records.append({"task": "pick-place", "seed": 100006, "kind": "model", "skipped": "no goal"})
    records.append({**_episode(100000, True), "kind": "expert"})  # references never get a video
    assert choose_videos(records, 1, "mixed") == [("pick-place", 100002)]  # the success, not the first
    assert choose_videos(records, 2, "mixed") == [("pick-place", 100000), ("pick-place", 100002)]
    assert choose_videos(records, 5, "mixed") == [("pick-place", s) for s in (100000, 100001, 100002, 100004, 100005)]
    assert choose_videos(records, 2, "first") == [("pick-place", 100000), ("pick-place", 100001)]
    assert choose_videos([_episode(100000, False), _episode(100001, False)], 1, "mixed") == [("pick-place", 100000)]
    assert choose_videos(records, 0, "mixed") == []

    for choice in ("mixed", "first"):
        candidates = VideoCandidates(2, choice)
        for seed in (100005, 100003, 100000, 100004, 100002, 100001):  # as a pool might finish them
            recording = EpisodeRecording("pick-place", seed, 200, [], [], None)
            recording.success = outcomes[seed]
            candidates.offer(recording)
        assert sum(len(kept) for kept in candidates.kept.values()) <= 4  # bounded memory
        for task, seed in choose_videos(records, 2, choice):
            assert candidates.get(task, seed).seed == seed


def _recording(success: bool, steps: int = 10, cameras: tuple[str, ...] = ("oblique",)):
    from jepa_robot.agent import Replan
    from jepa_robot.evaluation import EpisodeRecording, goal_names

    def views(value: int) -> dict[str, np.ndarray]:  # each camera a shade of its own
        return {camera: np.full((32, 32, 3), value + 10 * index, np.uint8) for index, camera in enumerate(cameras)}

    goals = [views(value) for value in (40, 200)]
    recording = EpisodeRecording("push", 100000, steps, goals, goal_names(2, ["contact"]), target_pixel=(8.0, 20.0))
    for step in range(steps + 1):
        recording.add(views(90), int(step >= 5), 0.10 - 0.005 * step)
    recording.replans = [Replan(step=s, seconds=0.1, plan_seconds=0.1, energy=1.0 - 0.05 * s, iterations=2,
                                goal_index=int(s >= 5), goal_distance=0.5) for s in range(0, steps, 2)]
    recording.success = success
    return recording


@pytest.mark.parametrize("success", [True, False])
def test_an_episode_video_labels_its_panels_marks_the_target_and_ends_on_its_outcome(success):
    from jepa_robot.evaluation import episode_video_frames, goal_names

    assert goal_names(3, ["grasp", "lift"]) == ["sub-goal 1/2: grasp", "sub-goal 2/2: lift", "final goal"]
    assert goal_names(1, []) == ["final goal"]
    frames = list(episode_video_frames(_recording(success), caption_frames=4))
    assert len(frames) == 11 + 4 and all(f.shape == frames[0].shape for f in frames)
    assert np.array_equal(frames[-1], frames[-4])  # the caption is held
    panel = VIDEO_PIXELS  # 32 px frames upscaled by 8
    height, width, _ = frames[0].shape
    bar = (height - panel) // 3  # header, labels, panels, footer
    first = frames[0]
    header, labels, camera = first[:bar], first[bar:2 * bar], first[2 * bar:2 * bar + panel, :panel]
    assert (header < 100).any() and (labels < 100).any()  # text is written
    # the target is ringed in yellow around (8, 20) * 8 on the camera panel, which is otherwise flat
    yellow = np.argwhere((camera[..., 0] > 200) & (camera[..., 1] > 180) & (camera[..., 2] < 80))
    assert len(yellow) > 20 and np.allclose(yellow.mean(0), [160, 64], atol=3)
    assert (camera[:100, 100:] == 90).all()
    # the goal panel follows the active goal
    assert (first[2 * bar + 100, panel + 4 + 100] == 40).all() and (frames[8][2 * bar + 100, panel + 4 + 100] == 200).all()
    # the energy plot hides what has not happened yet: the first frame's plot is mostly the shade
    plot = slice(2 * panel + 8 + 80, width - 20)
    assert (first[2 * bar + 100, plot] == 235).mean() > 0.8 and (frames[10][2 * bar + 100, plot] == 235).mean() < 0.1
    caption = frames[-1][-bar:].reshape(-1, 3).mean(0)
    assert (caption[1] > caption[0]) == success  # green for a success, red for a failure
    assert not np.array_equal(frames[-1][-bar:], frames[-5][-bar:])


def test_an_episode_video_shows_every_camera_and_every_view_of_the_goal():
    from jepa_robot.evaluation import episode_video_frames

    one = next(episode_video_frames(_recording(True), caption_frames=1))
    two = list(episode_video_frames(_recording(True, cameras=("oblique", "wrist")), caption_frames=1))
    panel, gap = VIDEO_PIXELS, 4
    assert two[0].shape[1] == one.shape[1] + 2 * (panel + gap)  # a second view in the camera and goal panels
    bar = (two[0].shape[0] - panel) // 3
    row = two[0][2 * bar + 100]
    # camera panels: oblique (90), wrist (100); then the goal's oblique (40) and wrist (50)
    assert (row[100] == 90).all() and (row[panel + gap + 100] == 100).all()
    assert (row[2 * (panel + gap) + 100] == 40).all() and (row[3 * (panel + gap) + 100] == 50).all()
    assert (two[8][2 * bar + 100, 3 * (panel + gap) + 100] == 210).all()  # the final goal's wrist view


def test_the_table_says_which_references_did_not_run():
    report = {
        "config": {"references": []},
        "protocol": {"seeds": [100000, 100004], "split": "reporting", "goals": "protocol", "subgoals": True},
        "tasks": {"pick-place": {**_episode(0, True), "n": 5, "success_rate": 0.2, "wilson_95": [0.04, 0.62],
                                 "references": {}, "plan_time_per_replan_s": None, "plan_time_per_action_s": None,
                                 "episode_wall_s": None, "goal_distance_m": {}, "skipped": []}},
    }
    table = format_table(report)
    assert "random" not in table.splitlines()[0] and "expert" not in table.splitlines()[0]
    assert "references not run: random, expert" in table
    report["config"]["references"] = ["expert"]
    report["tasks"]["pick-place"]["references"] = {"expert": {"success_rate": 1.0}}
    table = format_table(report)
    assert "expert" in table.splitlines()[0] and "100%" in table.splitlines()[2]
    assert "references not run: random " in table


def test_progress_counts_env_steps_and_says_what_is_done():
    from jepa_robot.evaluation import EvalProgress, Job

    jobs = [Job("reach", 100000, "model"), Job("reach", 100001, "model"), Job("reach", 100000, "random")]
    progress = EvalProgress(jobs, enabled=False)
    assert progress.bar.total == 300
    for _ in range(40):
        progress.model_step()  # in this process
    assert progress.steps == 40
    progress.set_model_steps(130)  # from the workers' shared counter
    assert progress.steps == 130
    progress.episode_done({**_episode(100000, True, "reach"), "steps": 100})
    progress.episode_done({"task": "reach", "seed": 100001, "kind": "model", "skipped": "no goal"})
    progress.episode_done({"task": "reach", "seed": 100000, "kind": "random", "success": False, "steps": 100})
    assert progress.steps == 130 + 100 + 100
    assert progress.summary == "episodes 1/2, successes 1, skipped 1, references 1/1"
    progress.close()


def test_pool_workers_warnings_reach_this_process_loggers(caplog):
    import logging
    import queue

    from jepa_robot.evaluation import _forward_worker_logs

    log_queue = queue.Queue()
    log_queue.put(logging.LogRecord("jepa_robot.evaluation", logging.WARNING, __file__, 1,
                                    "reach seed 100001 skipped", None, None))
    with caplog.at_level(logging.WARNING):
        _forward_worker_logs(log_queue)
    assert "reach seed 100001 skipped" in caplog.text and log_queue.empty()


def test_bad_video_choice_is_refused(tiny_checkpoint, tmp_path, capsys):
    code = main(["eval", f"checkpoint={tiny_checkpoint}", "video_choice=best", f"out_dir={tmp_path / 'out'}",
                 *TINY_EVAL])
    assert code == 2
    assert "video_choice='best'; valid: ['mixed', 'first']" in capsys.readouterr().err
