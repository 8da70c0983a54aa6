"""Control-loop latency over the ROS bridge, against the same policy run directly in sim.

    uv run python benchmarks/bridge_latency.py                     # constant policy, 200 steps
    uv run python benchmarks/bridge_latency.py --steps 100 --rate 20
    uv run python benchmarks/bridge_latency.py --policy mypkg.agent:act   # act(observation) -> action

Over the bridge: ``jepa-robot sim-bridge`` runs as its own process (as a robot's
rosbridge would; ``--in-process`` runs it in a thread instead) and ``RosArmEnv`` drives
it over a loopback websocket with the roslibpy asyncio transport. Measured per step:

- observation -> command: from the arrival of the newest message of an observation
  (camera, pose, joint states) to the moment the command computed from it has been
  handed to the websocket. Two parts, also reported: the observation's wait in the
  env until the control tick (``step`` returns on the tick), then the policy, the
  safety filter and message building;
- step period: between consecutive commands (the bridge's clock sets it: 1 / rate).

Directly: the same policy on ``MetaWorldGoalEnv`` (same task, image size and camera):
observation -> command is from ``step`` returning to the next ``step`` call, the step
period is the time between ``step`` calls (physics + rendering).

The policy is any importable ``module:function`` taking an observation dict and
returning an action (float32, the env's action layout); the default is a constant
"hold still, gripper open". Prints a Markdown table and writes JSON to --out.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
Policy = Callable[[dict], np.ndarray]


def constant_policy(observation: dict) -> np.ndarray:
    """Hold still with the gripper open."""
    return np.array([0.0, 0.0, 0.0, -1.0], dtype=np.float32)


def load_policy(spec: str | None) -> Policy:
    if not spec:
        return constant_policy
    module_name, _, attribute = spec.partition(":")
    if not attribute:
        raise SystemExit(f"--policy must be module:function, got {spec!r}")
    return getattr(importlib.import_module(module_name), attribute)


class AgentPolicy:
    """The MPC agent as a policy: on its first observation it takes that frame as the
    goal (latency does not depend on which goal), then plans as in ``jepa-robot eval``."""

    def __init__(self, checkpoint: str, planner: str, options: dict) -> None:
        from omegaconf import OmegaConf

        from jepa_robot.agent import MPCAgent
        from jepa_robot.config import configs_dir, to_schema
        from jepa_robot.config.planning import AgentConfig, PlannerSettings
        from jepa_robot.world_model.model import WorldModel

        settings = to_schema(OmegaConf.load(configs_dir() / "planner" / f"{planner}.yaml"), PlannerSettings)
        settings.options = {**settings.options, **options}
        self.agent = MPCAgent.from_settings(WorldModel.load(checkpoint), settings, AgentConfig())
        self.started = False

    def __call__(self, observation: dict) -> np.ndarray:
        if not self.started:
            self.agent.reset([observation["images"]])
            self.started = True
        return self.agent.act(observation)


def summary(values_s: list[float]) -> dict[str, float]:
    values = np.asarray(values_s) * 1000.0
    return {
        "mean_ms": float(values.mean()),
        "p50_ms": float(np.percentile(values, 50)),
        "p95_ms": float(np.percentile(values, 95)),
        "n": int(values.size),
    }


def run_direct(policy: Policy, task: str, image_size: int, steps: int) -> dict:
    from envs.metaworld.env import MetaWorldGoalEnv

    env = MetaWorldGoalEnv(task, image_size=image_size, step_budget=steps + 10)
    observation, _ = env.reset(seed=0)
    latencies, periods = [], []
    observed_at = time.perf_counter()
    last_command = None
    for _ in range(steps):
        action = policy(observation)
        command_at = time.perf_counter()
        latencies.append(command_at - observed_at)
        if last_command is not None:
            periods.append(command_at - last_command)
        last_command = command_at
        observation, *_ = env.step(action)
        observed_at = time.perf_counter()
    env.close()
    return {"observation_to_command": summary(latencies), "step_period": summary(periods)}


def start_bridge(task: str, image_size: int, rate: float, in_process: bool):
    """Returns (port, stop function)."""
    if in_process:
        from omegaconf import OmegaConf

        from envs.metaworld.env import MetaWorldGoalEnv
        from envs.ros.config import RosArmConfig
        from envs.ros.sim_bridge import SimBridge
        from jepa_robot.config import configs_dir, to_schema

        robot = to_schema(OmegaConf.merge(OmegaConf.load(configs_dir() / "robot" / "sim.yaml"),
                                          {"rate_hz": rate}), RosArmConfig)
        bridge = SimBridge(MetaWorldGoalEnv(task, image_size=image_size), robot, port=0)
        return bridge.start(), bridge.stop
    process = subprocess.Popen(
        [sys.executable, "-m", "jepa_robot.cli", "sim-bridge", "port=0", f"task={task}",
         f"image_size={image_size}", f"robot.rate_hz={rate}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
    )
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(120)
    if not line or "ws://" not in line[0]:
        process.kill()
        raise SystemExit(f"the sim bridge did not start: {line}")
    port = int(line[0].split("ws://")[1].split(":")[1].split()[0])

    def stop() -> None:
        process.terminate()
        process.wait(10)

    return port, stop


def run_bridge(policy: Policy, task: str, image_size: int, steps: int, rate: float, in_process: bool) -> dict:
    from omegaconf import OmegaConf

    from envs.ros.arm import RosArmConfig, RosArmEnv
    from jepa_robot.config import configs_dir, to_schema

    port, stop = start_bridge(task, image_size, rate, in_process)
    robot = to_schema(OmegaConf.merge(
        OmegaConf.load(configs_dir() / "robot" / "sim.yaml"),
        {"host": "127.0.0.1", "port": port, "rate_hz": rate, "image_size": image_size},
    ), RosArmConfig)
    latencies, periods, ages, processing = [], [], [], []
    try:
        with RosArmEnv(robot) as env:
            observation, info = env.reset(seed=0)
            observed_at, returned_at, last_command = info["observation_time"], time.monotonic(), None
            for _ in range(steps):
                action = policy(observation)
                observation, _, _, _, info = env.step(action)
                command_at = info["command_time"]
                latencies.append(command_at - observed_at)
                processing.append(command_at - returned_at)
                if last_command is not None:
                    periods.append(command_at - last_command)
                last_command = command_at
                returned_at = time.monotonic()
                observed_at = info["observation_time"]
                ages.append(returned_at - observed_at)
    finally:
        stop()
    return {
        "observation_to_command": summary(latencies),
        "step_period": summary(periods),
        # The two parts of observation_to_command: the observation waits in the env
        # for the control tick, then the policy and the env turn it into a command.
        "observation_age_at_return": summary(ages),
        "return_to_command": summary(processing),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default=None, help="module:function (observation -> action); default: constant")
    parser.add_argument("--checkpoint", default=None, help="plan with the MPC agent on this world model")
    parser.add_argument("--planner", default="cem", help="planner config (configs/planner/NAME.yaml) for --checkpoint")
    parser.add_argument("--samples", type=int, default=None, help="override the planner's samples")
    parser.add_argument("--iterations", type=int, default=None, help="override the planner's iterations")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="bridge control rate, Hz")
    parser.add_argument("--task", default="reach")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--in-process", action="store_true", help="run the bridge in a thread of this process")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bridge_latency.json"))
    args = parser.parse_args()

    if args.checkpoint:
        options = {k: v for k, v in (("samples", args.samples), ("iterations", args.iterations)) if v}
        make_policy = lambda: AgentPolicy(args.checkpoint, args.planner, options)  # noqa: E731
        args.policy = f"MPC agent: {args.checkpoint}, planner {args.planner} {options}"
    else:
        make_policy = lambda: load_policy(args.policy)  # noqa: E731
    direct = run_direct(make_policy(), args.task, args.image_size, args.steps)
    bridge = run_bridge(make_policy(), args.task, args.image_size, args.steps, args.rate, args.in_process)

    rows = [
        ("direct MetaWorldGoalEnv", direct["observation_to_command"], direct["step_period"]),
        (f"over the bridge ({args.rate:g} Hz)", bridge["observation_to_command"], bridge["step_period"]),
    ]
    print(f"policy {args.policy or 'constant'}, task {args.task}, {args.image_size} px, {args.steps} steps\n")
    print("| loop | obs -> command mean (ms) | p50 | p95 | step period mean (ms) | p50 | p95 |")
    print("|---|---|---|---|---|---|---|")
    for name, latency, period in rows:
        print(f"| {name} | {latency['mean_ms']:.2f} | {latency['p50_ms']:.2f} | {latency['p95_ms']:.2f} "
              f"| {period['mean_ms']:.1f} | {period['p50_ms']:.1f} | {period['p95_ms']:.1f} |")
    age, processing = bridge["observation_age_at_return"], bridge["return_to_command"]
    print(f"\nover the bridge, obs -> command = wait for the control tick (observation age when step() "
          f"returns: mean {age['mean_ms']:.1f} ms, p95 {age['p95_ms']:.1f}) + policy and env "
          f"(step() return -> command out: mean {processing['mean_ms']:.2f} ms, p95 {processing['p95_ms']:.2f})")

    result = {
        "policy": args.policy or "constant",
        "task": args.task,
        "image_size": args.image_size,
        "steps": args.steps,
        "rate_hz": args.rate,
        "bridge_in_process": args.in_process,
        "transport": "roslibpy asyncio, loopback websocket",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average": os.getloadavg()},
        "direct": direct,
        "bridge": bridge,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.tmp")
    temporary.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(temporary, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
