"""A checkpoint's own planner and agent settings (its planning.json) in config composition."""

from __future__ import annotations

import json
import shutil

import pytest

from jepa_robot.config import ConfigError, compose
from jepa_robot.config.planning import (
    AgentConfig,
    EvalConfig,
    PlanConfig,
    PlannerSettings,
    SetPlanningConfig,
    set_planning,
)
from jepa_robot.config.robot import RunRobotConfig
from jepa_robot.world_model.checkpoint import PLANNING, CheckpointError, read_planning

TUNED_PLANNER = PlannerSettings(
    name="mppi", options={"samples": 24, "elites": 6, "iterations": 2, "horizon": 2, "temperature": 0.3})
TUNED_AGENT = AgentConfig(subgoal_switch="distance", subgoal_threshold=0.05)


@pytest.fixture
def tuned_checkpoint(tiny_checkpoint, tmp_path):
    """A copy of the tiny checkpoint with a planning file (MPPI 24 samples, distance switch)."""
    checkpoint = tmp_path / "tuned"
    shutil.copytree(tiny_checkpoint, checkpoint)
    set_planning(SetPlanningConfig(checkpoint=str(checkpoint), planner=TUNED_PLANNER, agent=TUNED_AGENT))
    return checkpoint


@pytest.mark.parametrize("command, schema", [("plan", PlanConfig), ("eval", EvalConfig), ("run-robot", RunRobotConfig)])
def test_composition_picks_the_checkpoint_planner_and_agent(tuned_checkpoint, command, schema):
    config = compose(command, [f"checkpoint={tuned_checkpoint}"], schema)
    assert config.planner == TUNED_PLANNER and config.agent == TUNED_AGENT
    assert config.planning_source["planner"].endswith(f"{tuned_checkpoint.name}/{PLANNING}")
    assert config.planning_source["agent"] == config.planning_source["planner"]


def test_a_group_the_user_names_wins_over_the_checkpoint(tuned_checkpoint):
    config = compose("plan", [f"checkpoint={tuned_checkpoint}", "planner=cem"], PlanConfig)
    assert config.planner.name == "cem" and config.planner.options["samples"] == 256  # configs/planner/cem.yaml
    assert config.agent == TUNED_AGENT  # not named: still the checkpoint's
    assert config.planning_source["planner"] == "planner=cem (given)"
    assert config.planning_source["agent"].endswith(PLANNING)


def test_dotted_overrides_apply_on_top_of_the_checkpoint_settings(tuned_checkpoint):
    # temperature is an MPPI option that the default group (cem) does not have
    overrides = [f"checkpoint={tuned_checkpoint}", "planner.options.temperature=0.7", "agent.subgoal_steps=30"]
    config = compose("plan", overrides, PlanConfig)
    assert config.planner.name == "mppi"
    assert config.planner.options == {**TUNED_PLANNER.options, "temperature": 0.7}
    assert config.agent.subgoal_steps == 30 and config.agent.subgoal_switch == "distance"
    assert config.planning_source["planner"].endswith("then planner.options.temperature=0.7")


def test_a_checkpoint_without_a_planning_file_gets_the_config_defaults(tiny_checkpoint):
    config = compose("plan", [f"checkpoint={tiny_checkpoint}"], PlanConfig)
    assert config.planner.name == "cem" and config.planner.options["samples"] == 256
    assert config.agent == AgentConfig()
    assert config.planning_source["planner"].startswith("planner=cem (default of configs/plan.yaml; ")
    assert "has no planning file" in config.planning_source["planner"]
    with pytest.raises(ConfigError, match="planner=checkpoint: checkpoint .* has no planning file"):
        compose("plan", [f"checkpoint={tiny_checkpoint}", "planner=checkpoint"], PlanConfig)


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not valid JSON"),
    (json.dumps({"format": "jepa_robot.planning/1", "planner": {"name": "cem"}}), "the field 'agent' is missing"),
    (json.dumps({"format": "jepa_robot.planning/1", "planner": {"name": "nope"}, "agent": {}}),
     "planner: planner.name='nope'"),
    (json.dumps({"format": "jepa_robot.planning/1", "planner": {}, "agent": {"context_frame": 2}}),
     "agent: .*context_frame"),
    (json.dumps({"format": "jepa_robot.planning/1", "planner": {"name": "cem", "options": {"horizn": 3}},
                 "agent": {}}), r"planner: planner.options: unknown \['horizn'\]"),
])
def test_a_malformed_planning_file_is_refused_naming_it(tiny_checkpoint, tmp_path, content, message):
    checkpoint = tmp_path / "bad"
    shutil.copytree(tiny_checkpoint, checkpoint)
    (checkpoint / PLANNING).write_text(content)
    with pytest.raises((ConfigError, CheckpointError), match=rf"bad/{PLANNING}.*{message}"):
        compose("eval", [f"checkpoint={checkpoint}"], EvalConfig)


def test_set_planning_writes_what_it_composed_and_keeps_the_checkpoint_settings(tuned_checkpoint, capsys):
    from jepa_robot.cli import main

    # no group named: the checkpoint's settings are the starting point, edited by overrides
    assert main(["set-planning", f"checkpoint={tuned_checkpoint}", "planner.options.samples=32"]) == 0
    assert read_planning(tuned_checkpoint)["planner"]["options"] == {**TUNED_PLANNER.options, "samples": 32}
    assert read_planning(tuned_checkpoint)["agent"]["subgoal_threshold"] == 0.05
    assert main(["set-planning", f"checkpoint={tuned_checkpoint}", "planner=icem", "agent=default"]) == 0
    written = read_planning(tuned_checkpoint)
    assert written["planner"]["name"] == "icem" and written["agent"]["subgoal_switch"] == "schedule"
    assert "wrote" in capsys.readouterr().out
    assert not list(tuned_checkpoint.glob(".*tmp*"))  # written atomically: no temporary left


def test_set_planning_refuses_a_directory_that_is_no_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        set_planning(SetPlanningConfig(checkpoint=str(tmp_path)))
    assert not (tmp_path / PLANNING).exists()


def test_the_shipped_model_plans_with_the_default_model_groups():
    """planning.json of checkpoint=default holds planner=default_model agent=default_model,
    and the demo (which names no planner) plans with it."""
    groups = compose("plan", ["checkpoint=default", "planner=default_model", "agent=default_model"], PlanConfig)
    for command, schema in (("plan", PlanConfig), ("demo", EvalConfig)):
        config = compose(command, ["checkpoint=default"], schema)
        assert config.planner == groups.planner and config.agent == groups.agent
        assert config.planning_source["planner"].endswith(f"models/default/checkpoint/{PLANNING}")


def test_eval_report_records_the_checkpoint_planner_and_its_source(tuned_checkpoint):
    from jepa_robot.evaluation import build_report

    config = compose("eval", [f"checkpoint={tuned_checkpoint}", "tasks=[reach]"], EvalConfig)
    report = json.loads(json.dumps(build_report(config, [], 0.0, 1)))  # as report.json holds it
    assert report["config"]["planner"]["name"] == "mppi" and report["config"]["planner"]["options"]["samples"] == 24
    assert report["config"]["agent"]["subgoal_threshold"] == 0.05
    assert report["config"]["planning_source"]["planner"].endswith(f"tuned/{PLANNING}")
