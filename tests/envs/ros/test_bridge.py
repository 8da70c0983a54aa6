"""RosArmEnv against the sim bridge, end to end over loopback websockets with the real
roslibpy client (asyncio transport). Every bridge listens on a free port."""

import logging
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import roslibpy
from omegaconf import OmegaConf
from PIL import Image

from envs.metaworld.env import MetaWorldGoalEnv
from envs.recording import check_features_match, dataset_features
from envs.ros.arm import RobotConnectionError, RobotSafetyStop, RosArmConfig, RosArmEnv
from envs.ros.link import summarize_message
from envs.ros.messages import twist_message
from envs.ros.sim_bridge import SimBridge
from jepa_robot.config import configs_dir, to_schema

SIM_ROBOT = configs_dir() / "robot" / "sim.yaml"


def sim_robot(port: int, **overrides) -> RosArmConfig:
    """configs/robot/sim.yaml on ``port``, with nested overrides."""
    config = OmegaConf.merge(OmegaConf.load(SIM_ROBOT), {"port": port, "host": "127.0.0.1"}, overrides)
    return to_schema(config, RosArmConfig)


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    """One clock-driven bridge (reach, 64 px, 20 Hz) shared by the tests of this module;
    each test resets it through the reset service."""
    bridge = SimBridge(MetaWorldGoalEnv("reach", image_size=64), sim_robot(0), port=0,
                       goal_root=tmp_path_factory.mktemp("goals"))
    bridge.start()
    yield bridge
    bridge.stop()


def twists_from(bridge, client_start: float, clients: set[int] | None = None) -> list[np.ndarray]:
    """Linear velocities the bridge received since ``client_start`` (monotonic),
    from ``clients`` (connection ids) if given."""
    return [
        np.array([command.msg["twist"]["linear"][axis] for axis in "xyz"])
        for command in bridge.commands_on(bridge.robot.command_topic)
        if command.time >= client_start and (clients is None or command.client in clients)
    ]


def clients_since(bridge, start: float) -> set[int]:
    """Connection ids of the clients that subscribed since ``start`` (the test's own;
    a previous test's last messages may still be arriving)."""
    return {record.client for record in bridge.server.op_log if record.time >= start and record.op == "subscribe"}


def toward(target: np.ndarray, state: np.ndarray, gain: float = 20.0) -> np.ndarray:
    action = np.zeros(4, dtype=np.float32)
    action[:3] = np.clip((target - state[:3]) * gain, -1.0, 1.0)
    return action


@pytest.mark.timeout(40)
def test_episode_moves_the_arm_toward_the_goal(bridge):
    with RosArmEnv(sim_robot(bridge.port)) as env:
        observation, info = env.reset(seed=7, options={"goal_dir": "episode"})
        # Same layout as the simulator's own env.
        assert env.observation_space["state"].shape == (4,) and env.action_space.shape == (4,)
        assert observation["images"]["oblique"].shape == (64, 64, 3)
        assert observation["images"]["oblique"].dtype == np.uint8 and observation["state"].dtype == np.float32
        assert env.observation_space.contains(observation)
        # one goal image per camera of the robot config (sim.yaml: oblique)
        assert info["seed"] == 7 and info["goal_images"] == [str(bridge.goal_root / "episode" / "goal_7_oblique.png")]
        goal_image = np.asarray(Image.open(info["goal_images"][0]))
        assert goal_image.shape == (64, 64, 3)
        goal = np.asarray(info["goal_state"][:3])
        np.testing.assert_allclose(observation["state"], bridge._state, atol=1e-6)

        start_distance = np.linalg.norm(observation["state"][:3] - goal)
        distances = []
        for _ in range(30):
            observation, _, _, truncated, info = env.step(toward(goal, observation["state"]))
            distances.append(np.linalg.norm(observation["state"][:3] - goal))
        assert not truncated and info["step"] == 30
    assert start_distance > 0.1
    assert distances[-1] < 0.25 * start_distance, (start_distance, distances)
    assert distances[10] < start_distance  # falls early, not only at the end
    # The camera showed the arm move: the last frame differs from the first.
    assert np.abs(observation["images"]["oblique"].astype(int) - goal_image.astype(int)).mean() < 30


@pytest.mark.timeout(30)
def test_lockstep_applies_each_command_once_and_exactly():
    robot = sim_robot(0)
    with SimBridge(MetaWorldGoalEnv("reach", image_size=32), robot, port=0, lockstep=True) as bridge:
        with RosArmEnv(sim_robot(bridge.port, image_size=32)) as env:
            env.reset(seed=3)
            time.sleep(0.2)
            assert bridge.steps == 0
            actions = [np.array([0.5, -0.25, 0.1, 1.0], np.float32), np.array([-0.3, 0.2, 0.0, -1.0], np.float32)] * 3
            for action in actions:
                env.step(action)
            time.sleep(0.2)
            assert bridge.steps == len(actions)
            np.testing.assert_allclose(np.stack(list(bridge.applied)[-len(actions):]), np.stack(actions), atol=1e-6)


@pytest.mark.timeout(30)
def test_gripper_through_the_gripper_command_action():
    """control_msgs/GripperCommand over rosbridge's ROS 2 action ops (send_action_goal)."""
    action_gripper = {
        "mode": "action", "command": "/jepa_sim/gripper_action", "message_type": "control_msgs/action/GripperCommand",
        "open_position": 0.04, "closed_position": 0.0, "deadband": 0.1,
    }
    robot = sim_robot(0, gripper=action_gripper)
    with SimBridge(MetaWorldGoalEnv("reach", image_size=32), robot, port=0) as bridge:
        with RosArmEnv(sim_robot(bridge.port, image_size=32, gripper=action_gripper)) as env:
            observation, _ = env.reset(seed=2)
            opening = observation["state"][3]
            for gripper in (1.0, 1.0, 0.95, 1.0, 1.0, 1.0, 1.0, 1.0):  # close, within the deadband
                observation, *_ = env.step(np.array([0.0, 0.0, 0.0, gripper], np.float32))
            time.sleep(0.2)
        goals = bridge.commands_on("/jepa_sim/gripper_action")
    assert len(goals) == 1 and goals[0].msg["command"] == {"position": 0.0, "max_effort": 20.0}
    assert bridge.applied[-1][3] == 1.0  # Meta-World's "close"
    assert observation["state"][3] < opening - 0.1  # the fingers closed


@pytest.mark.timeout(30)
def test_commands_are_clipped_before_they_leave_the_process(bridge):
    start = time.monotonic()
    # The hand starts at x ~ 0: a box whose x wall is 3 cm ahead; the plan pushes through it.
    robot = sim_robot(bridge.port, safety={"max_linear_speed": 0.1, "workspace_high": [0.03, 1.0, 0.5]})
    with RosArmEnv(robot) as env:
        observation, _ = env.reset(seed=1)
        hand = observation["state"][:3]
        assert abs(hand[0]) < 0.01
        clipped = set()
        for _ in range(25):
            observation, _, _, _, info = env.step(np.array([1.0, 1.0, 0.0, 0.0], np.float32))
            clipped.update(info["clipped"])
        final_x = observation["state"][0]
    received = twists_from(bridge, start)[1:]  # after reset's zero twist
    assert len(received) >= 25
    speeds = [np.linalg.norm(twist) for twist in received]
    assert max(speeds) <= 0.1 + 1e-9  # max_linear_speed, not the plan's 0.28 m/s
    assert {"linear_speed", "workspace_x"} <= clipped
    # x slows down to the wall (what a held command would reach stays inside) ...
    x_speeds = [twist[0] for twist in received[:25]]
    assert x_speeds[-1] < 0.01 and x_speeds[-1] < 0.2 * max(x_speeds)
    assert min(twist[1] for twist in received[:20]) > 0.05  # ... while y keeps going
    # and the hand stopped at it (give or take the sim controller's ~1 mm tracking lag).
    assert 0.02 < final_x <= 0.03 + 3e-3


@pytest.mark.timeout(30)
def test_dry_run_sends_nothing(bridge, caplog):
    # A dry run calls no reset service, so the arm is wherever the previous test left it,
    # possibly still finishing that test's last command: wait until it is still.
    deadline = time.monotonic() + 3.0
    previous = bridge.hand_position()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        current = bridge.hand_position()
        if np.abs(current - previous).max() < 2e-4:
            break
        previous = current
    start = time.monotonic()
    with RosArmEnv(sim_robot(bridge.port, dry_run=True)) as env:
        observation, _ = env.reset(seed=2)
        before = bridge.hand_position()
        with caplog.at_level(logging.INFO, logger="envs.ros.link"):
            for _ in range(4):
                observation, _, _, _, info = env.step(np.array([1.0, 0.0, 0.0, 1.0], np.float32))
        assert info["command"]["linear"][0] > 0  # bounded as usual ...
    ours = clients_since(bridge, start)
    ops = [record for record in bridge.server.op_log if record.client in ours]
    assert len(ours) == 1 and all(record.op == "subscribe" for record in ops), ops  # not even the reset service
    assert twists_from(bridge, start, ours) == []
    assert not [command for command in bridge.commands_on(bridge.robot.gripper.command) if command.client in ours]
    # ... and only logged: one short INFO line per command, the full message at DEBUG
    info_lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "dry run" in r.getMessage()]
    twist_lines = [line for line in info_lines if "/jepa_sim/delta_twist_cmds" in line]
    assert len(twist_lines) == 4 and all("twist.linear=[+" in line and "header" not in line for line in twist_lines)
    assert all(len(line) < 200 for line in info_lines), info_lines
    # Sent, 4 steps at 0.2 m/s would have moved the hand 4 cm; it only settles (~1 mm).
    np.testing.assert_allclose(bridge.hand_position(), before, atol=5e-3)


@pytest.mark.timeout(30)
def test_stale_camera_stops_the_arm(bridge):
    camera_topic = bridge.robot.cameras[0].topic
    with RosArmEnv(sim_robot(bridge.port)) as env:
        env.reset(seed=4)
        for _ in range(3):
            env.step(np.array([0.5, 0.0, 0.0, 0.0], np.float32))
        bridge.pause(camera_topic)
        paused_at = time.monotonic()
        try:
            with pytest.raises(RobotSafetyStop, match=f"camera 'oblique' \\({camera_topic}\\)"):
                for _ in range(40):
                    env.step(np.array([0.5, 0.0, 0.0, 0.0], np.float32))
            stopped_at = time.monotonic()
            time.sleep(0.1)
            last = twists_from(bridge, paused_at)[-1]
            np.testing.assert_array_equal(last, np.zeros(3))  # a zero twist went out
            assert stopped_at - paused_at < 1.5
            with pytest.raises(RobotSafetyStop, match="reset"):  # latched until reset
                env.step(np.zeros(4, np.float32))
        finally:
            bridge.resume(camera_topic)
        env.reset(seed=4)
        env.step(np.array([0.5, 0.0, 0.0, 0.0], np.float32))  # usable again


@pytest.mark.timeout(30)
def test_malformed_messages_are_reported_not_fatal(bridge, caplog):
    camera_topic = bridge.robot.cameras[0].topic
    with RosArmEnv(sim_robot(bridge.port)) as env:
        env.reset(seed=5)
        env.step(np.zeros(4, np.float32))
        bridge.pause(camera_topic)
        try:
            with caplog.at_level(logging.ERROR, logger="envs.ros.link"):
                for bad in (
                    {"format": "png", "data": "%%% not base64 %%%"},
                    {"format": "png"},
                    {"format": "jpeg", "data": "aGVsbG8gd29ybGQ="},  # valid base64, not an image
                ):
                    bridge.publish_raw(camera_topic, bad)
                with pytest.raises(RobotSafetyStop, match="last message rejected: cannot decode"):
                    env.step(np.zeros(4, np.float32))
            assert env.message_errors == {"camera:oblique": 3}
            assert "malformed message on camera 'oblique'" in caplog.text and "not valid base64" in caplog.text
            assert env.link.is_connected
        finally:
            bridge.resume(camera_topic)

        # The server side: bad requests get a status message, the bridge keeps serving.
        env.link.ros.send_on_ready(roslibpy.Message({"op": "teleport", "topic": "/x"}))
        env.link.ros.send_on_ready(roslibpy.Message(
            {"op": "publish", "topic": bridge.robot.command_topic, "msg": {"twist": {"linear": {"x": 1}}}}
        ))
        env.link.ros.factory.on_ready(lambda proto: proto.send_message(b"{not json"))
        deadline = time.monotonic() + 5
        while len(env.link.status_messages) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        texts = " | ".join(message["msg"] for message in env.link.status_messages)
        assert "op 'teleport' is not supported" in texts
        assert "missing field 'linear.y'" in texts and "invalid JSON" in texts
        observation, _ = env.reset(seed=5)
        observation, *_ = env.step(np.array([0.0, 0.5, 0.0, 0.0], np.float32))
        assert observation["images"]["oblique"].shape == (64, 64, 3)


@pytest.mark.timeout(30)
def test_bridge_stops_the_arm_when_commands_stop_or_the_sender_leaves(bridge):
    """Measured on the actions the sim applies (the hand itself lags its target a little)."""
    with RosArmEnv(sim_robot(bridge.port)) as env:
        env.reset(seed=6)
    ros = roslibpy.Ros("127.0.0.1", bridge.port, transport="asyncio")
    ros.run(timeout=5)
    topic = roslibpy.Topic(ros, bridge.robot.command_topic, "geometry_msgs/TwistStamped")

    def send() -> None:
        topic.publish(roslibpy.Message(twist_message([0.1, 0.0, 0.0], [0.0, 0.0, 0.0], "world")))

    def applied_during(seconds: float) -> list[np.ndarray]:
        first = len(bridge.applied)
        time.sleep(seconds)
        return list(bridge.applied)[first:]

    # One command, then silence: applied for command_timeout_s (0.5 s), then zero.
    send()
    moving = applied_during(0.35)
    applied_during(0.3)
    stale = applied_during(0.3)
    assert moving and all(action[0] == pytest.approx(0.5) for action in moving[1:])
    assert len(stale) >= 2 and all(np.all(action[:3] == 0) for action in stale)

    # Commands, then the sender disconnects without a zero twist: zero at once.
    for _ in range(4):
        send()
        time.sleep(0.05)
    ros.factory._stop = True  # no reconnect
    ros.close()
    time.sleep(0.1)  # the close reaches the bridge
    after_leave = applied_during(0.3)  # well inside the 0.5 s a stale command would last
    assert len(after_leave) >= 2 and all(np.all(action[:3] == 0) for action in after_leave)


@pytest.mark.timeout(30)
def test_sigint_and_exceptions_send_a_zero_twist(bridge):
    start = time.monotonic()
    handler_before = signal.getsignal(signal.SIGINT)  # SIG_IGN under nohup / a background job
    with pytest.raises(KeyboardInterrupt):
        with RosArmEnv(sim_robot(bridge.port)) as env:
            env.reset(seed=8)
            env.step(np.array([0.5, 0.0, 0.0, 0.0], np.float32))
            interrupted_at = time.monotonic()
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: our handler stops the arm first
            time.sleep(1.0)
    time.sleep(0.1)
    after_sigint = twists_from(bridge, interrupted_at)
    assert after_sigint and np.all(after_sigint[0] == 0)
    assert signal.getsignal(signal.SIGINT) is handler_before  # handler restored

    with pytest.raises(RuntimeError, match="planner blew up"):
        with RosArmEnv(sim_robot(bridge.port)) as env:
            env.reset(seed=8)
            env.step(np.array([0.0, 0.5, 0.0, 0.0], np.float32))
            failed_at = time.monotonic()
            raise RuntimeError("planner blew up")
    time.sleep(0.1)
    after_error = twists_from(bridge, failed_at)
    assert after_error and np.all(after_error[-1] == 0)
    assert twists_from(bridge, start)


@pytest.fixture(scope="module", autouse=True)
def bridge_process(tmp_path_factory):
    """`jepa-robot sim-bridge` as a separate process, started with the module so that
    it boots while the in-process tests run; the kill test kills it."""
    log_path = tmp_path_factory.mktemp("bridge") / "bridge.log"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "jepa_robot.cli", "sim-bridge", "port=0", "image_size=32"],
            stdout=subprocess.PIPE, stderr=log_file, text=True, cwd=configs_dir().parent,
        )
    yield process
    process.kill()
    process.wait(10)


@pytest.mark.timeout(45)
def test_killed_bridge_gives_a_clear_connection_error(bridge_process):
    line = _read_line(bridge_process, timeout=40)
    assert line.startswith("sim-bridge: listening on ws://127.0.0.1:"), line
    port = int(line.split("ws://127.0.0.1:")[1].split()[0])
    env = RosArmEnv(sim_robot(port, image_size=32))
    observation, _ = env.reset(seed=9)
    for _ in range(3):
        observation, *_ = env.step(np.array([0.3, 0.0, 0.0, 0.0], np.float32))
    bridge_process.kill()  # the robot goes away mid-episode
    killed_at = time.monotonic()
    with pytest.raises(RobotConnectionError, match="lost the rosbridge connection"):
        for _ in range(40):
            env.step(np.array([0.3, 0.0, 0.0, 0.0], np.float32))
    assert time.monotonic() - killed_at < 2.0
    closing = time.monotonic()
    env.close()
    assert time.monotonic() - closing < 3.0 and not env._watchdog.is_alive()
    with pytest.raises(RobotConnectionError):
        env.reset()


def _read_line(process: subprocess.Popen, timeout: float) -> str:
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not result or not result[0]:
        raise AssertionError(f"the sim bridge printed no address in {timeout} s (exit code {process.poll()})")
    return result[0].strip()


@pytest.fixture
def teleoperator(bridge):
    """A scripted teleoperator sending a constant command through its own RosArmEnv,
    as a teleoperation tool would, until the test ends. Yields the action."""
    action = np.array([0.25, 0.0, 0.1, 1.0], np.float32)
    stop = threading.Event()

    def teleoperate() -> None:
        with RosArmEnv(sim_robot(bridge.port, handle_signals=False)) as env:
            env.reset()
            while not stop.is_set():
                try:
                    env.step(action)
                except RobotSafetyStop:  # a recorder's reset can cut the feed briefly
                    env.reset()

    thread = threading.Thread(target=teleoperate, daemon=True)
    thread.start()
    time.sleep(0.5)
    yield action
    stop.set()
    thread.join(10)


@pytest.mark.timeout(90)
def test_record_ros_writes_a_dataset_like_sim_data(bridge, teleoperator, tmp_path, monkeypatch):
    from envs.ros import recording as ros_recording
    from jepa_robot.cli import main
    from jepa_robot.data.dataset import open_dataset

    root = tmp_path / "ros-reach"
    code = main([
        "record-ros", f"robot.port={bridge.port}", "robot.host=127.0.0.1", f"root={root}",
        "repo_id=test/ros-reach", "episodes=2", "episode_steps=10", "seed_start=40", "progress=false",
    ])
    assert code == 0
    dataset, spec = open_dataset(str(root))
    assert dataset.meta.total_episodes == 2 and len(dataset) == 20 and dataset.meta.fps == 20
    assert dataset.meta.robot_type == "sawyer"
    sim_features = dataset_features(MetaWorldGoalEnv("reach", image_size=64))
    check_features_match(dataset.meta.features, sim_features, root)  # same keys, dtypes, shapes, names
    assert spec.image_key == "observation.images.oblique" and spec.action_dim == 4 and spec.state_dim == 4
    assert sorted(int(s) for s in dataset.hf_dataset.unique("episode_seed")) == [40, 41]
    actions = np.stack([dataset.hf_dataset[i]["action"] for i in range(len(dataset))])
    matching = np.all(np.abs(actions - teleoperator) < 1e-4, axis=1)
    assert matching.mean() >= 0.7, actions  # the teleoperator's commands, in action units
    item = dataset[3]
    assert item["observation.images.oblique"].shape == (3, 64, 64) and item["task"] == "reach"

    # Resume with more seeds, and Ctrl-C in the middle of the second new episode: the
    # half episode is dropped and the dataset is finalised with the others.
    original = ros_recording._record_episode

    def interrupted(link, reader, add_frame, config, seed, *args):
        if seed == 43:
            observe, calls = link.observation, iter(range(1000))

            def observe_then_interrupt():
                if next(calls) == 4:
                    raise KeyboardInterrupt("Ctrl-C")
                return observe()

            link.observation = observe_then_interrupt
        return original(link, reader, add_frame, config, seed, *args)

    monkeypatch.setattr(ros_recording, "_record_episode", interrupted)
    summary = ros_recording.record_ros(
        sim_robot(bridge.port), root, "test/ros-reach", episodes=4, episode_steps=10, task="reach",
        seed_start=40, progress=False,
    )
    assert summary.interrupted and summary.skipped_seeds == [40, 41] and summary.recorded_seeds == [42]
    dataset, _ = open_dataset(str(root))
    assert dataset.meta.total_episodes == 3 and len(dataset) == 30


def test_summarize_message_gives_each_value_by_its_path_without_headers():
    twist = twist_message([0.0123, -0.003, 0.0], [0.0, 0.0, 0.0], "base")
    assert summarize_message(twist) == "twist.linear=[+0.012 -0.003 +0.000] twist.angular=[+0.000 +0.000 +0.000]"
    assert summarize_message({"data": 0.5}) == "data=+0.500"
    goal = {"command": {"position": 0.04, "max_effort": 20.0}}
    assert summarize_message(goal) == "command.position=+0.040 command.max_effort=+20.000"
