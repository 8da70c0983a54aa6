"""rosbridge v2 JSON messages: decode what arrives, build what leaves.

rosbridge carries ROS messages as JSON objects. ``uint8[]`` fields (image data) come
as base64 strings (some bridges send lists of ints; both are accepted), header stamps
as ``{"sec", "nanosec"}`` (ROS 2) or ``{"secs", "nsecs"}`` (ROS 1). Every decoder
here raises ``MalformedMessageError`` naming the field and what was wrong, so a
subscriber can log it and drop the message instead of crashing.

Quaternions are ``(x, y, z, w)`` as in ``geometry_msgs/Quaternion``; Euler angles
are roll, pitch, yaw (rotations about the fixed x, y, z axes, in that order).
"""

from __future__ import annotations

import base64
import binascii
import io
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image as PILImage

IMAGE_TYPES = ("sensor_msgs/CompressedImage", "sensor_msgs/Image")
COMPRESSED_FORMATS = ("JPEG", "PNG")
RAW_ENCODINGS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


class MalformedMessageError(ValueError):
    """An incoming ROS message lacks a field or carries data that cannot be decoded."""


def normalise_type(message_type: str) -> str:
    """``sensor_msgs/msg/Image`` (ROS 2 spelling) -> ``sensor_msgs/Image``."""
    parts = message_type.split("/")
    if len(parts) == 3 and parts[1] in ("msg", "srv", "action"):
        return f"{parts[0]}/{parts[2]}"
    return message_type


def field(message: Any, path: str) -> Any:
    """``message["a"]["b"]`` for ``path="a.b"``, or ``MalformedMessageError`` naming it."""
    value = message
    for key in path.split("."):
        if not isinstance(value, Mapping) or key not in value:
            raise MalformedMessageError(f"missing field {path!r}")
        value = value[key]
    return value


def number(message: Any, path: str) -> float:
    value = field(message, path)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise MalformedMessageError(f"field {path!r} must be a finite number, got {value!r}")
    return float(value)


def vector3(message: Any, path: str) -> np.ndarray:
    """A ``geometry_msgs/Vector3`` or ``Point`` at ``path`` as float64 (3,)."""
    return np.array([number(message, f"{path}.{axis}") for axis in "xyz"])


# ----------------------------------------------------------------- stamps and headers
def stamp(seconds: float | None = None, ros_version: int = 2) -> dict[str, int]:
    """A ``builtin_interfaces/Time`` (ROS 2) or ROS 1 ``time`` for ``seconds`` (now if None)."""
    seconds = time.time() if seconds is None else seconds
    whole = int(seconds)
    nanos = int(round((seconds - whole) * 1e9))
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    return {"sec": whole, "nanosec": nanos} if ros_version == 2 else {"secs": whole, "nsecs": nanos}


def header(frame_id: str, seconds: float | None = None, ros_version: int = 2) -> dict[str, Any]:
    return {"stamp": stamp(seconds, ros_version), "frame_id": frame_id}


def stamp_seconds(message: Any) -> float | None:
    """Header stamp of a message in seconds, or None when it has none (or a zero one)."""
    if not isinstance(message, Mapping):
        return None
    head = message.get("header")
    if not isinstance(head, Mapping) or not isinstance(head.get("stamp"), Mapping):
        return None
    value = head["stamp"]
    whole = value.get("sec", value.get("secs"))
    nanos = value.get("nanosec", value.get("nsecs", 0))
    if not isinstance(whole, (int, float)) or not isinstance(nanos, (int, float)):
        return None
    seconds = float(whole) + float(nanos) * 1e-9
    return seconds if seconds > 0 else None


# ---------------------------------------------------------------------------- images
def decode_bytes(data: Any, path: str = "data") -> bytes:
    """A ``uint8[]`` field: a base64 string (rosbridge's encoding) or a list of ints."""
    if isinstance(data, str):
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as error:
            raise MalformedMessageError(f"field {path!r} is not valid base64: {error}") from error
    if isinstance(data, (list, tuple)):
        try:
            return bytes(data)
        except (TypeError, ValueError) as error:
            raise MalformedMessageError(f"field {path!r} is a list but not of bytes 0-255") from error
    raise MalformedMessageError(f"field {path!r} must be a base64 string or a list of ints, got {type(data).__name__}")


def decode_image(message: Any, message_type: str) -> np.ndarray:
    """An image message as uint8 (H, W, 3) RGB.

    ``sensor_msgs/CompressedImage``: jpeg or png, whatever the ``format`` string
    says (image_transport writes strings like ``"rgb8; jpeg compressed bgr8"``). ``sensor_msgs/Image``: encodings rgb8, bgr8, rgba8,
    bgra8 and mono8, with row padding (``step``) honoured.
    """
    kind = normalise_type(message_type)
    if kind == "sensor_msgs/CompressedImage":
        data = decode_bytes(field(message, "data"))
        if not data:
            raise MalformedMessageError("field 'data' is empty")
        try:
            # Only the formats image_transport produces: trying every PIL plugin would
            # import them all on the first unknown payload (~0.3 s holding the GIL).
            with PILImage.open(io.BytesIO(data), formats=COMPRESSED_FORMATS) as image:
                return np.asarray(image.convert("RGB"), dtype=np.uint8)
        except (OSError, ValueError, PILImage.DecompressionBombError) as error:
            declared = message.get("format", "?") if isinstance(message, Mapping) else "?"
            raise MalformedMessageError(f"cannot decode {len(data)} bytes of format {declared!r}: {error}") from error
    if kind == "sensor_msgs/Image":
        height = int(number(message, "height"))
        width = int(number(message, "width"))
        encoding = field(message, "encoding")
        if encoding not in RAW_ENCODINGS:
            raise MalformedMessageError(f"encoding {encoding!r} is not supported; use one of {sorted(RAW_ENCODINGS)}")
        channels = RAW_ENCODINGS[encoding]
        step = int(number(message, "step")) if isinstance(message, Mapping) and "step" in message else width * channels
        if height < 1 or width < 1 or step < width * channels:
            raise MalformedMessageError(f"bad size: height={height} width={width} step={step} for {encoding}")
        data = decode_bytes(field(message, "data"))
        if len(data) != height * step:
            raise MalformedMessageError(
                f"data has {len(data)} bytes, expected height*step = {height}*{step} = {height * step}"
            )
        rows = np.frombuffer(data, dtype=np.uint8).reshape(height, step)
        pixels = rows[:, : width * channels].reshape(height, width, channels)
        if encoding == "mono8":
            return np.repeat(pixels, 3, axis=2)
        if encoding.startswith("bgr"):
            pixels = pixels[:, :, 2::-1]
        return np.ascontiguousarray(pixels[:, :, :3])
    raise MalformedMessageError(f"unsupported image type {message_type!r}; use one of {IMAGE_TYPES}")


def fit_image(image: np.ndarray, size: int, crop: str = "center") -> np.ndarray:
    """Square uint8 (size, size, 3): centre-crop to a square (``crop="center"``) or
    stretch (``crop="none"``), then resize with antialiasing."""
    height, width = image.shape[:2]
    if crop == "center" and height != width:
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        image = image[top : top + side, left : left + side]
    if image.shape[0] == size and image.shape[1] == size:
        return np.ascontiguousarray(image)
    resized = PILImage.fromarray(image).resize((size, size), PILImage.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def compressed_image_message(
    image: np.ndarray, image_format: str = "png", frame_id: str = "camera",
    seconds: float | None = None, ros_version: int = 2,
) -> dict[str, Any]:
    """A ``sensor_msgs/CompressedImage`` (png or jpeg) of an RGB uint8 image."""
    buffer = io.BytesIO()
    if image_format == "png":
        PILImage.fromarray(image).save(buffer, format="PNG", compress_level=1)
    elif image_format == "jpeg":
        PILImage.fromarray(image).save(buffer, format="JPEG", quality=95)
    else:
        raise ValueError(f"image_format must be png or jpeg, got {image_format!r}")
    return {
        "header": header(frame_id, seconds, ros_version),
        "format": image_format,
        "data": base64.b64encode(buffer.getvalue()).decode("ascii"),
    }


def raw_image_message(
    image: np.ndarray, encoding: str = "rgb8", frame_id: str = "camera",
    seconds: float | None = None, ros_version: int = 2,
) -> dict[str, Any]:
    """A ``sensor_msgs/Image`` (rgb8 or bgr8) of an RGB uint8 image, data in base64."""
    if encoding not in ("rgb8", "bgr8"):
        raise ValueError(f"encoding must be rgb8 or bgr8, got {encoding!r}")
    pixels = image if encoding == "rgb8" else image[:, :, ::-1]
    height, width = image.shape[:2]
    return {
        "header": header(frame_id, seconds, ros_version),
        "height": height,
        "width": width,
        "encoding": encoding,
        "is_bigendian": 0,
        "step": width * 3,
        "data": base64.b64encode(np.ascontiguousarray(pixels).tobytes()).decode("ascii"),
    }


# ---------------------------------------------------------------- poses and twists
def parse_pose(message: Any) -> tuple[np.ndarray, np.ndarray]:
    """``geometry_msgs/PoseStamped`` (or ``Pose``) -> (position (3,), unit quaternion xyzw (4,))."""
    pose = message["pose"] if isinstance(message, Mapping) and "pose" in message else message
    position = vector3(pose, "position")
    quaternion = np.array([number(pose, f"orientation.{axis}") for axis in "xyzw"])
    norm = float(np.linalg.norm(quaternion))
    if not 0.5 < norm < 1.5:
        raise MalformedMessageError(f"orientation is not a unit quaternion (norm {norm:.3f})")
    return position, quaternion / norm


def parse_twist(message: Any) -> tuple[np.ndarray, np.ndarray]:
    """``geometry_msgs/TwistStamped`` (or ``Twist``) -> (linear (3,), angular (3,))."""
    twist = message["twist"] if isinstance(message, Mapping) and "twist" in message else message
    return vector3(twist, "linear"), vector3(twist, "angular")


def twist_message(
    linear: Sequence[float], angular: Sequence[float], frame_id: str,
    seconds: float | None = None, ros_version: int = 2,
) -> dict[str, Any]:
    """A ``geometry_msgs/TwistStamped``."""
    return {
        "header": header(frame_id, seconds, ros_version),
        "twist": {
            "linear": dict(zip("xyz", (float(v) for v in linear), strict=True)),
            "angular": dict(zip("xyz", (float(v) for v in angular), strict=True)),
        },
    }


def pose_message(
    position: Sequence[float], quaternion: Sequence[float], frame_id: str,
    seconds: float | None = None, ros_version: int = 2,
) -> dict[str, Any]:
    """A ``geometry_msgs/PoseStamped`` (quaternion xyzw)."""
    return {
        "header": header(frame_id, seconds, ros_version),
        "pose": {
            "position": dict(zip("xyz", (float(v) for v in position), strict=True)),
            "orientation": dict(zip("xyzw", (float(v) for v in quaternion), strict=True)),
        },
    }


def joint_positions(message: Any, names: Sequence[str]) -> list[float] | None:
    """Positions of ``names`` in a ``sensor_msgs/JointState``; None if any is absent
    (JointState topics often carry a subset of joints per message)."""
    joint_names = field(message, "name")
    positions = field(message, "position")
    if not isinstance(joint_names, list) or not isinstance(positions, list):
        raise MalformedMessageError("fields 'name' and 'position' must be lists")
    if len(joint_names) != len(positions):
        raise MalformedMessageError(f"{len(joint_names)} names but {len(positions)} positions")
    index = {name: i for i, name in enumerate(joint_names)}
    if any(name not in index for name in names):
        return None
    values = []
    for name in names:
        value = positions[index[name]]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise MalformedMessageError(f"position of joint {name!r} must be a finite number, got {value!r}")
        values.append(float(value))
    return values


# ---------------------------------------------------------------------- rotations
def quaternion_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a * b`` of xyzw quaternions (apply b, then a)."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return np.array([
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    ])


def rotation_vector_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(rotation))
    if angle < 1e-12:
        return np.array([0.0, 0.0, 0.0, 1.0])
    axis = rotation / angle
    return np.concatenate([axis * np.sin(angle / 2), [np.cos(angle / 2)]])


def quaternion_to_rotation_vector(quaternion: np.ndarray) -> np.ndarray:
    q = quaternion if quaternion[3] >= 0 else -quaternion
    sin_half = float(np.linalg.norm(q[:3]))
    if sin_half < 1e-12:
        return np.zeros(3)
    angle = 2.0 * np.arctan2(sin_half, q[3])
    return q[:3] / sin_half * angle


def quaternion_conjugate(quaternion: np.ndarray) -> np.ndarray:
    return np.array([-quaternion[0], -quaternion[1], -quaternion[2], quaternion[3]])


def quaternion_to_euler(quaternion: np.ndarray) -> np.ndarray:
    """xyzw quaternion -> (roll, pitch, yaw) in radians."""
    x, y, z, w = quaternion
    roll = np.arctan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = np.arcsin(np.clip(2 * (w * y - z * x), -1.0, 1.0))
    yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return np.array([roll, pitch, yaw])
