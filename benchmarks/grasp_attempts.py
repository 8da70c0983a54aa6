"""Where does a planner close the gripper, and does that grasp hold? Read off the
per-step traces of ``jepa-robot eval ... traces=N``.

    uv run jepa-robot eval checkpoint=default planner=default_model agent=default_model \
        tasks=[pick-place] subgoals=true workers=2 references=[] videos=0 traces=50 \
        out_dir=runs/pps
    uv run python benchmarks/grasp_attempts.py runs/pps/report.json \
        --out benchmarks/results/grasp_attempts.json                 # a second or two

An eval trace holds, after every predictor step, the simulator's state (``true``: hand
xyz, gripper opening, object xyz; privileged, never shown to the agent) beside the
readout of the frame the agent saw (``read``). For every traced push or pick-place
episode this finds the first step at which the gripper has closed below ``--closed``
(its opening, 1 = fully open), and there measures how far the hand is from the object in
the table plane and above it, both in truth and as the readout reads that frame. Then
whether the object was ever lifted more than ``--lifted-cm`` above where it started, and
whether the episode succeeded.

Episodes are binned by the true planar offset at that first close (``--bins-cm``). The
scripted expert, shown the object 1 or 2 cm off, still succeeds 85% / 25% of the time on
pick-place (``grasp_tolerance.py``); so this says how often the planner's hand is where a
grasp can hold when it closes, and whether the readout knew it was not (a readout that
reads the object under the hand when it is centimetres away shows a small ``read``
offset in the far bins).
"""
from __future__ import annotations

import argparse
import json
import time
from itertools import pairwise
from pathlib import Path

import numpy as np

from envs.metaworld_goal import STATE_AND_OBJECT_NAMES as COLUMNS
from envs.metaworld_goal import TASKS_WITH_OBJECT
from jepa_robot.evaluation import write_json_atomic


def first_close(episode: dict, closed: float, lifted_m: float) -> dict:
    """The first close of one traced episode: where the hand was, in truth and as read."""
    columns = episode.get("trace_columns", {})
    if any(columns.get(key, COLUMNS) != COLUMNS for key in ("true", "read")):
        raise ValueError(f"seed {episode['seed']}: the trace's columns {columns} are not {COLUMNS} "
                         "(a checkpoint whose readout reads the hand, gripper and object)")
    trace = episode["trace"]
    if "read" not in trace[0]:
        raise ValueError(f"seed {episode['seed']}: the trace has no readout (a checkpoint with "
                         "one: jepa-robot fit-readout)")
    true = np.array([row["true"] for row in trace], dtype=float)
    read = np.array([row["read"] for row in trace], dtype=float)
    lifted = bool((true[:, 6] - true[0, 6]).max() > lifted_m)
    result = {"seed": episode["seed"], "success": bool(episode["success"]), "lifted": lifted,
              "closed": False}
    closing = np.flatnonzero(true[:, 3] < closed)
    if not len(closing):
        return result
    i = int(closing[0])
    result.update(
        closed=True, step=int(trace[i]["step"]), goal_index=int(trace[i]["goal_index"]),
        planar_offset_cm=float(np.linalg.norm(true[i, 0:2] - true[i, 4:6]) * 100),
        height_above_object_cm=float((true[i, 2] - true[i, 6]) * 100),
        read_planar_offset_cm=float(np.linalg.norm(read[i, 0:2] - read[i, 4:6]) * 100),
        object_read_error_cm=float(np.linalg.norm(read[i, 4:7] - true[i, 4:7]) * 100),
    )
    return result


def summarise(attempts: list[dict], bins_cm: list[float]) -> list[dict]:
    """Per bin of the true planar offset at the first close (and one row for episodes that
    never closed): episodes, lifted, succeeded, and medians of the read offset."""
    rows = []
    for lower, upper in pairwise([0.0, *bins_cm, np.inf]):
        inside = [a for a in attempts if a["closed"] and lower <= a["planar_offset_cm"] < upper]
        rows.append({
            "offset_cm": [lower, None if np.isinf(upper) else upper],
            "episodes": len(inside),
            "lifted": sum(a["lifted"] for a in inside),
            "success": sum(a["success"] for a in inside),
            "read_offset_cm_median": (float(np.median([a["read_planar_offset_cm"] for a in inside]))
                                      if inside else None),
            "object_read_error_cm_median": (float(np.median([a["object_read_error_cm"] for a in inside]))
                                            if inside else None),
        })
    never = [a for a in attempts if not a["closed"]]
    rows.append({"offset_cm": None, "episodes": len(never), "lifted": sum(a["lifted"] for a in never),
                 "success": sum(a["success"] for a in never), "read_offset_cm_median": None,
                 "object_read_error_cm_median": None})
    return rows


def _cm(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def describe(task: str, rows: list[dict]) -> str:
    """The summary as a markdown table."""
    lines = [f"{task}:", "",
             ("| hand to object in the plane at the first close, cm | episodes | object lifted "
              "| success | readout's offset, cm (median) | object read off by, cm (median) |"),
             "|---|---|---|---|---|---|"]
    for row in rows:
        if row["offset_cm"] is None:
            label = "never closed"
        else:
            lower, upper = row["offset_cm"]
            label = f">= {lower:g}" if upper is None else f"{lower:g}-{upper:g}"
        lines.append(f"| {label} | {row['episodes']} | {row['lifted']} | {row['success']} | "
                     f"{_cm(row['read_offset_cm_median'])} | {_cm(row['object_read_error_cm_median'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", help="eval report.json files run with traces=N")
    parser.add_argument("--closed", type=float, default=0.7,
                        help="gripper opening under which it counts as closed (1 = open)")
    parser.add_argument("--lifted-cm", type=float, default=1.0)
    parser.add_argument("--bins-cm", type=float, nargs="+", default=[1, 2, 4])
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args(argv)
    if not 0 < args.closed < 1:
        parser.error(f"--closed {args.closed}: a gripper opening between 0 (shut) and 1 (open)")
    if any(b <= a for a, b in pairwise([0.0, *args.bins_cm])):
        parser.error(f"--bins-cm {args.bins_cm}: positive and increasing edges, in cm")
    started = time.perf_counter()
    result: dict = {"reports": [str(p) for p in args.reports], "closed_below": args.closed,
                    "lifted_cm": args.lifted_cm, "tasks": {}}
    for path in args.reports:
        report = json.loads(Path(path).read_text())
        for task, entry in report["tasks"].items():
            traced = [e for e in entry["episodes"] if e.get("trace")]
            if task not in TASKS_WITH_OBJECT or not traced:
                continue
            attempts = [first_close(e, args.closed, args.lifted_cm / 100) for e in traced]
            subgoals = report.get("protocol", {}).get("subgoals")
            key = f"{task}{' (sub-goals)' if subgoals else ''} [{path}]"
            result["tasks"][key] = {"episodes": len(attempts),
                                    "bins": summarise(attempts, args.bins_cm),
                                    "attempts": attempts}
            print(describe(key, result["tasks"][key]["bins"]), end="\n\n")
    if not result["tasks"]:
        parser.error("no traced push or pick-place episodes in these reports (eval traces=N)")
    result["seconds"] = round(time.perf_counter() - started, 2)
    if args.out:
        write_json_atomic(Path(args.out), result)
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
