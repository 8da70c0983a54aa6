"""Parity of the V-JEPA 2-AC import against Meta's own code (a dev script, not a test).

    uv run python benchmarks/vjepa2_ac_parity.py REF
    uv run python benchmarks/vjepa2_ac_parity.py REF --size full   # ViT-g + 24x1024

REF is a checkout of facebookresearch/vjepa2 (never vendored here). The script builds
Meta's ``VisionTransformer`` (RoPE ViT, the hub's kwargs) and
``VisionTransformerPredictorAC`` from REF with random weights (Meta's init, then every
parameter perturbed so biases and norms are not trivially 0/1), saves them the way the
published ``vjepa2-ac-vitg.pt`` is laid out (DDP key prefixes), checks Meta's hub loader
reads that file (``_clean_backbone_key`` + ``load_state_dict(strict=True)``), converts it
with :func:`jepa_robot.world_model.vjepa2_ac.convert_vjepa2_ac`, and compares in fp32 on CPU:

* encoder: Meta's ``encoder(clip)`` vs transformers' ``VJEPA2Model.encoder`` as loaded by
  :func:`jepa_robot.world_model.encoders.load_encoder` (raw last hidden state, and the layer-normed
  latents ``VJEPA2Encoder.encode`` returns vs ``F.layer_norm`` of Meta's);
* preprocessing: Meta's planning transform (``app/vjepa_droid/transforms.py: make_transforms``
  with the settings of ``notebooks/energy_landscape_example.ipynb``: scale and aspect ratio 1,
  no flip, crop 256) vs ``VJEPA2Encoder.preprocess`` of the imported encoder loaded with no
  arguments, on 480x640 (a robot camera), 256x256 and 300x200 uint8 frames; and end to end,
  ``encode(frames)`` vs Meta's encoder on Meta's transformed frames;
* predictor: Meta's ``predictor(z, actions, states)`` on T steps vs our
  :class:`ACPredictor` (its ``predictor_proj`` output, and the layer-normed output);
* planning rollout: Meta's planner step (``world_model_wrapper.step_predictor``: rerun the
  predictor on the whole sequence, layer-norm the last frame, ``compute_new_pose``) vs our
  KV-cached ``rollout`` with ``droid_next_state``.

``--size small`` (default) keeps the published token geometry and head width (256 px,
16x16 patches, 64-frame clips, head dim 64 so RoPE axes of 20 channels + 4 unrotated) with
2 heads and 2 layers; ``--size full`` is the published architecture (ViT-g 40x1408 and the
24x1024 predictor; ~10 GB of RAM, minutes on CPU). REF's only missing dependency here is
timm, used for stochastic depth (``drop_path``), which these models never run at
drop_path_rate 0: if timm is not importable a stub that raises on use is installed.
Meta's transform needs torchvision and pillow (installed with the project's torch stack).
Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import types
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from jepa_robot.world_model.checkpoint import load_checkpoint
from jepa_robot.world_model.encoders import load_encoder
from jepa_robot.world_model.vjepa2_ac import convert_vjepa2_ac, droid_next_state

SIZES = {
    "small": {"encoder": dict(embed_dim=128, depth=2, num_heads=2, mlp_ratio=48 / 11),
              "predictor": dict(predictor_embed_dim=128, depth=2, num_heads=2)},
    "full": {"encoder": dict(embed_dim=1408, depth=40, num_heads=22, mlp_ratio=48 / 11),
             "predictor": dict(predictor_embed_dim=1024, depth=24, num_heads=16)},
}


def import_reference(ref: Path):
    if not (ref / "src" / "models" / "ac_predictor.py").is_file():
        raise SystemExit(f"{ref} is not a facebookresearch/vjepa2 checkout (no src/models/ac_predictor.py)")
    try:
        import timm.models.layers  # noqa: F401
        stubbed = False
    except ImportError:
        def drop_path(x, drop_prob=0.0, training=False):
            raise RuntimeError("timm stub: drop_path is not available (drop_path_rate must be 0)")

        for name in ("timm", "timm.models", "timm.models.layers"):
            sys.modules[name] = types.ModuleType(name)
        sys.modules["timm.models.layers"].drop_path = drop_path
        stubbed = True
    sys.path.insert(0, str(ref))
    from app.vjepa_droid.transforms import make_transforms  # noqa: PLC0415  (REF's AC frame transform)
    from notebooks.utils import mpc_utils  # noqa: PLC0415  (REF's released planner helpers)
    from src.hub.backbones import _clean_backbone_key  # noqa: PLC0415
    from src.models import ac_predictor, vision_transformer  # noqa: PLC0415

    if stubbed:  # REF's modules hold the stub's drop_path; take it out of sight of other packages
        for name in ("timm.models.layers", "timm.models", "timm"):
            del sys.modules[name]
    return vision_transformer, ac_predictor, _clean_backbone_key, mpc_utils, make_transforms, stubbed


FRAME_SHAPES = [(480, 640), (256, 256), (300, 200)]
"""Camera frame sizes for the preprocessing check: a robot camera, the model size, a portrait frame."""


def meta_planning_transform(make_transforms, crop_size: int):
    """REF's transform exactly as its AC planning demo builds it
    (``notebooks/energy_landscape_example.ipynb``, used by ``world_model_wrapper.WorldModel``)."""
    transform = make_transforms(random_horizontal_flip=False, random_resize_aspect_ratio=(1.0, 1.0),
                                random_resize_scale=(1.0, 1.0), reprob=0.0, auto_augment=False,
                                motion_shift=False, crop_size=crop_size)

    def apply(frames: torch.Tensor) -> torch.Tensor:
        """uint8 [T, H, W, 3] -> normalised [T, 3, crop, crop] (REF returns [3, T, crop, crop])."""
        return transform(frames.numpy()).permute(1, 0, 2, 3)

    return apply


def perturb(model: nn.Module, generator: torch.Generator, scale: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ref", type=Path, help="facebookresearch/vjepa2 checkout")
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--steps", type=int, default=4, help="time steps T of the predictor input")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--candidates", type=int, default=8, help="rollout candidates")
    parser.add_argument("--horizon", type=int, default=2, help="rollout steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ref-commit", default=None, help="REF's commit, recorded in the JSON")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/vjepa2_ac_parity.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    vit, acp, clean_backbone_key, mpc_utils, make_transforms, stubbed = import_reference(args.ref.resolve())
    started = time.perf_counter()

    random.seed(args.seed)  # REF's random_resized_crop draws from Python's random
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    size = SIZES[args.size]
    common = dict(img_size=(256, 256), patch_size=16, num_frames=64, tubelet_size=2)
    # the kwargs of src/hub/backbones.py:_make_vjepa2_ac_model
    encoder = vit.VisionTransformer(
        **common, **size["encoder"], qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6),
        use_sdpa=True, use_silu=False, wide_silu=True, uniform_power=False, use_rope=True,
    ).eval()
    predictor = acp.vit_ac_predictor(**common, embed_dim=encoder.embed_dim, **size["predictor"]).eval()
    perturb(encoder, g, 0.02)
    perturb(predictor, g, 0.02)
    n_tokens, dim = 256, encoder.embed_dim

    with tempfile.TemporaryDirectory(prefix="vjepa2-ac-parity-") as tmp:
        file = Path(tmp) / "vjepa2-ac-random.pt"
        torch.save({"encoder": {f"module.backbone.{k}": v for k, v in encoder.state_dict().items()},
                    "predictor": {f"module.{k}": v for k, v in predictor.state_dict().items()},
                    "epoch": 0}, file)
        # Meta's hub loader reads it (the predictor strictly)
        saved = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        fresh = acp.vit_ac_predictor(**common, embed_dim=dim, **size["predictor"])
        fresh.load_state_dict(clean_backbone_key(saved["predictor"]), strict=True)
        del saved, fresh

        t0 = time.perf_counter()
        result = convert_vjepa2_ac(file, Path(tmp) / "out", image_size=256, num_frames=64,
                                   encoder_heads=size["encoder"]["num_heads"],
                                   predictor_heads=size["predictor"]["num_heads"])
        convert_s = time.perf_counter() - t0
        ours_encoder = load_encoder(result.encoder_dir, device="cpu")  # its recorded preprocessing
        ours = load_checkpoint(result.checkpoint_dir, encoder_reference=ours_encoder.reference()).predictor

        rows = {}
        with torch.no_grad():
            # ---------------- encoder: B * T frames, each repeated over the tubelet
            frames = torch.randint(0, 256, (args.batch * args.steps, 256, 256, 3), generator=g, dtype=torch.uint8)
            pixels = ours_encoder.preprocess(frames)  # [BT, 3, 256, 256]
            meta_h = encoder(pixels.unsqueeze(2).repeat(1, 1, 2, 1, 1))  # Meta: [B, C, T, H, W]
            hf_h = ours_encoder.model.encoder(pixel_values_videos=pixels.unsqueeze(1).repeat(1, 2, 1, 1, 1)).last_hidden_state
            latents = ours_encoder.encode(frames)
            meta_z = F.layer_norm(meta_h, (dim,))
            rows["encoder last hidden state"] = (hf_h - meta_h).abs().max().item()
            rows["encoder latents (layer-normed)"] = (latents - meta_z).abs().max().item()
            scale_enc = meta_h.abs().max().item()

            # ---------------- preprocessing: REF's planning transform on camera-sized frames
            meta_transform = meta_planning_transform(make_transforms, 256)
            # the resize-and-crop imports used before the mode was recorded, for contrast
            before = load_encoder(result.encoder_dir, device="cpu", preprocessing="resize_crop", resize_ratio=1.0)
            g_frames = torch.Generator().manual_seed(args.seed + 1)  # leaves g's draws below as they were
            for h, w in FRAME_SHAPES:
                camera = torch.randint(0, 256, (args.batch, h, w, 3), generator=g_frames, dtype=torch.uint8)
                meta_pixels = meta_transform(camera)
                rows[f"preprocessed pixels {h}x{w} ({ours_encoder.preprocessing})"] = (
                    ours_encoder.preprocess(camera) - meta_pixels).abs().max().item()
                rows[f"preprocessed pixels {h}x{w} (resize_crop, ratio 1.0: before)"] = (
                    before.preprocess(camera) - meta_pixels).abs().max().item()
                meta_latents = F.layer_norm(encoder(meta_pixels.unsqueeze(2).repeat(1, 1, 2, 1, 1)), (dim,))
                rows[f"encoder latents {h}x{w} (Meta transform + encoder)"] = (
                    ours_encoder.encode(camera) - meta_latents).abs().max().item()

            # ---------------- predictor, teacher forcing over T steps
            z = meta_z.view(args.batch, args.steps * n_tokens, dim)
            actions = 0.05 * torch.randn(args.batch, args.steps, 7, generator=g)
            states = torch.rand(args.batch, args.steps, 7, generator=g)
            meta_out = predictor(z, actions, states)  # [B, T*N, D], before the layer norm
            captured = []
            hook = ours.predictor_proj.register_forward_hook(lambda m, i, o: captured.append(o))
            ours_out, _ = ours(z.view(args.batch, args.steps, n_tokens, dim), actions, states)
            hook.remove()
            rows["predictor output (predictor_proj)"] = (captured[0].flatten(1, 2) - meta_out).abs().max().item()
            rows["predictor output (layer-normed)"] = (
                ours_out.flatten(1, 2) - F.layer_norm(meta_out, (dim,))).abs().max().item()
            scale_pred = meta_out.abs().max().item()

            # ---------------- planning rollout: Meta's planner loop vs our KV-cached rollout
            context, pose = z[:1, :n_tokens].view(1, 1, n_tokens, dim), states[:1, :1]
            cand = 0.05 * torch.randn(args.candidates, args.horizon, 7, generator=g)
            zs, ss = context.repeat(args.candidates, 1, 1, 1), pose.repeat(args.candidates, 1, 1)
            for h in range(args.horizon):  # notebooks/utils/world_model_wrapper.py step_predictor
                nxt = predictor(zs.flatten(1, 2), cand[:, : h + 1], ss)[:, -n_tokens:]
                zs = torch.cat([zs, F.layer_norm(nxt, (dim,)).view(args.candidates, 1, n_tokens, dim)], 1)
                ss = torch.cat([ss, mpc_utils.compute_new_pose(ss[:, -1:], cand[:, h : h + 1])], 1)
            ours_roll, ours_states = ours.rollout(context, pose, cand, next_state_fn=droid_next_state)
            rows[f"rollout latents (H={args.horizon}, KV cache)"] = (ours_roll - zs[:, 1:]).abs().max().item()
            rows[f"rollout states (H={args.horizon})"] = (ours_states - ss[:, 1:]).abs().max().item()

    params = {"encoder": sum(p.numel() for p in encoder.parameters()),
              "predictor": sum(p.numel() for p in predictor.parameters())}
    print(f"V-JEPA 2-AC import parity vs {args.ref} ({args.size}: encoder {params['encoder'] / 1e6:.1f}M params, "
          f"predictor {params['predictor'] / 1e6:.1f}M; fp32, CPU; timm {'stubbed' if stubbed else 'real'}; "
          f"conversion {convert_s:.1f} s)\n")
    print("| quantity | max abs difference |")
    print("|---|---|")
    for name, value in rows.items():
        print(f"| {name} | {value:.3g} |")
    print(f"\n(largest |value|: encoder hidden state {scale_enc:.3g}, predictor output {scale_pred:.3g}; "
          f"total {time.perf_counter() - started:.0f} s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "reference": args.ref.name, "reference_commit": args.ref_commit, "size": args.size, "params": params, "dtype": "float32", "device": "cpu",
        "timm_stubbed": stubbed, "steps": args.steps, "batch": args.batch, "candidates": args.candidates,
        "horizon": args.horizon, "seed": args.seed, "preprocessing": ours_encoder.preprocessing,
        "frame_shapes": FRAME_SHAPES, "max_abs_diff": rows,
        "max_abs_value": {"encoder_hidden": scale_enc, "predictor_output": scale_pred},
    }, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
