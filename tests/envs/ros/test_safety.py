"""Safety filter, message decoding and robot configs: no network, no simulator."""

import base64
import dataclasses
import io
import math

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from envs.ros.config import ACTION_LAYOUTS, GripperSettings, RosArmConfig
from envs.ros.messages import (
    MalformedMessageError,
    compressed_image_message,
    decode_image,
    fit_image,
    joint_positions,
    parse_pose,
    quaternion_multiply,
    quaternion_to_euler,
    quaternion_to_rotation_vector,
    raw_image_message,
    rotation_vector_to_quaternion,
    stamp_seconds,
)
from envs.ros.safety import LIMIT_CEILINGS, SAFETY_KEYS, SafetyFilter, SafetySettings
from jepa_robot.config import compose, configs_dir, to_schema
from jepa_robot.config.robot import RecordRosConfig, SimBridgeConfig

pytestmark = pytest.mark.timeout(30)


SMALL_BOX = {
    "workspace_low": [-0.1, 0.5, 0.1], "workspace_high": [0.1, 0.7, 0.3],
    "max_linear_speed": 0.1, "max_angular_speed": 0.5, "max_gripper_step": 0.5,
    "max_observation_age_s": 0.5, "command_timeout_s": 0.5,
}


def settings(**overrides) -> SafetySettings:
    """Valid limits (a 20 cm box around (0, 0.6, 0.2)), with ``overrides`` checked as usual."""
    return SafetySettings(**{**SMALL_BOX, **overrides})


def make_filter(**overrides):
    return SafetyFilter(settings(**overrides))


def test_speed_limits_keep_the_direction():
    command = make_filter().filter([0.3, 0.4, 0.0], [0.0, 0.0, 2.0], None, np.array([0.0, 0.6, 0.2]), None)
    np.testing.assert_allclose(command.linear, [0.06, 0.08, 0.0])
    np.testing.assert_allclose(command.angular, [0.0, 0.0, 0.5])
    assert set(command.clipped) == {"linear_speed", "angular_speed"}


def test_workspace_clips_per_axis_over_the_hold_horizon():
    safety = make_filter()
    # 0.02 m below the upper x wall: holding 0.1 m/s for 0.5 s would overshoot by 0.03 m.
    command = safety.filter([0.1, 0.0, 0.0], np.zeros(3), None, np.array([0.08, 0.6, 0.2]), None)
    np.testing.assert_allclose(command.linear, [0.04, 0.0, 0.0])
    assert command.clipped == ("workspace_x",)
    # y and z untouched when only x hits the wall.
    command = safety.filter([0.06, 0.0, -0.08], np.zeros(3), None, np.array([0.08, 0.6, 0.2]), None)
    np.testing.assert_allclose(command.linear, [0.04, 0.0, -0.08])


def test_outside_the_box_only_motion_back_in_is_allowed():
    safety = make_filter()
    outside = np.array([0.15, 0.6, 0.2])  # 5 cm beyond x_high
    away = safety.filter([0.05, 0.0, 0.0], np.zeros(3), None, outside, None)
    back = safety.filter([-0.05, 0.0, 0.0], np.zeros(3), None, outside, None)
    np.testing.assert_allclose(away.linear, [0.0, 0.0, 0.0])
    np.testing.assert_allclose(back.linear, [-0.05, 0.0, 0.0])


def test_gripper_is_bounded_and_rate_limited():
    safety = make_filter()
    first = safety.filter(np.zeros(3), np.zeros(3), 3.0, np.array([0.0, 0.6, 0.2]), None)
    assert first.gripper == 1.0
    step = safety.filter(np.zeros(3), np.zeros(3), -1.0, np.array([0.0, 0.6, 0.2]), 1.0)
    assert step.gripper == pytest.approx(0.5) and "gripper_step" in step.clipped


def test_non_finite_requests_are_refused():
    with pytest.raises(ValueError, match="non-finite"):
        make_filter().filter([np.nan, 0, 0], np.zeros(3), None, np.array([0.0, 0.6, 0.2]), None)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"action_scale": [0.1, 0.1]}, "robot.action_scale"),
        ({"action_layout": "droid7"}, "robot.action_scale"),  # droid7 needs 6 scales
        ({"rate_hz": 0}, "robot.rate_hz"),
        ({"transport": "zmq"}, "robot.transport"),
        ({"state_layout": "joints"}, "robot.state_layout"),
        ({"safety": settings(command_timeout_s=0.01)}, "command_timeout_s"),
    ],
)
def test_bad_robot_configs_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        RosArmConfig(**{"safety": settings(), **kwargs})


def test_bad_safety_and_gripper_settings_name_the_key():
    with pytest.raises(ValueError, match="robot.safety.workspace_low"):
        settings(workspace_low=[0.5, 0.0, 0.0], workspace_high=[0.4, 1.0, 1.0])
    with pytest.raises(ValueError, match="robot.safety.max_linear_speed"):
        settings(max_linear_speed=0)
    with pytest.raises(ValueError, match="robot.gripper.mode"):
        GripperSettings(mode="magnet")


# ------------------------------------------------ hard ceilings on every limit
@pytest.mark.parametrize(
    "key, value",
    [
        ("max_linear_speed", math.inf),
        ("max_linear_speed", 1e9),
        ("max_linear_speed", 0.51),
        ("max_linear_speed", math.nan),
        ("max_angular_speed", math.inf),
        ("max_angular_speed", 1e9),
        ("max_angular_speed", 1.6),
        ("max_gripper_step", 1e9),
        ("max_observation_age_s", 1e9),
        ("max_observation_age_s", math.inf),
        ("max_observation_age_s", 1.5),
        ("command_timeout_s", math.inf),
        ("command_timeout_s", 1e9),
        ("command_timeout_s", math.nan),
    ],
)
def test_limits_above_their_ceiling_are_refused(key, value):
    """Before: inf, 1e9 or an hour of observation age were accepted (only `> 0` was checked),
    so configuration could switch the filter off."""
    with pytest.raises(ValueError, match=f"robot.safety.{key}="):
        settings(**{key: value})
    assert settings(**{key: LIMIT_CEILINGS[key]})  # the ceiling itself is allowed


@pytest.mark.parametrize(
    "low, high, error",
    [
        ([-1e9, -1e9, -1e9], [1e9, 1e9, 1e9], "within \\+-2.0 m"),
        ([0.0, 0.0, 0.0], [0.5, 0.5, 2.5], "within \\+-2.0 m"),
        ([-1.5, -0.5, 0.0], [1.5, 0.5, 0.5], "at most 2.0 m on each side"),
        ([0.0, 0.0, math.nan], [0.5, 0.5, 0.5], "three finite numbers"),
        ([0.0, 0.0, -math.inf], [0.5, 0.5, 0.5], "three finite numbers"),
    ],
)
def test_workspace_beyond_its_ceilings_is_refused(low, high, error):
    """Before: a +-1e9 box was accepted and bounded nothing."""
    with pytest.raises(ValueError, match=f"robot.safety.workspace_.*{error}"):
        settings(workspace_low=low, workspace_high=high)


def test_an_infinite_speed_cannot_reach_the_arm_even_when_set_after_the_checks():
    """Before: a filter whose settings said inf (set before or after building it) sent a
    1000 m/s or 1000 rad/s request as it was."""
    limits = settings(workspace_low=[-1.0, -1.0, -1.0], workspace_high=[1.0, 1.0, 1.0])
    safety = SafetyFilter(limits)
    limits.max_linear_speed = math.inf
    limits.max_angular_speed = math.inf
    limits.max_gripper_step = 1e9
    limits.command_timeout_s = math.inf
    limits.max_observation_age_s = 1e9
    command = safety.filter([1000.0, 0.0, 0.0], [0.0, 0.0, 1000.0], -1.0, np.zeros(3), 1.0)
    assert np.linalg.norm(command.linear) == pytest.approx(LIMIT_CEILINGS["max_linear_speed"])
    assert np.linalg.norm(command.angular) == pytest.approx(LIMIT_CEILINGS["max_angular_speed"])
    assert {"linear_speed", "angular_speed"} <= set(command.clipped)
    assert safety.command_timeout_s == safety.horizon_s == LIMIT_CEILINGS["command_timeout_s"]
    assert safety.max_observation_age_s == LIMIT_CEILINGS["max_observation_age_s"]

    # A box widened after the checks, or a limit that is no number, stops the filter.
    limits.workspace_low, limits.workspace_high = [-1e9] * 3, [1e9] * 3
    with pytest.raises(ValueError, match="robot.safety.workspace_low"):
        safety.filter([1000.0, 0.0, 0.0], np.zeros(3), None, np.zeros(3), None)
    limits.workspace_low, limits.workspace_high = [-1.0] * 3, [1.0] * 3
    limits.max_linear_speed = math.nan
    with pytest.raises(ValueError, match="robot.safety.max_linear_speed=nan"):
        safety.filter([1000.0, 0.0, 0.0], np.zeros(3), None, np.zeros(3), None)
    # The watchdog reads these and must act rather than raise: a nonsense value holds at once.
    limits.command_timeout_s = limits.max_observation_age_s = math.nan
    assert safety.command_timeout_s == 0.0 and safety.max_observation_age_s == 0.0
    with pytest.raises(ValueError, match="robot.safety.command_timeout_s=nan"):
        _ = safety.horizon_s


def test_a_filter_refuses_settings_changed_before_it_was_built():
    limits = settings()
    limits.max_linear_speed = 1e9
    with pytest.raises(ValueError, match="robot.safety.max_linear_speed=1000000000.0 is above its hard ceiling"):
        SafetyFilter(limits)


def test_a_robot_config_without_safety_is_refused_with_the_keys_to_set():
    """Before: dropping `safety` from franka_servo.yaml silently used the Meta-World box in
    the wrong frame, with default speeds, on a real Franka."""
    franka = OmegaConf.load(configs_dir() / "robot" / "franka_servo.yaml")
    del franka["safety"]
    with pytest.raises(ValueError, match="robot.safety is not set") as error:
        to_schema(franka, RosArmConfig)
    assert all(f"robot.safety.{key}" in str(error.value) for key in SAFETY_KEYS)
    with pytest.raises(ValueError, match="robot.safety is not set"):
        RosArmConfig()


def test_a_partial_safety_section_is_refused_naming_the_missing_key():
    overrides = ["robot=franka_servo", "root=data/x", "repo_id=a/b", "~robot.safety.workspace_low"]
    with pytest.raises(ValueError, match="missing mandatory value: workspace_low \\(key: robot.safety.workspace_low\\)"):
        compose("record-ros", overrides, RecordRosConfig)


def test_an_override_above_a_ceiling_is_refused_before_connecting():
    overrides = ["robot=franka_servo", "root=data/x", "repo_id=a/b", "robot.safety.max_linear_speed=inf"]
    with pytest.raises(ValueError, match="robot.safety.max_linear_speed=inf is above its hard ceiling"):
        compose("record-ros", overrides, RecordRosConfig)


def test_run_robot_refuses_a_franka_without_safety_before_connecting(tmp_path, capsys):
    """The CLI, with the franka config's safety section removed: exit 2, nothing connects
    (port 1 would refuse a connection anyway)."""
    from jepa_robot.cli import main

    code = main(["run-robot", "checkpoint=default", "robot=franka_servo", "~robot.safety", "robot.port=1",
                 f"goal=[{tmp_path / 'g.png'}]"])
    assert code == 2
    error = capsys.readouterr().err
    assert "robot.safety is not set" in error and "robot.safety.max_linear_speed" in error


def test_gripper_mapping_round_trips():
    franka = GripperSettings(mode="action", message_type="control_msgs/action/GripperCommand",
                             open_position=0.04, closed_position=0.0)
    assert franka.command_value(-1.0) == pytest.approx(0.04) and franka.command_value(1.0) == pytest.approx(0.0)
    for action in (-1.0, -0.3, 0.0, 0.8, 1.0):
        assert franka.action_value(franka.command_value(action)) == pytest.approx(action)


def test_shipped_robot_configs_compose():
    franka = compose("record-ros", ["robot=franka_servo", "root=data/x", "repo_id=a/b"], RecordRosConfig).robot
    assert franka.action_layout == "droid7" and len(franka.action_names) == 7 == len(franka.state_names)
    assert franka.gripper.mode == "action" and franka.command_topic == "/servo_node/delta_twist_cmds"
    sim = compose("sim-bridge", ["port=0"], SimBridgeConfig)
    assert sim.port == 0 and sim.robot.action_names == ACTION_LAYOUTS["metaworld4"]
    with pytest.raises(ValueError, match="renders only"):
        compose("sim-bridge", ["robot=franka_servo"], SimBridgeConfig)  # camera 'external' is no sim view


@pytest.mark.parametrize("name", ["franka_servo", "franka_vjepa2_ac", "sim"])
def test_every_shipped_robot_config_states_its_limits_under_the_ceilings(name):
    robot = compose("record-ros", [f"robot={name}", "root=data/x", "repo_id=a/b"], RecordRosConfig).robot
    limits = dataclasses.asdict(robot.safety)
    assert set(limits) == set(SAFETY_KEYS)
    assert all(0 < limits[key] <= ceiling for key, ceiling in LIMIT_CEILINGS.items())
    if name.startswith("franka"):  # the Franka's own box in fr3_link0, not Meta-World's
        assert limits["workspace_low"] == [0.30, -0.30, 0.05] and limits["workspace_high"] == [0.70, 0.30, 0.55]


# ------------------------------------------------------------------- messages
def rgb_image(height=6, width=8):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_raw_images_decode_with_encodings_and_row_padding():
    image = rgb_image()
    for encoding in ("rgb8", "bgr8"):
        message = raw_image_message(image, encoding)
        np.testing.assert_array_equal(decode_image(message, "sensor_msgs/msg/Image"), image)
    # Rows padded to 32 bytes, as some drivers do.
    padded = np.zeros((6, 32), dtype=np.uint8)
    padded[:, :24] = image.reshape(6, 24)
    message = {"height": 6, "width": 8, "encoding": "rgb8", "step": 32,
               "data": base64.b64encode(padded.tobytes()).decode()}
    np.testing.assert_array_equal(decode_image(message, "sensor_msgs/Image"), image)
    mono = {"height": 2, "width": 2, "encoding": "mono8", "step": 2, "data": [0, 50, 100, 255]}
    assert decode_image(mono, "sensor_msgs/Image")[1, 1].tolist() == [255, 255, 255]


def test_compressed_images_decode():
    image = rgb_image(16, 16)
    png = compressed_image_message(image, "png")
    np.testing.assert_array_equal(decode_image(png, "sensor_msgs/CompressedImage"), image)
    jpeg = decode_image(compressed_image_message(image, "jpeg"), "sensor_msgs/CompressedImage")
    assert jpeg.shape == (16, 16, 3) and jpeg.dtype == np.uint8


@pytest.mark.parametrize(
    "message_type, message, error",
    [
        ("sensor_msgs/CompressedImage", {"format": "png", "data": "%%%not base64"}, "not valid base64"),
        ("sensor_msgs/CompressedImage", {"format": "png"}, "missing field 'data'"),
        ("sensor_msgs/CompressedImage", {"format": "jpeg", "data": base64.b64encode(b"garbage").decode()}, "cannot decode"),
        ("sensor_msgs/Image", {"height": 4, "width": 4, "encoding": "rgb8", "step": 12, "data": "AAAA"}, "expected height"),
        ("sensor_msgs/Image", {"height": 4, "width": 4, "encoding": "16UC1", "step": 8, "data": ""}, "not supported"),
        ("sensor_msgs/Image", {"width": 4, "encoding": "rgb8", "data": ""}, "missing field 'height'"),
        ("sensor_msgs/Image", [1, 2, 3], "missing field"),
    ],
)
def test_malformed_images_raise_a_clear_error(message_type, message, error):
    with pytest.raises(MalformedMessageError, match=error):
        decode_image(message, message_type)


def test_fit_image_centre_crops_then_resizes():
    wide = np.zeros((40, 80, 3), dtype=np.uint8)
    wide[:, 20:60] = 200  # the centre square
    fitted = fit_image(wide, 16)
    assert fitted.shape == (16, 16, 3) and fitted.min() == 200
    assert fit_image(wide, 16, crop="none").min() == 0


def test_poses_joints_stamps_and_rotations():
    message = {"header": {"stamp": {"secs": 10, "nsecs": 500_000_000}},
               "pose": {"position": {"x": 1, "y": 2, "z": 3}, "orientation": {"x": 0, "y": 0, "z": 0, "w": 1.02}}}
    position, quaternion = parse_pose(message)
    assert position.tolist() == [1, 2, 3] and quaternion.tolist() == [0, 0, 0, 1]
    assert stamp_seconds(message) == pytest.approx(10.5)
    with pytest.raises(MalformedMessageError, match="orientation.w"):
        parse_pose({"pose": {"position": {"x": 0, "y": 0, "z": 0}, "orientation": {"x": 0, "y": 0, "z": 0}}})
    joints = {"name": ["a", "b", "c"], "position": [0.1, 0.2, 0.3]}
    assert joint_positions(joints, ["c", "a"]) == [0.3, 0.1]
    assert joint_positions(joints, ["d"]) is None
    with pytest.raises(MalformedMessageError, match="2 positions"):
        joint_positions({"name": ["a", "b", "c"], "position": [0.1, 0.2]}, ["a"])

    yaw = rotation_vector_to_quaternion(np.array([0.0, 0.0, 0.3]))
    roll = rotation_vector_to_quaternion(np.array([0.2, 0.0, 0.0]))
    np.testing.assert_allclose(quaternion_to_euler(quaternion_multiply(yaw, roll)), [0.2, 0.0, 0.3], atol=1e-12)
    np.testing.assert_allclose(quaternion_to_rotation_vector(yaw), [0.0, 0.0, 0.3], atol=1e-12)


def test_png_round_trip_is_lossless_through_pil():
    image = rgb_image(5, 7)
    data = base64.b64decode(compressed_image_message(image, "png")["data"])
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), image)
