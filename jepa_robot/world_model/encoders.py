"""Frozen V-JEPA 2 encoder: camera frames -> layer-normalised patch-token latents.

The world model never trains the encoder. :class:`VJEPA2Encoder` wraps transformers'
``VJEPA2Model`` (encoder part only; its masked-prediction predictor is never run),
keeps it frozen, and applies the V-JEPA 2 (-AC) conventions:

* preprocessing: frames -> float in [0, 1] -> one of two geometric modes
  (:data:`PREPROCESSING_MODES`) -> ImageNet mean/std:

  - ``"resize_crop"`` (default; V-JEPA 2's eval recipe, used for the hub encoders and the
    project's own): resize the short side to ``crop_size * resize_ratio`` (256 -> 292,
    bilinear with antialias), then centre-crop ``crop_size``;
  - ``"crop_resize"`` (Meta's V-JEPA 2-AC planning transform, recorded by the V-JEPA 2-AC
    import): crop the centre square, then resize it to ``crop_size`` (bilinear, no
    antialias); see :meth:`VJEPA2Encoder._crop_then_resize` for where Meta's code does this.

  A model directory can record its mode in ``config.json`` (field
  :data:`PREPROCESSING_CONFIG_KEY`), so loading it picks the mode up without arguments;
* a single frame is encoded by repeating it over the tubelet (2 frames), so each
  frame gives ``(crop_size / patch_size) ** 2`` patch tokens;
* the encoder's last hidden state (already through the ViT's final norm) gets a
  weightless layer norm over the feature dim, as V-JEPA 2-AC does to its targets;
* optionally the token grid is average-pooled to ``pool_grid x pool_grid`` (the layer
  norm is applied after pooling, so every returned token is normalised).

Weights come from the Hugging Face hub (:data:`VJEPA2_HUB_IDS`) or from a local
directory written by ``save_pretrained`` (e.g. :func:`save_tiny_random_encoder`,
the small randomly initialised 64x64 encoder used by tests and quick runs).

:meth:`VJEPA2Encoder.reference` describes the encoder for checkpoints and latent
caches: two encoders with equal references produce identical latents.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from jepa_robot.world_model.hub import (  # noqa: F401 (VJEPA2_HUB_IDS, EncoderUnavailableError re-exported)
    VJEPA2_HUB_IDS,
    EncoderUnavailableError,
    hub_cache_dir,
    offline_message,
    require_hub_weights,
)

if TYPE_CHECKING:  # transformers takes seconds to import: load it only when a model is built
    from transformers import VJEPA2Config, VJEPA2Model

__all__ = [
    "DEFAULT_PREPROCESSING",
    "DEFAULT_RESIZE_RATIO",
    "ENCODERS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PREPROCESSING_CONFIG_KEY",
    "PREPROCESSING_MODES",
    "REFERENCE_FORMAT",
    "VJEPA2_HUB_IDS",
    "EncoderUnavailableError",
    "VJEPA2Encoder",
    "hash_weights",
    "load_encoder",
    "load_encoder_from_reference",
    "reference_mismatch",
    "save_tiny_random_encoder",
    "tiny_vjepa2_config",
]

ENCODERS: dict[str, str] = dict(VJEPA2_HUB_IDS)
"""Registry of named encoders for config groups: name -> hub id."""
BUILTIN_ENCODERS: dict[str, Path] = {
    "default": Path(__file__).parents[1] / "models" / "default" / "encoder",
}
"""Encoders shipped inside the package, by name (``encoder=default_model``): name -> directory."""

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
DEFAULT_RESIZE_RATIO: float = 292 / 256
"""V-JEPA 2 eval recipe: resize the short side to 292 for a 256 crop."""

PREPROCESSING_MODES: dict[str, str] = {
    "resize_crop": "resize the short side to crop_size * resize_ratio (bilinear, antialiased), "
    "then centre-crop crop_size",
    "crop_resize": "crop the centre square (offsets rounded down), then resize it to crop_size "
    "(bilinear, no antialias, align_corners=False): Meta's V-JEPA 2-AC planning transform",
}
"""How frames are cut and scaled to the model's square input, by name."""
DEFAULT_PREPROCESSING = "resize_crop"
"""The mode of encoders that record none (hub V-JEPA 2 encoders, the project's own)."""
PREPROCESSING_CONFIG_KEY = "jepa_robot_preprocessing"
"""Field of a model directory's ``config.json`` naming its preprocessing mode (optional)."""

REFERENCE_FORMAT = "jepa_robot.encoders.vjepa2/1"
"""Version tag of :meth:`VJEPA2Encoder.reference`; bump it when latents change meaning."""

_WEIGHT_FILE_PATTERNS = (
    "*.safetensors",
    "*.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model*.bin.index.json",
)


# --------------------------------------------------------------------------- helpers


def _vjepa2_classes() -> tuple[type[VJEPA2Config], type[VJEPA2Model]]:
    from transformers import VJEPA2Config, VJEPA2Model

    return VJEPA2Config, VJEPA2Model


@contextlib.contextmanager
def _no_weight_loading_bar() -> Iterator[None]:
    """Hide transformers' per-tensor "Loading weights" bar for the block (downloads, which
    happen elsewhere, keep theirs); the setting is put back as it was."""
    from transformers.utils import logging as transformers_logging

    was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device to run on: ``None`` or ``"auto"`` picks CUDA when there is one, else the
    CPU; a CUDA device asked for on a machine without CUDA is refused by name."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} but CUDA is not available")
    return resolved


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        resolved = dtype
    else:
        resolved = getattr(torch, str(dtype).removeprefix("torch."), None)
    if resolved not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"dtype={dtype!r} must be float32, float16 or bfloat16")
    return resolved


def _weight_files(directory: Path) -> list[Path]:
    files: set[Path] = set()
    for pattern in _WEIGHT_FILE_PATTERNS:
        files.update(p for p in directory.glob(pattern) if p.is_file())
    return sorted(files, key=lambda p: p.name)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_weights(directory: str | os.PathLike) -> str:
    """Content hash of a saved model directory: sha256 over ``config.json`` and the
    weight files (``model.safetensors``, shards and their index, or ``pytorch_model*.bin``).

    Each file contributes its name, size and own sha256, so the result does not depend on
    where the directory lives. Raises :class:`EncoderUnavailableError` if files are missing.
    """
    directory = Path(directory)
    config = directory / "config.json"
    weights = _weight_files(directory)
    if not config.is_file() or not weights:
        found = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else "nothing"
        raise EncoderUnavailableError(
            f"{directory} is not a saved VJEPA2Model directory: it needs config.json and "
            f"model.safetensors (found: {found})"
        )
    h = hashlib.sha256()
    for path in [config, *weights]:
        h.update(f"{path.name}\0{path.stat().st_size}\0{sha256_file(path)}\n".encode())
    return h.hexdigest()


def _stat_signature(directory: Path) -> tuple[tuple[str, int, int, int], ...]:
    """Cheap fingerprint (name, inode, size, mtime) of the files :func:`hash_weights` reads."""
    sig = []
    for p in [directory / "config.json", *_weight_files(directory)]:
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        sig.append((p.name, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(sig)


def _check_vjepa2_dir(directory: Path) -> None:
    config = directory / "config.json"
    if not config.is_file():
        raise EncoderUnavailableError(
            f"{directory} has no config.json: it is not a saved VJEPA2Model directory "
            "(write one with VJEPA2Model.save_pretrained or save_tiny_random_encoder)"
        )
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (OSError, json.JSONDecodeError) as e:
        raise EncoderUnavailableError(f"{config} is not readable JSON: {e}") from e
    if model_type != "vjepa2":
        raise ValueError(f"{config} has model_type={model_type!r}; expected 'vjepa2'")
    if not _weight_files(directory):
        raise EncoderUnavailableError(
            f"{directory} has config.json but no weights (model.safetensors)"
        )


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith((os.sep, ".", "~"))
        or name.count("/") != 1
        or (os.altsep is not None and os.altsep in name)
    )


def _resolve_preprocessing(
    preprocessing: str | None, resize_ratio: float | None, recorded: Any, source: str
) -> tuple[str, float]:
    """(mode, resize_ratio) of an encoder: the mode asked for, else the one its config
    records, else the default; ``resize_ratio`` checked against the mode."""
    where = f"{source}: config.json field {PREPROCESSING_CONFIG_KEY}"
    if recorded is not None and recorded not in PREPROCESSING_MODES:
        raise ValueError(f"{where}={recorded!r} is not one of {sorted(PREPROCESSING_MODES)}")
    if preprocessing is not None and preprocessing not in PREPROCESSING_MODES:
        raise ValueError(
            f"preprocessing={preprocessing!r} is not one of {sorted(PREPROCESSING_MODES)}"
        )
    mode = preprocessing or recorded or DEFAULT_PREPROCESSING
    if resize_ratio is not None and (
        isinstance(resize_ratio, bool)
        or not (isinstance(resize_ratio, (int, float)) and math.isfinite(resize_ratio))
        or resize_ratio < 1.0
    ):
        raise ValueError(
            f"resize_ratio={resize_ratio!r} must be a finite number >= 1.0 "
            "(the short side is resized to crop_size * resize_ratio before the centre crop)"
        )
    if mode == "crop_resize":
        if resize_ratio not in (None, 1.0):
            origin = f"{where}={mode!r} records" if preprocessing is None else "preprocessing='crop_resize' is"
            raise ValueError(
                f"resize_ratio={resize_ratio!r} does not apply: {origin} Meta's V-JEPA 2-AC transform "
                "(centre square resized to crop_size); leave resize_ratio unset or 1.0, or pass "
                "preprocessing='resize_crop' to resize-and-crop instead"
            )
        return mode, 1.0
    return mode, float(DEFAULT_RESIZE_RATIO if resize_ratio is None else resize_ratio)


# --------------------------------------------------------------------------- encoder


class VJEPA2Encoder(torch.nn.Module):
    """A frozen V-JEPA 2 image encoder returning layer-normalised patch tokens.

    Build it with :meth:`from_pretrained` or :func:`load_encoder`. :meth:`encode` maps
    frames ``uint8 [B, H, W, 3]`` (numpy or torch) or ``float [B, 3, H, W]`` in [0, 1]
    to ``float32 [B, num_tokens, embed_dim]`` on the module's device.

    The module always stays in eval mode (``.train()`` is a no-op) and its parameters
    never require grad; :meth:`encode` runs under ``torch.no_grad()`` (not inference
    mode, so the latents can be used freely in later autograd graphs, e.g. as targets).

    ``preprocessing`` is a :data:`PREPROCESSING_MODES` name; ``None`` takes the mode the
    model's config records (``config.json`` field :data:`PREPROCESSING_CONFIG_KEY`, written
    by the V-JEPA 2-AC import), else :data:`DEFAULT_PREPROCESSING`. ``resize_ratio``
    only applies to ``"resize_crop"`` (``None``: :data:`DEFAULT_RESIZE_RATIO`);
    ``"crop_resize"`` accepts ``None`` or 1.0 only.
    """

    def __init__(
        self,
        model: VJEPA2Model,
        *,
        source: str,
        revision: str | None = None,
        local_dir: str | os.PathLike | None = None,
        pool_grid: int | None = None,
        resize_ratio: float | None = None,
        preprocessing: str | None = None,
    ) -> None:
        super().__init__()
        _, model_cls = _vjepa2_classes()
        if not isinstance(model, model_cls):
            raise TypeError(f"model must be a transformers VJEPA2Model, got {type(model).__name__}")
        config = model.config
        patch = config.patch_size
        if not isinstance(patch, int):
            if len(set(patch)) != 1:
                raise ValueError(f"non-square patch_size={patch} is not supported")
            patch = int(patch[0])
        if config.crop_size % patch:
            raise ValueError(
                f"crop_size={config.crop_size} is not a multiple of patch_size={patch}"
            )
        preprocessing, resize_ratio = _resolve_preprocessing(
            preprocessing, resize_ratio, getattr(config, PREPROCESSING_CONFIG_KEY, None), source
        )
        self.model = model
        self.source = source
        self.revision = revision
        self.local_dir = Path(local_dir).resolve() if local_dir is not None else None
        self.preprocessing = preprocessing
        """The :data:`PREPROCESSING_MODES` name frames are prepared with."""
        self.resize_ratio = resize_ratio
        self._crop = int(config.crop_size)
        self._patch = patch
        self._patch_grid = self._crop // patch
        self._tubelet = int(config.tubelet_size)
        self._embed_dim = int(config.hidden_size)
        if pool_grid is not None:
            if (
                isinstance(pool_grid, bool)
                or not isinstance(pool_grid, int)
                or not 1 <= pool_grid <= self._patch_grid
            ):
                raise ValueError(
                    f"pool_grid={pool_grid!r} must be None or an int in [1, {self._patch_grid}] "
                    f"(the encoder's token grid is {self._patch_grid}x{self._patch_grid})"
                )
            if pool_grid == self._patch_grid:
                pool_grid = None
        self.pool_grid = pool_grid
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._weights_hash: str | None = None
        # hashing multi-GB weights is deferred to reference(); this stat fingerprint
        # catches the files being replaced between loading and hashing
        self._weights_stat = _stat_signature(self.local_dir) if self.local_dir is not None else None
        self.model.requires_grad_(False)
        self.train(False)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        device: str | torch.device | None = None,
        pool_grid: int | None = None,
        resize_ratio: float | None = None,
        revision: str | None = None,
        dtype: torch.dtype | str | None = None,
        cache_dir: str | os.PathLike | None = None,
        preprocessing: str | None = None,
    ) -> VJEPA2Encoder:
        """Load from a local ``save_pretrained`` directory or a hub id (any ``org/name``).

        A directory loads with ``local_files_only=True``. A hub id loads from the cache
        when offline (``HF_HUB_OFFLINE=1``) and raises :class:`EncoderUnavailableError`
        if it is not cached. ``device=None`` picks CUDA when available, else CPU;
        ``dtype`` (default float32) is the model's compute dtype, outputs are float32.
        ``preprocessing=None`` uses the mode the model's ``config.json`` records (an
        imported V-JEPA 2-AC encoder: ``"crop_resize"``), else ``"resize_crop"`` with
        ``resize_ratio`` (default :data:`DEFAULT_RESIZE_RATIO`).
        """
        _, model_cls = _vjepa2_classes()
        torch_dtype = _resolve_dtype(dtype)
        target = resolve_device(device)
        path = Path(os.path.expanduser(str(name_or_path)))
        if path.is_dir():
            if revision is not None:
                raise ValueError(
                    f"revision={revision!r} only applies to hub ids; "
                    f"{str(path)!r} is a local directory"
                )
            path = path.resolve()
            _check_vjepa2_dir(path)
            with _no_weight_loading_bar():  # a local load takes a moment; its bar is noise
                model = model_cls.from_pretrained(str(path), local_files_only=True, dtype=torch_dtype)
            enc = cls(
                model,
                source=str(path),
                local_dir=path,
                pool_grid=pool_grid,
                resize_ratio=resize_ratio,
                preprocessing=preprocessing,
            )
            return enc.to(target)

        hub_id = str(name_or_path)
        if _looks_like_path(hub_id):
            raise FileNotFoundError(
                f"{hub_id!r} is neither an existing directory nor a hub id of the form 'org/name'"
            )
        cache = hub_cache_dir(cache_dir)
        cache_only = require_hub_weights(hub_id, revision, cache)  # fails at once, before any retry
        try:
            model = model_cls.from_pretrained(
                hub_id,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=cache_only,
                dtype=torch_dtype,
            )
        except OSError as e:
            if cache_only:
                raise EncoderUnavailableError(
                    f"{offline_message(hub_id, revision, cache)} ({e})"
                ) from e
            raise EncoderUnavailableError(
                f"could not load V-JEPA 2 weights {hub_id!r} (revision {revision or 'main'}) "
                f"from the Hugging Face hub or the cache {cache}: {e}"
            ) from e
        commit = getattr(model.config, "_commit_hash", None)
        enc = cls(
            model,
            source=hub_id,
            revision=commit or revision,
            pool_grid=pool_grid,
            resize_ratio=resize_ratio,
            preprocessing=preprocessing,
        )
        return enc.to(target)

    # ------------------------------------------------------------------ properties

    @property
    def image_size(self) -> int:
        """Side of the square crop the model sees (config ``crop_size``)."""
        return self._crop

    @property
    def patch_size(self) -> int:
        return self._patch

    @property
    def patch_grid(self) -> int:
        """Tokens per side before pooling (``crop_size // patch_size``)."""
        return self._patch_grid

    @property
    def grid(self) -> int:
        """Tokens per side of the returned grid (``pool_grid`` if set, else ``patch_grid``)."""
        return self.pool_grid or self._patch_grid

    @property
    def num_tokens(self) -> int:
        """Tokens per frame in the output, ``grid ** 2``."""
        return self.grid * self.grid

    @property
    def embed_dim(self) -> int:
        """Feature dimension of each returned token: config ``hidden_size``."""
        return self._embed_dim

    @property
    def tubelet_size(self) -> int:
        return self._tubelet

    @property
    def resize_size(self) -> int:
        """Short side after resizing, before the centre crop (``"crop_resize"``: the crop size)."""
        return round(self._crop * self.resize_ratio)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype of the wrapped model (outputs are always float32)."""
        return next(self.model.parameters()).dtype

    def train(self, mode: bool = True) -> VJEPA2Encoder:
        """The encoder is frozen: it stays in eval mode whatever ``mode`` says."""
        return super().train(False)

    def extra_repr(self) -> str:
        return (
            f"source={self.source!r}, image_size={self.image_size}, grid={self.grid}, "
            f"embed_dim={self.embed_dim}, preprocessing={self.preprocessing!r}, "
            f"resize_ratio={self.resize_ratio}"
        )

    # ------------------------------------------------------------------ preprocessing

    @staticmethod
    def _check_frames(frames: Any) -> tuple[str, tuple[int, ...]]:
        """Return ('uint8' | 'float', shape) or raise with the expected shapes."""
        expected = (
            "expected uint8 frames [B, H, W, 3] (numpy or torch) "
            "or float frames [B, 3, H, W] in [0, 1]"
        )
        if isinstance(frames, np.ndarray):
            dtype_kind = (
                "uint8"
                if frames.dtype == np.uint8
                else ("float" if np.issubdtype(frames.dtype, np.floating) else None)
            )
            dtype_name = str(frames.dtype)
        elif isinstance(frames, torch.Tensor):
            dtype_kind = (
                "uint8"
                if frames.dtype == torch.uint8
                else ("float" if frames.dtype.is_floating_point else None)
            )
            dtype_name = str(frames.dtype)
        else:
            raise TypeError(
                "frames must be a numpy array or torch tensor, "
                f"got {type(frames).__name__}; {expected}"
            )
        shape = tuple(int(s) for s in frames.shape)
        if dtype_kind is None:
            raise TypeError(f"frames have dtype {dtype_name}; {expected}")
        if len(shape) != 4:
            hint = " (add a batch dimension for a single frame)" if len(shape) == 3 else ""
            raise ValueError(f"frames have shape {list(shape)}{hint}; {expected}")
        if dtype_kind == "uint8" and shape[-1] != 3:
            hint = (
                " (channels-first uint8 is not accepted: pass [B, H, W, 3])"
                if shape[1] == 3
                else ""
            )
            raise ValueError(
                f"uint8 frames have shape {list(shape)} with {shape[-1]} channels{hint}; "
                "expected [B, H, W, 3] RGB"
            )
        if dtype_kind == "float" and shape[1] != 3:
            hint = (
                " (channels-last float is not accepted: pass [B, 3, H, W])"
                if shape[-1] == 3
                else ""
            )
            raise ValueError(
                f"float frames have shape {list(shape)} with {shape[1]} channels{hint}; "
                "expected [B, 3, H, W] RGB in [0, 1]"
            )
        h, w = (shape[1], shape[2]) if dtype_kind == "uint8" else (shape[2], shape[3])
        if h < 1 or w < 1:
            raise ValueError(
                f"frames have shape {list(shape)} with an empty image side; {expected}"
            )
        return dtype_kind, shape

    def _to_unit_float(self, frames: Any, kind: str) -> torch.Tensor:
        """One chunk of frames -> float32 [b, 3, H, W] in [0, 1] on the module's device."""
        if isinstance(frames, np.ndarray):
            frames = np.ascontiguousarray(frames)
            if not frames.flags.writeable:  # e.g. decoded camera images; torch wants to own writable memory
                frames = frames.copy()
            frames = torch.from_numpy(frames)
        x = frames.to(self.device, non_blocking=True)
        if kind == "uint8":
            return x.permute(0, 3, 1, 2).float().div_(255.0)
        x = x.float()
        if x.numel():
            lo, hi = torch.aminmax(x)
            lo, hi = float(lo), float(hi)
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError("float frames contain NaN or inf; expected values in [0, 1]")
            if lo < -1e-3 or hi > 1 + 1e-3:
                raise ValueError(
                    f"float frames range over [{lo:.3g}, {hi:.3g}]; "
                    "expected [B, 3, H, W] in [0, 1] "
                    "(pass uint8 [B, H, W, 3] for 0-255 images)"
                )
        return x

    def _resize_crop_normalize(self, x: torch.Tensor) -> torch.Tensor:
        """float [b, 3, H, W] in [0, 1] -> normalised float32 [b, 3, crop, crop], by the
        encoder's preprocessing mode."""
        if self.preprocessing == "crop_resize":
            x = self._crop_then_resize(x)
        else:
            x = self._resize_then_crop(x)
        return (x - self.mean) / self.std

    def _crop_then_resize(self, x: torch.Tensor) -> torch.Tensor:
        """``"crop_resize"``: the centre square of the frame, resized to ``crop x crop``.

        This is the transform Meta's V-JEPA 2-AC planning code applies to a camera frame
        (facebookresearch/vjepa2): ``notebooks/energy_landscape_example.ipynb`` and
        ``notebooks/utils/world_model_wrapper.py`` (``WorldModel.encode``) use
        ``app/vjepa_droid/transforms.py: make_transforms(random_horizontal_flip=False,
        random_resize_aspect_ratio=(1., 1.), random_resize_scale=(1., 1.), crop_size=256)``,
        whose ``VideoTransform`` calls
        ``src/datasets/utils/video/transforms.py: random_resized_crop``. With scale and
        ratio 1 the square of the frame's area never fits a non-square frame, so
        ``_get_param_spatial_crop`` falls back to the centre square (side ``min(H, W)``,
        offsets ``(H - side) // 2``, ``(W - side) // 2``), which is resized with
        ``F.interpolate(mode="bilinear", align_corners=False)`` (antialias off). Meta then
        normalises with ImageNet mean/std in 0-255 units (same values up to float rounding).
        A frame whose sides differ by one pixel is the one case Meta's code crops at a
        random offset (0 or 1); here it is always 0.
        """
        h, w = x.shape[-2:]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        x = x[..., top : top + side, left : left + side]
        if side != self._crop:  # at the crop size Meta's interpolate is the identity
            x = F.interpolate(
                x, size=(self._crop, self._crop), mode="bilinear", align_corners=False, antialias=False
            )
        return x

    def _resize_then_crop(self, x: torch.Tensor) -> torch.Tensor:
        """``"resize_crop"``: short side to ``resize_size`` (bilinear, antialiased), then the
        centre ``crop x crop`` (V-JEPA 2's eval recipe)."""
        h, w = x.shape[-2:]
        crop = self._crop
        short = self.resize_size
        if min(h, w) != short:
            if h <= w:
                size = (short, max(short, int(short * w / h)))
            else:
                size = (max(short, int(short * h / w)), short)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
            h, w = size
        if (h, w) != (crop, crop):
            top = round((h - crop) / 2.0)
            left = round((w - crop) / 2.0)
            x = x[..., top : top + crop, left : left + crop]
        return x

    def preprocess(self, frames: Any) -> torch.Tensor:
        """Frames (see :meth:`encode`) -> normalised float32 [B, 3, crop, crop] on the device."""
        kind, _ = self._check_frames(frames)
        return self._resize_crop_normalize(self._to_unit_float(frames, kind))

    # ------------------------------------------------------------------ encoding

    def _encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised [b, 3, crop, crop] -> layer-normed, pooled float32 [b, N, D]."""
        b = pixels.shape[0]
        clip = (
            pixels.to(self.dtype).unsqueeze(1).expand(b, self._tubelet, 3, self._crop, self._crop)
        )
        tokens = self.model.encoder(pixel_values_videos=clip).last_hidden_state.float()
        if self.pool_grid is not None:
            g = self._patch_grid
            grid = tokens.transpose(1, 2).reshape(b, self._embed_dim, g, g)
            grid = F.adaptive_avg_pool2d(grid, self.pool_grid)
            tokens = grid.flatten(2).transpose(1, 2)
        return F.layer_norm(tokens, (self._embed_dim,))

    @torch.no_grad()
    def encode(self, frames: Any, batch_size: int = 64) -> torch.Tensor:
        """Encode frames one at a time (each repeated over the tubelet).

        Args:
            frames: ``uint8 [B, H, W, 3]`` (numpy or torch, any H, W) or float
                ``[B, 3, H, W]`` in [0, 1]. Resized and centre-cropped to ``image_size``.
            batch_size: frames per forward pass (memory bound, results do not depend on it).

        Returns:
            float32 ``[B, num_tokens, embed_dim]`` on the module's device, each token
            layer-normalised over the feature dim (no affine weights).
        """
        kind, shape = self._check_frames(frames)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive int")
        n = shape[0]
        out = torch.empty(
            n, self.num_tokens, self.embed_dim, dtype=torch.float32, device=self.device
        )
        for start in range(0, n, batch_size):
            chunk = frames[start : start + batch_size]
            pixels = self._resize_crop_normalize(self._to_unit_float(chunk, kind))
            out[start : start + pixels.shape[0]] = self._encode_pixels(pixels)
        return out

    def forward(self, frames: Any, batch_size: int = 64) -> torch.Tensor:
        """Same as :meth:`encode`."""
        return self.encode(frames, batch_size=batch_size)

    # ------------------------------------------------------------------ reference

    def weights_hash(self) -> str | None:
        """Content hash of the local weights (None for hub-loaded encoders); cached."""
        if self.local_dir is None:
            return None
        if self._weights_hash is None:
            changed = EncoderUnavailableError(
                f"the weights in {self.local_dir} changed after this encoder loaded them; "
                "reload the encoder to describe (and use) the new weights"
            )
            if _stat_signature(self.local_dir) != self._weights_stat:
                raise changed
            digest = hash_weights(self.local_dir)
            if _stat_signature(self.local_dir) != self._weights_stat:
                raise changed
            self._weights_hash = digest
        return self._weights_hash

    def reference(self) -> dict[str, Any]:
        """A JSON-serialisable description of this encoder for checkpoints and latent caches.

        ``source`` is the hub id or the absolute directory; ``revision`` is the resolved
        hub commit (or the requested revision) for hub weights, ``weights_sha256`` the
        content hash of ``config.json`` + weight files for a local directory. The rest
        fixes preprocessing and output, so equal references mean identical latents.

        An encoder in the ``"crop_resize"`` mode says so (``"preprocessing"`` and
        ``"interpolation": "bilinear"``), so a checkpoint made with one mode refuses an
        encoder in the other; a ``"resize_crop"`` reference has no ``"preprocessing"``
        key, exactly as before the mode existed (existing checkpoints and latent caches
        keep matching).
        """
        reference = {
            "format": REFERENCE_FORMAT,
            "kind": "vjepa2",
            "source": self.source,
            "revision": self.revision if self.local_dir is None else None,
            "weights_sha256": self.weights_hash(),
            "crop_size": self._crop,
            "patch_size": self._patch,
            "tubelet_size": self._tubelet,
            "hidden_size": self._embed_dim,
            "resize_ratio": self.resize_ratio,
            "resize_size": self.resize_size,
            "interpolation": "bilinear_antialias",
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "frame_repeat": self._tubelet,
            "output": "encoder_last_hidden_state",
            "pool_grid": self.pool_grid,
            "layer_norm": "weightless_after_pool",
            "num_tokens": self.num_tokens,
            "dtype": str(self.dtype).removeprefix("torch."),
        }
        if self.preprocessing != DEFAULT_PREPROCESSING:
            reference["interpolation"] = "bilinear"
            reference["preprocessing"] = self.preprocessing
        return reference


# --------------------------------------------------------------------------- registry


def _valid_names_message() -> str:
    return ", ".join(f"{k} ({v})" for k, v in ENCODERS.items())


def load_encoder(
    name_or_path: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    pool_grid: int | None = None,
    revision: str | None = None,
    resize_ratio: float | None = None,
    dtype: torch.dtype | str | None = None,
    cache_dir: str | os.PathLike | None = None,
    preprocessing: str | None = None,
) -> VJEPA2Encoder:
    """Load a frozen encoder by registry name (:data:`ENCODERS`), its hub id, or a directory.

    An existing directory always wins (loaded with ``local_files_only=True``). Anything
    else that is neither a registry name nor one of its hub ids raises ``ValueError``
    listing the valid names. Offline (``HF_HUB_OFFLINE=1``) without cached weights raises
    :class:`EncoderUnavailableError` saying so.

    Preprocessing: ``preprocessing=None`` takes the mode the model's ``config.json``
    records (an imported V-JEPA 2-AC encoder records ``"crop_resize"``, Meta's transform),
    else ``"resize_crop"`` with ``resize_ratio`` (``None``: :data:`DEFAULT_RESIZE_RATIO`,
    the V-JEPA 2 eval recipe). See :data:`PREPROCESSING_MODES`.
    """
    text = os.path.expanduser(str(name_or_path))
    if os.path.isdir(text):
        source = text
    elif text in BUILTIN_ENCODERS:
        source = str(BUILTIN_ENCODERS[text])
    elif text in ENCODERS:
        source = ENCODERS[text]
    elif text in ENCODERS.values():
        source = text
    else:
        raise ValueError(
            f"unknown encoder {str(name_or_path)!r}: it is not a registered name and not an "
            f"existing directory. Valid names: {_valid_names_message()}; a path to a directory "
            "written by save_pretrained (e.g. save_tiny_random_encoder) also works."
        )
    return VJEPA2Encoder.from_pretrained(
        source,
        device=device,
        pool_grid=pool_grid,
        resize_ratio=resize_ratio,
        revision=revision,
        dtype=dtype,
        cache_dir=cache_dir,
        preprocessing=preprocessing,
    )


def reference_mismatch(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Human-readable differences between two encoder references (empty if equal)."""
    keys = sorted(set(expected) | set(actual))
    return [
        f"{k}: expected {expected.get(k)!r}, got {actual.get(k)!r}"
        for k in keys
        if expected.get(k) != actual.get(k)
    ]


def load_encoder_from_reference(
    ref: dict[str, Any],
    *,
    device: str | torch.device | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> VJEPA2Encoder:
    """Rebuild the encoder a checkpoint or latent cache was made with, and verify it.

    Raises ``ValueError`` listing the differences if the loaded encoder's reference does
    not equal ``ref`` (e.g. the local weights changed since). The preprocessing is the
    reference's (no ``"preprocessing"`` key: ``"resize_crop"``), whatever the encoder
    directory records.
    """
    if ref.get("format") != REFERENCE_FORMAT:
        raise ValueError(
            f"encoder reference format {ref.get('format')!r} is not {REFERENCE_FORMAT!r}"
        )
    source = ref["source"]
    is_dir = ref.get("weights_sha256") is not None
    if is_dir and not os.path.isdir(source):
        raise EncoderUnavailableError(
            f"encoder directory {source!r} from the reference does not exist"
        )
    enc = VJEPA2Encoder.from_pretrained(
        source,
        device=device,
        pool_grid=ref.get("pool_grid"),
        resize_ratio=ref.get("resize_ratio", DEFAULT_RESIZE_RATIO),
        preprocessing=ref.get("preprocessing", DEFAULT_PREPROCESSING),
        revision=None if is_dir else ref.get("revision"),
        dtype=ref.get("dtype"),
        cache_dir=cache_dir,
    )
    diff = reference_mismatch(ref, enc.reference())
    if diff:
        raise ValueError(f"encoder at {source!r} does not match the reference: " + "; ".join(diff))
    return enc


# --------------------------------------------------------------------------- tiny encoder

_TINY_DEFAULTS: dict[str, Any] = {
    "crop_size": 64,
    "patch_size": 8,
    "frames_per_clip": 16,
    "tubelet_size": 2,
    "hidden_size": 192,
    "num_attention_heads": 3,
    "num_hidden_layers": 6,
    "mlp_ratio": 4.0,
    "pred_hidden_size": 96,
    "pred_num_attention_heads": 3,
    "pred_num_hidden_layers": 2,
    "pred_num_mask_tokens": 2,
    "pred_mlp_ratio": 4.0,
    "num_pooler_layers": 1,
}


def tiny_vjepa2_config(**overrides: Any) -> VJEPA2Config:
    """A tiny V-JEPA 2 config (64x64 crop, 8x8 patches -> 8x8 = 64 tokens of 192 dims,
    6 layers, 3 heads; predictor 96 wide, 2 layers): ~3.0M parameters in all (~2.7M encoder).

    Keyword overrides replace any ``VJEPA2Config`` field; unknown names raise ``TypeError``.
    """
    config_cls, _ = _vjepa2_classes()
    valid = set(config_cls().to_dict())
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise TypeError(f"unknown VJEPA2Config fields {unknown}")
    return config_cls(**{**_TINY_DEFAULTS, **overrides})


def save_tiny_random_encoder(
    path: str | os.PathLike,
    seed: int = 0,
    *,
    overwrite: bool = False,
    **overrides: Any,
) -> Path:
    """Build a randomly initialised ``VJEPA2Model`` from :func:`tiny_vjepa2_config`
    (seeded, leaving the global RNG untouched) and ``save_pretrained`` it to ``path``.

    Written to a temporary sibling directory and renamed, so ``path`` never holds a
    half-written model. An existing non-empty ``path`` raises ``FileExistsError`` unless
    ``overwrite=True``. Returns the absolute path.
    """
    path = Path(path).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(f"{path} is not empty; pass overwrite=True to replace it")
    config = tiny_vjepa2_config(**overrides)
    _, model_cls = _vjepa2_classes()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    from jepa_robot.files import atomic_directory

    with atomic_directory(path) as tmp:
        model.save_pretrained(tmp)
    return path
