"""A robot arm behind rosbridge as a Gymnasium env, with safety limits always on.

``RosArmEnv(config)`` connects to a rosbridge v2 server (``rosbridge_server`` on the
robot's ROS 1 or ROS 2 machine, or ``jepa-robot sim-bridge``) with ``roslibpy`` and
exposes the arm the way ``MetaWorldGoalEnv`` exposes the simulator, so the same
world model and planner drive both:

- observation ``{"images": {camera: uint8 (S, S, 3)}, "state": float32 (N,)}`` with
  ``S = image_size`` (centre-cropped to a square and resized);
- action float32 in [-1, 1]: ``metaworld4`` = (dx, dy, dz, gripper) or ``droid7`` =
  (dx, dy, dz, droll, dpitch, dyaw, gripper);
- ``step`` sends one bounded command, waits for the next control tick
  (``rate_hz``) and returns an observation newer than the command.

Topics (names in ``configs/robot/*.yaml``)
------------------------------------------
subscribed:
  ``cameras[i].topic``   ``sensor_msgs/CompressedImage`` (jpeg, png) or
                         ``sensor_msgs/Image`` (rgb8, bgr8, rgba8, bgra8, mono8)
  ``pose_topic``         ``geometry_msgs/PoseStamped``: end-effector pose, in the
                         frame the workspace box is given in
  ``joint_state_topic``  ``sensor_msgs/JointState``: the gripper joints
                         (``gripper.state_joints``, summed, then
                         ``state_offset + state_scale * sum``)
  ``success_topic``      ``std_msgs/Bool`` (optional; the sim bridge publishes it)
published:
  ``command_topic``      ``geometry_msgs/TwistStamped`` in ``command_frame``
                         (MoveIt Servo's ``delta_twist_cmds``) or, with
                         ``command_mode: pose``, ``geometry_msgs/PoseStamped`` targets
  ``gripper.command``    ``std_msgs/Float64`` (``gripper.mode: topic``) or the ROS 2
                         action ``control_msgs/action/GripperCommand``
                         (``gripper.mode: action``; rosbridge's ``send_action_goal``)
service:
  ``reset_service``      optional ``jepa_robot/ResetEpisode`` {seed, goal_dir} ->
                         {success, message, seed, goal_images, goal_state}; only the
                         sim bridge provides it. Without it ``reset`` stops the arm and
                         returns a fresh observation: put the arm at its start yourself.

Units
-----
Action dimension i (except the gripper) times ``action_scale[i]`` is a velocity:
m/s for x, y, z and rad/s for roll, pitch, yaw (about the command frame's axes).
One step holds it for one control period, so an action moves the end effector by
``action * action_scale / rate_hz``. The gripper dimension maps linearly from
-1 (``gripper.open_position``) to +1 (``gripper.closed_position``).

Safety (always on; see ``envs.ros.safety``)
-------------------------------------------
- Every command is bounded before it leaves the process: action clipped to [-1, 1],
  speed limits, the workspace box (per axis), the per-step gripper limit.
- New commands go out at most at ``rate_hz``. With ``command_repeat_hz`` the same
  bounded command is repeated as a keep-alive (MoveIt Servo halts after its
  ``incoming_command_timeout``); a command is never repeated for longer than
  ``safety.command_timeout_s``, after which a zero twist is sent.
- A watchdog thread sends a zero twist and latches ``RobotSafetyStop`` when a
  camera image or the state is older than ``safety.max_observation_age_s`` while the
  arm moves; ``step`` raises ``RobotSafetyStop`` when no fresh observation arrives.
- A zero twist (the gripper left as it is, so a held object is not dropped) is sent
  on any exception in ``step``, on ``reset``, ``close`` and context-manager exit,
  and on SIGINT/SIGTERM (then the previous handler runs: Ctrl-C still raises
  ``KeyboardInterrupt``).
- A lost connection raises ``RobotConnectionError``; the env does not reconnect.
  Nothing can be sent over a dead link: the robot side must stop on its own
  (MoveIt Servo's command timeout does; the sim bridge stops on disconnect).
- ``dry_run: true`` subscribes and observes as usual but sends nothing (not even an
  advertise): each command it would send is logged instead.
- Malformed messages (bad base64, wrong sizes, missing fields) are logged, counted
  in ``message_errors`` and dropped; the stale-data checks then name the last
  rejection.

Freshness uses the local arrival time of each message (robot and computer clocks
need not agree); header stamps only tell a re-sent message from a new one.

On a real robot
---------------
On the robot's ROS 2 machine (Humble or newer)::

    sudo apt install ros-$ROS_DISTRO-rosbridge-server
    ros2 launch rosbridge_server rosbridge_websocket_launch.xml   # port 9090
    # MoveIt Servo with command_in_type: "speed_units", started (start_servo /
    # switch_command_type to TWIST depending on the MoveIt version), and the camera
    # driver publishing compressed images.

Then, on the planning computer (``configs/robot/franka_servo.yaml``; set ``host`` to
the robot machine):

1. Check that every topic arrives, moving nothing (``record-ros`` only listens)::

       jepa-robot record-ros robot=franka_servo robot.host=ROBOT episodes=1 \
           episode_steps=20 root=data/topic-check

2. Measure the workspace box in the pose topic's frame and set ``safety.*``.
3. Run the policy with ``robot.dry_run=true`` and read the logged commands::

       from omegaconf import OmegaConf
       from envs.ros.arm import RosArmConfig, RosArmEnv
       from jepa_robot.config import configs_dir, to_schema

       yaml = OmegaConf.load(configs_dir() / "robot" / "franka_servo.yaml")
       config = to_schema(OmegaConf.merge(yaml, {"host": "ROBOT", "dry_run": True}), RosArmConfig)
       with RosArmEnv(config) as env:
           observation, info = env.reset()
           observation, _, _, _, info = env.step(policy(observation))

4. Then ``dry_run: false``, with a hand on the emergency stop.

Step timing: ``step`` returns one period after its command went out, with the newest
observation that arrived after the command (so it shows the command's effect, as a
recorded frame t+1 does). The next command goes out no sooner than one period after
the last, so a loop's period is ``1 / rate_hz`` plus the policy's own time, and the
arm executes each command until the next one arrives (or ``command_timeout_s``).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.ros.config import (
    ACTION_LAYOUTS,
    GRIPPER_ACTION_TYPE,
    RESET_SERVICE_TYPE,
    STATE_LAYOUTS,
    CameraTopic,
    GripperSettings,
    RosArmConfig,
)
from envs.ros.link import RosArmLink
from envs.ros.messages import pose_message, quaternion_multiply, rotation_vector_to_quaternion, stamp, twist_message
from envs.ros.safety import (
    RobotConnectionError,
    RobotSafetyStop,
    SafeCommand,
    SafetyFilter,
    SafetySettings,
)

log = logging.getLogger(__name__)

__all__ = [
    "ACTION_LAYOUTS", "GRIPPER_ACTION_TYPE", "RESET_SERVICE_TYPE", "STATE_LAYOUTS", "CameraTopic",
    "GripperSettings", "RosArmConfig", "RosArmEnv", "RosArmLink", "RobotConnectionError",
    "RobotSafetyStop", "SafetySettings",
]


class RosArmEnv(gym.Env):
    """A rosbridge arm with ``MetaWorldGoalEnv``'s observation layout; see the module docstring.

    Use it as a context manager (or call ``close``) so the arm gets a zero twist
    whatever happens::

        with RosArmEnv(config) as env:
            observation, info = env.reset()
            observation, _, _, truncated, info = env.step(action)
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, config: RosArmConfig, render_mode: str | None = "rgb_array") -> None:
        self.config = config
        self.render_mode = render_mode
        self.image_size = int(config.image_size)
        self.cameras = tuple(camera.name for camera in config.cameras)
        self.state_names = config.state_names
        self.action_names = config.action_names
        self.dt = config.period_s
        self.metadata = {**self.metadata, "render_fps": config.rate_hz}
        size = self.image_size
        self.observation_space = spaces.Dict({
            "images": spaces.Dict({name: spaces.Box(0, 255, (size, size, 3), np.uint8) for name in self.cameras}),
            "state": spaces.Box(-np.inf, np.inf, (len(self.state_names),), np.float32),
        })
        self.action_space = spaces.Box(-1.0, 1.0, (len(self.action_names),), np.float32)
        self._scale = np.asarray(config.action_scale, dtype=np.float64)
        self._filter = SafetyFilter(config.safety)

        self._lock = threading.RLock()  # serialises sending; re-entrant for signal handlers
        self._wake = threading.Event()  # set on faults, to cut waits short
        self._closed = threading.Event()
        self._fault: RobotSafetyStop | None = None
        self._last_command = SafeCommand.zero()
        self._last_message: dict | None = None
        self._issued_at = float("-inf")
        self._published_at = float("-inf")
        self._next_send = 0.0
        self._gripper: float | None = None
        self._steps = 0
        self._seed: int | None = None
        self._observation: dict[str, Any] | None = None
        self.last_info: dict[str, Any] = {}

        self.link = RosArmLink(config, on_connection_lost=self._wake.set)
        self._previous_handlers: dict[int, Any] = {}
        self._install_signal_handlers()
        self._watchdog = threading.Thread(target=self._watch, name="ros-arm-watchdog", daemon=True)
        self._watchdog.start()

    # ------------------------------------------------------------------ gym API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Stop the arm, clear a latched safety stop, call the reset service (if
        configured; ``options["goal_dir"]`` asks it for goal images) and return a
        fresh observation."""
        super().reset(seed=seed)
        options = options or {}
        self._raise_if_disconnected()
        if self._fault is not None:
            log.warning("reset clears the safety stop: %s", self._fault)
            self._fault = None
            self._wake.clear()
        self.stop("reset")
        info: dict[str, Any] = {"seed": seed, "success": False}
        response, observed_at = self.link.reset(seed, options.get("goal_dir"))
        if response is not None:
            info["reset_response"] = response
            info["seed"] = response.get("seed", seed)
            info["goal_images"] = list(response.get("goal_images") or [])
            info["goal_state"] = list(response.get("goal_state") or [])
        self._seed = info["seed"]
        self._steps = 0
        self._next_send = time.monotonic()
        observation = self._build_observation()
        info["observation_time"] = observed_at
        return observation, info

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """Send one bounded command, wait one control period and for a fresh observation."""
        self._raise_if_faulted()
        try:
            requested = self._check_action(action)
            self._sleep_until(self._next_send)  # never faster than rate_hz
            self._raise_if_faulted()
            stale = self.link.stale(self._filter.max_observation_age_s, ["pose"])
            if stale:
                raise RobotSafetyStop(f"end-effector pose too old to bound a command: {'; '.join(stale)}")
            (position, quaternion), _ = self.link.value("pose")
            before = self.link.stamps()
            with self._lock:
                self._raise_if_faulted()
                command = self._bound(requested, position)
                sent_at = self._send(command, position, quaternion)
            self._next_send = sent_at + self.dt
            self._sleep_until(self._next_send)
            self._raise_if_faulted()
            observed_at = self.link.wait_fresh(sent_at, before, timeout=self._filter.max_observation_age_s)
        except BaseException as error:
            self._stop_after(error)
            raise
        self._steps += 1
        observation = self._build_observation()
        success, _ = self.link.value("success") if "success" in self.link.latest else (False, 0.0)
        info = {
            "success": bool(success),
            "seed": self._seed,
            "step": self._steps,
            "command": command.as_dict(),
            "clipped": command.clipped,
            "command_time": sent_at,
            "observation_time": observed_at,
        }
        self.last_info = info
        truncated = self.config.step_budget is not None and self._steps >= self.config.step_budget
        return observation, 0.0, False, truncated, info

    def render(self) -> np.ndarray | None:
        if self.render_mode is None or self._observation is None:
            return None
        return self._observation["images"][self.cameras[0]]

    def close(self) -> None:
        """Send a zero twist, stop the watchdog, close the connection, restore signal handlers."""
        if self._closed.is_set():
            return
        try:
            self.stop("close")
        except Exception:  # noqa: BLE001 - closing must finish
            log.exception("could not send the stop command on close")
        finally:
            self._closed.set()
            self._wake.set()
            if self._watchdog.is_alive() and self._watchdog is not threading.current_thread():
                self._watchdog.join(timeout=2)
            self.link.close()
            self._restore_signal_handlers()
        super().close()

    def __enter__(self) -> RosArmEnv:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # ------------------------------------------------------------ our additions
    @property
    def steps(self) -> int:
        return self._steps

    @property
    def episode_seed(self) -> int | None:
        return self._seed

    @property
    def message_errors(self) -> dict[str, int]:
        """Malformed messages dropped so far, per subscription."""
        return self.link.message_errors

    @property
    def last_command(self) -> SafeCommand:
        """The last command sent (or, in dry run, that would have been sent)."""
        return self._last_command

    def stop(self, reason: str = "stop") -> None:
        """Send a zero twist now (the gripper is left as it is). Safe from any thread."""
        with self._lock:
            if not self.link.is_connected and not self.config.dry_run:
                return
            pose, _ = self.link.value("pose")
            zero = SafeCommand.zero()
            if self.config.command_mode == "pose" and pose is None:
                return  # nothing to hold: no pose target has ever been sent
            position, quaternion = pose if pose is not None else (np.zeros(3), np.array([0.0, 0.0, 0.0, 1.0]))
            try:
                self._send(zero, position, quaternion)
            except RobotConnectionError:
                return
            log.info("zero command sent (%s)", reason)

    # -------------------------------------------------------------- internals
    def _check_action(self, action: Any) -> np.ndarray:
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape} ({self.config.action_layout}), got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action has non-finite values: {action}")
        return np.clip(action, -1.0, 1.0)

    def _bound(self, action: np.ndarray, position: np.ndarray) -> SafeCommand:
        velocity = action[:-1] * self._scale
        linear = velocity[:3]
        angular = velocity[3:6] if velocity.shape[0] >= 6 else np.zeros(3)
        gripper = float(action[-1]) if self.config.gripper.mode != "none" else None
        command = self._filter.filter(linear, angular, gripper, position, self._gripper)
        if command.clipped:
            log.debug("command clipped by %s", ", ".join(command.clipped))
        return command

    def _command_message(self, command: SafeCommand, position: np.ndarray, quaternion: np.ndarray) -> dict:
        config = self.config
        if config.command_mode == "twist":
            return twist_message(command.linear, command.angular, config.command_frame, ros_version=config.ros_version)
        target = self._filter.pose_target(position, command.linear, self.dt)
        turn = rotation_vector_to_quaternion(command.angular * self.dt)
        orientation = quaternion_multiply(turn, quaternion)
        return pose_message(target, orientation, config.command_frame, ros_version=config.ros_version)

    def _send(self, command: SafeCommand, position: np.ndarray, quaternion: np.ndarray) -> float:
        """Publish a bounded command (caller holds the lock). Returns the send time."""
        message = self._command_message(command, position, quaternion)
        if command.gripper is not None:
            # Before the motion, so a receiver that acts on the motion has both. Every
            # step: a topic gripper's late subscribers see the current command; an
            # action gripper sends a new goal only past its deadband.
            self.link.send_gripper(self.config.gripper.command_value(command.gripper))
            self._gripper = command.gripper
        self.link.publish_command(message)
        now = time.monotonic()
        self._last_command = command
        self._last_message = message
        self._issued_at = now
        self._published_at = now
        return now

    def _stop_after(self, error: BaseException) -> None:
        reason = f"{type(error).__name__}: {error}"
        if isinstance(error, RobotSafetyStop) and self._fault is None:
            self._fault = error
            log.error("safety stop: %s", error)
        try:
            self.stop(reason)
        except Exception:  # noqa: BLE001 - the original error matters more
            log.exception("could not send the stop command")

    def _raise_if_disconnected(self) -> None:
        if self.link.connection_error is not None:
            raise RobotConnectionError(str(self.link.connection_error))
        if self._closed.is_set():
            raise RuntimeError("the env is closed")

    def _raise_if_faulted(self) -> None:
        self._raise_if_disconnected()
        if self._fault is not None:
            raise RobotSafetyStop(f"{self._fault} (the arm is stopped; reset() clears this)")

    def _sleep_until(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining > 0:
            self._wake.wait(remaining)

    def _build_observation(self) -> dict[str, Any]:
        observation, _, _ = self.link.observation()
        self._observation = observation
        return observation

    # -------------------------------------------------------------- watchdog
    def _watch(self) -> None:
        """Hold (zero) commands not refreshed in time, repeat the current one as a
        keep-alive, and stop the arm when its sensors go stale while it moves."""
        safety = self._filter  # its timeout and age are capped at their hard ceilings
        tick = min(self.dt / 2, 0.05)
        repeat_period = 1.0 / self.config.command_repeat_hz if self.config.command_repeat_hz > 0 else None
        if repeat_period is not None:
            tick = min(tick, repeat_period / 2)
        while not self._closed.wait(tick):
            with self._lock:
                if self._closed.is_set() or not self._last_command.is_motion:
                    continue
                if not self.link.is_connected and not self.config.dry_run:
                    continue
                now = time.monotonic()
                try:
                    if now - self._issued_at > safety.command_timeout_s:
                        self.stop(f"no new command for {safety.command_timeout_s} s")
                        continue
                    stale = self.link.stale(safety.max_observation_age_s)
                    if stale:
                        self._fault = RobotSafetyStop(f"watchdog: sensor data too old: {'; '.join(stale)}")
                        log.error("%s", self._fault)
                        self.stop("watchdog")
                        self._wake.set()
                        continue
                    if repeat_period is not None and now - self._published_at >= repeat_period and self._last_message:
                        message = dict(self._last_message)
                        message["header"] = {**message["header"], **_restamp(self.config.ros_version)}
                        self.link.publish_command(message)
                        self._published_at = now
                except RobotConnectionError:
                    continue
                except Exception:  # noqa: BLE001 - the watchdog must keep running
                    log.exception("watchdog check failed")

    # --------------------------------------------------------------- signals
    def _install_signal_handlers(self) -> None:
        if not self.config.handle_signals or threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(signum)

            def handler(sig: int, frame: Any, previous: Any = previous) -> None:
                try:
                    self.stop(f"signal {sig}")
                finally:
                    if callable(previous):
                        previous(sig, frame)
                    elif sig == signal.SIGINT:
                        raise KeyboardInterrupt
                    else:
                        raise SystemExit(128 + sig)

            signal.signal(signum, handler)
            self._previous_handlers[signum] = (previous, handler)

    def _restore_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, (previous, ours) in self._previous_handlers.items():
            if signal.getsignal(signum) is ours:  # leave handlers installed after ours alone
                signal.signal(signum, previous)
        self._previous_handlers.clear()


def _restamp(ros_version: int) -> dict:
    return {"stamp": stamp(ros_version=ros_version)}
