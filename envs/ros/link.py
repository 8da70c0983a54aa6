"""The rosbridge connection of an arm: subscriptions, the newest sensor data, publishers.

``RosArmLink`` is what ``RosArmEnv`` (commands, safety) and ``record-ros`` (passive
recording) share. Message callbacks run in roslibpy's thread and only decode and
store; readers wait on ``link.condition``. Every outgoing message goes through
``RosArmLink._publish`` (or ``send_gripper``), the one place dry-run is enforced.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import roslibpy

from envs.ros.access import resolve_token
from envs.ros.config import RESET_SERVICE_TYPE, CameraTopic, RosArmConfig
from envs.ros.messages import (
    MalformedMessageError,
    decode_image,
    fit_image,
    joint_positions,
    normalise_type,
    number,
    parse_pose,
    parse_twist,
    quaternion_to_euler,
    stamp_seconds,
)
from envs.ros.safety import RobotConnectionError, RobotSafetyStop

log = logging.getLogger(__name__)


@dataclass
class _Latest:
    """The newest value of one subscription."""

    label: str
    value: Any = None
    received: float = float("-inf")
    """``time.monotonic()`` at arrival."""
    stamp: float | None = None
    errors: int = 0
    last_error: str | None = None
    last_logged: float = float("-inf")

    def describe(self, now: float) -> str:
        age = "never received" if self.value is None else f"last message {now - self.received:.2f} s ago"
        rejected = f"; last message rejected: {self.last_error}" if self.last_error else ""
        return f"{self.label}: {age}{rejected}"


def handshake_refusal(proto: Any) -> str | None:
    """Why a server refused the websocket opening handshake, as autobahn recorded it
    ("WebSocket connection upgrade failed [401]: <reason>"); None for other closes."""
    reason = getattr(proto, "wasNotCleanReason", None)
    return reason if isinstance(reason, str) and "connection upgrade failed" in reason else None


def _reporting_close(protocol: type, report: Callable[[Any], None]) -> type:
    """``protocol`` that also calls ``report(protocol instance)`` when its connection closes."""

    class ReportingClose(protocol):
        def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:  # noqa: N802, N803
            report(self)
            super().onClose(wasClean, code, reason)

    return ReportingClose


def stop_reconnecting(ros: Any) -> None:
    """Keep roslibpy from reconnecting: a robot link that drops is not silently resumed."""
    factory = ros.factory
    stop_trying = getattr(factory, "stopTrying", None)
    if callable(stop_trying):  # twisted's ReconnectingClientFactory, in the reactor thread
        ros.call_later(0, stop_trying)
    else:  # roslibpy's asyncio factory checks this flag before every reconnect
        factory._stop = True


def summarize_message(message: Any, digits: int = 3) -> str:
    """One short line of a message's values for a log: every value, or xyz(w) vector, by
    its path (``twist.linear=[+0.012 -0.003 +0.000]``, ``data=+0.500``), headers left out."""
    parts: list[str] = []

    def number(value: Any) -> str:
        return f"{value:+.{digits}f}" if isinstance(value, float) else str(value)

    def walk(path: str, value: Any) -> None:
        if isinstance(value, dict):
            leaves = list(value.values())
            if path and leaves and all(len(str(k)) == 1 and isinstance(v, (int, float)) for k, v in value.items()):
                parts.append(f"{path}=[{' '.join(number(v) for v in leaves)}]")  # a vector: x y z (w)
                return
            for key, child in value.items():
                if key != "header":
                    walk(f"{path}.{key}" if path else str(key), child)
        elif isinstance(value, (list, tuple)):
            shown = " ".join(number(v) for v in value[:8])
            parts.append(f"{path}=[{shown}{' ...' if len(value) > 8 else ''}]")
        else:
            text = number(value)
            parts.append(f"{path}={text[:40] + '...' if len(text) > 40 else text}")

    walk("", message)
    return " ".join(parts) or "(empty)"


class RosArmLink:
    """The rosbridge connection of an arm: subscriptions, the newest data, publishers.

    Message callbacks run in roslibpy's thread; readers take ``self.condition``.
    Every outgoing message goes through ``_publish``, the one place dry-run is
    enforced. ``observe_commands=True`` also subscribes to the command and gripper
    topics (for recording teleoperation).
    """

    def __init__(
        self,
        config: RosArmConfig,
        observe_commands: bool = False,
        on_connection_lost: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.condition = threading.Condition()
        self.connection_error: RobotConnectionError | None = None
        self.status_messages: collections.deque[dict] = collections.deque(maxlen=200)
        """Recent rosbridge ``status`` messages (errors the server reported)."""
        self._on_connection_lost = on_connection_lost
        self._closing = False
        self._topics: dict[str, Any] = {}
        self._action_client: Any = None
        self._last_gripper_goal: float | None = None

        self.latest: dict[str, _Latest] = {}
        for camera in config.cameras:
            self.latest[f"camera:{camera.name}"] = _Latest(f"camera {camera.name!r} ({camera.topic})")
        self.latest["pose"] = _Latest(f"pose ({config.pose_topic})")
        if config.gripper.state_joints:
            self.latest["gripper_state"] = _Latest(f"gripper joints ({config.joint_state_topic})")
        if config.success_topic:
            self.latest["success"] = _Latest(f"success ({config.success_topic})")
        if observe_commands:
            self.latest["command"] = _Latest(f"commands ({config.command_topic})")
            if config.gripper.mode == "topic":
                self.latest["gripper_command"] = _Latest(f"gripper commands ({config.gripper.command})")
        self.required = [key for key in self.latest if key.startswith("camera:")] + ["pose"]
        if "gripper_state" in self.latest:
            self.required.append("gripper_state")

        self.ros = self._connect()
        self._subscribe(observe_commands)

    # ------------------------------------------------------------ connection
    def _connect(self) -> Any:
        """Open the connection (presenting the token, if any) and wait until it is ready.
        A server that refuses the handshake (a wrong or missing token, say) is not
        retried: its HTTP status and reason become the ``RobotConnectionError``."""
        config = self.config
        try:
            token = resolve_token(config.token, key="robot.token")
        except ValueError as error:
            raise RobotConnectionError(str(error)) from error
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            ros = roslibpy.Ros(config.host, config.port, headers=headers, transport=config.transport)
        except RuntimeError as error:  # both transports in one process (txaio)
            raise RobotConnectionError(f"cannot open a roslibpy {config.transport} connection: {error}") from error
        settled = threading.Event()
        refusals: list[str] = []

        def on_close_while_connecting(proto: Any) -> None:
            refusal = handshake_refusal(proto)
            if refusal is not None and not settled.is_set():
                refusals.append(refusal)
                stop_reconnecting(ros)
                settled.set()

        ros.on("close", on_close_while_connecting)
        if config.transport == "twisted":  # its close event carries no protocol: hear it from the protocol
            ros.factory.protocol = _reporting_close(ros.factory.protocol, on_close_while_connecting)
        ros.on("close", self._on_close)
        ros.factory.on_ready(self._install_status_handler)
        ros.factory.on_ready(lambda _proto: settled.set())
        ros.factory.manager.run()  # what ros.run() does, without its wait: ours also ends on a refusal
        connected = settled.wait(config.connect_timeout_s)
        ros.off("close", on_close_while_connecting)
        if refusals:
            auth = " (the bridge's token: set robot.token or $JEPA_ROBOT_BRIDGE_TOKEN)" if "[401]" in refusals[0] else ""
            raise RobotConnectionError(f"rosbridge at {config.url} refused the connection: {refusals[0]}{auth}")
        if not connected:
            stop_reconnecting(ros)
            raise RobotConnectionError(
                f"cannot reach rosbridge at {config.url} within {config.connect_timeout_s} s; "
                "is rosbridge_server (or jepa-robot sim-bridge) running?"
            )
        log.info("connected to rosbridge at %s", config.url)
        return ros

    def _install_status_handler(self, proto: Any) -> Any:
        # roslibpy 2.1 has no handler for rosbridge "status" messages (it logs them as
        # unhandled); route them here so server-side errors are reported clearly.
        handlers = getattr(proto, "_message_handlers", None)
        if isinstance(handlers, dict):
            handlers["status"] = self._on_status
        return proto

    def _on_status(self, message: dict) -> None:
        self.status_messages.append(dict(message))
        level = message.get("level", "?")
        logger = log.warning if level in ("error", "warning") else log.info
        logger("rosbridge status (%s): %s", level, message.get("msg"))

    def _on_close(self, _proto: Any) -> None:
        if self._closing or not hasattr(self, "ros"):  # closing, or still connecting (_connect reports)
            return
        error = RobotConnectionError(
            f"lost the rosbridge connection to {self.config.url}; no stop command could be "
            "sent over it (the robot side must stop on its own command timeout)"
        )
        log.error("%s", error)
        stop_reconnecting(self.ros)
        with self.condition:
            self.connection_error = error
            self.condition.notify_all()
        if self._on_connection_lost is not None:
            self._on_connection_lost()

    @property
    def is_connected(self) -> bool:
        return self.connection_error is None and bool(self.ros.is_connected)

    def close(self) -> None:
        self._closing = True
        stop_reconnecting(self.ros)
        try:
            if self.ros.is_connected:
                self.ros.close(timeout=2)
        except Exception:  # noqa: BLE001 - closing a dying connection
            log.debug("closing the rosbridge connection failed", exc_info=True)

    # ---------------------------------------------------------- subscriptions
    def _subscribe(self, observe_commands: bool) -> None:
        config = self.config
        for camera in config.cameras:
            topic = roslibpy.Topic(self.ros, camera.topic, normalise_type(camera.message_type),
                                   queue_length=1, reconnect_on_close=False)
            topic.subscribe(self._handler(f"camera:{camera.name}", self._image_parser(camera)))
        pose = roslibpy.Topic(self.ros, config.pose_topic, "geometry_msgs/PoseStamped",
                              queue_length=1, reconnect_on_close=False)
        pose.subscribe(self._handler("pose", parse_pose))
        if config.gripper.state_joints:
            joints = roslibpy.Topic(self.ros, config.joint_state_topic, "sensor_msgs/JointState",
                                    queue_length=1, reconnect_on_close=False)
            joints.subscribe(self._handler("gripper_state", self._gripper_state))
        if config.success_topic:
            success = roslibpy.Topic(self.ros, config.success_topic, "std_msgs/Bool", reconnect_on_close=False)
            success.subscribe(self._handler("success", _parse_bool))
        if observe_commands:
            command_type = "geometry_msgs/TwistStamped" if config.command_mode == "twist" else "geometry_msgs/PoseStamped"
            parser = parse_twist if config.command_mode == "twist" else parse_pose
            commands = roslibpy.Topic(self.ros, config.command_topic, command_type, reconnect_on_close=False)
            commands.subscribe(self._handler("command", parser))
            if config.gripper.mode == "topic":
                gripper = roslibpy.Topic(self.ros, config.gripper.command,
                                         normalise_type(config.gripper.message_type), reconnect_on_close=False)
                gripper.subscribe(self._handler("gripper_command", _parse_float))

    def _image_parser(self, camera: CameraTopic) -> Callable[[dict], np.ndarray]:
        size, crop = self.config.image_size, self.config.crop

        def parse(message: dict) -> np.ndarray:
            return fit_image(decode_image(message, camera.message_type), size, crop)

        return parse

    def _gripper_state(self, message: dict) -> float | None:
        settings = self.config.gripper
        positions = joint_positions(message, settings.state_joints)
        if positions is None:  # a JointState message without our joints
            return None
        return settings.state_offset + settings.state_scale * float(sum(positions))

    def _handler(self, key: str, parse: Callable[[dict], Any]) -> Callable[[dict], None]:
        slot = self.latest[key]

        def on_message(message: dict) -> None:
            received = time.monotonic()
            try:
                value = parse(message)
            except MalformedMessageError as error:
                self._reject(slot, str(error), received)
                return
            except Exception as error:  # noqa: BLE001 - never let a message kill the client
                self._reject(slot, f"{type(error).__name__}: {error}", received)
                return
            if value is None:
                return
            with self.condition:
                slot.value = value
                slot.received = received
                slot.stamp = stamp_seconds(message)
                self.condition.notify_all()

        return on_message

    def _reject(self, slot: _Latest, reason: str, now: float) -> None:
        with self.condition:
            slot.errors += 1
            slot.last_error = reason
            should_log = now - slot.last_logged > 1.0
            if should_log:
                slot.last_logged = now
        if should_log:  # at most once a second per topic
            log.error("malformed message on %s dropped (%d so far): %s", slot.label, slot.errors, reason)

    @property
    def message_errors(self) -> dict[str, int]:
        """Malformed messages dropped so far, per subscription."""
        return {key: slot.errors for key, slot in self.latest.items() if slot.errors}

    # ---------------------------------------------------------------- reading
    def stale(self, max_age: float, keys: list[str] | None = None) -> list[str]:
        """Descriptions of required subscriptions older than ``max_age``."""
        now = time.monotonic()
        with self.condition:
            return [
                self.latest[key].describe(now)
                for key in (keys or self.required)
                if now - self.latest[key].received > max_age
            ]

    def stamps(self) -> dict[str, tuple[float, float | None]]:
        with self.condition:
            return {key: (slot.received, slot.stamp) for key, slot in self.latest.items()}

    def value(self, key: str) -> tuple[Any, float]:
        """(newest value, arrival time) of a subscription."""
        with self.condition:
            slot = self.latest[key]
            return slot.value, slot.received

    def wait_fresh(
        self, after: float, before: dict[str, tuple[float, float | None]], timeout: float,
        min_stamp: float | None = None,
    ) -> float:
        """Wait until every required subscription has a message that arrived after
        ``after`` and is not a re-send of the one it had then (same header stamp);
        with ``min_stamp``, one stamped at or after it. Returns the newest arrival
        time. Raises ``RobotConnectionError``, or ``RobotSafetyStop`` naming what was
        missing after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout

        def is_new(key: str) -> bool:
            slot = self.latest[key]
            if slot.received <= after:
                return False
            if min_stamp is not None and slot.stamp is not None:
                return slot.stamp >= min_stamp - 1e-6
            old_stamp = before.get(key, (None, None))[1]
            return slot.stamp is None or old_stamp is None or slot.stamp != old_stamp

        with self.condition:
            while True:
                if self.connection_error is not None:
                    raise RobotConnectionError(str(self.connection_error))
                missing = [key for key in self.required if not is_new(key)]
                if not missing:
                    return max(self.latest[key].received for key in self.required)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    now = time.monotonic()
                    details = "; ".join(self.latest[key].describe(now) for key in missing)
                    raise RobotSafetyStop(f"no fresh observation within {timeout:.2f} s: {details}")
                self.condition.wait(remaining)

    def observation(self) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
        """The newest observation in ``MetaWorldGoalEnv``'s layout, with the pose it was
        built from: ``(observation, position (3,), quaternion xyzw (4,))``."""
        config = self.config
        with self.condition:
            missing = [self.latest[key].label for key in self.required if self.latest[key].value is None]
            if missing:
                raise RobotSafetyStop(f"no data yet from {', '.join(missing)}")
            images = {camera.name: self.latest[f"camera:{camera.name}"].value for camera in config.cameras}
            position, quaternion = self.latest["pose"].value
            gripper_slot = self.latest.get("gripper_state")
            gripper = float(gripper_slot.value) if gripper_slot is not None else 0.0
        parts = [position]
        if config.state_layout == "pose_gripper":
            parts.append(quaternion_to_euler(quaternion))
        parts.append([gripper])
        state = np.concatenate(parts).astype(np.float32)
        return {"images": images, "state": state}, position.copy(), quaternion.copy()

    # ---------------------------------------------------------------- sending
    def _publish(self, name: str, message_type: str, message: dict) -> None:
        if self.config.dry_run:
            log.info("dry run: would publish on %s: %s", name, summarize_message(message))
            log.debug("dry run: the %s message on %s: %s", message_type, name, message)
            return
        if not self.is_connected:
            raise RobotConnectionError(str(self.connection_error or f"not connected to {self.config.url}"))
        topic = self._topics.get(name)
        if topic is None:
            topic = roslibpy.Topic(self.ros, name, message_type, queue_size=1, reconnect_on_close=False)
            self._topics[name] = topic
        topic.publish(roslibpy.Message(message))

    def publish_command(self, message: dict) -> None:
        """Publish a TwistStamped (twist mode) or PoseStamped (pose mode) command."""
        command_type = "geometry_msgs/TwistStamped" if self.config.command_mode == "twist" else "geometry_msgs/PoseStamped"
        self._publish(self.config.command_topic, command_type, message)

    def send_gripper(self, value: float) -> None:
        """Send a gripper command value (already mapped from action units)."""
        settings = self.config.gripper
        if settings.mode == "topic":
            self._publish(settings.command, normalise_type(settings.message_type), {"data": float(value)})
        elif settings.mode == "action":
            span = abs(settings.closed_position - settings.open_position)
            if self._last_gripper_goal is not None and abs(value - self._last_gripper_goal) * 2 / span <= settings.deadband:
                return
            goal = {"command": {"position": float(value), "max_effort": float(settings.max_effort)}}
            if self.config.dry_run:
                log.info("dry run: would send a %s goal to %s: %s", settings.message_type, settings.command,
                         summarize_message(goal))
                log.debug("dry run: the goal to %s: %s", settings.command, goal)
            else:
                if not self.is_connected:
                    raise RobotConnectionError(str(self.connection_error or f"not connected to {self.config.url}"))
                if self._action_client is None:
                    self._action_client = roslibpy.ActionClient(self.ros, settings.command, settings.message_type)
                self._action_client.send_goal(
                    roslibpy.Goal(goal),
                    lambda result: log.debug("gripper goal done: %s", result),
                    lambda feedback: None,
                    lambda error: log.error("gripper goal on %s failed: %s", settings.command, error),
                )
            self._last_gripper_goal = value

    def call_reset(self, seed: int, goal_dir: str | None, timeout: float) -> dict | None:
        """Call the reset service; returns its response values (None in dry run, where
        the call is only logged: a reset may move the arm)."""
        if self.config.dry_run:
            log.info("dry run: would call %s with seed %d", self.config.reset_service, seed)
            return None
        service = roslibpy.Service(self.ros, self.config.reset_service, RESET_SERVICE_TYPE)
        request = roslibpy.ServiceRequest({"seed": int(seed), "goal_dir": goal_dir or ""})
        try:
            response = dict(service.call(request, timeout=timeout))
        except Exception as error:  # noqa: BLE001 - ServiceException, RosTimeoutError
            if self.connection_error is not None:
                raise RobotConnectionError(str(self.connection_error)) from error
            raise RuntimeError(f"reset service {self.config.reset_service} failed: {error}") from error
        if not response.get("success", True):
            raise RuntimeError(f"reset service {self.config.reset_service} failed: {response.get('message')}")
        return response

    def reset(self, seed: int | None, goal_dir: str | None) -> tuple[dict | None, float]:
        """Call the reset service (when the config names one) and wait for the first
        observation after it. Returns ``(service response or None, arrival time)``."""
        before, called_at = self.stamps(), time.monotonic()
        response = None
        if self.config.reset_service:
            response = self.call_reset(-1 if seed is None else seed, goal_dir,
                                       timeout=max(30.0, self.config.connect_timeout_s))
        # The sim bridge says which stamp the first observation after the reset carries:
        # wait for that one, not for a frame that was on its way when the reset happened.
        first_stamp = (response or {}).get("observation_stamp")
        observed_at = self.wait_fresh(
            called_at, before, timeout=self.config.connect_timeout_s,
            min_stamp=first_stamp if isinstance(first_stamp, (int, float)) else None,
        )
        return response, observed_at


def _parse_bool(message: dict) -> bool:
    value = message.get("data") if isinstance(message, dict) else None
    if not isinstance(value, bool):
        raise MalformedMessageError(f"field 'data' must be a bool, got {value!r}")
    return value


def _parse_float(message: dict) -> float:
    return number(message, "data")
