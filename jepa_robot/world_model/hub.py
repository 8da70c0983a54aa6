"""V-JEPA 2 weights on the Hugging Face hub: the registry of hub names, the cache, and
whether the hub can be reached, without importing torch.

``encoders`` loads hub weights through :func:`require_hub_weights`, and ``jepa-robot
train`` calls it before its seconds of imports, so weights that cannot be had (offline
and not cached, or no network) fail at once with one line instead of after the hub
client's retries.
"""

from __future__ import annotations

import logging
import os
import socket
from urllib.parse import urlsplit

from jepa_robot.errors import JepaRobotError

log = logging.getLogger(__name__)

VJEPA2_HUB_IDS: dict[str, str] = {
    "vjepa2_vitl": "facebook/vjepa2-vitl-fpc64-256",
    "vjepa2_vith": "facebook/vjepa2-vith-fpc64-256",
    "vjepa2_vitg": "facebook/vjepa2-vitg-fpc64-256",
    "vjepa2_vitg_384": "facebook/vjepa2-vitg-fpc64-384",
}
"""Short names (used by the Hydra ``encoder/`` group) -> Hugging Face hub ids."""

SHIPPED_ENCODER = "encoder=default_model (jepa_robot/models/default/encoder)"
"""How a command names the encoder shipped in the package, which needs no network."""

HUB_CONNECT_TIMEOUT_S = 3.0
"""How long the hub's host may take to accept a connection before it counts as unreachable."""


class EncoderUnavailableError(JepaRobotError, OSError):
    """The encoder's weights cannot be loaded (offline and not cached, missing files...)."""


def is_offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE, read now (not only at import time)."""
    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    if flag is not None and flag.strip().upper() in {"1", "ON", "YES", "TRUE"}:
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.is_offline_mode())
    except (ImportError, AttributeError):  # pragma: no cover - older huggingface_hub
        return False


def hub_cache_dir(cache_dir: str | os.PathLike | None = None) -> str:
    if cache_dir is not None:
        return str(cache_dir)
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def is_cached(hub_id: str, revision: str | None, cache: str) -> bool:
    """Whether the cache holds the model's config.json at ``revision`` (None: main)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(hub_id, "config.json", cache_dir=cache, revision=revision), str)


def hub_reachable(timeout: float = HUB_CONNECT_TIMEOUT_S) -> bool:
    """Whether the hub's host accepts a TCP connection within ``timeout`` seconds. Behind
    a proxy (``HTTPS_PROXY``, ``ALL_PROXY``) the proxy decides: assumed reachable."""
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    from huggingface_hub import constants

    endpoint = urlsplit(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def hub_id_of(name: str) -> str | None:
    """The hub id an encoder name refers to: a registry name's, or an ``org/name`` that is
    not a local directory; None for a directory or any other name."""
    text = os.path.expanduser(str(name))
    if os.path.isdir(text):
        return None
    if text in VJEPA2_HUB_IDS:
        return VJEPA2_HUB_IDS[text]
    if text in VJEPA2_HUB_IDS.values():
        return text
    parts = text.split("/")
    if len(parts) == 2 and all(parts) and not text.startswith((".", "~")):
        return text
    return None


def offline_message(hub_id: str, revision: str | None, cache: str, reason: str = "HF_HUB_OFFLINE=1 forbids downloading them") -> str:
    """One line: which weights are missing, how to get them, and the offline alternative."""
    revision_flag = f" --revision {revision}" if revision else ""
    return (
        f"V-JEPA 2 weights {hub_id!r} (revision {revision or 'main'}) are not in the Hugging Face "
        f"cache {cache}, and {reason}. To cache them, run the command once with network access, or "
        f"`huggingface-cli download {hub_id}{revision_flag}` (or `hf download`); without network, use "
        f"the shipped encoder: {SHIPPED_ENCODER}, or any directory written by save_pretrained."
    )


def require_hub_weights(hub_id: str, revision: str | None = None, cache_dir: str | os.PathLike | None = None) -> bool:
    """Raise :class:`EncoderUnavailableError` at once if ``hub_id``'s weights cannot be had:
    not cached, and offline or the hub unreachable. Returns whether they must be loaded
    from the cache alone (offline, or the hub unreachable but the weights cached)."""
    cache = hub_cache_dir(cache_dir)
    cached = is_cached(hub_id, revision, cache)
    if is_offline():
        if not cached:
            raise EncoderUnavailableError(offline_message(hub_id, revision, cache))
        return True
    if hub_reachable():
        return False
    if not cached:
        raise EncoderUnavailableError(offline_message(
            hub_id, revision, cache, reason="the Hugging Face hub cannot be reached (no network?)"))
    log.warning("the Hugging Face hub cannot be reached: loading %s from the cache %s", hub_id, cache)
    return True
