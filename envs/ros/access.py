"""Who may use a rosbridge server, and how much they may send: the shared token, the
browser origins, the message limits.

``envs.ros.rosbridge_server`` enforces these and ``envs.ros.link`` presents the token.
This module imports no websocket library: importing the asyncio server binds autobahn
to asyncio for the whole process, which would rule out roslibpy's twisted transport for
a client that only needs the token rules.
"""

from __future__ import annotations

import os
import re

TOKEN_ENV = "JEPA_ROBOT_BRIDGE_TOKEN"
"""Environment variable holding the shared token, for servers and clients whose config has none."""
MIN_TOKEN_LENGTH = 16
DEFAULT_MAX_MESSAGE_BYTES = 8 * 2**20
"""8 MiB: the largest message the sim bridge sends is a 512 px rgb8 image (about 1 MiB of
base64); a 1280 x 720 rgb8 camera frame relayed for a client is about 3.7 MB."""
DEFAULT_MAX_DEPTH = 100
"""JSON nesting levels; ROS messages use fewer than 10."""
LOOPBACK_ORIGINS = (
    "http://localhost:*", "https://localhost:*",
    "http://127.0.0.1:*", "https://127.0.0.1:*",
    "http://::1:*", "https://::1:*",
)
"""Browser origins accepted by default: pages served from this machine (autobahn
wildcard patterns matched against ``scheme://host:port``)."""
_ORIGIN_PATTERN = re.compile(r"https?://[^/\s]+:(\d+|\*)")


def resolve_token(configured: str | None, key: str = "token") -> str | None:
    """The shared token: ``configured`` (the config key ``key``) if set, else
    ``$JEPA_ROBOT_BRIDGE_TOKEN``, else None. Raises ``ValueError`` naming where it came
    from for a token too short or not sendable in an HTTP header."""
    token = configured or os.environ.get(TOKEN_ENV) or None
    if token is None:
        return None
    source = key if configured else f"${TOKEN_ENV}"
    if len(token) < MIN_TOKEN_LENGTH or not token.isascii() or not token.isprintable() or " " in token:
        raise ValueError(
            f"{source}: a bridge token must be at least {MIN_TOKEN_LENGTH} printable ASCII characters "
            "without spaces; make one with: python -c \"import secrets; print(secrets.token_urlsafe(32))\""
        )
    return token


def check_origin_patterns(origins: list[str] | tuple[str, ...], key: str = "allowed_origins") -> list[str]:
    """Check ``scheme://host:port`` origin patterns (``*`` matches anything, e.g.
    ``https://*.lab.example:*``); raises ``ValueError`` naming ``key`` and the bad entry."""
    for origin in origins:
        if not isinstance(origin, str) or not _ORIGIN_PATTERN.fullmatch(origin):
            raise ValueError(
                f"{key}: {origin!r} is not an origin pattern; write scheme://host:port with http or "
                "https and a port or * (a browser sends e.g. http://dashboard.lab:8080)"
            )
    return list(origins)
