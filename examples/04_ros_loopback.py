"""Drive a simulated arm over ROS (rosbridge) on this machine, through the safety filter.

    uv run python examples/04_ros_loopback.py           # a few seconds

The robot side and the planning side of a real setup, both in one process and both on
the loopback interface (127.0.0.1) only:

1. the sim bridge (`jepa-robot sim-bridge`): a rosbridge v2 server backed by a
   Meta-World arm, serving the topics of ``robot=sim`` (camera, end-effector pose, joint
   states, success flag, a twist command topic and a reset service) on a free port;
2. the client (`RosArmEnv`, the env `jepa-robot run-robot` drives): it connects with
   roslibpy, resets the scene through the service, reads an observation (the same
   ``{"images": ..., "state": ...}`` layout as the simulator's own env) and sends a few
   commands, each bounded by the always-on safety filter before it leaves the process.

The commands ask for full speed in +x, but the workspace box given to the client has its
x wall at x = ``wall_m``, a few centimetres ahead of the hand (the reach scene's hand
starts at x ~ 0): the filter slows the hand as it nears the wall, so the arm moves yet never crosses it. Both
context managers stop the arm (a zero twist) and close the connection and the server,
whatever happens.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from envs.ros.arm import RosArmEnv
from jepa_robot.config import compose
from jepa_robot.config.robot import SimBridgeConfig
from jepa_robot.robot import make_sim_bridge

LOOPBACK = "127.0.0.1"


def main(steps: int = 20, wall_m: float = 0.03, seed: int = 7) -> dict:
    """Send ``steps`` commands (20 Hz) toward +x, with the box's x wall at ``wall_m``."""
    # `jepa-robot sim-bridge task=reach host=127.0.0.1 port=0` (0: any free port)
    bridge_config = compose("sim-bridge", ["task=reach", f"host={LOOPBACK}", "port=0"], SimBridgeConfig)
    with make_sim_bridge(bridge_config) as bridge:
        port = bridge.port
        print(f"sim bridge listening on {bridge.url}")
        # The client's robot config is the bridge's own (configs/robot/sim.yaml), pointed
        # at the bridge's port, with a workspace box whose x wall is wall_m ahead.
        safety = dataclasses.replace(bridge_config.robot.safety,
                                     workspace_high=[wall_m, *bridge_config.robot.safety.workspace_high[1:]])
        robot = dataclasses.replace(bridge_config.robot, host=LOOPBACK, port=port, safety=safety)

        with RosArmEnv(robot) as env:
            observation, info = env.reset(seed=seed)  # the bridge's reset service sets the scene
            image = observation["images"][env.cameras[0]]
            start = observation["state"].copy()
            print(f"first observation: {env.cameras[0]} image {image.shape} {image.dtype}, "
                  f"hand {np.round(start[:3], 3)}, gripper opening {start[3]:.2f}")

            hands, clipped = [start[:3]], set()
            forward = np.array([1.0, 0.0, 0.0, -1.0], dtype=np.float32)  # +x at full speed, gripper open
            for _ in range(steps):
                observation, _, _, _, info = env.step(forward)
                hands.append(observation["state"][:3].copy())
                clipped.update(info["clipped"])
            final = observation["state"]
        twists = [np.array([command.msg["twist"]["linear"][axis] for axis in "xyz"])
                  for command in bridge.commands_on(robot.command_topic)]
    # Out of both blocks: the arm was stopped, the client disconnected, the server closed.

    hands = np.stack(hands)
    speeds = [float(np.linalg.norm(twist)) for twist in twists]
    motions = sum(speed > 0 for speed in speeds)
    print(f"after {steps} commands the hand went from x={start[0]:+.3f} to x={final[0]:+.3f} m "
          f"(wall at {wall_m:+.3f}); limits applied: {sorted(clipped)}; the bridge received "
          f"{motions} motions (at most {max(speeds, default=0.0):.3f} m/s) and {len(speeds) - motions} stops")
    return {
        "port": port,
        "image_shape": image.shape,
        "start_state": start,
        "final_state": final.copy(),
        "hand_path": hands,
        "clipped": sorted(clipped),
        "motions_received": motions,
        "max_commanded_speed": max(speeds, default=0.0),
        "max_linear_speed": robot.safety.max_linear_speed,
        "wall_m": wall_m,
        "workspace_low": list(robot.safety.workspace_low),
        "workspace_high": list(robot.safety.workspace_high),
    }


if __name__ == "__main__":
    main()
