"""Importing Meta's V-JEPA 2-AC checkpoint format (jepa_robot.world_model.vjepa2_ac).

Every test builds a small randomly initialised model in the official key layout
(``{"encoder": ..., "predictor": ...}`` with DDP prefixes, saved with torch.save) in a
temporary directory; nothing is downloaded. The expected outputs come from a direct,
functional re-implementation of Meta's ``VisionTransformer`` / ``VisionTransformerPredictorAC``
forward passes written here from the official state dicts (quirky RoPE included).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from safetensors.torch import load_file
from scipy.spatial.transform import Rotation

from jepa_robot.cli import main
from jepa_robot.world_model.checkpoint import CheckpointError, load_checkpoint
from jepa_robot.world_model.encoders import IMAGENET_MEAN, IMAGENET_STD, PREPROCESSING_CONFIG_KEY, load_encoder
from jepa_robot.world_model.model import WorldModel
from jepa_robot.world_model.predictor import ACPredictor, PredictorConfig
from jepa_robot.world_model.vjepa2_ac import (
    UNUSED_WEIGHTS,
    ACArchitecture,
    VJEPA2ACFormatError,
    convert_vjepa2_ac,
    droid_next_state,
    expected_encoder_shapes,
    expected_predictor_shapes,
    export_official,
)
from planners import ActionBounds, make_energy, make_planner

CONFIGS = Path(__file__).resolve().parents[3] / "configs"

# head width 26: RoPE axes of 8 channels (4 frequencies, so the quirk shows) + 2 unrotated
ARCH = ACArchitecture(
    image_size=32, patch_size=8, tubelet_size=2, num_frames=8,
    encoder_dim=52, encoder_depth=2, encoder_heads=2, encoder_mlp_hidden=104,
    predictor_dim=52, predictor_depth=2, predictor_heads=2, predictor_mlp_hidden=208,
    action_dim=7,
)
HEADS = {"encoder_heads": ARCH.encoder_heads, "predictor_heads": ARCH.predictor_heads}
SIZES = {"image_size": ARCH.image_size, "num_frames": ARCH.num_frames, **HEADS}


# ----------------------------------------------------------------------------- fixtures


def random_state(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """Random tensors for every key: LayerNorm scales around 1, everything else around 0
    (biases included, so a misplaced bias shows)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        noise = torch.randn(shape, generator=generator)
        is_norm_scale = key.endswith("weight") and len(shape) == 1
        state[key] = 1.0 + 0.1 * noise if is_norm_scale else 0.1 * noise
    return state


def official_states(seed: int = 0) -> tuple[dict, dict]:
    return (random_state(expected_encoder_shapes(ARCH), seed),
            random_state(expected_predictor_shapes(ARCH), seed + 1))


def write_official(path: Path, encoder: dict, predictor: dict, **extra) -> Path:
    """torch.save in the published layout: DDP-wrapped keys (``module.backbone.`` on the
    encoder, ``module.`` on the predictor) plus training leftovers."""
    torch.save(
        {
            "encoder": {f"module.backbone.{k}": v for k, v in encoder.items()},
            "predictor": {f"module.{k}": v for k, v in predictor.items()},
            "epoch": 315,
            **extra,
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("vjepa2_ac")
    encoder, predictor = official_states()
    source = write_official(root / "vjepa2-ac-small.pt", encoder, predictor)
    result = convert_vjepa2_ac(source, root / "model", **SIZES)
    return result, encoder, predictor, source


# ----------------------------------------------------------------------------- reference


def ref_rotate(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Meta's ``rotate_queries_or_keys``: frequencies tiled by ``repeat`` (the quirk)."""
    d = x.shape[-1]
    omega = torch.arange(d // 2, dtype=x.dtype) / (d / 2.0)
    omega = 1.0 / 10000**omega
    freq = pos.to(x.dtype)[:, None] * omega
    sin, cos = freq.sin().repeat(1, 2), freq.cos().repeat(1, 2)
    pairs = x.unflatten(-1, (-1, 2))
    swapped = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return x * cos + swapped * sin


def ref_rope(q: torch.Tensor, t: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    d = 2 * ((q.shape[-1] // 3) // 2)
    return torch.cat([ref_rotate(q[..., :d], t), ref_rotate(q[..., d : 2 * d], h),
                      ref_rotate(q[..., 2 * d : 3 * d], w), q[..., 3 * d :]], dim=-1)


def ref_time_only(q: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    d = 2 * ((q.shape[-1] // 3) // 2)
    return torch.cat([ref_rotate(q[..., :d], t), q[..., d:]], dim=-1)


def ln(x, sd, name, dim):
    return F.layer_norm(x, (dim,), sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-6)


def lin(x, sd, name):
    return F.linear(x, sd[f"{name}.weight"], sd[f"{name}.bias"])


def attend(q, k, v, allowed=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    return scores.softmax(-1) @ v


def mlp(x, sd, prefix):
    return lin(F.gelu(lin(x, sd, f"{prefix}.fc1")), sd, f"{prefix}.fc2")


def ref_encoder(sd: dict, pixels: torch.Tensor) -> torch.Tensor:
    """Meta's RoPE ViT on ``pixels [B, 3, H, W]`` repeated over the tubelet -> [B, N, D]."""
    clip = pixels.unsqueeze(2).repeat(1, 1, ARCH.tubelet_size, 1, 1)  # [B, C, T, H, W]
    x = F.conv3d(clip, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"],
                 stride=(ARCH.tubelet_size, ARCH.patch_size, ARCH.patch_size))
    x = x.flatten(2).transpose(1, 2)
    b, n, d = x.shape
    heads = ARCH.encoder_heads
    ids = torch.arange(n)
    t, h, w = ids // ARCH.num_tokens, (ids % ARCH.num_tokens) // ARCH.grid, ids % ARCH.grid
    for i in range(ARCH.encoder_depth):
        p = f"blocks.{i}"
        y = ln(x, sd, f"{p}.norm1", d)
        q, k, v = lin(y, sd, f"{p}.attn.qkv").unflatten(-1, (3, heads, -1)).permute(2, 0, 3, 1, 4)
        y = attend(ref_rope(q, t, h, w), ref_rope(k, t, h, w), v).transpose(1, 2).reshape(b, n, d)
        x = x + lin(y, sd, f"{p}.attn.proj")
        x = x + mlp(ln(x, sd, f"{p}.norm2", d), sd, f"{p}.mlp")
    return ln(x, sd, "norm", d)


def ref_predictor(sd: dict, latents, actions, states) -> torch.Tensor:
    """Meta's VisionTransformerPredictorAC.forward: latents [B, T*N, D] -> [B, T*N, D]
    (``predictor_proj`` output, no final layer norm)."""
    b, tn, _ = latents.shape
    n, heads, dim = ARCH.num_tokens, ARCH.predictor_heads, ARCH.predictor_dim
    steps = tn // n
    x = lin(latents, sd, "predictor_embed").view(b, steps, n, dim)
    a = lin(actions, sd, "action_encoder").unsqueeze(2)
    s = lin(states, sd, "state_encoder").unsqueeze(2)
    x = torch.cat([a, s, x], dim=2).flatten(1, 2)  # [B, T * (2 + N), P]
    k_per = n + 2
    block = torch.arange(steps * k_per) // k_per
    allowed = block[None, :] <= block[:, None]
    ids = torch.arange(steps * n)
    t, h, w = ids // n, (ids % n) // ARCH.grid, ids % ARCH.grid
    tt = torch.arange(steps)
    for i in range(ARCH.predictor_depth):
        p = f"predictor_blocks.{i}"
        y = ln(x, sd, f"{p}.norm1", dim).view(b, steps, k_per, dim)
        # conditioning tokens: own qkv, time-only rotation (as ACRoPEAttention)
        cond = []
        for j in range(2):
            q, k, v = lin(y[:, :, j], sd, f"{p}.attn.qkv").unflatten(-1, (3, heads, -1)).permute(2, 0, 3, 1, 4)
            cond.append((ref_time_only(q, tt), ref_time_only(k, tt), v))
        q, k, v = lin(y[:, :, 2:].flatten(1, 2), sd, f"{p}.attn.qkv").unflatten(-1, (3, heads, -1)).permute(2, 0, 3, 1, 4)
        frames = (ref_rope(q, t, h, w), ref_rope(k, t, h, w), v)

        def merge(idx, frames=frames, cond=cond):
            parts = [c[idx].unsqueeze(3) for c in cond]  # [B, heads, T, 1, hd]
            f = frames[idx].unflatten(2, (steps, n))
            return torch.cat([*parts, f], dim=3).flatten(2, 3)

        out = attend(merge(0), merge(1), merge(2), allowed)
        x = x + lin(out.transpose(1, 2).reshape(b, steps * k_per, dim), sd, f"{p}.attn.proj")
        x = x + mlp(ln(x, sd, f"{p}.norm2", dim), sd, f"{p}.mlp")
    x = x.view(b, steps, k_per, dim)[:, :, 2:].flatten(1, 2)
    return lin(ln(x, sd, "predictor_norm", dim), sd, "predictor_proj")


def inputs(steps: int, batch: int = 2, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    latents = F.layer_norm(torch.randn(batch, steps, ARCH.num_tokens, ARCH.encoder_dim, generator=g),
                           (ARCH.encoder_dim,))
    actions = 0.05 * torch.randn(batch, steps, 7, generator=g)
    states = torch.rand(batch, steps, 7, generator=g)
    return latents, actions, states


# ----------------------------------------------------------------------------- conversion


def test_written_layout_and_metadata(imported):
    result, _, _, source = imported
    assert sorted(p.name for p in result.out_dir.iterdir()) == ["checkpoint", "encoder"]
    assert not list(result.out_dir.parent.glob(".model.tmp-*"))
    config = json.loads((result.checkpoint_dir / "config.json").read_text())
    predictor = config["predictor"]
    assert predictor["rope_reference_quirk"] is True and predictor["predict_state"] is False
    assert (predictor["latent_dim"], predictor["num_tokens"], predictor["action_dim"], predictor["state_dim"],
            predictor["hidden_dim"], predictor["depth"], predictor["heads"], predictor["max_steps"]) == (
        52, 16, 7, 7, 52, 2, 2, 4)
    assert config["data"]["frameskip"] == 1 and len(config["data"]["action_names"]) == 7
    assert config["encoder"]["source"] == "../encoder" and config["encoder"]["resize_ratio"] == 1.0
    assert config["encoder"]["preprocessing"] == "crop_resize" and config["encoder"]["interpolation"] == "bilinear"
    encoder_config = json.loads((result.encoder_dir / "config.json").read_text())
    assert encoder_config[PREPROCESSING_CONFIG_KEY] == "crop_resize"
    stats = json.loads((result.checkpoint_dir / "stats.json").read_text())
    assert stats == {k: {"mean": [0.0] * 7, "std": [1.0] * 7} for k in ("action", "state")}
    imported_meta = config["training"]["imported"]
    assert imported_meta["file_name"] == source.name and len(imported_meta["file_sha256"]) == 64
    assert set(load_file(str(result.checkpoint_dir / UNUSED_WEIGHTS))) == {
        "extrinsics_encoder.weight", "extrinsics_encoder.bias"}


def test_predictor_matches_reference_forward(imported):
    result, _, predictor_sd, _ = imported
    encoder = load_encoder(result.encoder_dir, device="cpu")
    model = load_checkpoint(result.checkpoint_dir, encoder_reference=encoder.reference()).predictor
    latents, actions, states = inputs(steps=3)
    with torch.no_grad():
        ours, next_states = model(latents, actions, states)
        expected = ref_predictor(predictor_sd, latents.flatten(1, 2), actions, states)
        pre_norm = []
        hook = model.predictor_proj.register_forward_hook(lambda m, i, o: pre_norm.append(o))
        model(latents, actions, states)
        hook.remove()
    assert next_states is None  # no state head: Meta's model has none
    assert (pre_norm[0].flatten(1, 2) - expected).abs().max() < 2e-5
    normed = F.layer_norm(expected, (ARCH.encoder_dim,)).view_as(ours)
    assert (ours - normed).abs().max() < 1e-4
    # the quirk matters: the same weights with proper RoPE give other outputs
    proper = ACPredictor(PredictorConfig.from_dict({**model.config.to_dict(), "rope_reference_quirk": False}))
    proper.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert (proper(latents, actions, states)[0] - ours).abs().max() > 1e-3


def test_rollout_matches_reference_planner_loop(imported):
    """KV-cached rollout with the kinematic state update == Meta's planner loop (rerun the
    predictor on the whole sequence, layer-norm the last frame, compute_new_pose)."""
    result, _, predictor_sd, _ = imported
    model = load_checkpoint(result.checkpoint_dir).predictor
    latents, _, states = inputs(steps=1, batch=1)
    g = torch.Generator().manual_seed(5)
    horizon, candidates = 3, 4
    actions = 0.05 * torch.randn(candidates, horizon, 7, generator=g)
    with torch.no_grad():
        ours, ours_states = model.rollout(latents, states, actions, next_state_fn=droid_next_state)
        z, s = latents.repeat(candidates, 1, 1, 1), states.repeat(candidates, 1, 1)
        for h in range(horizon):
            out = ref_predictor(predictor_sd, z.flatten(1, 2), actions[:, : h + 1], s)[:, -ARCH.num_tokens :]
            z = torch.cat([z, F.layer_norm(out, (ARCH.encoder_dim,))[:, None]], dim=1)
            s = torch.cat([s, torch.from_numpy(compute_new_pose(s[:, -1].numpy(), actions[:, h].numpy()))[:, None]], 1)
    assert (ours - z[:, 1:]).abs().max() < 1e-4
    assert (ours_states - s[:, 1:]).abs().max() < 1e-5


def test_encoder_latents_match_reference(imported):
    result, encoder_sd, _, _ = imported
    encoder = load_encoder(result.encoder_dir, device="cpu")
    frames = torch.randint(0, 256, (3, ARCH.image_size, ARCH.image_size, 3), generator=torch.Generator().manual_seed(1),
                           dtype=torch.uint8)
    pixels = encoder.preprocess(frames)
    with torch.no_grad():
        expected = ref_encoder(encoder_sd, pixels)
        clip = pixels.unsqueeze(1).repeat(1, ARCH.tubelet_size, 1, 1, 1)
        raw = encoder.model.encoder(pixel_values_videos=clip).last_hidden_state
        latents = encoder.encode(frames)
    assert (raw - expected).abs().max() < 2e-5
    assert (latents - F.layer_norm(expected, (ARCH.encoder_dim,))).abs().max() < 1e-4
    # a uint8 frame at the model size is just scaled and normalised
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    direct = (frames.permute(0, 3, 1, 2).float() / 255 - mean[:, None, None]) / std[:, None, None]
    assert torch.allclose(pixels, direct, atol=1e-6)


def meta_ac_transform(frames: np.ndarray, crop: int) -> torch.Tensor:
    """Meta's V-JEPA 2-AC planning transform from its description: uint8 frames as float
    0-255, the centre square (offsets rounded down), bilinear ``F.interpolate`` to
    ``crop x crop`` (``align_corners=False``, no antialias), ImageNet mean/std x 255."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    h, w = x.shape[-2:]
    side = min(h, w)
    x = x[:, :, (h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]
    x = F.interpolate(x, size=(crop, crop), mode="bilinear", align_corners=False, antialias=False)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - 255.0 * mean) / (255.0 * std)


@pytest.mark.parametrize("shape", [(480, 640), (256, 256), (300, 200)])
def test_imported_encoder_prepares_any_frame_as_meta_does(imported, shape):
    """load_encoder(dir) and WorldModel.load pick up Meta's transform with no arguments:
    pixels and latents equal those of Meta's transform for a camera-sized frame too."""
    result, encoder_sd, _, _ = imported
    frames = torch.randint(0, 256, (2, *shape, 3), generator=torch.Generator().manual_seed(4),
                           dtype=torch.uint8).numpy()
    reference = meta_ac_transform(frames, ARCH.image_size)
    encoder = load_encoder(result.encoder_dir, device="cpu")
    assert encoder.preprocessing == "crop_resize"
    assert (encoder.preprocess(frames) - reference).abs().max() < 2e-6
    latents = encoder.encode(frames)
    with torch.no_grad():
        clip = reference.unsqueeze(1).repeat(1, ARCH.tubelet_size, 1, 1, 1)
        same_model = F.layer_norm(encoder.model.encoder(pixel_values_videos=clip).last_hidden_state, (ARCH.encoder_dim,))
        meta_model = F.layer_norm(ref_encoder(encoder_sd, reference), (ARCH.encoder_dim,))
    assert (latents - same_model).abs().max() < 1e-5
    assert (latents - meta_model).abs().max() < 1e-4
    world = WorldModel.load(result.checkpoint_dir)
    assert world.encoder.preprocessing == "crop_resize"
    assert torch.equal(world.encode(frames), latents)
    # the resize-and-crop the import used before differs on a camera frame
    if shape == (480, 640):
        old = load_encoder(result.encoder_dir, device="cpu", preprocessing="resize_crop", resize_ratio=1.0)
        assert (old.preprocess(frames) - reference).abs().max() > 0.1


def test_checkpoint_refuses_an_encoder_in_another_preprocessing_mode(imported):
    result = imported[0]
    other = load_encoder(result.encoder_dir, device="cpu", preprocessing="resize_crop", resize_ratio=1.0)
    with pytest.raises(CheckpointError, match=r"preprocessing: checkpoint 'crop_resize' vs encoder None"):
        load_checkpoint(result.checkpoint_dir, encoder_reference=other.reference())
    load_checkpoint(result.checkpoint_dir, encoder_reference=load_encoder(result.encoder_dir).reference())


def test_round_trip_of_keys_is_exact(imported):
    result, encoder_sd, predictor_sd, _ = imported
    exported = export_official(result.out_dir)
    for name, original in (("encoder", encoder_sd), ("predictor", predictor_sd)):
        assert list(exported[name]) == list(original)
        for key, value in original.items():
            assert torch.equal(exported[name][key], value), key


def test_world_model_loads_the_import(imported):
    result = imported[0]
    world = WorldModel.load(result.checkpoint_dir)
    assert world.frameskip == 1 and world.env_action_dim == 7 and world.image_size == ARCH.image_size
    frame = np.full((1, ARCH.image_size, ARCH.image_size, 3), 100, dtype=np.uint8)
    assert world.encode(frame).shape == (1, 16, 52)


# ----------------------------------------------------------------------------- errors


def _convert_expecting(tmp_path, encoder, predictor, match, **kwargs):
    source = write_official(tmp_path / "bad.pt", encoder, predictor)
    with pytest.raises(VJEPA2ACFormatError, match=match):
        convert_vjepa2_ac(source, tmp_path / "out", **{**SIZES, **kwargs})
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_missing_key_is_named(tmp_path):
    encoder, predictor = official_states()
    del predictor["predictor_blocks.1.mlp.fc2.bias"]
    _convert_expecting(tmp_path, encoder, predictor, r"\[predictor\]: missing keys \['predictor_blocks\.1\.mlp\.fc2\.bias'\]")


def test_shape_mismatch_is_named(tmp_path):
    encoder, predictor = official_states()
    encoder["blocks.1.attn.qkv.weight"] = encoder["blocks.1.attn.qkv.weight"][:-1]
    _convert_expecting(tmp_path, encoder, predictor,
                       r"\[encoder\]: shape mismatch \['blocks\.1\.attn\.qkv\.weight': \[155, 52\] in the file, \[156, 52\]")


def test_unexpected_key_is_named_unless_not_strict(tmp_path):
    encoder, predictor = official_states()
    predictor["mask_tokens.0"] = torch.zeros(1, 1, 52)
    _convert_expecting(tmp_path, encoder, predictor, r"unexpected keys \['mask_tokens\.0'\]")
    result = convert_vjepa2_ac(tmp_path / "bad.pt", tmp_path / "out", strict=False, **SIZES)
    assert result.dropped_keys == ("mask_tokens.0",)


def test_missing_entry_and_unknown_heads_are_named(tmp_path):
    encoder, predictor = official_states()
    path = tmp_path / "encoder_only.pt"
    torch.save({"encoder": encoder, "target_encoder": encoder}, path)
    with pytest.raises(VJEPA2ACFormatError, match=r"no 'predictor' entry \(top-level keys: \['encoder', 'target_encoder'\]\)"):
        convert_vjepa2_ac(path, tmp_path / "out", **SIZES)
    source = write_official(tmp_path / "ok.pt", encoder, predictor)
    with pytest.raises(VJEPA2ACFormatError, match="52-wide encoder .* pass encoder_heads"):
        convert_vjepa2_ac(source, tmp_path / "out", image_size=32, num_frames=8)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        convert_vjepa2_ac(tmp_path / "nope.pt", tmp_path / "out", **SIZES)


def test_pos_embed_is_dropped_and_out_dir_not_overwritten(tmp_path):
    encoder, predictor = official_states()
    encoder["pos_embed"] = torch.zeros(1, 64, 52)
    source = write_official(tmp_path / "with_pos.pt", encoder, predictor)
    result = convert_vjepa2_ac(source, tmp_path / "out", **SIZES)
    assert result.dropped_keys == ("pos_embed",)
    with pytest.raises(FileExistsError, match="overwrite"):
        convert_vjepa2_ac(source, tmp_path / "out", **SIZES)
    convert_vjepa2_ac(source, tmp_path / "out", overwrite=True, **SIZES)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# ----------------------------------------------------------------------------- config, planning


def test_rope_quirk_field_is_saved_and_old_configs_load():
    base = {"latent_dim": 8, "num_tokens": 4, "action_dim": 2, "state_dim": 2, "hidden_dim": 12, "heads": 2,
            "depth": 1}
    old = PredictorConfig.from_dict(base)  # a config.json written before the field existed
    assert old.rope_reference_quirk is False
    quirky = PredictorConfig(**base, rope_reference_quirk=True)
    assert PredictorConfig.from_dict(json.loads(json.dumps(quirky.to_dict()))).rope_reference_quirk is True
    with pytest.raises(ValueError, match="rope_reference_quirk must be a bool"):
        PredictorConfig(**base, rope_reference_quirk="yes")
    assert ACPredictor(quirky).rope_cos.shape[-1] == 6 and ACPredictor(old).rope_cos.shape[-1] == 3


def compute_new_pose(pose: np.ndarray, action: np.ndarray) -> np.ndarray:
    """Meta's ``compute_new_pose`` (notebooks/utils/mpc_utils.py) with scipy, [B, 7]."""
    xyz = pose[:, :3] + action[:, :3]
    angles = np.stack([
        Rotation.from_matrix(Rotation.from_euler("xyz", d).as_matrix() @ Rotation.from_euler("xyz", t).as_matrix())
        .as_euler("xyz")
        for t, d in zip(pose[:, 3:6], action[:, 3:6], strict=True)
    ])
    return np.concatenate([xyz, angles, np.clip(pose[:, -1:] + action[:, -1:], 0, 1)], axis=-1).astype(pose.dtype)


def test_droid_next_state_matches_meta_compute_new_pose():
    g = torch.Generator().manual_seed(0)
    pose = torch.cat([torch.randn(64, 3, generator=g), (torch.rand(64, 3, generator=g) - 0.5) * 2.8,
                      torch.rand(64, 1, generator=g)], 1).double()
    action = torch.cat([0.1 * torch.randn(64, 3, generator=g), 0.3 * torch.randn(64, 3, generator=g),
                        torch.randn(64, 1, generator=g)], 1).double()
    expected = torch.from_numpy(compute_new_pose(pose.numpy(), action.numpy()))
    assert (droid_next_state(pose, action) - expected).abs().max() < 1e-9
    with pytest.raises(ValueError, match="7-D"):
        droid_next_state(pose[:, :4], action[:, :4])


def test_cli_import_then_plan_with_the_paper_planner(tmp_path):
    encoder, predictor = official_states(seed=7)
    source = write_official(tmp_path / "vjepa2-ac.pt", encoder, predictor)
    out = tmp_path / "imported"
    args = ["import-vjepa2-ac", f"checkpoint={source}", f"out_dir={out}", "image_size=32", "num_frames=8",
            "encoder_heads=2", "predictor_heads=2"]
    assert main(args) == 0
    assert main(args) == 2  # exists: refused without overwrite=true
    assert main([*args, "overwrite=true", "check=false"]) == 0

    world = WorldModel.load(out / "checkpoint")
    paper = OmegaConf.to_container(OmegaConf.load(CONFIGS / "planner" / "vjepa2_ac_paper.yaml"))
    assert paper["name"] == "cem" and paper["options"]["samples"] == 800 and paper["options"]["horizon"] == 1
    planner = make_planner(paper["name"], action_dim=7, bounds=ActionBounds(**paper["bounds"]),
                           energy=make_energy(paper["energy"], steps=paper["energy_steps"]), **paper["options"])
    g = torch.Generator().manual_seed(2)
    frames = torch.randint(0, 256, (2, 32, 32, 3), generator=g, dtype=torch.uint8).numpy()
    latents = world.encode(frames)
    state = torch.tensor([[0.5, 0.0, 0.3, 3.1, 0.0, 0.2, 0.0]])

    context = world.context(latents[:1], state, None, action_repeat=False)

    def rollout(actions):
        return world.rollout(context, actions, action_repeat=False)

    result = planner.plan(rollout, latents[1])
    action = result.first_action[0]
    assert result.iterations == 10 and result.actions.shape == (1, 1, 7)
    assert torch.all(action[3:6] == 0) and action[:3].abs().sum() <= 0.075 + 1e-6 and action[6].abs() <= 0.75
    assert result.energy_history[-1, 0] <= result.energy_history[0, 0]


def test_the_mpc_agent_plans_with_the_import_and_the_paper_planner(imported):
    """The whole path a user takes: WorldModel.load -> MPCAgent with planner=vjepa2_ac_paper;
    the state is rolled forward with the checkpoint's named DROID pose update."""
    from jepa_robot.agent import MPCAgent
    from jepa_robot.config import to_schema
    from jepa_robot.config.planning import AgentConfig, PlannerSettings

    world = WorldModel.load(imported[0].checkpoint_dir)
    settings = to_schema(OmegaConf.load(CONFIGS / "planner" / "vjepa2_ac_paper.yaml"), PlannerSettings)
    settings.options = {**settings.options, "samples": 32, "iterations": 3}  # the paper's 800x10, smaller
    agent = MPCAgent.from_settings(world, settings, AgentConfig())
    size = ARCH.image_size
    g = torch.Generator().manual_seed(3)
    frames = torch.randint(0, 256, (2, size, size, 3), generator=g, dtype=torch.uint8).numpy()
    agent.reset([frames[1]])
    observation = {"images": {world.cameras[0]: frames[0]},
                   "state": np.array([0.5, 0.0, 0.3, 3.1, 0.0, 0.2, 0.0], np.float32)}
    action = agent.act(observation)
    assert action.shape == (7,) and np.all(action[3:6] == 0)
    assert np.abs(action[:3]).sum() <= 0.075 + 1e-6 and abs(action[6]) <= 0.75
    assert len(agent.replans) == 1 and np.isfinite(agent.replans[0].energy)


def test_the_franka_config_for_the_paper_setup_composes():
    """robot=franka_vjepa2_ac + planner=vjepa2_ac_paper: 7-D DROID actions as pose targets,
    one action unit = one metre per step, the paper's 0.075 m step within the speed limit."""
    from jepa_robot.config import compose
    from jepa_robot.config.robot import RunRobotConfig

    config = compose("run-robot", ["checkpoint=x", "robot=franka_vjepa2_ac", "planner=vjepa2_ac_paper"],
                     RunRobotConfig)
    robot = config.robot
    assert robot.action_layout == "droid7" and len(robot.action_names) == 7
    assert robot.command_mode == "pose" and robot.image_size == 256
    assert all(scale == robot.rate_hz for scale in robot.action_scale)
    step = config.planner.bounds.move_radius
    assert step == 0.075 and step * robot.rate_hz <= robot.safety.max_linear_speed
    assert robot.cameras[0].topic.endswith("compressed")  # franka_servo's camera topic
    # run-robot refuses a robot without the camera the imported model sees
    from envs.recording import IMAGE_KEY_PREFIX
    from jepa_robot.world_model.vjepa2_ac import DROID_IMAGE_KEY

    assert [camera.name for camera in robot.cameras] == [DROID_IMAGE_KEY.removeprefix(IMAGE_KEY_PREFIX)]
    # DROID's gripper state (0 open, 1 closed) from the finger joints' sum (0.08 m open)
    gripper = robot.gripper
    assert gripper.state_offset + gripper.state_scale * 0.08 == pytest.approx(0.0)
    assert gripper.state_offset + gripper.state_scale * 0.0 == pytest.approx(1.0)
