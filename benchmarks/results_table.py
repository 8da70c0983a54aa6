"""Render `jepa-robot eval` reports as the README's results table.

    uv run python benchmarks/results_table.py benchmarks/results/default_single_goal.json \
        benchmarks/results/default_subgoals.json --readme README.md

prints the Markdown table and, with ``--readme``, replaces the text between the
``<!-- results:begin -->`` and ``<!-- results:end -->`` markers in that file. Every
figure comes from the reports; nothing is typed in by hand.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def _numbers(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def _planner_summary(config: dict[str, Any]) -> str:
    planner, agent = config["planner"], config["agent"]
    summary = _search_summary(planner)
    hierarchy = (agent.get("hierarchy") or {})
    subgoals = ""
    if config.get("subgoals") or hierarchy.get("checkpoint"):
        subgoals = (f" switched on {agent['subgoal_switch']}"
                    + (f" <= {agent['subgoal_threshold']}" if agent["subgoal_switch"] == "distance" else "")
                    + f" (at most {agent['subgoal_steps']} steps each)")
    if hierarchy.get("checkpoint"):
        subgoals = (f"; sub-goals from the high level `{hierarchy['checkpoint']}` planned by "
                    f"{_search_summary(hierarchy['planner'])},{subgoals}")
    elif subgoals:
        subgoals = "; sub-goals" + subgoals
    return (f"{summary}, execute {agent['execute_steps']} predictor step(s) "
            f"per replan, action_repeat={agent['action_repeat']}{subgoals}")


def _search_summary(planner: dict[str, Any]) -> str:
    """A planner's name, sizes, energy and the options that change what it searches."""
    options = planner["options"]
    sizes = ("samples", "elites", "iterations", "horizon")
    shown = [f"{k} {options[k]}" for k in sizes if k in options]
    # settings that change what is searched, named only when switched on
    shown += [k for k in ("hold_candidate", "return_mean") if options.get(k)]
    shown += [f"hold_margin {options['hold_margin']}"] if options.get("hold_margin") else []
    shown = ", ".join(shown)
    energy = planner["energy"]
    if planner.get("energy_weights"):
        energy += f" (weights {_numbers(planner['energy_weights'])}"
        energy += "".join(f"; {task} {_numbers(weights)}"
                          for task, weights in (planner.get("task_energy_weights") or {}).items())
        energy += ")"
    binary = (planner.get("bounds") or {}).get("binary_dims")
    if binary:
        shown += f", binary action dims {binary}"
    return f"{planner['name']} ({shown}), {energy} energy on the {planner['energy_steps']} step(s)"


def _goal_images(report: dict[str, Any], task: str) -> str:
    """The goal-images column: which rule made them, and the sub-goal phases used."""
    protocol = report.get("protocol", {})
    if protocol.get("goals") == "jepa_wms":
        return "JEPA-WMs' goal frames"
    if ((report["config"]["agent"].get("hierarchy") or {}).get("checkpoint")):
        return "final goal, hierarchical"
    if not report["config"]["subgoals"]:
        return "final goal"
    phases = (protocol.get("subgoal_phases") or {}).get(task)
    return f"sub-goals ({', '.join(phases)})" if phases else "sub-goals"


def _goal_frame(entry: dict[str, Any]) -> str:
    """The goal frames' own distance to the target: median (min-max), cm."""
    frames = entry.get("goal_frame_distance_m")
    if not frames or "min" not in frames:
        return "-"
    return f"{100 * frames['p50']:.1f} ({100 * frames['min']:.1f}-{100 * frames['max']:.1f})"


def rows(report: dict[str, Any]) -> list[str]:
    out = []
    for task, entry in report["tasks"].items():
        low, high = entry["wilson_95"]
        refs = entry["references"]
        ref = {k: _pct(refs[k]["success_rate"]) if k in refs else "-" for k in ("random", "expert")}
        replan = entry["plan_time_per_replan_s"]
        final = (entry.get("goal_distance_m") or {}).get("final")
        end = f"{100 * final['p50']:.1f}" if final else "-"
        hand = entry.get("final_hand_to_goal_frame_m")
        matched = f"{100 * hand['p50']:.1f}" if hand else "-"
        out.append(
            f"| {task} | {_goal_images(report, task)} | {entry['n']} | **{_pct(entry['success_rate'])}** "
            f"| {_pct(low)}-{_pct(high)} | {ref['random']} | {ref['expert']} "
            f"| {1e3 * replan['mean']:.0f} / {1e3 * replan['p50']:.0f} / {1e3 * replan['p95']:.0f} "
            f"| {entry['episode_wall_s']['mean']:.1f} | {_goal_frame(entry)} | {end} | {matched} |"
        )
    return out


def render(reports: list[tuple[str, dict[str, Any]]]) -> str:
    lines = [
        "| task | goal images | N | success | 95% Wilson | random | scripted expert "
        "| plan time per replan, ms (mean / p50 / p95) | s per episode "
        "| goal frame to target, cm (median (min-max)) "
        "| distance to target at the end, cm (median) "
        "| hand to the goal frame's hand at the end, cm (median) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, report in reports:
        lines += rows(report)
    lines.append("")
    for path, report in reports:
        machine = report.get("machine", {})
        where = (f"{machine['cpu_count']} CPU cores ({machine.get('device', 'cpu')})"
                 if "cpu_count" in machine else "")
        protocol = report.get("protocol", {})
        seeds = (f"seeds {protocol['seeds'][0]}-{protocol['seeds'][1]} ({protocol['split']}); "
                 if "split" in protocol else "")
        skipped = {task: [s["seed"] for s in entry["skipped"]]
                   for task, entry in report["tasks"].items() if entry.get("skipped")}
        if skipped:
            seeds += "no goal image (skipped): " + ", ".join(
                f"{task} {', '.join(map(str, s))}" for task, s in skipped.items()) + "; "
        load = machine.get("load_avg_1min")
        if load:
            where += f", 1-min load {load[0]:.1f} before / {load[1]:.1f} after"
        lines.append(
            f"- `{path}`: {seeds}checkpoint `{report['config']['checkpoint']}`, {_planner_summary(report['config'])}; "
            f"{report['config']['workers']} worker(s) x "
            f"{machine.get('torch_threads_per_worker') or report['config']['threads_per_worker']} thread(s)"
            + (f" on {where}" if where else "") + f"; {report['seconds'] / 60:.0f} min in all."
        )
    return "\n".join(lines)


def replace_section(text: str, table: str) -> str:
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"no {BEGIN} ... {END} section to replace")
    return pattern.sub(lambda _: f"{BEGIN}\n{table}\n{END}", text, count=1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path, help="report.json files from jepa-robot eval")
    parser.add_argument("--readme", type=Path, help="rewrite this file's results section in place")
    args = parser.parse_args(argv)
    reports = [(path.as_posix(), json.loads(path.read_text())) for path in args.reports]
    table = render(reports)
    print(table)
    if args.readme:
        text = args.readme.read_text()
        updated = replace_section(text, table)
        if updated != text:
            args.readme.write_text(updated)
            print(f"\nupdated {args.readme}")


if __name__ == "__main__":
    main()
