"""Safety filter, message decoding and robot configs: no network, no simulator."""

import base64
import io

import numpy as np
import pytest
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
from envs.ros.safety import SafetyFilter, SafetySettings
from jepa_robot.config import compose
from jepa_robot.config.robot import RecordRosConfig, SimBridgeConfig

pytestmark = pytest.mark.timeout(30)


def make_filter(**overrides):
    settings = SafetySettings(
        workspace_low=[-0.1, 0.5, 0.1], workspace_high=[0.1, 0.7, 0.3],
        max_linear_speed=0.1, max_angular_speed=0.5, max_gripper_step=0.5, command_timeout_s=0.5,
    )
    for key, value in overrides.items():
        setattr(settings, key, value)
    return SafetyFilter(settings)


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
        ({"safety": SafetySettings(command_timeout_s=0.01)}, "command_timeout_s"),
    ],
)
def test_bad_robot_configs_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        RosArmConfig(**kwargs)


def test_bad_safety_and_gripper_settings_name_the_key():
    with pytest.raises(ValueError, match="robot.safety.workspace_low"):
        SafetySettings(workspace_low=[0.5, 0.0, 0.0], workspace_high=[0.4, 1.0, 1.0])
    with pytest.raises(ValueError, match="robot.safety.max_linear_speed"):
        SafetySettings(max_linear_speed=0)
    with pytest.raises(ValueError, match="robot.gripper.mode"):
        GripperSettings(mode="magnet")


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
