"""The ``jepa-robot`` command: ``jepa-robot <command> [key=value ...]``.

Every command composes its Hydra config from ``configs/<command>.yaml`` with the
overrides given (``env=metaworld_pick_place episodes=50``), checks it against a typed
schema, and calls an importable function that does the work.

Errors in the user's input or files (``jepa_robot.errors.JepaRobotError`` and the types
derived from it, ``ValueError``, ``FileNotFoundError``, and the user-facing error types of
``envs``) are printed as one line, ``jepa-robot <command>: error: <message>``, with exit
code 2. Any other exception is a bug: its traceback is printed and the exit code is 1.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("jepa_robot")


@dataclass(frozen=True)
class Command:
    help: str
    schema: Callable[[], type]
    run: Callable[[Any], int]


def _collect(config) -> int:
    from jepa_robot.data.collect import collect

    summary = collect(config)
    state = "interrupted" if summary.interrupted else "done"
    print(
        f"{state}: recorded {summary.episodes} episodes ({summary.frames} frames, "
        f"{summary.successes} ending in success) in {summary.seconds:.1f} s; "
        f"skipped {len(summary.skipped_seeds)} already recorded; "
        f"{summary.root} now holds {summary.total_episodes} episodes"
    )
    return 130 if summary.interrupted else 0


def _inspect(config) -> int:
    from jepa_robot.data.dataset import open_dataset

    _, spec = open_dataset(
        config.dataset, image_keys=config.image_keys, action_key=config.action_key, state_key=config.state_key,
        announce=lambda line: print(f"{line}\nchecking it with lerobot...", flush=True),
    )
    print(spec.describe())
    return 0


def _merge(config) -> int:
    from jepa_robot.data.dataset import merge_datasets

    spec = merge_datasets(list(config.datasets), config.root, config.repo_id)
    print(f"merged {len(config.datasets)} datasets:\n{spec.describe()}")
    return 0


def _train(config) -> int:
    from jepa_robot.world_model.hub import hub_id_of, require_hub_weights

    hub_id = hub_id_of(config.encoder.name)
    if hub_id is not None:  # weights that cannot be had fail now, not after the imports and the dataset
        require_hub_weights(hub_id, config.encoder.revision)
    from jepa_robot.training.train import describe, train

    print(describe(train(config)))
    return 0


def _eval(config) -> int:
    from jepa_robot.evaluation import evaluate, format_table

    report = evaluate(config)
    print(format_table(report))
    print(f"report: {config.out_dir}/report.json, plot: {config.out_dir}/summary.png")
    return 0


def _plan(config) -> int:
    from jepa_robot.evaluation import describe_plan, plan_episode

    record, video = plan_episode(config)
    print(describe_plan(record, video))
    return 0


def _pretrain_encoder(config) -> int:
    from jepa_robot.training.pretrain import describe, pretrain_encoder

    print(describe(pretrain_encoder(config)))
    return 0


def _fit_readout(config) -> int:
    from jepa_robot.training.fit_readout import describe, fit_checkpoint_readout

    print(describe(fit_checkpoint_readout(config)))
    return 0


def _set_planning(config) -> int:
    from jepa_robot.config.planning import set_planning

    print(f"wrote {set_planning(config)}: eval, demo, plan and run-robot with this checkpoint now plan with it")
    return 0


def _sim_bridge(config) -> int:
    from jepa_robot.robot import run_sim_bridge

    try:
        run_sim_bridge(config, on_listening=lambda url: print(f"sim-bridge: listening on {url} (Ctrl-C stops)", flush=True))
    except OSError as error:  # the port is taken, say
        print(f"jepa-robot sim-bridge: error: {error}", file=sys.stderr)
        return 1
    return 0


def _record_ros(config) -> int:
    from envs.ros.safety import RobotConnectionError, RobotSafetyStop
    from jepa_robot.robot import record_ros

    try:
        summary = record_ros(config)
    except (RobotConnectionError, RobotSafetyStop) as error:
        print(f"jepa-robot record-ros: stopped: {error}\n(episodes saved before it are in {config.root})", file=sys.stderr)
        return 1
    state = "interrupted" if summary.interrupted else "done"
    print(
        f"{state}: recorded {summary.episodes} episodes ({summary.frames} frames) in {summary.seconds:.1f} s; "
        f"skipped {len(summary.skipped_seeds)} already recorded; "
        f"{summary.root} now holds {summary.total_episodes} episodes"
    )
    return 130 if summary.interrupted else 0


def _run_robot(config) -> int:
    from envs.ros.safety import RobotConnectionError, RobotSafetyStop
    from jepa_robot.robot import run_robot

    try:
        summary = run_robot(config)
    except RobotSafetyStop as error:
        print(f"jepa-robot run-robot: stopped (a zero command was sent to the arm): {error}", file=sys.stderr)
        return 1
    except RobotConnectionError as error:
        print(
            f"jepa-robot run-robot: stopped: {error}\n"
            "  no command, not even a stop, could be sent without a connection: the arm relies on its own command "
            "timeout (MoveIt Servo's incoming_command_timeout; the sim bridge stops on disconnect); check that it has stopped",
            file=sys.stderr,
        )
        return 1
    replan = summary["replan_seconds"].get("mean", 0.0)
    print(
        f"{'dry run: ' if summary['dry_run'] else ''}{summary['steps']} steps, "
        f"success flag {summary['success']}, {summary['replans']} replans "
        f"({1e3 * replan:.0f} ms mean), {summary['clipped_commands']} commands clipped by the "
        f"safety filter, {summary['seconds']:.1f} s"
    )
    return 0


def _schema(name: str) -> Callable[[], type]:
    """``"module:Class"`` under ``jepa_robot.config``, imported when the command runs."""

    def load() -> type:
        import importlib

        module, cls = name.split(":")
        return getattr(importlib.import_module(f"jepa_robot.config.{module}"), cls)

    return load


COMMANDS: dict[str, Command] = {
    "collect": Command("record scripted-expert episodes into a LeRobot v3 dataset", _schema("data:CollectConfig"), _collect),
    "train": Command("train an action-conditioned predictor on a LeRobot dataset", _schema("training:TrainConfig"), _train),
    "demo": Command("plan goal-image pick-and-place with the shipped default world model", _schema("planning:EvalConfig"), _eval),
    "eval": Command("run the evaluation protocol for a checkpoint and a planner", _schema("planning:EvalConfig"), _eval),
    "plan": Command("plan one episode toward a goal image and write its video", _schema("planning:PlanConfig"), _plan),
    "merge": Command("merge local LeRobot v3 datasets (same features) into a new one", _schema("data:MergeConfig"), _merge),
    "inspect": Command("check a LeRobot v3 dataset has what a world model needs", _schema("data:InspectConfig"), _inspect),
    "fit-readout": Command(
        "fit a state readout (latents -> state) for planner.energy=readout", _schema("training:FitReadoutConfig"), _fit_readout
    ),
    "sim-bridge": Command("serve a Meta-World arm over rosbridge (the topics of robot=sim)", _schema("robot:SimBridgeConfig"), _sim_bridge),
    "run-robot": Command("run the MPC agent on an arm behind rosbridge", _schema("robot:RunRobotConfig"), _run_robot),
    "record-ros": Command("record teleoperated episodes from ROS topics into a LeRobot v3 dataset", _schema("robot:RecordRosConfig"), _record_ros),
    "pretrain-encoder": Command(
        "pretrain a small V-JEPA 2 encoder from scratch on recorded video", _schema("training:PretrainEncoderConfig"), _pretrain_encoder
    ),
    "set-planning": Command(
        "save planner and agent settings into a checkpoint, for every command that plans with it",
        _schema("planning:SetPlanningConfig"),
        _set_planning,
    ),
    "import-vjepa2-ac": Command(
        "convert Meta's V-JEPA 2-AC checkpoint (vjepa2-ac-vitg.pt) into an encoder + checkpoint",
        _schema("training:ImportVJEPA2ACConfig"),
        lambda config: __import__("jepa_robot.world_model.vjepa2_ac", fromlist=["run_import"]).run_import(config),
    ),
}


def _usage() -> str:
    lines = ["usage: jepa-robot <command> [key=value ...] [--cfg]", "", "commands:"]
    width = max(map(len, COMMANDS))
    lines += [f"  {name:<{width}}  {command.help}" for name, command in COMMANDS.items()]
    lines += [
        "",
        "Overrides use Hydra syntax, e.g. `jepa-robot collect env=metaworld_push episodes=50`.",
        "`--cfg` prints the composed config and exits; `jepa-robot <command> --help` shows it too.",
    ]
    return "\n".join(lines)


_ENVS_USER_ERRORS = (
    ("envs.recording", "DatasetMismatchError"),
    ("envs.metaworld.goals", "GoalNotReachedError"),
    ("envs.ros.messages", "MalformedMessageError"),
)
"""User-facing error types of ``envs`` (which cannot derive from ``JepaRobotError``), by module."""


def is_user_error(error: BaseException) -> bool:
    """Whether ``error`` reports bad input or files (printed as one line, exit 2) rather
    than a bug (traceback, exit 1)."""
    from jepa_robot.errors import JepaRobotError

    # an envs type can only have been raised if its module is loaded: no import needed
    envs_types = tuple(getattr(sys.modules[m], n) for m, n in _ENVS_USER_ERRORS if m in sys.modules)
    return isinstance(error, (JepaRobotError, ValueError, FileNotFoundError, *envs_types))


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    from jepa_robot.config import compose  # Hydra and OmegaConf: not needed for the usage
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"jepa-robot: unknown command {name!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    command = COMMANDS[name]
    show_config = any(flag in rest for flag in ("--cfg", "-h", "--help"))
    overrides = [a for a in rest if a not in ("--cfg", "-h", "--help")]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("lerobot").setLevel(logging.WARNING)  # its codec choices are not news
    logging.getLogger("OpenGL").setLevel(logging.WARNING)  # PyOpenGL's "no accelerate module" note
    try:
        config = compose(name, overrides, command.schema())
        if show_config:
            from omegaconf import OmegaConf

            print(f"# jepa-robot {name}: {command.help}\n" + OmegaConf.to_yaml(OmegaConf.structured(config)))
            return 0
        return command.run(config)
    except Exception as error:
        if not is_user_error(error):
            raise  # a bug: the traceback, exit code 1
        message = " ".join(str(error).split())  # one line
        print(f"jepa-robot {name}: error: {message or type(error).__name__}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
