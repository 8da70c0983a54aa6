"""A small rosbridge v2 server (the JSON protocol of ``rosbridge_server``), no ROS needed.

It speaks enough of the protocol for ``roslibpy`` and other rosbridge clients to
publish, subscribe and call services as they would against a real robot:

- ``advertise`` / ``unadvertise`` / ``publish``: client publishers; a publish goes to
  every client subscribed to the topic and to in-process subscribers;
- ``subscribe`` / ``unsubscribe``: clients receive ``publish`` messages for the topic;
- ``call_service`` -> ``service_response``: services provided in-process;
- ``send_action_goal`` -> ``action_result`` (ROS 2 rosbridge action ops): actions
  provided in-process, answered when the handler returns (no feedback, no cancel);
- ``status`` messages (level ``error``) for everything it cannot do: invalid JSON,
  unknown ops, missing fields, unknown topics or services, handler failures. A bad
  message never takes the server down.

Throttling, fragments, PNG compression, latching and client-provided services are
not implemented (they are answered with a status message where a client asks for
them). The server runs its asyncio loop in a background thread (``start``), so it
serves tests in-process and ``jepa-robot sim-bridge`` alike. Its local API
(``publish``, ``subscribe``, ``advertise_service`` ...) is thread-safe.

Who may connect, checked in the websocket opening handshake (a refused client gets an
HTTP error status naming the reason, and no websocket):

- ``Origin``: a client without one (roslibpy, scripts, ROS tools) is accepted; a web
  page's (browsers always send it) only from a loopback page (``LOOPBACK_ORIGINS``)
  or one of ``allowed_origins``, so a page on the web cannot drive the arm through
  the user's browser. ``null`` and ``file://`` origins are refused.
- a shared token, when the server has one (``token``; ``envs.ros.access.resolve_token``
  reads ``$JEPA_ROBOT_BRIDGE_TOKEN`` for a config without one): the client presents it
  as ``Authorization: Bearer <token>`` (``RosArmLink`` does) or in the URL,
  ``ws://host:port/?token=<token>``. Missing or wrong: HTTP 401. (rosbridge's own
  ``auth`` op carries a rosauth MAC, which needs a ROS authentication service; it is
  not supported.)

And what a connected client may send: messages of at most ``max_message_bytes``
(larger ones close the connection with code 1009, before they are read), nested at
most ``max_depth`` levels deep (deeper ones get an error status, the connection stays).
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import ipaddress
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autobahn.asyncio.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny

from envs.ros.access import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_MESSAGE_BYTES,
    LOOPBACK_ORIGINS,
    MIN_TOKEN_LENGTH,
    TOKEN_ENV,
    check_origin_patterns,
)
from envs.ros.messages import normalise_type

log = logging.getLogger(__name__)

# (request args) -> (ok, values); values is a dict, or an error string when not ok.
Handler = Callable[[dict[str, Any]], tuple[bool, Any]]
# (msg, client id or None for in-process publishers)
Subscriber = Callable[[dict[str, Any], int | None], None]

GOAL_SUCCEEDED = 4  # action_msgs/GoalStatus
GOAL_ABORTED = 6

HTTP_UNAUTHORIZED = 401


@dataclass(frozen=True)
class OpRecord:
    """One message a client sent (kept for inspection by tests and benchmarks)."""

    time: float
    """``time.monotonic()`` at arrival."""
    client: int
    op: str
    name: str | None
    """The topic, service or action it names."""


class _ClientProtocol(WebSocketServerProtocol):
    server: RosbridgeServer
    client_id: int

    def onConnect(self, request) -> None:  # noqa: N802 - autobahn's names
        # autobahn has already refused an Origin not in allowedOrigins (HTTP 400)
        self.factory.server._check_token(request)

    def failHandshake(self, reason: str, code: int = 400, responseHeaders=None) -> None:  # noqa: N802, N803
        log.warning("rosbridge connection from %s refused (HTTP %d): %s", self.peer, code, reason)
        super().failHandshake(reason, code, responseHeaders)

    def onOpen(self) -> None:  # noqa: N802
        self.factory.server._on_open(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:  # noqa: N802, N803
        self.factory.server._on_message(self, payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:  # noqa: N802, N803
        self.factory.server._on_close(self)


class RosbridgeServer:
    """A rosbridge v2 websocket server on ``host:port`` (port 0 picks a free one).

    ``token`` (None: no token needed) must be presented by every client;
    ``allowed_origins`` adds browser origins to ``LOOPBACK_ORIGINS``; messages
    larger than ``max_message_bytes`` or nested deeper than ``max_depth`` are
    refused (see the module docstring).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9090,
        op_log_size: int = 20_000,
        *,
        token: str | None = None,
        allowed_origins: list[str] | tuple[str, ...] = (),
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_depth: int = DEFAULT_MAX_DEPTH,
    ) -> None:
        if max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes={max_message_bytes} must be at least 1024")
        if max_depth < 4:
            raise ValueError(f"max_depth={max_depth} must be at least 4")
        if token is not None and len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(f"token: a bridge token must be at least {MIN_TOKEN_LENGTH} characters")
        self.token = token
        self.allowed_origins = [*LOOPBACK_ORIGINS, *check_origin_patterns(allowed_origins)]
        self.max_message_bytes = int(max_message_bytes)
        self.max_depth = int(max_depth)
        self.host = host
        self.requested_port = int(port)
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._clients: dict[int, _ClientProtocol] = {}
        self._topic_types: dict[str, str] = {}
        self._subscriptions: dict[int, dict[str, set[str]]] = {}  # client -> topic -> ids
        self._local_subscribers: dict[str, list[Subscriber]] = collections.defaultdict(list)
        self._services: dict[str, tuple[str, Handler]] = {}
        self._actions: dict[str, tuple[str, Handler]] = {}
        self._disconnect_listeners: list[Callable[[int], None]] = []
        self.op_log: collections.deque[OpRecord] = collections.deque(maxlen=op_log_size)
        """Recent client messages (op and name), oldest first."""

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> int:
        """Start serving in a background thread; returns the bound port."""
        if self._thread is not None:
            raise RuntimeError("the server is already started")
        self._thread = threading.Thread(target=self._run, name="rosbridge-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"rosbridge server on {self.host}:{self.requested_port} did not start in {timeout} s")
        if self._start_error is not None:
            raise OSError(f"cannot serve rosbridge on {self.host}:{self.requested_port}: {self._start_error}")
        log.info("rosbridge server listening on %s", self.url)
        if self.token is None and not _is_loopback(self.host):
            log.warning("rosbridge server on %s takes clients without a token: anyone who can reach this port "
                        "can command the arm; give it one (token=..., or $%s)", self.url, TOKEN_ENV)
        return int(self.port)  # type: ignore[arg-type]

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection and stop the server thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            loop.call_soon_threadsafe(self._shutdown)
        thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        factory = WebSocketServerFactory()
        factory.protocol = _ClientProtocol
        factory.server = self
        # No per-message deflate: frames go over loopback or a LAN, and compressing
        # base64 images costs more CPU than it saves. A message over the limit closes
        # its connection as soon as its frame header announces the size, with a close
        # frame (code 1009, "message too big") rather than a bare TCP drop.
        factory.setProtocolOptions(
            allowedOrigins=self.allowed_origins,
            allowNullOrigin=False,
            maxMessagePayloadSize=self.max_message_bytes,
            maxFramePayloadSize=self.max_message_bytes,
            failByDrop=False,
        )
        try:
            self._server = loop.run_until_complete(loop.create_server(factory, self.host, self.requested_port))
            self.port = self._server.sockets[0].getsockname()[1]
        except OSError as error:
            self._start_error = error
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(asyncio.sleep(0))  # let close frames go out
            loop.close()

    def _shutdown(self) -> None:
        for proto in list(self._clients.values()):
            if proto.transport is not None:
                proto.transport.abort()  # clients see the connection drop, as when a robot goes away
        if self._server is not None:
            self._server.close()
        assert self._loop is not None
        self._loop.stop()

    # ------------------------------------------------------------ local (thread-safe) API
    @property
    def client_count(self) -> int:
        return len(self._clients)

    def advertise(self, topic: str, message_type: str) -> None:
        """Declare an in-process publisher of ``topic``."""
        with self._lock:
            self._topic_types[topic] = normalise_type(message_type)

    def subscribe(self, topic: str, message_type: str, callback: Subscriber) -> None:
        """Call ``callback(msg, client_id)`` (in the server thread) for every publish on
        ``topic``. An exception in it is logged and reported to the publishing client."""
        with self._lock:
            self._topic_types.setdefault(topic, normalise_type(message_type))
            self._local_subscribers[topic].append(callback)

    def advertise_service(self, name: str, service_type: str, handler: Handler) -> None:
        """Serve ``name``: ``handler(args) -> (ok, values)`` runs in a worker thread."""
        with self._lock:
            self._services[name] = (service_type, handler)

    def advertise_action(self, name: str, action_type: str, handler: Handler) -> None:
        """Serve a ROS 2 action: ``handler(goal args) -> (ok, result values)``, in a worker thread."""
        with self._lock:
            self._actions[name] = (action_type, handler)

    def on_disconnect(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(client_id)`` (in the server thread) when a client goes away."""
        self._disconnect_listeners.append(listener)

    def publish(self, topic: str, msg: dict[str, Any]) -> None:
        """Publish ``msg`` on ``topic`` to subscribed clients (JSON-encoded in the caller's thread)."""
        payload = json.dumps({"op": "publish", "topic": topic, "msg": msg}).encode("utf8")
        loop = self._loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(self._send_to_subscribers, topic, payload, None)

    def subscribers(self, topic: str) -> int:
        """How many clients are subscribed to ``topic``."""
        with self._lock:
            return sum(1 for topics in self._subscriptions.values() if topics.get(topic))

    # ------------------------------------------------------------ protocol handling
    def _check_token(self, request: Any) -> None:
        """Refuse the handshake (HTTP 401) of a client without the server's token."""
        if self.token is None:
            return
        presented = None
        authorization = request.headers.get("authorization", "")
        if authorization.lower().startswith("bearer "):
            presented = authorization[len("bearer "):].strip()
        elif request.params.get("token"):
            presented = request.params["token"][0]
        if presented is None:
            reason = "bridge token missing: send the header 'Authorization: Bearer <token>' or ?token=<token>"
        elif not hmac.compare_digest(presented.encode("utf8"), self.token.encode("utf8")):
            reason = "bridge token wrong"
        else:
            return
        raise ConnectionDeny(HTTP_UNAUTHORIZED, reason)

    def _on_open(self, proto: _ClientProtocol) -> None:
        proto.client_id = next(self._ids)
        with self._lock:
            self._clients[proto.client_id] = proto
            self._subscriptions[proto.client_id] = {}
        log.info("rosbridge client %d connected from %s", proto.client_id, proto.peer)

    def _on_close(self, proto: _ClientProtocol) -> None:
        client = getattr(proto, "client_id", None)
        if client is None:
            return
        with self._lock:
            self._clients.pop(client, None)
            self._subscriptions.pop(client, None)
        log.info("rosbridge client %d disconnected", client)
        for listener in list(self._disconnect_listeners):
            try:
                listener(client)
            except Exception:  # noqa: BLE001 - a listener must not break the server
                log.exception("disconnect listener failed")

    def _status(self, proto: _ClientProtocol, message: str, request_id: Any = None, level: str = "error") -> None:
        log.warning("rosbridge client %s: %s", getattr(proto, "client_id", "?"), message)
        status: dict[str, Any] = {"op": "status", "level": level, "msg": message}
        if request_id is not None:
            status["id"] = request_id
        self._send(proto, json.dumps(status).encode("utf8"))

    def _send(self, proto: _ClientProtocol, payload: bytes) -> None:
        if len(payload) > self.max_message_bytes:
            log.warning("not sending a %d-byte message to client %s: over max_message_bytes=%d",
                        len(payload), getattr(proto, "client_id", "?"), self.max_message_bytes)
            return
        try:
            proto.sendMessage(payload, isBinary=False)
        except Exception:  # noqa: BLE001 - a dropped connection: its onClose cleans up
            log.debug("send to client %s failed", getattr(proto, "client_id", "?"), exc_info=True)

    def _send_to_subscribers(self, topic: str, payload: bytes, exclude: int | None) -> None:
        with self._lock:
            targets = [
                self._clients[client]
                for client, topics in self._subscriptions.items()
                if topics.get(topic) and client != exclude and client in self._clients
            ]
        for proto in targets:
            self._send(proto, payload)

    def _on_message(self, proto: _ClientProtocol, payload: bytes, is_binary: bool) -> None:
        if is_binary:
            self._status(proto, "binary frames are not supported; send JSON text")
            return
        try:
            message = json.loads(payload.decode("utf8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            self._status(proto, f"invalid JSON: {error}")
            return
        except RecursionError:  # the parser's own recursion limit, ~1000 levels
            self._status(proto, f"message refused: JSON nested more than {self.max_depth} levels deep")
            return
        # Cheap first: a message with fewer brackets than the limit cannot be too deep.
        if payload.count(b"[") + payload.count(b"{") > self.max_depth and _depth(message) > self.max_depth:
            self._status(proto, f"message refused: JSON nested more than {self.max_depth} levels deep")
            return
        if not isinstance(message, dict) or not isinstance(message.get("op"), str):
            self._status(proto, "a rosbridge message must be a JSON object with an 'op' string")
            return
        op = message["op"]
        name = message.get("topic", message.get("service", message.get("action")))
        self.op_log.append(OpRecord(time.monotonic(), proto.client_id, op, name if isinstance(name, str) else None))
        handler = {
            "advertise": self._op_advertise,
            "unadvertise": self._op_unadvertise,
            "publish": self._op_publish,
            "subscribe": self._op_subscribe,
            "unsubscribe": self._op_unsubscribe,
            "call_service": self._op_call_service,
            "send_action_goal": self._op_send_action_goal,
            "set_level": lambda proto, message: None,
        }.get(op)
        if handler is None:
            self._status(proto, f"op {op!r} is not supported by this rosbridge server", message.get("id"))
            return
        try:
            handler(proto, message)
        except _RequestError as error:
            self._status(proto, f"{op}: {error}", message.get("id"))
        except Exception as error:  # noqa: BLE001 - never let one message take the server down
            log.exception("rosbridge %s failed", op)
            self._status(proto, f"{op} failed: {type(error).__name__}: {error}", message.get("id"))

    def _op_advertise(self, proto: _ClientProtocol, message: dict) -> None:
        topic, message_type = _required(message, "topic"), normalise_type(_required(message, "type"))
        with self._lock:
            known = self._topic_types.get(topic)
            if known is not None and known != message_type:
                raise _RequestError(f"topic {topic!r} has type {known!r}, not {message_type!r}")
            self._topic_types[topic] = message_type

    def _op_unadvertise(self, proto: _ClientProtocol, message: dict) -> None:
        _required(message, "topic")

    def _op_publish(self, proto: _ClientProtocol, message: dict) -> None:
        topic = _required(message, "topic")
        msg = message.get("msg")
        if not isinstance(msg, dict):
            raise _RequestError(f"publish on {topic!r} needs a 'msg' object")
        with self._lock:
            if topic not in self._topic_types:
                raise _RequestError(f"topic {topic!r} was not advertised")
            callbacks = list(self._local_subscribers.get(topic, ()))
        payload = json.dumps({"op": "publish", "topic": topic, "msg": msg}).encode("utf8")
        self._send_to_subscribers(topic, payload, exclude=None)
        for callback in callbacks:
            try:
                callback(msg, proto.client_id)
            except Exception as error:  # noqa: BLE001 - report bad messages, keep serving
                self._status(proto, f"message on {topic!r} rejected: {error}", message.get("id"))

    def _op_subscribe(self, proto: _ClientProtocol, message: dict) -> None:
        topic = _required(message, "topic")
        wanted = message.get("type")
        with self._lock:
            known = self._topic_types.get(topic)
            if wanted and known is not None and normalise_type(wanted) != known:
                raise _RequestError(f"topic {topic!r} has type {known!r}, not {wanted!r}")
            if wanted and known is None:
                self._topic_types[topic] = normalise_type(wanted)
            ids = self._subscriptions[proto.client_id].setdefault(topic, set())
            ids.add(str(message.get("id", "")))
        compression = message.get("compression", "none")
        if compression not in (None, "none"):
            self._status(proto, f"compression {compression!r} is not supported; sending plain JSON",
                         message.get("id"), level="warning")

    def _op_unsubscribe(self, proto: _ClientProtocol, message: dict) -> None:
        topic = _required(message, "topic")
        with self._lock:
            topics = self._subscriptions.get(proto.client_id, {})
            ids = topics.get(topic, set())
            if "id" in message:
                ids.discard(str(message["id"]))
            else:
                ids.clear()
            if not ids:
                topics.pop(topic, None)

    def _op_call_service(self, proto: _ClientProtocol, message: dict) -> None:
        service = _required(message, "service")
        request_id = message.get("id")
        args = message.get("args") or {}
        with self._lock:
            entry = self._services.get(service)

        def respond(ok: bool, values: Any) -> None:
            response = {"op": "service_response", "service": service, "values": values, "result": ok}
            if request_id is not None:
                response["id"] = request_id
            self._send(proto, json.dumps(response).encode("utf8"))

        if entry is None:
            respond(False, f"service {service!r} does not exist")
            return
        if not isinstance(args, dict):
            respond(False, f"service {service!r}: 'args' must be an object")
            return
        self._run_handler(entry[1], args, respond, f"service {service!r}")

    def _op_send_action_goal(self, proto: _ClientProtocol, message: dict) -> None:
        action = _required(message, "action")
        request_id = message.get("id")
        args = message.get("args") or {}
        with self._lock:
            entry = self._actions.get(action)

        def respond(ok: bool, values: Any) -> None:
            result = {
                "op": "action_result", "action": action, "id": request_id,
                "values": values if ok else {"error": values},
                "status": GOAL_SUCCEEDED if ok else GOAL_ABORTED, "result": ok,
            }
            self._send(proto, json.dumps(result).encode("utf8"))

        if entry is None:
            respond(False, f"action {action!r} does not exist")
            return
        self._run_handler(entry[1], args, respond, f"action {action!r}")

    def _run_handler(self, handler: Handler, args: dict, respond: Callable[[bool, Any], None], what: str) -> None:
        """Run a (possibly slow) handler in a worker thread, respond from the loop."""
        loop = self._loop
        assert loop is not None

        def call() -> tuple[bool, Any]:
            try:
                return handler(args)
            except Exception as error:  # noqa: BLE001 - becomes a failed response
                log.exception("%s failed", what)
                return False, f"{what} failed: {type(error).__name__}: {error}"

        future = loop.run_in_executor(None, call)
        future.add_done_callback(lambda done: respond(*done.result()))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        return False


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (iterative: no recursion to blow up)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


class _RequestError(ValueError):
    """A client request the server refuses (reported as a status message)."""


def _required(message: dict, key: str) -> str:
    value = message.get(key)
    if not isinstance(value, str) or not value:
        raise _RequestError(f"missing or empty {key!r}")
    return value
