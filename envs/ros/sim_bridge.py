"""``jepa-robot sim-bridge``: a Meta-World arm behind a rosbridge v2 server.

A stand-in for a real robot with ``rosbridge_server``: the same protocol, the topics
a real setup has, and a robot's timing. Clients (``RosArmEnv``, ``record-ros``,
roslibpy scripts, a teleoperation tool) connect to ``ws://host:port`` and cannot
tell it from ROS. Topic names come from the robot config (``configs/robot/sim.yaml``),
so the bridge always serves exactly what the client config expects.

Published at ``rate_hz`` (stamps: wall-clock time, ROS 2 or ROS 1 format):
  camera topics   ``sensor_msgs/CompressedImage`` (png by default, or jpeg) or
                  ``sensor_msgs/Image`` rgb8, rendered by ``MetaWorldGoalEnv``
                  (goal marker hidden) for each camera the robot config names
  pose topic      ``geometry_msgs/PoseStamped``: hand position and orientation
  joint states    ``sensor_msgs/JointState``: the Sawyer's arm joints plus the
                  robot config's gripper joints, whose positions give back
                  Meta-World's gripper opening through ``state_scale``/``state_offset``
  success topic   ``std_msgs/Bool``: the simulator's success flag
Applied:
  command topic   ``geometry_msgs/TwistStamped``: linear velocity v (m/s) becomes the
                  Meta-World action ``v / rate_hz / action_scale`` (action_scale: metres
                  per unit per step, 0.01), clipped to [-1, 1]; so the hand moves at v.
                  Angular velocity is ignored (the Sawyer hand does not rotate here).
                  With ``command_mode: pose``, PoseStamped targets instead.
  gripper         ``std_msgs/Float64`` topic or ``control_msgs/action/GripperCommand``
                  action; the value maps back to Meta-World's gripper action (-1 open,
                  +1 closed) through the robot config's open/closed positions.
Service:
  reset service   ``jepa_robot/ResetEpisode`` {seed (-1: random training seed; < 200000), goal_dir ("" for
                  none)} -> {success, message, seed, goal_images, goal_state,
                  observation_stamp (of the first observation after the reset)}: resets
                  the scene from the seed; with goal_dir, first runs the evaluation
                  protocol's goal-image procedure (``envs.metaworld.goals``) and writes
                  ``goal_<seed>_<camera>.png`` (and sub-goal images) there;
                  goal_images lists sub-goals first, as an agent takes them.
                  goal_dir is a name or relative path inside the bridge's own
                  ``goal_root``: an absolute path, ``..`` or a symlink leading out of
                  it is refused (success false, nothing created).

Like a robot, the sim steps on its own clock: each tick applies the newest command,
or a zero motion when the newest is older than ``command_timeout_s`` or its sender
disconnected (the gripper keeps its last command, so a held object stays held).
``lockstep=True`` instead steps once per received command (observations are still
re-sent on the clock, with their original stamps), which makes tests repeatable.

The bridge owns the env it is given: it resets, steps, renders and closes it in its
own thread (the EGL context of the renderer belongs to that thread).

Who may connect (``token``, ``allowed_origins``) and how large a message may be
(``max_message_bytes``) are the server's (``envs.ros.rosbridge_server``); the only
files the bridge writes are goal images under ``goal_root``.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from envs.metaworld.env import EVAL_SEED_START, SEED_LIMIT, MetaWorldGoalEnv
from envs.metaworld.goals import GoalNotReachedError, make_goal_images
from envs.recording import StopSignals
from envs.ros.access import DEFAULT_MAX_MESSAGE_BYTES
from envs.ros.arm import GRIPPER_ACTION_TYPE, RESET_SERVICE_TYPE, RosArmConfig
from envs.ros.messages import (
    MalformedMessageError,
    compressed_image_message,
    header,
    normalise_type,
    number,
    parse_pose,
    parse_twist,
    pose_message,
    raw_image_message,
)
from envs.ros.rosbridge_server import RosbridgeServer

log = logging.getLogger(__name__)

ARM_JOINTS = [f"right_j{i}" for i in range(7)]


@dataclass(frozen=True)
class ReceivedCommand:
    """A command message the bridge received."""

    time: float
    """``time.monotonic()`` at arrival."""
    topic: str
    msg: dict[str, Any]
    client: int | None


@dataclass
class _ResetJob:
    seed: int
    goal_dir: Path | None
    """Inside the goal root, checked; None: no goal images."""
    done: threading.Event = field(default_factory=threading.Event)
    result: tuple[bool, Any] = (False, "not run")


class SimBridge:
    """Serve a ``MetaWorldGoalEnv`` over rosbridge with the topics of ``robot``.

    ``start()`` returns the bound port (``port=0`` picks a free one); ``stop()`` or
    the context manager ends it. ``received``, ``applied`` and ``hand_position`` let
    tests and benchmarks see what the arm was told and did.

    ``goal_root`` is the one directory the reset service writes goal images under
    (created on first use; None: goal images are refused). ``token``,
    ``allowed_origins`` and ``max_message_bytes`` go to the ``RosbridgeServer``.
    """

    def __init__(
        self,
        env: MetaWorldGoalEnv,
        robot: RosArmConfig,
        host: str = "127.0.0.1",
        port: int | None = None,
        rate_hz: float | None = None,
        lockstep: bool = False,
        command_timeout_s: float = 0.5,
        image_format: str = "png",
        seed: int = 0,
        frame_id: str = "world",
        goal_root: str | Path | None = None,
        token: str | None = None,
        allowed_origins: list[str] | tuple[str, ...] = (),
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        missing = [camera.name for camera in robot.cameras if camera.name not in env.cameras]
        if missing:
            raise ValueError(f"the robot config names cameras {missing} that the env does not render ({list(env.cameras)})")
        if image_format not in ("png", "jpeg"):
            raise ValueError(f"image_format must be png or jpeg, got {image_format!r}")
        if command_timeout_s <= 0:
            raise ValueError(f"command_timeout_s must be > 0, got {command_timeout_s}")
        self.env = env
        self.robot = robot
        self.rate_hz = float(rate_hz or robot.rate_hz)
        self.period = 1.0 / self.rate_hz
        self.lockstep = lockstep
        self.command_timeout_s = command_timeout_s
        self.image_format = image_format
        self.frame_id = frame_id
        self.initial_seed = seed
        self.goal_root = None if goal_root is None else Path(goal_root).resolve()
        self.server = RosbridgeServer(
            host, robot.port if port is None else port, token=token,
            allowed_origins=allowed_origins, max_message_bytes=max_message_bytes,
        )
        # MuJoCo internals the pose and joint-state topics need; same package.
        self._sim = env.unwrapped._sim
        self._sim.max_path_length = sys.maxsize  # a robot has no episode length cap
        self._metres_per_unit = float(self._sim.action_scale)

        self._lock = threading.Lock()
        self._twist_action = np.zeros(3)
        self._command_time = float("-inf")
        self._command_client: int | None = None
        self._gripper_action = -1.0
        self._pending: collections.deque[np.ndarray] = collections.deque()  # lockstep: 4-D actions
        self._wakeup = threading.Event()  # resets, stop and (lockstep) commands
        self._resets: queue.Queue[_ResetJob] = queue.Queue()
        self._stop = threading.Event()
        self._paused: set[str] = set()
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._thread_error: BaseException | None = None
        self._last_messages: dict[str, dict] = {}
        self._state = np.zeros(4, dtype=np.float32)
        self._success = False
        self._warned_angular = False
        self.received: collections.deque[ReceivedCommand] = collections.deque(maxlen=20_000)
        """Command messages received, oldest first."""
        self.applied: collections.deque[np.ndarray] = collections.deque(maxlen=20_000)
        """Meta-World actions applied, one per sim step, oldest first."""
        self.steps = 0
        """Sim steps taken since the last reset."""

    # --------------------------------------------------------------- lifecycle
    @property
    def port(self) -> int | None:
        return self.server.port

    @property
    def url(self) -> str:
        return self.server.url

    def start(self, timeout: float = 30.0) -> int:
        """Start the server and the sim thread; returns the port once the first
        observation is being published."""
        self._register()
        port = self.server.start()
        self._thread = threading.Thread(target=self._run, name="sim-bridge", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            self.stop()
            raise RuntimeError(f"the sim bridge did not publish a first observation in {timeout} s")
        if self._thread_error is not None:
            self.server.stop()
            raise RuntimeError(f"the sim bridge failed to start: {self._thread_error}") from self._thread_error
        log.info("sim bridge for %s on %s at %.1f Hz%s", self.env.task, self.url, self.rate_hz,
                 " (lockstep)" if self.lockstep else "")
        return port

    def stop(self) -> None:
        """Stop stepping, close the env and the server."""
        self._stop.set()
        self._wakeup.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self.server.stop()

    def serve(self) -> None:
        """Run until SIGINT/SIGTERM (for the CLI): start, wait, stop."""
        if self._thread is None:
            self.start()
        try:
            with StopSignals().installed():
                while not self._stop.wait(0.5):
                    if self._thread is not None and not self._thread.is_alive():
                        raise RuntimeError(f"the sim thread died: {self._thread_error}")
        except KeyboardInterrupt:
            log.info("sim bridge interrupted: stopping")
        finally:
            self.stop()

    def __enter__(self) -> SimBridge:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    # -------------------------------------------------------- test/bench hooks
    def pause(self, topic: str) -> None:
        """Stop publishing ``topic`` (a camera going dark, say)."""
        with self._lock:
            self._paused.add(topic)

    def resume(self, topic: str) -> None:
        with self._lock:
            self._paused.discard(topic)

    def publish_raw(self, topic: str, msg: dict) -> None:
        """Publish any message on a topic (malformed ones included)."""
        self.server.publish(topic, msg)

    def hand_position(self) -> np.ndarray:
        """The hand position (x, y, z) of the last published state."""
        with self._lock:
            return self._state[:3].copy()

    def commands_on(self, topic: str) -> list[ReceivedCommand]:
        return [command for command in list(self.received) if command.topic == topic]

    # ---------------------------------------------------------- protocol side
    def _register(self) -> None:
        robot, server = self.robot, self.server
        for camera in robot.cameras:
            server.advertise(camera.topic, camera.message_type)
        server.advertise(robot.pose_topic, "geometry_msgs/PoseStamped")
        if robot.joint_state_topic:
            server.advertise(robot.joint_state_topic, "sensor_msgs/JointState")
        if robot.success_topic:
            server.advertise(robot.success_topic, "std_msgs/Bool")
        command_type = "geometry_msgs/TwistStamped" if robot.command_mode == "twist" else "geometry_msgs/PoseStamped"
        server.subscribe(robot.command_topic, command_type, self._on_command)
        if robot.gripper.mode == "topic":
            server.subscribe(robot.gripper.command, normalise_type(robot.gripper.message_type), self._on_gripper)
        elif robot.gripper.mode == "action":
            server.advertise_action(robot.gripper.command, GRIPPER_ACTION_TYPE, self._on_gripper_goal)
        if robot.reset_service:
            server.advertise_service(robot.reset_service, RESET_SERVICE_TYPE, self._on_reset)
        server.on_disconnect(self._on_disconnect)

    def _on_command(self, msg: dict, client: int | None) -> None:
        now = time.monotonic()
        self.received.append(ReceivedCommand(now, self.robot.command_topic, msg, client))
        if self.robot.command_mode == "twist":
            linear, angular = parse_twist(msg)
            if np.any(angular != 0) and not self._warned_angular:
                log.warning("the sim arm cannot rotate its hand: angular velocities are ignored")
                self._warned_angular = True
            action = linear / self.rate_hz / self._metres_per_unit
        else:
            target, _ = parse_pose(msg)
            action = (target - self.hand_position()) / self._metres_per_unit
        action = np.clip(action, -1.0, 1.0)
        with self._lock:
            self._twist_action = action
            self._command_time = now
            self._command_client = client
            if self.lockstep:  # with the gripper command of this moment (sent just before)
                self._pending.append(np.append(action, self._gripper_action))
        if self.lockstep:  # on the clock, a command waits for the next tick
            self._wakeup.set()

    def _on_gripper(self, msg: dict, client: int | None) -> None:
        self.received.append(ReceivedCommand(time.monotonic(), self.robot.gripper.command, msg, client))
        value = number(msg, "data")
        with self._lock:
            self._gripper_action = self.robot.gripper.action_value(value)

    def _on_gripper_goal(self, args: dict) -> tuple[bool, Any]:
        self.received.append(ReceivedCommand(time.monotonic(), self.robot.gripper.command, args, None))
        try:
            position = number(args, "command.position")
        except MalformedMessageError as error:
            return False, f"bad GripperCommand goal: {error}"
        with self._lock:
            self._gripper_action = self.robot.gripper.action_value(position)
        return True, {"position": position, "effort": 0.0, "stalled": False, "reached_goal": True}

    def _on_disconnect(self, client: int) -> None:
        with self._lock:
            if self._command_client == client:
                self._twist_action = np.zeros(3)
                self._command_time = float("-inf")
                self._command_client = None
                log.info("commanding client %d disconnected: arm stopped", client)

    def _on_reset(self, args: dict) -> tuple[bool, Any]:
        seed = args.get("seed", -1)
        goal_dir = args.get("goal_dir", "") or ""
        if isinstance(seed, bool) or not isinstance(seed, int):
            return False, f"seed must be an integer, got {seed!r}"
        if seed >= SEED_LIMIT:
            return False, f"seed must be below {SEED_LIMIT} (-1: a random training seed), got {seed}"
        if not isinstance(goal_dir, str):
            return False, f"goal_dir must be a string, got {goal_dir!r}"
        try:
            directory = self.goal_directory(goal_dir) if goal_dir else None
        except ValueError as error:
            log.warning("reset refused: %s", error)
            return False, str(error)
        job = _ResetJob(seed, directory)
        self._resets.put(job)
        self._wakeup.set()
        if not job.done.wait(120):
            return False, "reset timed out"
        return job.result

    def goal_directory(self, goal_dir: str) -> Path:
        """Where a client's ``goal_dir`` lies: inside ``goal_root``, or ``ValueError``.

        ``goal_dir`` is a name or relative path (``goals``, ``run-robot/seed-7``). An
        absolute path, a ``..`` part or a symlink that leads out of the root is refused;
        nothing is created here.
        """
        if self.goal_root is None:
            raise ValueError("goal_dir refused: this bridge has no goal_root to write goal images under")
        relative = PurePosixPath(goal_dir)
        if "\x00" in goal_dir or relative.is_absolute() or ".." in relative.parts:
            raise ValueError(
                f"goal_dir {goal_dir!r} refused: give a name or relative path inside the bridge's goal root "
                "(absolute paths and '..' are not allowed)"
            )
        directory = (self.goal_root / relative).resolve()  # follows symlinks that already exist
        if not directory.is_relative_to(self.goal_root):
            raise ValueError(f"goal_dir {goal_dir!r} refused: it leads out of the bridge's goal root through a symlink")
        return directory

    # --------------------------------------------------------------- sim side
    def _run(self) -> None:
        try:
            observation, _ = self.env.reset(seed=self.initial_seed)
            self._publish_observation(observation, success=False)
            self._started.set()
            next_tick = time.monotonic()
            while not self._stop.is_set():
                if self._do_pending_reset():
                    next_tick = time.monotonic()  # the next step one period after the reset
                    continue
                if self.lockstep:
                    self._lockstep_tick()
                    continue
                next_tick += self.period
                delay = next_tick - time.monotonic()
                if delay < -self.period:  # fell behind (a slow reset or a busy CPU): re-anchor
                    next_tick = time.monotonic()
                elif delay > 0:
                    self._wakeup.wait(delay)
                    self._wakeup.clear()
                    if self._stop.is_set() or not self._resets.empty():
                        continue
                self._step(self._current_action())
        except BaseException as error:  # noqa: BLE001 - reported by start()/serve()
            log.exception("the sim bridge thread failed")
            self._thread_error = error
            self._started.set()
        finally:
            self.env.close()

    def _lockstep_tick(self) -> None:
        with self._lock:
            action = self._pending.popleft() if self._pending else None
        if action is None:
            if not self._wakeup.wait(self.period):
                with self._lock:
                    messages, paused = dict(self._last_messages), set(self._paused)
                for topic, msg in messages.items():  # keep-alive, same stamps
                    if topic not in paused:
                        self.server.publish(topic, msg)
            self._wakeup.clear()
            return
        self._step(action)

    def _current_action(self) -> np.ndarray:
        with self._lock:
            fresh = time.monotonic() - self._command_time <= self.command_timeout_s
            motion = self._twist_action if fresh else np.zeros(3)
            return np.append(motion, self._gripper_action)

    def _step(self, action: np.ndarray) -> None:
        action = action.astype(np.float32)
        observation, _, _, _, info = self.env.step(action)
        self.applied.append(action)
        self.steps += 1
        self._publish_observation(observation, success=bool(info["success"]))

    def _do_pending_reset(self) -> bool:
        try:
            job = self._resets.get_nowait()
        except queue.Empty:
            return False
        try:
            job.result = self._reset(job)
        except Exception as error:  # noqa: BLE001 - reported to the caller
            log.exception("reset failed")
            job.result = (False, f"{type(error).__name__}: {error}")
        finally:
            job.done.set()
        return True

    def _reset(self, job: _ResetJob) -> tuple[bool, Any]:
        # -1: a random seed from the training range, never an evaluation seed
        seed = job.seed if job.seed >= 0 else int(np.random.default_rng().integers(0, EVAL_SEED_START))
        values: dict[str, Any] = {"success": True, "message": "", "seed": seed, "goal_images": [], "goal_state": []}
        if job.goal_dir is not None:
            try:
                goal, observation, _ = make_goal_images(self.env, seed)
            except GoalNotReachedError as error:
                observation, _ = self.env.reset(seed=seed)
                values.update(success=False, message=str(error))
            else:
                values["goal_images"] = _write_goal_images(job.goal_dir, goal)
                values["goal_state"] = [float(v) for v in goal.goal_state]
        else:
            observation, _ = self.env.reset(seed=seed)
        with self._lock:
            self._twist_action = np.zeros(3)
            self._command_time = float("-inf")
            self._gripper_action = -1.0
            self._pending.clear()
        self.steps = 0
        values["observation_stamp"] = self._publish_observation(observation, success=False)
        log.info("reset to seed %d%s", seed, f" with goal images in {job.goal_dir}" if job.goal_dir is not None else "")
        return values["success"], values

    def _publish_observation(self, observation: dict[str, Any], success: bool) -> float:
        """Publish an observation on every topic not paused; returns its stamp (s)."""
        robot, version = self.robot, self.robot.ros_version
        seconds = time.time()
        state = observation["state"]
        messages: dict[str, dict] = {}
        for camera in robot.cameras:
            image = observation["images"][camera.name]
            if normalise_type(camera.message_type) == "sensor_msgs/Image":
                messages[camera.topic] = raw_image_message(image, "rgb8", f"{camera.name}_camera", seconds, version)
            else:
                messages[camera.topic] = compressed_image_message(
                    image, self.image_format, f"{camera.name}_camera", seconds, version
                )
        quaternion_wxyz = self._sim.data.body("hand").xquat
        quaternion = np.array([*quaternion_wxyz[1:], quaternion_wxyz[0]])
        messages[robot.pose_topic] = pose_message(state[:3], quaternion, self.frame_id, seconds, version)
        if robot.joint_state_topic:
            messages[robot.joint_state_topic] = self._joint_state(float(state[3]), seconds)
        if robot.success_topic:
            messages[robot.success_topic] = {"data": success}
        with self._lock:
            self._state = np.asarray(state, dtype=np.float32).copy()
            self._success = success
            self._last_messages = messages
            paused = set(self._paused)
        for topic, msg in messages.items():
            if topic not in paused:
                self.server.publish(topic, msg)
        return seconds

    def _joint_state(self, gripper_opening: float, seconds: float) -> dict:
        names = list(ARM_JOINTS)
        positions = [float(self._sim.data.joint(name).qpos[0]) for name in ARM_JOINTS]
        gripper = self.robot.gripper
        if gripper.state_joints:
            # Positions that give back Meta-World's opening through state_scale/offset.
            each = (gripper_opening - gripper.state_offset) / gripper.state_scale / len(gripper.state_joints)
            names += list(gripper.state_joints)
            positions += [each] * len(gripper.state_joints)
        return {
            "header": header("", seconds, self.robot.ros_version),
            "name": names,
            "position": positions,
            "velocity": [],
            "effort": [],
        }


def _write_goal_images(directory: Path, goal: Any) -> list[str]:
    """Write the sub-goal and goal images as PNG files; each written to a temporary
    name and renamed, so a reader never sees half a file. Returns the paths in the
    order an agent takes goals: sub-goals first, the final goal last (per camera)."""
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    frames = [
        (f"subgoal_{goal.seed}_{index}_{phase}", images)
        for index, (phase, images) in enumerate(zip(goal.subgoal_phases, goal.subgoals, strict=True))
    ]
    frames.append((f"goal_{goal.seed}", goal.goal))
    for stem, images in frames:
        for camera, image in images.items():
            path = directory / f"{stem}_{camera}.png"
            temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")  # unique: two resets may race
            Image.fromarray(image).save(temporary, format="PNG")
            os.replace(temporary, path)
            written.append(str(path))
    return written
