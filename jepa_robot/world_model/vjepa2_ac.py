"""Import Meta's published V-JEPA 2-AC world model (``vjepa2-ac-vitg.pt``).

Meta publishes V-JEPA 2-AC as one ``torch.save`` file (torch.hub entry
``vjepa2_ac_vit_giant`` in facebookresearch/vjepa2, ``src/hub/backbones.py``;
https://dl.fbaipublicfiles.com/vjepa2/vjepa2-ac-vitg.pt): a dict whose ``encoder`` and
``predictor`` entries are state dicts of its ``VisionTransformer`` (ViT-g/16, RoPE,
``src/models/vision_transformer.py``) and ``VisionTransformerPredictorAC``
(``src/models/ac_predictor.py``), written from DistributedDataParallel-wrapped models,
so their keys carry ``module.`` / ``backbone.`` prefixes. :func:`convert_vjepa2_ac`
turns it into what this project loads::

    <out_dir>/
      encoder/      transformers VJEPA2Model directory (config.json, model.safetensors); its
                    config.json records Meta's preprocessing (jepa_robot_preprocessing: crop_resize)
      checkpoint/   one of our checkpoint directories (jepa_robot.world_model.checkpoint), its encoder
                    reference pointing at ``../encoder`` (relocatable, like package_model)
        vjepa2_ac_unused.safetensors   reference weights our modules do not use

Both are written into a temporary sibling of ``out_dir`` and renamed into place, so a
failed import leaves nothing half-written. ``jepa-robot import-vjepa2-ac
checkpoint=vjepa2-ac-vitg.pt out_dir=models/vjepa2_ac`` does the same from the shell.

Key mapping (after removing every ``module.`` and ``backbone.``, as Meta's hub loader
``_clean_backbone_key`` does; ``i`` is a block index):

=====================================  ==================================================
official encoder key                   transformers ``VJEPA2Model`` key
=====================================  ==================================================
``patch_embed.proj.{weight,bias}``     ``encoder.embeddings.patch_embeddings.proj.*``
``blocks.i.norm1.*``                   ``encoder.layer.i.norm1.*``
``blocks.i.attn.qkv.weight [3D, D]``   ``encoder.layer.i.attention.{query,key,value}.weight``
                                       (rows 0:D, D:2D, 2D:3D; the bias likewise)
``blocks.i.attn.proj.*``               ``encoder.layer.i.attention.proj.*``
``blocks.i.norm2.*``                   ``encoder.layer.i.norm2.*``
``blocks.i.mlp.fc1.*`` / ``fc2.*``     ``encoder.layer.i.mlp.fc1.*`` / ``fc2.*``
``norm.*``                             ``encoder.layernorm.*``
``pos_embed`` (if present)             dropped: the RoPE encoder never uses it (Meta's
                                       hub loads the encoder with ``strict=False``)
=====================================  ==================================================

(transformers' own ``convert_vjepa2_to_hf.py`` maps the same tensors for the
action-free V-JEPA 2 checkpoints; its ``attention.attention.*`` target names are those of
an older ``modeling_vjepa2`` - the names above are checked against the installed
transformers' ``VJEPA2Model`` at conversion time, so a rename fails loudly.)

The predictor's names were chosen to be Meta's (:mod:`jepa_robot.world_model.predictor`), so its
mapping is the identity: ``predictor_embed``, ``action_encoder``, ``state_encoder``,
``predictor_blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``,
``predictor_norm``, ``predictor_proj``. ``extrinsics_encoder`` (Linear(6 -> 1024),
trained with ``use_extrinsics=False``, i.e. never used) has no counterpart in
:class:`~jepa_robot.world_model.predictor.ACPredictor`; it is kept bit-exact in
``vjepa2_ac_unused.safetensors`` so :func:`export_official` can rebuild the original
state dicts (the round trip is exact).

What the imported model is, and what differs from Meta's modules (and why):

* the predictor config sets ``rope_reference_quirk=True``: Meta's
  ``rotate_queries_or_keys`` tiles each axis' frequency vector (``repeat``) instead of
  interleaving it, and the weights were trained with that; without it the outputs
  differ. transformers' ``VJEPA2Model`` reproduces the same quirk in the encoder;
* ``predict_state=False``: Meta's model has no state head. Its planner integrates the
  state kinematically (``notebooks/utils/mpc_utils.py: compute_new_pose``);
  :func:`droid_next_state` is that function in torch, to pass as ``next_state_fn`` to
  :meth:`ACPredictor.rollout` (the checkpoint's ``data.next_state`` names it);
* Meta's predictor returns ``predictor_proj``'s output and its planner applies
  ``F.layer_norm`` over the feature dim (``normalize_reps=True``); our ``forward`` and
  ``rollout`` return the layer-normed tensor directly. Everything before is the same
  computation: [action, state, 256 patch tokens] per step, block-causal mask, RoPE on
  (t, row, col) of patch tokens and on t only for action/state tokens, pre-norm blocks
  (LayerNorm eps 1e-6, exact GELU), ``max_steps = num_frames // tubelet = 32``;
* ``state_encoder`` is Linear(7 -> 1024) in both (Meta builds it from the action width;
  DROID states and actions are both 7-D);
* ``VJEPA2Model`` needs its masked-prediction predictor, which the AC file does not ship:
  a 1-layer all-zero placeholder (48 wide) is written; :class:`VJEPA2Encoder` never runs it;
* preprocessing: Meta's AC planning code (``notebooks/utils/world_model_wrapper.py`` with
  ``app/vjepa_droid/transforms.py: make_transforms(random_resize_scale=(1., 1.),
  random_resize_aspect_ratio=(1., 1.), random_horizontal_flip=False)``) crops the centre
  square of the frame and resizes it to 256, bilinear without antialias
  (``src/datasets/utils/video/transforms.py: random_resized_crop``, whose
  ``_get_param_spatial_crop`` falls back to the centre square). The encoder's
  ``config.json`` records that mode (``jepa_robot_preprocessing: "crop_resize"``,
  :data:`~jepa_robot.world_model.encoders.PREPROCESSING_MODES`), so ``load_encoder(dir)``
  and the checkpoint's encoder reference use it without arguments - not the
  292 -> 256 antialiased resize-and-crop of the action-free evaluations, which differs
  on any frame that is not already 256x256. ImageNet mean/std; a frame is repeated over
  the tubelet (2); the weightless layer norm on the output is Meta's ``normalize_reps``.
  (Encoders imported before the mode was recorded keep the resize-and-crop their
  checkpoints name; import again with ``overwrite=true`` to get Meta's transform.);
* data: identity action/state normalisation, ``frameskip`` 1 (one predictor step is one
  4 fps DROID step), 7-D actions ``(dx, dy, dz, droll, dpitch, dyaw, dgripper)`` in metres
  and radians (rotation delta as extrinsic xyz Euler of ``R_next @ R^T``) and 7-D states
  ``(x, y, z, roll, pitch, yaw, gripper)`` in the robot base frame, gripper 0 = open,
  1 = closed (DROID's ``gripper_position``); left exterior camera, 256x256 frames.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from jepa_robot.files import atomic_directory
from jepa_robot.world_model.checkpoint import WEIGHTS, load_checkpoint, save_checkpoint
from jepa_robot.world_model.encoders import sha256_file
from jepa_robot.world_model.predictor import ACPredictor, PredictorConfig

log = logging.getLogger(__name__)

__all__ = [
    "AC_PREPROCESSING",
    "DROID_ACTION_NAMES",
    "DROID_STATE_NAMES",
    "OFFICIAL_FILENAME",
    "OFFICIAL_URL",
    "UNUSED_WEIGHTS",
    "VITG_AC",
    "ACArchitecture",
    "ImportResult",
    "OutputExistsError",
    "VJEPA2ACFormatError",
    "clean_keys",
    "convert_vjepa2_ac",
    "droid_next_state",
    "encoder_from_hf",
    "encoder_to_hf",
    "expected_encoder_shapes",
    "expected_predictor_shapes",
    "export_official",
    "hf_encoder_config",
    "infer_architecture",
    "predictor_config",
    "read_official_checkpoint",
    "run_import",
]

OFFICIAL_FILENAME = "vjepa2-ac-vitg.pt"
OFFICIAL_URL = "https://dl.fbaipublicfiles.com/vjepa2/vjepa2-ac-vitg.pt"
UNUSED_WEIGHTS = "vjepa2_ac_unused.safetensors"
"""Reference weights with no counterpart in our modules (``extrinsics_encoder.*``)."""
IMPORT_FORMAT = "jepa_robot.vjepa2_ac/1"
AC_PREPROCESSING = "crop_resize"
"""Preprocessing mode of the imported encoder: Meta's AC transform (centre square, then resize)."""

DROID_ACTION_NAMES = ["delta_x", "delta_y", "delta_z", "delta_roll", "delta_pitch", "delta_yaw", "gripper"]
"""V-JEPA 2-AC's 7-D action (the ``droid7`` layout of ``envs.ros.config``)."""
DROID_STATE_NAMES = ["hand_x", "hand_y", "hand_z", "hand_roll", "hand_pitch", "hand_yaw", "gripper"]
"""V-JEPA 2-AC's 7-D state (the ``pose_gripper`` layout of ``envs.ros.config``)."""
DROID_IMAGE_KEY = "observation.images.exterior_1_left"
DROID_FPS = 4

_KNOWN_HEADS = {"encoder": {1024: 16, 1280: 16, 1408: 22}, "predictor": {1024: 16}}
_DROPPED_ENCODER_KEYS = ("pos_embed",)
_UNUSED_PREDICTOR_PREFIX = "extrinsics_encoder."
_PLACEHOLDER_PRED = {"pred_hidden_size": 48, "pred_num_attention_heads": 1, "pred_num_hidden_layers": 1,
                     "pred_num_mask_tokens": 1, "pred_mlp_ratio": 1.0}


class VJEPA2ACFormatError(ValueError):
    """The file is not a V-JEPA 2-AC checkpoint of the expected layout (names the key)."""


class OutputExistsError(FileExistsError, ValueError):
    """``out_dir`` exists and ``overwrite`` was not given (a ValueError too, so the CLI
    reports it as a bad value rather than a crash)."""


# ----------------------------------------------------------------------------- architecture


@dataclass(frozen=True)
class ACArchitecture:
    """Sizes of a V-JEPA 2-AC encoder + predictor (defaults: the published ViT-g model).

    Widths, depths, patch/tubelet sizes and the action width are read off the weights by
    :func:`infer_architecture`; the image size, clip length and head counts are not in
    the weights and come from here."""

    image_size: int = 256
    patch_size: int = 16
    tubelet_size: int = 2
    num_frames: int = 64
    """Clip length the models were built for; the predictor handles num_frames // tubelet steps."""
    encoder_dim: int = 1408
    encoder_depth: int = 40
    encoder_heads: int = 22
    encoder_mlp_hidden: int = 6144
    predictor_dim: int = 1024
    predictor_depth: int = 24
    predictor_heads: int = 16
    predictor_mlp_hidden: int = 4096
    action_dim: int = 7
    extrinsics: bool = True
    """Whether the predictor state dict holds ``extrinsics_encoder`` (Meta always builds it)."""

    def __post_init__(self) -> None:
        for name in ("image_size", "patch_size", "tubelet_size", "num_frames", "encoder_dim",
                     "encoder_depth", "encoder_heads", "encoder_mlp_hidden", "predictor_dim",
                     "predictor_depth", "predictor_heads", "predictor_mlp_hidden", "action_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise VJEPA2ACFormatError(f"architecture: {name}={value!r} must be a positive int")
        if self.image_size % self.patch_size:
            raise VJEPA2ACFormatError(
                f"architecture: image_size={self.image_size} is not a multiple of patch_size={self.patch_size}"
            )
        if self.num_frames % self.tubelet_size:
            raise VJEPA2ACFormatError(
                f"architecture: num_frames={self.num_frames} is not a multiple of tubelet_size={self.tubelet_size}"
            )
        for what in ("encoder", "predictor"):
            dim, heads = getattr(self, f"{what}_dim"), getattr(self, f"{what}_heads")
            if dim % heads:
                raise VJEPA2ACFormatError(f"architecture: {what} width {dim} is not divisible by {heads} heads")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        return self.grid * self.grid

    @property
    def max_steps(self) -> int:
        return self.num_frames // self.tubelet_size


VITG_AC = ACArchitecture()
"""The published model: ViT-g/16 encoder at 256 px, 24 x 1024 predictor, 7-D actions."""


def expected_encoder_shapes(arch: ACArchitecture) -> dict[str, tuple[int, ...]]:
    """Official (prefix-free) encoder keys and shapes for ``arch``."""
    d, h = arch.encoder_dim, arch.encoder_mlp_hidden
    shapes: dict[str, tuple[int, ...]] = {
        "patch_embed.proj.weight": (d, 3, arch.tubelet_size, arch.patch_size, arch.patch_size),
        "patch_embed.proj.bias": (d,),
    }
    for i in range(arch.encoder_depth):
        shapes.update(_block_shapes(f"blocks.{i}.", d, h))
    shapes.update({"norm.weight": (d,), "norm.bias": (d,)})
    return shapes


def expected_predictor_shapes(arch: ACArchitecture) -> dict[str, tuple[int, ...]]:
    """Official (prefix-free) predictor keys and shapes for ``arch``."""
    p, a = arch.predictor_dim, arch.action_dim
    shapes: dict[str, tuple[int, ...]] = {
        "predictor_embed.weight": (p, arch.encoder_dim),
        "predictor_embed.bias": (p,),
        "action_encoder.weight": (p, a),
        "action_encoder.bias": (p,),
        "state_encoder.weight": (p, a),
        "state_encoder.bias": (p,),
    }
    if arch.extrinsics:
        shapes.update({"extrinsics_encoder.weight": (p, a - 1), "extrinsics_encoder.bias": (p,)})
    for i in range(arch.predictor_depth):
        shapes.update(_block_shapes(f"predictor_blocks.{i}.", p, arch.predictor_mlp_hidden))
    shapes.update({
        "predictor_norm.weight": (p,),
        "predictor_norm.bias": (p,),
        "predictor_proj.weight": (arch.encoder_dim, p),
        "predictor_proj.bias": (arch.encoder_dim,),
    })
    return shapes


def _block_shapes(prefix: str, d: int, hidden: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}norm1.weight": (d,), f"{prefix}norm1.bias": (d,),
        f"{prefix}attn.qkv.weight": (3 * d, d), f"{prefix}attn.qkv.bias": (3 * d,),
        f"{prefix}attn.proj.weight": (d, d), f"{prefix}attn.proj.bias": (d,),
        f"{prefix}norm2.weight": (d,), f"{prefix}norm2.bias": (d,),
        f"{prefix}mlp.fc1.weight": (hidden, d), f"{prefix}mlp.fc1.bias": (hidden,),
        f"{prefix}mlp.fc2.weight": (d, hidden), f"{prefix}mlp.fc2.bias": (d,),
    }


def _shape_of(state: Mapping[str, Tensor], key: str, where: str) -> tuple[int, ...]:
    if key not in state:
        raise VJEPA2ACFormatError(f"{where}: missing key {key!r}, needed to read the architecture")
    return tuple(state[key].shape)


def _count_blocks(state: Mapping[str, Tensor], prefix: str) -> int:
    indices = {int(k[len(prefix):].split(".", 1)[0]) for k in state
               if k.startswith(prefix) and k[len(prefix):].split(".", 1)[0].isdigit()}
    return max(indices) + 1 if indices else 0


def _heads(what: str, dim: int, given: int | None) -> int:
    if given is not None:
        return given
    known = _KNOWN_HEADS[what].get(dim)
    if known is None:
        raise VJEPA2ACFormatError(
            f"cannot tell the number of attention heads of a {dim}-wide {what} from its weights "
            f"(known widths: {sorted(_KNOWN_HEADS[what])}); pass {what}_heads"
        )
    return known


def infer_architecture(
    encoder: Mapping[str, Tensor],
    predictor: Mapping[str, Tensor],
    *,
    image_size: int = VITG_AC.image_size,
    num_frames: int = VITG_AC.num_frames,
    encoder_heads: int | None = None,
    predictor_heads: int | None = None,
    where: str = "checkpoint",
) -> ACArchitecture:
    """Read widths, depths, patch/tubelet sizes and the action width off prefix-free
    state dicts; heads default to the published model's for its widths (ViT-g 22,
    predictor 16). Only the shapes needed for that are checked here; the full key
    check is :func:`check_state`."""
    patch = _shape_of(encoder, "patch_embed.proj.weight", f"{where} [encoder]")
    if len(patch) != 5:
        raise VJEPA2ACFormatError(
            f"{where} [encoder]: 'patch_embed.proj.weight' has shape {list(patch)}; expected a Conv3d "
            "weight [D, 3, tubelet, patch, patch]"
        )
    encoder_dim, _, tubelet, patch_size, _ = patch
    encoder_fc1 = _shape_of(encoder, "blocks.0.mlp.fc1.weight", f"{where} [encoder]")
    embed = _shape_of(predictor, "predictor_embed.weight", f"{where} [predictor]")
    action = _shape_of(predictor, "action_encoder.weight", f"{where} [predictor]")
    predictor_fc1 = _shape_of(predictor, "predictor_blocks.0.mlp.fc1.weight", f"{where} [predictor]")
    return ACArchitecture(
        image_size=image_size,
        patch_size=patch_size,
        tubelet_size=tubelet,
        num_frames=num_frames,
        encoder_dim=encoder_dim,
        encoder_depth=_count_blocks(encoder, "blocks."),
        encoder_heads=_heads("encoder", encoder_dim, encoder_heads),
        encoder_mlp_hidden=encoder_fc1[0],
        predictor_dim=embed[0],
        predictor_depth=_count_blocks(predictor, "predictor_blocks."),
        predictor_heads=_heads("predictor", embed[0], predictor_heads),
        predictor_mlp_hidden=predictor_fc1[0],
        action_dim=action[1],
        extrinsics=any(k.startswith(_UNUSED_PREDICTOR_PREFIX) for k in predictor),
    )


# ----------------------------------------------------------------------------- reading


def clean_keys(state: Mapping[str, Tensor], where: str) -> dict[str, Tensor]:
    """Drop every ``module.`` and ``backbone.`` from the keys (Meta's hub rule); two keys
    that become equal raise, naming both."""
    cleaned: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise VJEPA2ACFormatError(f"{where}: entry {key!r} is not a named tensor ({type(value).__name__})")
        name = key.replace("module.", "").replace("backbone.", "")
        if name in cleaned:
            raise VJEPA2ACFormatError(
                f"{where}: keys {origin[name]!r} and {key!r} both become {name!r} once the "
                "module./backbone. prefixes are removed"
            )
        cleaned[name], origin[name] = value, key
    return cleaned


def read_official_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(encoder, predictor)`` state dicts, prefix-free, from a ``vjepa2-ac-vitg.pt``-style
    file (loaded with ``weights_only=True``, memory-mapped when the format allows)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"V-JEPA 2-AC checkpoint {path} does not exist (download {OFFICIAL_URL})")
    try:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:  # legacy (non-zip) torch.save files cannot be mmapped
            if "mmap" not in str(error):
                raise
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - pickle/zip/torch raise several kinds
        raise VJEPA2ACFormatError(f"{path} is not a readable torch.save file: {error}") from error
    if not isinstance(raw, Mapping):
        raise VJEPA2ACFormatError(f"{path} holds a {type(raw).__name__}, expected a dict with 'encoder' and 'predictor'")
    missing = [k for k in ("encoder", "predictor") if k not in raw]
    if missing:
        raise VJEPA2ACFormatError(
            f"{path} has no {' or '.join(repr(k) for k in missing)} entry (top-level keys: {sorted(map(str, raw))})"
        )
    parts = []
    for name in ("encoder", "predictor"):
        if not isinstance(raw[name], Mapping):
            raise VJEPA2ACFormatError(f"{path}: {name!r} is a {type(raw[name]).__name__}, expected a state dict")
        parts.append(clean_keys(raw[name], f"{path} [{name}]"))
    return parts[0], parts[1]


def check_state(
    state: Mapping[str, Tensor],
    expected: Mapping[str, tuple[int, ...]],
    where: str,
    *,
    ignore: tuple[str, ...] = (),
    strict: bool = True,
) -> list[str]:
    """Raise on missing keys and shape mismatches (naming them); unexpected keys raise
    when ``strict``, else they are returned (and dropped by the caller). Keys in
    ``ignore`` are always dropped."""
    missing = [k for k in expected if k not in state]
    wrong = [f"{k!r}: {list(state[k].shape)} in the file, {list(expected[k])} expected"
             for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k])]
    unexpected = sorted(k for k in state if k not in expected and k not in ignore)
    problems = []
    if missing:
        problems.append(f"missing keys {_listing(missing)}")
    if wrong:
        problems.append(f"shape mismatch {_listing(wrong, quote=False)}")
    if unexpected and strict:
        problems.append(f"unexpected keys {_listing(unexpected)} (strict=False drops them)")
    if problems:
        raise VJEPA2ACFormatError(f"{where}: " + "; ".join(problems))
    return unexpected


def _listing(items: list[str], quote: bool = True, limit: int = 8) -> str:
    shown = [repr(i) if quote else i for i in items[:limit]]
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return "[" + ", ".join(shown) + "]" + more


# ----------------------------------------------------------------------------- mapping


def _hf_encoder_names(i: int) -> dict[str, str]:
    return {
        "norm1": f"encoder.layer.{i}.norm1",
        "attn.proj": f"encoder.layer.{i}.attention.proj",
        "norm2": f"encoder.layer.{i}.norm2",
        "mlp.fc1": f"encoder.layer.{i}.mlp.fc1",
        "mlp.fc2": f"encoder.layer.{i}.mlp.fc2",
    }


def encoder_to_hf(encoder: Mapping[str, Tensor], arch: ACArchitecture) -> dict[str, Tensor]:
    """Official (prefix-free, checked) encoder state dict -> ``VJEPA2Model`` encoder keys
    (fused qkv split into query/key/value); every tensor is a fresh contiguous copy."""
    d = arch.encoder_dim
    out: dict[str, Tensor] = {}
    for suffix in ("weight", "bias"):
        out[f"encoder.embeddings.patch_embeddings.proj.{suffix}"] = encoder[f"patch_embed.proj.{suffix}"]
        out[f"encoder.layernorm.{suffix}"] = encoder[f"norm.{suffix}"]
        for i in range(arch.encoder_depth):
            for ours, theirs in _hf_encoder_names(i).items():
                out[f"{theirs}.{suffix}"] = encoder[f"blocks.{i}.{ours}.{suffix}"]
            qkv = encoder[f"blocks.{i}.attn.qkv.{suffix}"]
            for j, name in enumerate(("query", "key", "value")):
                out[f"encoder.layer.{i}.attention.{name}.{suffix}"] = qkv[j * d : (j + 1) * d]
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def encoder_from_hf(hf: Mapping[str, Tensor], arch: ACArchitecture) -> dict[str, Tensor]:
    """Inverse of :func:`encoder_to_hf` (query/key/value concatenated back into qkv)."""
    out: dict[str, Tensor] = {}
    for suffix in ("weight", "bias"):
        out[f"patch_embed.proj.{suffix}"] = hf[f"encoder.embeddings.patch_embeddings.proj.{suffix}"]
        for i in range(arch.encoder_depth):
            for ours, theirs in _hf_encoder_names(i).items():
                out[f"blocks.{i}.{ours}.{suffix}"] = hf[f"{theirs}.{suffix}"]
            out[f"blocks.{i}.attn.qkv.{suffix}"] = torch.cat(
                [hf[f"encoder.layer.{i}.attention.{name}.{suffix}"] for name in ("query", "key", "value")]
            )
        out[f"norm.{suffix}"] = hf[f"encoder.layernorm.{suffix}"]
    return {k: out[k] for k in expected_encoder_shapes(arch)}  # official order


def predictor_to_ours(predictor: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Official (prefix-free, checked) predictor state dict -> (ACPredictor state dict,
    unused reference tensors). The names are the same; only ``extrinsics_encoder.*`` is set aside."""
    ours = {k: v for k, v in predictor.items() if not k.startswith(_UNUSED_PREDICTOR_PREFIX)}
    unused = {k: v for k, v in predictor.items() if k.startswith(_UNUSED_PREDICTOR_PREFIX)}
    return ours, unused


def hf_encoder_config(arch: ACArchitecture):
    """The ``VJEPA2Config`` of the converted encoder (with a tiny placeholder predictor),
    recording Meta's V-JEPA 2-AC preprocessing (centre square, then resize)."""
    from transformers import VJEPA2Config

    from jepa_robot.world_model.encoders import PREPROCESSING_CONFIG_KEY

    return VJEPA2Config(
        crop_size=arch.image_size,
        patch_size=arch.patch_size,
        tubelet_size=arch.tubelet_size,
        frames_per_clip=arch.num_frames,
        hidden_size=arch.encoder_dim,
        num_hidden_layers=arch.encoder_depth,
        num_attention_heads=arch.encoder_heads,
        mlp_ratio=_mlp_ratio(arch.encoder_dim, arch.encoder_mlp_hidden, "encoder"),
        in_chans=3,
        qkv_bias=True,
        layer_norm_eps=1e-6,
        hidden_act="gelu",
        drop_path_rate=0.0,
        **_PLACEHOLDER_PRED,
        **{PREPROCESSING_CONFIG_KEY: AC_PREPROCESSING},
    )


def predictor_config(arch: ACArchitecture) -> PredictorConfig:
    """Our :class:`PredictorConfig` for the reference predictor of ``arch``."""
    return PredictorConfig(
        latent_dim=arch.encoder_dim,
        num_tokens=arch.num_tokens,
        action_dim=arch.action_dim,
        state_dim=arch.action_dim,  # Meta's state_encoder takes action_dim inputs (7 = 7 on DROID)
        hidden_dim=arch.predictor_dim,
        depth=arch.predictor_depth,
        heads=arch.predictor_heads,
        mlp_ratio=_mlp_ratio(arch.predictor_dim, arch.predictor_mlp_hidden, "predictor"),
        max_steps=arch.max_steps,
        predict_state=False,
        grid=arch.grid,
        rope_reference_quirk=True,
    )


def _mlp_ratio(dim: int, hidden: int, what: str) -> float:
    """A float r with ``int(dim * r) == hidden`` (how both model codes size the MLP)."""
    for candidate in (hidden / dim, (hidden + 0.5) / dim, 48 / 11 if hidden * 11 == dim * 48 else None):
        if candidate is not None and int(dim * candidate) == hidden:
            return candidate
    raise VJEPA2ACFormatError(f"the {what}'s MLP width {hidden} is not int({dim} * ratio) for any ratio tried")


# ----------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class ImportResult:
    out_dir: Path
    encoder_dir: Path
    checkpoint_dir: Path
    architecture: ACArchitecture
    dropped_keys: tuple[str, ...]
    """Keys of the file that were not converted (e.g. ``pos_embed``, or unexpected ones with strict=False)."""


def _write_encoder(directory: Path, hf_state: dict[str, Tensor], arch: ACArchitecture) -> None:
    """config.json + model.safetensors of a ``VJEPA2Model``, without materialising one
    (a ViT-g would need its 4 GB twice): names and shapes are checked against the
    installed transformers' model built on the meta device."""
    from transformers import VJEPA2Model

    config = hf_encoder_config(arch)
    with torch.device("meta"):
        skeleton = VJEPA2Model(config)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    full = dict(hf_state)
    for key, shape in expected.items():
        if key.startswith("encoder."):
            continue
        # the placeholder masked predictor: zeros (LayerNorm scales 1), never run
        fill = 1.0 if key.endswith("norm.weight") or ".norm1.weight" in key or ".norm2.weight" in key else 0.0
        full[key] = torch.full(shape, fill, dtype=next(iter(hf_state.values())).dtype)
    missing = sorted(set(expected) - set(full))
    extra = sorted(set(full) - set(expected))
    wrong = [k for k in expected if k in full and tuple(full[k].shape) != expected[k]]
    if missing or extra or wrong:
        raise VJEPA2ACFormatError(
            "the converted encoder does not fit the installed transformers VJEPA2Model: "
            f"missing {_listing(missing)}, unexpected {_listing(extra)}, wrong shapes {_listing(wrong)}"
        )
    directory.mkdir(parents=True)
    config.save_pretrained(directory)
    save_file({k: full[k] for k in expected}, str(directory / "model.safetensors"), metadata={"format": "pt"})


def _encoder_reference(directory: Path, arch: ACArchitecture) -> dict[str, Any]:
    """The :meth:`VJEPA2Encoder.reference` of the written encoder directory (computed on a
    meta-device model: no weights are loaded), with the source made relative. Its
    preprocessing is the one the encoder's config records (:data:`AC_PREPROCESSING`)."""
    from transformers import VJEPA2Model

    from jepa_robot.world_model.encoders import VJEPA2Encoder

    with torch.device("meta"):
        skeleton = VJEPA2Model(hf_encoder_config(arch))
    encoder = VJEPA2Encoder(skeleton, source=str(directory), local_dir=directory)
    reference = encoder.reference()
    reference["source"] = "../encoder"
    return reference


def convert_vjepa2_ac(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    image_size: int = VITG_AC.image_size,
    num_frames: int = VITG_AC.num_frames,
    encoder_heads: int | None = None,
    predictor_heads: int | None = None,
    strict: bool = True,
    overwrite: bool = False,
) -> ImportResult:
    """Convert an official V-JEPA 2-AC file into ``out_dir/encoder`` (VJEPA2Model) and
    ``out_dir/checkpoint`` (ours), atomically.

    The architecture is read off the weights (:func:`infer_architecture`); ``image_size``,
    ``num_frames`` and the head counts are what the weights cannot tell (defaults: the
    published 256 px, 64-frame ViT-g / 16-head predictor). A missing key or a shape
    mismatch raises :class:`VJEPA2ACFormatError` naming it; so do unexpected keys unless
    ``strict=False``. An existing ``out_dir`` is replaced only with ``overwrite=True``.
    """
    source = Path(checkpoint)
    out_dir = Path(out_dir).expanduser().absolute()
    if out_dir.exists() and not overwrite:
        raise OutputExistsError(f"{out_dir} exists; pass overwrite=True to replace it")
    encoder_sd, predictor_sd = read_official_checkpoint(source)
    arch = infer_architecture(encoder_sd, predictor_sd, image_size=image_size, num_frames=num_frames,
                              encoder_heads=encoder_heads, predictor_heads=predictor_heads, where=str(source))
    dropped = [k for k in _DROPPED_ENCODER_KEYS if k in encoder_sd]
    dropped += check_state(encoder_sd, expected_encoder_shapes(arch), f"{source} [encoder]",
                           ignore=_DROPPED_ENCODER_KEYS, strict=strict)
    dropped_predictor = check_state(predictor_sd, expected_predictor_shapes(arch), f"{source} [predictor]",
                                    strict=strict)
    if dropped:
        log.info("not converted from the encoder: %s", dropped)
    if dropped_predictor:
        log.warning("unexpected predictor keys dropped (strict=False): %s", dropped_predictor)
    pconfig = predictor_config(arch)  # validates head width etc. before anything is written

    with atomic_directory(out_dir) as tmp:
        hf_state = encoder_to_hf(encoder_sd, arch)
        del encoder_sd
        _write_encoder(tmp / "encoder", hf_state, arch)
        del hf_state
        reference = _encoder_reference(tmp / "encoder", arch)

        ours, unused = predictor_to_ours({k: v for k, v in predictor_sd.items() if k not in dropped_predictor})
        with torch.device("meta"):  # no random init of 300M parameters: they are replaced
            predictor = ACPredictor(pconfig)
        try:
            predictor.load_state_dict(ours, strict=True, assign=True)
        except RuntimeError as error:  # pragma: no cover - check_state covers the layout
            raise VJEPA2ACFormatError(f"{source} [predictor] does not fit ACPredictor: {error}") from error
        del ours, predictor_sd
        identity = {"mean": [0.0] * arch.action_dim, "std": [1.0] * arch.action_dim}
        data = {
            "dataset": "DROID (Meta's V-JEPA 2-AC training data; not a local dataset)",
            "repo_id": None,
            "image_keys": [DROID_IMAGE_KEY],
            "action_key": "action",
            "state_key": "observation.state",
            "action_names": DROID_ACTION_NAMES if arch.action_dim == 7 else None,
            "state_names": DROID_STATE_NAMES if arch.action_dim == 7 else None,
            "fps": DROID_FPS,
            "frameskip": 1,
            "image_shape": [arch.image_size, arch.image_size, 3],
            "next_state": "jepa_robot.vjepa2_ac:droid_next_state",
        }
        training = {
            "imported": {
                "format": IMPORT_FORMAT,
                "from": "facebookresearch/vjepa2 V-JEPA 2-AC (torch.hub vjepa2_ac_vit_giant)",
                "file": str(source.resolve()),
                "file_name": source.name,
                "file_sha256": sha256_file(source),
                "architecture": asdict(arch),
                "dropped_keys": sorted(dropped + dropped_predictor),
                "unused_weights": UNUSED_WEIGHTS if unused else None,
                "note": "predictor returns layer-normed latents; plan with next_state_fn=droid_next_state",
            }
        }
        checkpoint_dir = save_checkpoint(tmp / "checkpoint", predictor, reference, data,
                                         {"action": identity, "state": dict(identity)}, training)
        if unused:
            save_file({k: v.detach().clone().contiguous() for k, v in unused.items()},
                      str(checkpoint_dir / UNUSED_WEIGHTS), metadata={"format": "pt"})
    return ImportResult(out_dir, out_dir / "encoder", out_dir / "checkpoint", arch,
                        tuple(sorted(dropped + dropped_predictor)))


def export_official(out_dir: str | os.PathLike) -> dict[str, dict[str, Tensor]]:
    """Rebuild ``{"encoder": ..., "predictor": ...}`` in the official (prefix-free) layout
    from an imported ``out_dir`` - the inverse of :func:`convert_vjepa2_ac` (bit-exact;
    dropped keys such as ``pos_embed`` are not restored)."""
    out_dir = Path(out_dir)
    config = json.loads((out_dir / "checkpoint" / "config.json").read_text())
    imported = config.get("training", {}).get("imported")
    if not imported or imported.get("format") != IMPORT_FORMAT:
        raise VJEPA2ACFormatError(f"{out_dir / 'checkpoint'} was not written by convert_vjepa2_ac")
    arch = ACArchitecture(**imported["architecture"])
    encoder = encoder_from_hf(load_file(str(out_dir / "encoder" / "model.safetensors")), arch)
    ours = load_file(str(out_dir / "checkpoint" / WEIGHTS))
    unused_path = out_dir / "checkpoint" / UNUSED_WEIGHTS
    unused = load_file(str(unused_path)) if unused_path.is_file() else {}
    merged = {**ours, **unused}
    predictor = {k: merged[k] for k in expected_predictor_shapes(arch)}
    return {"encoder": encoder, "predictor": predictor}


# ----------------------------------------------------------------------------- planning


def _euler_xyz_to_matrix(angles: Tensor) -> Tensor:
    """Extrinsic x-y-z Euler angles ``[..., 3]`` -> rotation matrices ``[..., 3, 3]``
    (``Rz @ Ry @ Rx``; scipy's ``Rotation.from_euler("xyz", ...)``)."""
    cx, cy, cz = angles.cos().unbind(-1)
    sx, sy, sz = angles.sin().unbind(-1)
    rows = [
        cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx,
        sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx,
        -sy, cy * sx, cy * cx,
    ]
    return torch.stack(rows, -1).unflatten(-1, (3, 3))


def _matrix_to_euler_xyz(matrix: Tensor) -> Tensor:
    """Inverse of :func:`_euler_xyz_to_matrix` (pitch in [-pi/2, pi/2])."""
    pitch = torch.asin((-matrix[..., 2, 0]).clamp(-1.0, 1.0))
    roll = torch.atan2(matrix[..., 2, 1], matrix[..., 2, 2])
    yaw = torch.atan2(matrix[..., 1, 0], matrix[..., 0, 0])
    return torch.stack((roll, pitch, yaw), -1)


def droid_next_state(state: Tensor, action: Tensor) -> Tensor:
    """V-JEPA 2-AC's kinematic state update (``compute_new_pose`` of its released
    planner), in torch and batched: ``xyz + dxyz``; orientation ``R(d_euler) @ R(euler)``
    back to extrinsic xyz Euler; gripper ``clip(g + dg, 0, 1)``. ``[B, 7], [B, 7] -> [B, 7]``;
    computed in float64 and returned in ``state``'s dtype."""
    if state.shape[-1] != 7 or action.shape[-1] != 7:
        raise ValueError(f"droid_next_state takes 7-D states and actions, got {tuple(state.shape)}, {tuple(action.shape)}")
    s, a = state.double(), action.double()
    rotation = _euler_xyz_to_matrix(a[..., 3:6]) @ _euler_xyz_to_matrix(s[..., 3:6])
    nxt = torch.cat((s[..., :3] + a[..., :3], _matrix_to_euler_xyz(rotation),
                     (s[..., 6:] + a[..., 6:]).clamp(0.0, 1.0)), -1)
    return nxt.to(state.dtype)


# ----------------------------------------------------------------------------- CLI


def run_import(config) -> int:
    """``jepa-robot import-vjepa2-ac``: convert, then reload both parts through the
    ordinary loaders (and run them once on a blank frame) when ``config.check``."""
    result = convert_vjepa2_ac(
        config.checkpoint,
        config.out_dir,
        image_size=config.image_size,
        num_frames=config.num_frames,
        encoder_heads=config.encoder_heads,
        predictor_heads=config.predictor_heads,
        strict=config.strict,
        overwrite=config.overwrite,
    )
    arch = result.architecture
    print(
        f"imported {config.checkpoint}: encoder ViT {arch.encoder_depth}x{arch.encoder_dim} "
        f"({arch.image_size} px, {arch.num_tokens} tokens) -> {result.encoder_dir}; predictor "
        f"{arch.predictor_depth}x{arch.predictor_dim} ({arch.action_dim}-D actions/states, "
        f"{arch.max_steps} steps max) -> {result.checkpoint_dir}"
        + (f"; not converted: {list(result.dropped_keys)}" if result.dropped_keys else "")
    )
    if config.check:
        from jepa_robot.world_model.checkpoint import read_checkpoint_config
        from jepa_robot.world_model.encoders import load_encoder_from_reference
        from jepa_robot.world_model.model import encoder_reference_for

        saved = read_checkpoint_config(result.checkpoint_dir)
        encoder = load_encoder_from_reference(encoder_reference_for(result.checkpoint_dir, saved), device="cpu")
        loaded = load_checkpoint(result.checkpoint_dir, encoder_reference=encoder.reference())
        frame = torch.full((1, arch.image_size, arch.image_size, 3), 128, dtype=torch.uint8)
        with torch.no_grad():
            latent = encoder.encode(frame)[:, None]
            zeros = torch.zeros(1, 1, arch.action_dim)
            predicted, _ = loaded.predictor(latent, zeros, zeros)
        if not bool(torch.isfinite(predicted).all()):
            raise ValueError(f"{result.out_dir}: the imported model produced non-finite latents")
        print(f"check: reloaded both and predicted {tuple(predicted.shape)} latents from a grey frame")
    return 0

