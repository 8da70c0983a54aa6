"""Encode a dataset's frames once with a frozen encoder; training memory-maps the result.

A cache is a directory holding ``latents.npy`` (float16 [frames, tokens, dim], a
NumPy file opened with ``mmap_mode``) and ``manifest.json``. The manifest records the
dataset fingerprint, the encoder reference (weights hash and preprocessing) and the
image key; a cache whose manifest disagrees with the request is not used (an encoder
directory's path does not count where its weights are hashed). Its name
is a hash of those three, so a changed input gets a fresh directory and an old cache
stays valid for what it was made from.

Encoding goes episode by episode and the manifest counts the episodes done, written
atomically after each one: a killed run resumes at the first unfinished episode, and
only a manifest with ``complete: true`` is ever loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from jepa_robot.data.dataset import DatasetSpec, episode_bounds, episode_frames
from jepa_robot.errors import JepaRobotError
from jepa_robot.files import write_json_atomic

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
LATENTS = "latents.npy"
CACHE_VERSION = 1


class CacheError(JepaRobotError, RuntimeError):
    """A latent cache that cannot be used."""


def dataset_fingerprint(root: str | Path) -> str:
    """Hash of a LeRobot dataset's files: metadata by content, data and videos by
    (path, size, mtime), which changes whenever lerobot rewrites or appends to them."""
    root = Path(root)
    digest = hashlib.sha256()
    digest.update((root / "meta" / "info.json").read_bytes())
    for path in sorted(p for sub in ("data", "videos", "images", "meta/episodes") for p in (root / sub).rglob("*")):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


@dataclass
class LatentCache:
    """A complete cache: ``latents`` is a read-only memmap [frames, tokens, dim]."""

    directory: Path
    latents: np.ndarray
    manifest: dict[str, Any]

    @property
    def num_frames(self) -> int:
        return int(self.latents.shape[0])


def encoder_identity(encoder_reference: dict[str, Any]) -> dict[str, Any]:
    """What decides an encoder's latents: its reference, less the ``source`` directory when
    the weights are content-hashed (``weights_sha256``). A copied or moved model directory,
    such as a packaged model in another checkout, then keeps its caches."""
    if encoder_reference.get("weights_sha256"):
        return {k: v for k, v in encoder_reference.items() if k != "source"}
    return dict(encoder_reference)


def cache_key(fingerprint: str, encoder_reference: dict[str, Any], image_key: str) -> str:
    blob = json.dumps(
        {"dataset": fingerprint, "encoder": encoder_identity(encoder_reference), "image_key": image_key,
         "v": CACHE_VERSION},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_latent_cache(
    dataset,
    spec: DatasetSpec,
    encoder,
    cache_root: str | Path,
    batch_size: int = 64,
    progress: bool = True,
    image_key: str | None = None,
) -> LatentCache:
    """Encode every frame of one camera, ``dataset[image_key]`` (default: the spec's first
    view), with ``encoder`` (cached; one cache per camera).

    Reuses a complete matching cache, resumes a partial one, else starts afresh.
    """
    image_key = image_key or spec.image_key
    reference = encoder.reference()
    fingerprint = dataset_fingerprint(spec.root)
    directory = Path(cache_root) / cache_key(fingerprint, reference, image_key)
    directory.mkdir(parents=True, exist_ok=True)
    manifest_path, latents_path = directory / MANIFEST, directory / LATENTS
    bounds = episode_bounds(dataset)
    shape = (spec.frames, encoder.num_tokens, encoder.embed_dim)
    expected = {
        "version": CACHE_VERSION,
        "dataset_root": str(spec.root),
        "dataset_fingerprint": fingerprint,
        "image_key": image_key,
        "encoder": reference,
        "shape": list(shape),
        "dtype": "float16",
        "episodes": len(bounds),
    }

    manifest: dict[str, Any] | None = None
    if manifest_path.exists() and latents_path.exists():
        manifest = json.loads(manifest_path.read_text())
        same = ({k: manifest.get(k) for k in expected if k != "encoder"}
                == {k: v for k, v in expected.items() if k != "encoder"}
                and encoder_identity(manifest.get("encoder") or {}) == encoder_identity(reference))
        if not same:
            log.warning("latent cache %s does not match its request; rebuilding it", directory)
            manifest = None
    if manifest is not None and manifest.get("complete"):
        log.info("using latent cache %s", directory)
        return LatentCache(directory, np.load(latents_path, mmap_mode="r"), manifest)

    if manifest is None:
        manifest = {**expected, "complete": False, "episodes_done": 0}
        latents = np.lib.format.open_memmap(latents_path, mode="w+", dtype=np.float16, shape=shape)
        write_json_atomic(manifest_path, manifest, sort_keys=True)
    else:
        latents = np.load(latents_path, mmap_mode="r+")
        log.info("resuming latent cache %s at episode %d/%d", directory, manifest["episodes_done"], len(bounds))

    first_episode = int(manifest["episodes_done"])
    bar = tqdm(
        total=spec.frames,
        initial=bounds[first_episode][0] if first_episode < len(bounds) else spec.frames,
        desc=f"encode {image_key.removeprefix('observation.images.')}",
        unit="frame",
        disable=not progress,
    )
    with torch.inference_mode():
        for episode in range(first_episode, len(bounds)):
            start, end = bounds[episode]
            frames = episode_frames(dataset, image_key, episode)
            encoded = encoder.encode(frames, batch_size=batch_size)
            latents[start:end] = encoded.to(torch.float16).cpu().numpy()
            latents.flush()  # data before the manifest that counts it
            manifest["episodes_done"] = episode + 1
            write_json_atomic(manifest_path, manifest, sort_keys=True)
            bar.update(end - start)
    bar.close()
    manifest["complete"] = True
    write_json_atomic(manifest_path, manifest, sort_keys=True)
    del latents
    return LatentCache(directory, np.load(latents_path, mmap_mode="r"), manifest)


def build_latent_caches(dataset, spec: DatasetSpec, encoder, cache_root: str | Path, batch_size: int = 64,
                        progress: bool = True) -> list[LatentCache]:
    """:func:`build_latent_cache` for every view of ``spec``, in its order."""
    return [build_latent_cache(dataset, spec, encoder, cache_root, batch_size, progress, key)
            for key in spec.image_keys]


def view_latents(caches: list[LatentCache], indices: np.ndarray | slice) -> np.ndarray:
    """The latents of frames ``indices`` with every view's tokens in turn: ``[..., V * N, D]``
    (float16, as cached), the layout a multi-view predictor reads."""
    parts = [np.asarray(cache.latents[indices]) for cache in caches]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-2)


def load_latent_cache(directory: str | Path) -> LatentCache:
    """Open a complete cache directory; a partial or unreadable one is refused."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise CacheError(f"{directory} is not a latent cache: {MANIFEST} is missing")
    manifest = json.loads(manifest_path.read_text())
    if not manifest.get("complete"):
        raise CacheError(
            f"latent cache {directory} is incomplete ({manifest.get('episodes_done', 0)}/"
            f"{manifest.get('episodes', '?')} episodes); rerun the command that builds it to resume"
        )
    latents = np.load(directory / LATENTS, mmap_mode="r")
    if list(latents.shape) != manifest["shape"]:
        raise CacheError(f"{directory / LATENTS} has shape {latents.shape}, manifest says {manifest['shape']}")
    return LatentCache(directory, latents, manifest)
