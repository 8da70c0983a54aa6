"""benchmarks/results_table.py renders eval reports into the README's results section."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "benchmarks" / "results" / "eval_pp40_random_pool4.json"


def load():
    spec = importlib.util.spec_from_file_location("results_table", ROOT / "benchmarks" / "results_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table_rows_come_from_the_report():
    table = load().render([("r.json", json.loads(REPORT.read_text()))])
    rows = [line for line in table.splitlines() if line.startswith("| reach")]
    # reach in that report: 4/50 successes, Wilson [3%, 19%], random 0%, expert 100%, 469 ms mean
    # (that report predates the end-distance and goal-frame diagnostics: "-")
    assert rows == [
        "| reach | final goal | 50 | **8%** | 3%-19% | 0% | 100% | 469 / 419 / 801 | 13.0 | - | - | - |"]
    assert "| pick-place | final goal | 50 | **0%** |" in table


def test_goal_frame_match_is_shown_when_the_report_has_it():
    module = load()
    report = json.loads(REPORT.read_text())
    report["tasks"]["reach"]["final_hand_to_goal_frame_m"] = {"mean": 0.03, "p50": 0.023,
                                                              "p95": 0.08, "count": 50}
    (row,) = [line for line in module.render([("r.json", report)]).splitlines()
              if line.startswith("| reach")]
    assert row.endswith("| 13.0 | - | - | 2.3 |")


def test_switched_on_search_settings_are_named():
    module = load()
    report = json.loads(REPORT.read_text())
    assert "hold_candidate" not in module.render([("r.json", report)])
    report["config"]["planner"]["options"] |= {"hold_candidate": True, "hold_margin": 0.1}
    table = module.render([("r.json", report)])
    assert "hold_candidate" in table and "return_mean" not in table
    assert "hold_margin 0.1" in table


def test_readme_section_is_replaced_in_place(tmp_path):
    module = load()
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{module.BEGIN}\nold table\n{module.END}\noutro\n")
    module.main([str(REPORT), "--readme", str(readme)])
    text = readme.read_text()
    assert "old table" not in text and text.startswith("intro\n") and text.endswith("outro\n")
    assert "| push | final goal | 50 |" in text
    module.main([str(REPORT), "--readme", str(readme)])  # idempotent
    assert readme.read_text() == text


def test_a_readme_without_markers_is_refused(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no section here\n")
    with pytest.raises(SystemExit, match="results:begin"):
        load().main([str(REPORT), "--readme", str(readme)])
    assert readme.read_text() == "no section here\n"


def test_readout_energy_weights_binary_dims_and_subgoal_switch_are_named():
    module = load()
    report = json.loads(REPORT.read_text())
    report["config"]["planner"] |= {
        "energy": "readout", "energy_weights": [1.0, 1.0, 1.0, 0.5],
        "task_energy_weights": {"reach": [1.0, 1.0, 1.0, 0.0]},
        "bounds": {**report["config"]["planner"].get("bounds", {}), "binary_dims": [3]}}
    report["config"]["subgoals"] = True
    report["config"]["agent"] |= {"subgoal_switch": "distance", "subgoal_threshold": 0.025,
                                  "subgoal_steps": 60}
    table = module.render([("r.json", report)])
    assert "readout (weights [1, 1, 1, 0.5]; reach [1, 1, 1, 0]) energy" in table
    assert "binary action dims [3]" in table
    assert "sub-goals switched on distance <= 0.025 (at most 60 steps each)" in table


def test_protocol_v2_reports_name_their_goal_images_seeds_and_skipped_seeds():
    module = load()
    report = json.loads(REPORT.read_text())
    report["config"]["subgoals"] = True
    report["protocol"] = {"version": 2, "seeds": [100000, 100049], "split": "reporting",
                          "goals": "protocol", "subgoals": True,
                          "subgoal_phases": {"reach": [], "push": ["contact"], "pick-place": ["grasp", "lift"]}}
    report["tasks"]["push"]["goal_frame_distance_m"] = {"mean": 0.01, "p50": 0.0084, "p95": 0.02,
                                                       "count": 49, "min": 0.0025, "max": 0.0282}
    report["tasks"]["push"]["skipped"] = [{"seed": 100007, "reason": "no success"}]
    report["machine"]["load_avg_1min"] = [0.1, 2.0]
    table = module.render([("r.json", report)])
    (push,) = [line for line in table.splitlines() if line.startswith("| push")]
    assert push.startswith("| push | sub-goals (contact) | 50 |") and "| 0.8 (0.2-2.8) |" in push
    assert "| pick-place | sub-goals (grasp, lift) |" in table
    assert "seeds 100000-100049 (reporting); no goal image (skipped): push 100007;" in table
    assert "1-min load 0.1 before / 2.0 after" in table
    report["protocol"]["goals"] = "jepa_wms"
    assert "| reach | JEPA-WMs' goal frames |" in module.render([("r.json", report)])


def test_a_hierarchical_run_names_its_high_level_and_how_it_planned():
    module = load()
    report = json.loads(REPORT.read_text())
    report["config"]["agent"] |= {
        "subgoal_switch": "distance", "subgoal_threshold": 0.025, "subgoal_steps": 20,
        "hierarchy": {"checkpoint": "default_high_level", "planner": {
            "name": "cem", "options": {"samples": 128, "elites": 16, "iterations": 3, "horizon": 3},
            "energy": "readout", "energy_steps": "final", "energy_weights": [1.0, 1.0, 1.0, 0.5]}}}
    table = module.render([("r.json", report)])
    assert "| reach | final goal, hierarchical | 50 |" in table
    assert ("sub-goals from the high level `default_high_level` planned by cem (samples 128, elites 16, "
            "iterations 3, horizon 3), readout (weights [1, 1, 1, 0.5]) energy on the final step(s), "
            "switched on distance <= 0.025 (at most 20 steps each)") in table
