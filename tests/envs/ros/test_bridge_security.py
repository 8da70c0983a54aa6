"""Who may reach the sim bridge and what it writes: the goal root, the Origin check,
the shared token and the message limits. Each test reproduces a fault the bridge had
(files written wherever a client said, any web page accepted, 64 MiB messages read,
deeply nested JSON crashing the handler) and checks the bridge keeps serving.

The raw-socket client below speaks just enough websocket (RFC 6455) to send what
roslibpy never would: a browser's Origin header, a huge frame, hand-made JSON."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time

import numpy as np
import pytest
from omegaconf import OmegaConf

from envs.metaworld.env import MetaWorldGoalEnv
from envs.ros.access import DEFAULT_MAX_MESSAGE_BYTES, TOKEN_ENV, resolve_token
from envs.ros.arm import RobotConnectionError, RosArmConfig, RosArmEnv
from envs.ros.messages import raw_image_message
from envs.ros.rosbridge_server import RosbridgeServer
from envs.ros.sim_bridge import SimBridge
from jepa_robot.config import ConfigError, compose, configs_dir, to_schema
from jepa_robot.config.robot import SimBridgeConfig

TOKEN = "test-token-0123456789abcdef"
SIM_ROBOT = configs_dir() / "robot" / "sim.yaml"


def sim_robot(port: int, **overrides) -> RosArmConfig:
    config = OmegaConf.merge(OmegaConf.load(SIM_ROBOT), {"port": port, "host": "127.0.0.1", "image_size": 32},
                             overrides)
    return to_schema(config, RosArmConfig)


@pytest.fixture(scope="module")
def goal_root(tmp_path_factory):
    return tmp_path_factory.mktemp("bridge-goals")


@pytest.fixture(scope="module")
def bridge(goal_root):
    """A bridge with a goal root and a token, shared by the tests of this module."""
    bridge = SimBridge(MetaWorldGoalEnv("reach", image_size=32), sim_robot(0), port=0,
                       goal_root=goal_root, token=TOKEN)
    bridge.start()
    yield bridge
    bridge.stop()


@pytest.fixture(autouse=True)
def no_token_in_the_environment(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)


# ------------------------------------------------------------------ a raw websocket client
def connect(port: int, headers: dict[str, str] | None = None, path: str = "/") -> tuple[socket.socket, str]:
    """Open a websocket (no Origin header unless given); returns the socket and the HTTP status line."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
             *(f"{name}: {value}" for name, value in (headers or {}).items())]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        if not chunk:
            break
        response += chunk
    return sock, response.split(b"\r\n", 1)[0].decode()


def authorised(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}", **(extra or {})}


def frame_header(length: int) -> bytes:
    """A final text frame of ``length`` bytes, masked with a zero key (payload sent as is)."""
    if length < 126:
        size = bytes([0x80 | length])
    elif length < 2**16:
        size = bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        size = bytes([0x80 | 127]) + struct.pack("!Q", length)
    return bytes([0x81]) + size + b"\0\0\0\0"


def send(sock: socket.socket, message: bytes | dict) -> None:
    payload = json.dumps(message).encode() if isinstance(message, dict) else message
    sock.sendall(frame_header(len(payload)) + payload)


def receive(sock: socket.socket) -> tuple[int, bytes]:
    """The next frame: (opcode, payload); opcode 8 is a close frame (code, reason)."""

    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the server closed the connection")
            data += chunk
        return data

    first, second = exactly(2)
    length = second & 0x7F
    if length == 126:
        length = struct.unpack("!H", exactly(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", exactly(8))[0]
    return first & 0x0F, exactly(length)


def status_reply(sock: socket.socket) -> str:
    """Send an unknown op and return the server's status text: proof it still serves this client."""
    send(sock, {"op": "teleport"})
    opcode, payload = receive(sock)
    assert opcode == 1, (opcode, payload)
    return json.loads(payload)["msg"]


def call_reset(sock: socket.socket, goal_dir: str) -> dict:
    send(sock, {"op": "call_service", "service": "/jepa_sim/reset", "id": "r1",
                "args": {"seed": 3, "goal_dir": goal_dir}})
    while True:
        opcode, payload = receive(sock)
        message = json.loads(payload)
        if message.get("op") == "service_response":
            return message


# ------------------------------------------------------------------------------ goal root
@pytest.mark.timeout(60)
def test_goal_dir_must_stay_inside_the_goal_root(bridge, goal_root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (goal_root / "link-out").symlink_to(outside)
    before = sorted(goal_root.rglob("*"))
    sock, status = connect(bridge.port, authorised())
    assert status.startswith("HTTP/1.1 101")
    refused = {
        str(outside / "planted"): "absolute paths and '..' are not allowed",  # used to write there
        "../planted": "absolute paths and '..' are not allowed",
        "goals/../../planted": "absolute paths and '..' are not allowed",
        "link-out/planted": "leads out of the bridge's goal root through a symlink",
    }
    for goal_dir, reason in refused.items():
        response = call_reset(sock, goal_dir)
        assert response["result"] is False and reason in response["values"], (goal_dir, response)
    assert not list(outside.iterdir()) and not (goal_root.parent / "planted").exists()
    assert sorted(goal_root.rglob("*")) == before  # nothing created anywhere
    # A name inside the root works, and lands there.
    response = call_reset(sock, "run-1/seed-3")
    assert response["result"] is True, response
    assert [os.path.relpath(path, goal_root) for path in response["values"]["goal_images"]] == [
        os.path.join("run-1", "seed-3", "goal_3_oblique.png")
    ]
    sock.close()


def test_a_bridge_without_goal_root_writes_no_goal_images(tmp_path):
    bridge = SimBridge(MetaWorldGoalEnv("reach", image_size=32), sim_robot(0), port=0)
    with pytest.raises(ValueError, match="no goal_root"):
        bridge.goal_directory("goals")
    bridge.env.close()


# ---------------------------------------------------------------------------------- Origin
def test_browser_origins_only_from_this_machine_or_the_allowed_list():
    server = RosbridgeServer("127.0.0.1", 0, allowed_origins=["https://*.lab.example:*"])
    port = server.start()
    try:
        refused = ["http://evil.example", "https://evil.example:9090", "http://localhost.evil.example:8000",
                   "null", "file:///home/user/page.html"]
        for origin in refused:  # a web page open in the user's browser used to get through
            sock, status = connect(port, {"Origin": origin})
            assert status.startswith("HTTP/1.1 400") and "not allowed" in status, (origin, status)
            sock.close()
        accepted = [None, "http://localhost:8888", "http://127.0.0.1:5173", "https://dash.lab.example"]
        for origin in accepted:  # None: roslibpy and ROS tools send no Origin
            sock, status = connect(port, {"Origin": origin} if origin else {})
            assert status.startswith("HTTP/1.1 101"), (origin, status)
            assert "not supported" in status_reply(sock)
            sock.close()
    finally:
        server.stop()
    with pytest.raises(ValueError, match="allowed_origins: 'evil.example' is not an origin pattern"):
        RosbridgeServer(allowed_origins=["evil.example"])


# ---------------------------------------------------------------------------- message limits
@pytest.mark.timeout(60)
def test_a_64_mib_message_closes_only_its_connection(bridge):
    sock, status = connect(bridge.port, authorised())
    assert status.startswith("HTTP/1.1 101")
    started = time.monotonic()
    # The frame header announces 64 MiB: refused before the body is read (it used to be
    # read whole, ~7 s, then parsed).
    sock.sendall(frame_header(64 * 2**20) + b'{"op": "publish", "pad": "' + b"a" * 4096)
    opcode, payload = receive(sock)
    assert opcode == 8 and struct.unpack("!H", payload[:2])[0] == 1009  # close: message too big
    assert b"exceeds payload limit of 8388608" in payload[2:]
    assert time.monotonic() - started < 2.0
    sock.close()
    # A 2 MiB message (a relayed camera frame, say) is within the limit, and other clients are served.
    other, _ = connect(bridge.port, authorised())
    send(other, {"op": "unadvertise", "topic": "/camera", "pad": "a" * 2 * 2**20})
    assert "not supported" in status_reply(other)
    other.close()


def test_the_default_limit_holds_the_bridges_largest_message():
    """The bridge's biggest message: a 512 px rgb8 image (image_size's maximum)."""
    image = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    largest = len(json.dumps({"op": "publish", "topic": "/camera/image_raw",
                              "msg": raw_image_message(image, "rgb8", "oblique_camera", 0.0, 2)}))
    assert 1_000_000 < largest < DEFAULT_MAX_MESSAGE_BYTES / 4, largest


@pytest.mark.timeout(60)
def test_deeply_nested_json_gets_an_error_and_the_bridge_keeps_serving(bridge):
    sock, _ = connect(bridge.port, authorised())
    topic = bridge.robot.command_topic
    for depth in (100_000, 500):  # past the parser's recursion limit (it used to raise RecursionError), past ours
        send(sock, b'{"op": "publish", "topic": "%s", "msg": {"a": %s%s}}' % (topic.encode(), b"[" * depth,
                                                                             b"]" * depth))
        opcode, payload = receive(sock)
        assert opcode == 1 and "JSON nested more than 100 levels deep" in json.loads(payload)["msg"]
    assert "not supported" in status_reply(sock)  # the same connection still works ...
    other, _ = connect(bridge.port, authorised())
    assert "not supported" in status_reply(other)  # ... and so do new ones
    sock.close()
    other.close()


# ------------------------------------------------------------------------------------ token
@pytest.mark.timeout(60)
def test_a_client_without_the_token_is_refused_with_the_reason(bridge):
    for token, reason in ((None, "bridge token missing"), ("wrong-token-0123456789", "bridge token wrong")):
        started = time.monotonic()
        with pytest.raises(RobotConnectionError, match=f"refused the connection: .*\\[401\\]: {reason}.*robot.token"):
            RosArmEnv(sim_robot(bridge.port, token=token, connect_timeout_s=10))
        assert time.monotonic() - started < 3.0  # told at once, not after the connect timeout
    sock, status = connect(bridge.port)  # any other client: HTTP 401, no websocket
    assert status == "HTTP/1.1 401 bridge token missing: send the header 'Authorization: Bearer <token>' or " \
                     "?token=<token>"
    sock.close()


@pytest.mark.timeout(60)
def test_the_token_from_config_env_or_url_lets_clients_in(bridge, goal_root, monkeypatch):
    with RosArmEnv(sim_robot(bridge.port, token=TOKEN)) as env:
        observation, info = env.reset(seed=5, options={"goal_dir": "happy"})
        assert info["goal_images"] == [str(goal_root / "happy" / "goal_5_oblique.png")]
        observation, *_ = env.step(np.array([0.5, 0.0, 0.0, 0.0], np.float32))
        assert observation["images"]["oblique"].shape == (32, 32, 3)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)  # robot.token null: the environment's
    with RosArmEnv(sim_robot(bridge.port)) as env:
        env.reset(seed=6)
        env.step(np.zeros(4, np.float32))
    sock, status = connect(bridge.port, path=f"/?token={TOKEN}")  # clients that cannot set headers
    assert status.startswith("HTTP/1.1 101") and "not supported" in status_reply(sock)
    sock.close()


def test_weak_tokens_and_bad_settings_are_refused_naming_the_key(monkeypatch):
    with pytest.raises(ValueError, match="robot.token: a bridge token must be at least 16"):
        resolve_token("short", key="robot.token")
    monkeypatch.setenv(TOKEN_ENV, "has a space in it, not a header value")
    with pytest.raises(ValueError, match=f"\\${TOKEN_ENV}: a bridge token must be"):
        resolve_token(None)
    with pytest.raises(ConfigError, match="allowed_origins: 'evil.example' is not an origin pattern"):
        compose("sim-bridge", ["allowed_origins=[evil.example]"], SimBridgeConfig)
    with pytest.raises(ConfigError, match="max_message_bytes=10000 is below the bridge's own image messages"):
        compose("sim-bridge", ["max_message_bytes=10000"], SimBridgeConfig)
