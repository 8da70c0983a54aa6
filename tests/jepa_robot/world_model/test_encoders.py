"""Tests for jepa_robot.world_model.encoders on a tiny randomly initialised V-JEPA 2 (no hub access)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import VJEPA2Model

from jepa_robot.world_model.encoders import (
    DEFAULT_RESIZE_RATIO,
    ENCODERS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PREPROCESSING_CONFIG_KEY,
    VJEPA2_HUB_IDS,
    EncoderUnavailableError,
    VJEPA2Encoder,
    hash_weights,
    load_encoder,
    load_encoder_from_reference,
    reference_mismatch,
    save_tiny_random_encoder,
    tiny_vjepa2_config,
)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_random_encoder(tmp_path_factory.mktemp("enc") / "tiny", seed=0)


@pytest.fixture(scope="module")
def enc(tiny_dir) -> VJEPA2Encoder:
    return load_encoder(str(tiny_dir), device="cpu")


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(6, 64, 64, 3), dtype=np.uint8)


def _to_float_chw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0


# --------------------------------------------------------------------------- tiny config


def test_tiny_config_is_small_and_saves_pretrained_layout(tiny_dir):
    cfg = tiny_vjepa2_config()
    assert (cfg.crop_size, cfg.patch_size, cfg.tubelet_size) == (64, 8, 2)
    model = VJEPA2Model(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 10_000_000
    assert sorted(p.name for p in tiny_dir.iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((tiny_dir / "config.json").read_text())["model_type"] == "vjepa2"
    assert tiny_vjepa2_config(num_hidden_layers=2).num_hidden_layers == 2
    with pytest.raises(TypeError, match="unknown VJEPA2Config fields"):
        tiny_vjepa2_config(hidden_sise=10)


# one-layer variants keep the tests that only hash and reload weights cheap
SMALL = {"num_hidden_layers": 1, "pred_num_hidden_layers": 1}


def test_save_tiny_is_seeded_atomic_and_refuses_overwrite(tmp_path):
    state = torch.random.get_rng_state()
    a = save_tiny_random_encoder(tmp_path / "a", seed=0, **SMALL)
    assert torch.equal(torch.random.get_rng_state(), state), "global RNG must be left untouched"
    a2 = save_tiny_random_encoder(tmp_path / "sub" / "a2", seed=0, **SMALL)
    b = save_tiny_random_encoder(tmp_path / "b", seed=1, **SMALL)
    h_a = hash_weights(a)
    assert h_a == hash_weights(a2)  # same seed, same content, another place
    assert h_a != hash_weights(b)
    with pytest.raises(FileExistsError, match="not empty"):
        save_tiny_random_encoder(a, seed=1, **SMALL)
    assert hash_weights(a) == h_a  # the refused write left it intact
    save_tiny_random_encoder(a, seed=1, overwrite=True, **SMALL)
    assert hash_weights(a) == hash_weights(b)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "sub"]  # no temp dirs left


# --------------------------------------------------------------------------- encoding


def test_shape_properties_and_device(enc, frames):
    assert (enc.image_size, enc.grid, enc.patch_grid, enc.num_tokens, enc.embed_dim) == (
        64,
        8,
        8,
        64,
        192,
    )
    assert enc.resize_size == 73  # 64 * 292 / 256
    out = enc.encode(frames[:3])
    assert out.shape == (3, enc.num_tokens, enc.embed_dim)
    assert out.dtype == torch.float32 and out.device == enc.device
    assert torch.isfinite(out).all()
    assert enc(frames[:3]).shape == out.shape  # forward == encode
    assert enc.encode(frames[:0]).shape == (0, 64, 192)


def test_output_is_layer_normed_encoder_last_hidden_state(enc, frames):
    out = enc.encode(frames[:4])
    # per-token statistics of a weightless layer norm
    assert out.mean(-1).abs().max() < 1e-4
    assert torch.allclose(out.std(-1, unbiased=False), torch.ones(4, 64), atol=1e-3)
    # same as VJEPA2Model's encoder output (not the predictor) on a 2-frame repeated clip
    pixels = enc.preprocess(frames[:4])
    clip = pixels.unsqueeze(1).repeat(1, 2, 1, 1, 1)
    with torch.no_grad():
        hidden = enc.model(pixel_values_videos=clip, skip_predictor=True).last_hidden_state
    expected = F.layer_norm(hidden, (enc.embed_dim,))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_frozen_no_graph_and_latents_usable_in_autograd(enc, frames):
    assert all(not p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.training and not enc.model.training
    assert all(not m.training for m in enc.modules())
    with torch.enable_grad():
        out = enc.encode(frames[:2])
    assert not out.requires_grad and out.grad_fn is None
    assert not out.is_inference()  # no_grad, not inference_mode: usable as a training target
    w = torch.ones(enc.embed_dim, requires_grad=True)
    (out * w).sum().backward()
    assert w.grad is not None and w.grad.shape == (enc.embed_dim,)


def test_deterministic_and_batch_size_invariant(enc, frames):
    a = enc.encode(frames, batch_size=8)
    b = enc.encode(frames, batch_size=8)
    assert torch.equal(a, b)
    one = enc.encode(frames[:3], batch_size=1)
    ragged = enc.encode(frames, batch_size=4)  # batches of 4 and 2
    assert (one - a[:3]).abs().max() < 1e-5
    assert (ragged - a).abs().max() < 1e-5
    assert not torch.allclose(a[0], a[1])  # different frames -> different latents


def test_uint8_hwc_and_float_chw_inputs_agree(enc, frames):
    from_np = enc.encode(frames[:4])
    from_torch = enc.encode(torch.from_numpy(frames[:4]))
    from_float = enc.encode(_to_float_chw(frames[:4]))
    from_double = enc.encode(_to_float_chw(frames[:4]).double())
    assert torch.equal(from_np, from_torch)
    torch.testing.assert_close(from_float, from_np, atol=1e-5, rtol=0)
    torch.testing.assert_close(from_double, from_np, atol=1e-5, rtol=0)
    # non-contiguous numpy views (e.g. a flipped camera) work too
    flipped = frames[:2, ::-1]
    torch.testing.assert_close(enc.encode(flipped), enc.encode(flipped.copy()), atol=0, rtol=0)


# --------------------------------------------------------------------------- preprocessing


def test_preprocess_resize_crop_normalize(enc):
    # a constant colour stays constant through resize + crop; only mean/std change it
    rgb = np.array([200, 100, 30], dtype=np.uint8)
    img = np.broadcast_to(rgb, (2, 48, 80, 3)).copy()
    x = enc.preprocess(img)
    assert x.shape == (2, 3, 64, 64)
    want = (
        torch.tensor(rgb / 255.0, dtype=torch.float32) - torch.tensor(IMAGENET_MEAN)
    ) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(x, want.view(1, 3, 1, 1).expand_as(x), atol=1e-5, rtol=0)
    # centre crop: with resize_ratio 1.0 a 64 x 96 image is only cropped, columns 16..79
    enc1 = VJEPA2Encoder(enc.model, source="test", resize_ratio=1.0)
    wide = np.random.default_rng(1).integers(0, 256, size=(1, 64, 96, 3), dtype=np.uint8)
    got = enc1.preprocess(wide)
    manual = (_to_float_chw(wide[:, :, 16:80]) - enc.mean) / enc.std
    torch.testing.assert_close(got, manual, atol=1e-6, rtol=0)


def test_preprocess_matches_transformers_video_processor(enc):
    pytest.importorskip("torchvision")
    from transformers import VJEPA2VideoProcessor

    # HF's processor resizes the short side to crop*256/224; for crop 64 that is 73 = 64*292/256
    proc = VJEPA2VideoProcessor(crop_size=64)
    assert proc.size["shortest_edge"] == enc.resize_size
    rng = np.random.default_rng(2)
    for shape in [(2, 48, 80, 3), (2, 100, 70, 3), (2, 200, 300, 3)]:
        video = rng.integers(0, 256, size=shape, dtype=np.uint8)
        ref = proc(video, return_tensors="pt")["pixel_values_videos"][0]
        ours = enc.preprocess(video)
        diff = (ref - ours).abs()
        # HF rounds the resized image to uint8; one grey level is 1/255/0.225 = 0.0174
        assert diff.max() < 0.02 and diff.mean() < 0.01, shape


# --------------------------------------------------------------------------- V-JEPA 2-AC preprocessing


def meta_ac_transform(frames: np.ndarray, crop: int) -> torch.Tensor:
    """Meta's V-JEPA 2-AC planning transform, written here from its description (not from
    our encoder): uint8 [B, H, W, 3] as float 0-255, the centre square (offsets rounded
    down), ``F.interpolate`` bilinear with ``align_corners=False`` and no antialias to
    ``crop x crop`` (always called, as Meta does), ImageNet mean/std in 0-255 units."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    h, w = x.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = x[:, :, top : top + side, left : left + side]
    x = F.interpolate(x, size=(crop, crop), mode="bilinear", align_corners=False, antialias=False)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0
    return (x - mean) / std


AC_FRAME_SHAPES = [(480, 640), (256, 256), (300, 200)]
"""A real arm's camera (480x640), the model's own size at crop 256, and a portrait frame."""


def _latents_of_pixels(encoder: VJEPA2Encoder, pixels: torch.Tensor) -> torch.Tensor:
    clip = pixels.unsqueeze(1).repeat(1, encoder.tubelet_size, 1, 1, 1)
    with torch.no_grad():
        hidden = encoder.model.encoder(pixel_values_videos=clip).last_hidden_state
    return F.layer_norm(hidden, (encoder.embed_dim,))


def test_crop_resize_pixels_match_meta_transform_at_crop_256():
    # the published model's geometry (crop 256), on a weightless meta-device model
    with torch.device("meta"):
        skeleton = VJEPA2Model(tiny_vjepa2_config(crop_size=256, patch_size=16))
    ours = VJEPA2Encoder(skeleton, source="test", preprocessing="crop_resize")
    before = VJEPA2Encoder(skeleton, source="test", resize_ratio=1.0)  # what an AC import used
    rng = np.random.default_rng(5)
    for h, w in AC_FRAME_SHAPES:
        frames = rng.integers(0, 256, size=(2, h, w, 3), dtype=np.uint8)
        ref = meta_ac_transform(frames, 256)
        assert (ours.preprocess(frames) - ref).abs().max() < 2e-6, (h, w)
        if (h, w) == (480, 640):  # the old resize-and-crop is far off on a camera frame
            assert (before.preprocess(frames) - ref).abs().max() > 0.1


def test_crop_resize_matches_meta_transform_on_the_tiny_model(enc):
    ours = VJEPA2Encoder(enc.model, source="test", preprocessing="crop_resize")
    assert ours.preprocessing == "crop_resize" and ours.resize_ratio == 1.0 and ours.resize_size == 64
    rng = np.random.default_rng(6)
    for h, w in [*AC_FRAME_SHAPES, (64, 64), (64, 65)]:
        frames = rng.integers(0, 256, size=(2, h, w, 3), dtype=np.uint8)
        ref = meta_ac_transform(frames, ours.image_size)
        assert (ours.preprocess(frames) - ref).abs().max() < 2e-6, (h, w)
        expected = _latents_of_pixels(ours, ref)
        assert (ours.encode(frames) - expected).abs().max() < 2e-5, (h, w)
        # float [B, 3, H, W] input in [0, 1] goes the same way
        as_float = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
        assert (ours.preprocess(as_float) - ref).abs().max() < 2e-6, (h, w)


def test_default_mode_and_its_reference_are_unchanged(enc):
    assert enc.preprocessing == "resize_crop" and enc.resize_ratio == DEFAULT_RESIZE_RATIO
    ref = enc.reference()
    assert "preprocessing" not in ref and ref["interpolation"] == "bilinear_antialias"


def _recording_copy(tiny_dir, tmp_path, mode) -> str:
    """A copy of the tiny encoder whose config.json records ``mode``."""
    copy = tmp_path / f"enc-{mode}"
    copy.mkdir()
    config = json.loads((tiny_dir / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, PREPROCESSING_CONFIG_KEY: mode}))
    (copy / "model.safetensors").write_bytes((tiny_dir / "model.safetensors").read_bytes())
    return str(copy)


def test_recorded_preprocessing_is_the_default_and_part_of_the_reference(tmp_path, tiny_dir, enc):
    recorded = _recording_copy(tiny_dir, tmp_path, "crop_resize")
    auto = load_encoder(recorded, device="cpu")  # nothing passed: the record decides
    assert auto.preprocessing == "crop_resize"
    frames = np.random.default_rng(7).integers(0, 256, size=(2, 480, 640, 3), dtype=np.uint8)
    assert (auto.preprocess(frames) - meta_ac_transform(frames, 64)).abs().max() < 2e-6
    ref = auto.reference()
    assert ref["preprocessing"] == "crop_resize" and ref["interpolation"] == "bilinear"
    assert ref["resize_ratio"] == 1.0 and ref["resize_size"] == 64
    # resize_ratio=1.0 (what the AC configs and callers pass) keeps the recorded mode
    assert load_encoder(recorded, device="cpu", resize_ratio=1.0).reference() == ref
    with pytest.raises(ValueError, match=rf"resize_ratio=1.5 does not apply.*{PREPROCESSING_CONFIG_KEY}"):
        load_encoder(recorded, device="cpu", resize_ratio=1.5)
    # an explicit mode overrides the record, and the reference tells the two apart
    other = load_encoder(recorded, device="cpu", preprocessing="resize_crop", resize_ratio=1.0)
    assert other.preprocessing == "resize_crop"
    diff = reference_mismatch(ref, other.reference())
    assert any(d.startswith("preprocessing:") for d in diff)
    assert any(d.startswith("interpolation:") for d in diff)
    # the reference rebuilds its own mode, whatever the directory records
    assert load_encoder_from_reference(ref, device="cpu").preprocessing == "crop_resize"
    assert load_encoder_from_reference(other.reference(), device="cpu").preprocessing == "resize_crop"
    # an unrecorded directory rebuilt from a crop_resize reference
    plain = load_encoder(str(tiny_dir), device="cpu", preprocessing="crop_resize")
    assert load_encoder_from_reference(plain.reference(), device="cpu").preprocessing == "crop_resize"
    assert enc.reference() != plain.reference()


def test_bad_preprocessing_is_named(tmp_path, tiny_dir, enc):
    with pytest.raises(ValueError, match=r"preprocessing='crop' is not one of \['crop_resize', 'resize_crop'\]"):
        load_encoder(str(tiny_dir), device="cpu", preprocessing="crop")
    with pytest.raises(ValueError, match="resize_ratio=1.2 does not apply: preprocessing='crop_resize'"):
        VJEPA2Encoder(enc.model, source="test", preprocessing="crop_resize", resize_ratio=1.2)
    bad = _recording_copy(tiny_dir, tmp_path, "stretch")
    with pytest.raises(ValueError, match=rf"config.json field {PREPROCESSING_CONFIG_KEY}='stretch' is not one of"):
        load_encoder(bad, device="cpu")


# --------------------------------------------------------------------------- pooling


def test_pool_grid(tiny_dir, enc, frames):
    pooled = load_encoder(str(tiny_dir), device="cpu", pool_grid=4)
    assert (pooled.grid, pooled.num_tokens, pooled.patch_grid) == (4, 16, 8)
    out = pooled.encode(frames[:3])
    assert out.shape == (3, 16, 192)
    assert torch.allclose(out.std(-1, unbiased=False), torch.ones(3, 16), atol=1e-3)
    # = 2x2 average of the raw encoder tokens, then the weightless layer norm
    pixels = enc.preprocess(frames[:3]).unsqueeze(1).repeat(1, 2, 1, 1, 1)
    with torch.no_grad():
        raw = enc.model.encoder(pixel_values_videos=pixels).last_hidden_state
    grid = (
        raw.reshape(3, 8, 8, 192).reshape(3, 4, 2, 4, 2, 192).mean(dim=(2, 4)).reshape(3, 16, 192)
    )
    torch.testing.assert_close(out, F.layer_norm(grid, (192,)), atol=1e-5, rtol=1e-5)
    assert load_encoder(str(tiny_dir), device="cpu", pool_grid=8).pool_grid is None  # full grid
    for bad in (0, 9, 2.5, True):
        with pytest.raises(ValueError, match="pool_grid"):
            load_encoder(str(tiny_dir), device="cpu", pool_grid=bad)


# --------------------------------------------------------------------------- reference


def test_reference_stable_across_reloads_and_tracks_weights(tmp_path, tiny_dir, enc):
    ref = enc.reference()
    assert json.loads(json.dumps(ref)) == ref  # JSON-serialisable as is
    assert ref["source"] == str(tiny_dir.resolve())
    assert len(ref["weights_sha256"]) == 64 and ref["revision"] is None
    assert ref["resize_ratio"] == DEFAULT_RESIZE_RATIO and ref["pool_grid"] is None
    assert load_encoder(str(tiny_dir), device="cpu").reference() == ref
    assert reference_mismatch(ref, load_encoder(tiny_dir).reference()) == []

    other = load_encoder(str(tiny_dir), device="cpu", pool_grid=4).reference()
    assert other != ref and other["pool_grid"] == 4
    assert load_encoder(str(tiny_dir), device="cpu", resize_ratio=1.0).reference() != ref

    # new weights at the same path -> new reference; the old one is refused
    d = save_tiny_random_encoder(tmp_path / "w", seed=0, **SMALL)
    before = load_encoder(str(d), device="cpu")
    never_hashed = load_encoder(str(d), device="cpu")
    ref_before = before.reference()
    assert load_encoder_from_reference(ref_before, device="cpu").reference() == ref_before
    save_tiny_random_encoder(d, seed=3, overwrite=True, **SMALL)
    after = load_encoder(str(d), device="cpu").reference()
    assert after["source"] == ref_before["source"]
    assert after["weights_sha256"] != ref_before["weights_sha256"]
    assert any(m.startswith("weights_sha256") for m in reference_mismatch(ref_before, after))
    with pytest.raises(ValueError, match="does not match the reference.*weights_sha256"):
        load_encoder_from_reference(ref_before, device="cpu")
    assert before.reference() == ref_before  # hashed at first use, still describes its weights
    with pytest.raises(EncoderUnavailableError, match="changed after this encoder loaded"):
        never_hashed.reference()  # would otherwise describe files it never loaded


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("bad", "exc", "match"),
    [
        (np.zeros((64, 64, 3), np.uint8), ValueError, r"add a batch dimension.*\[B, H, W, 3\]"),
        (np.zeros((2, 64, 64, 4), np.uint8), ValueError, r"4 channels.*\[B, H, W, 3\]"),
        (np.zeros((2, 3, 64, 64), np.uint8), ValueError, r"channels-first uint8.*\[B, H, W, 3\]"),
        (torch.zeros(2, 64, 64, 3), ValueError, r"channels-last float.*\[B, 3, H, W\]"),
        (torch.zeros(2, 1, 64, 64), ValueError, r"1 channels.*\[B, 3, H, W\]"),
        (np.zeros((2, 64, 64, 3), np.int64), TypeError, r"dtype int64.*\[B, H, W, 3\]"),
        ([[0, 1, 2]], TypeError, r"numpy array or torch tensor"),
        (torch.full((2, 3, 64, 64), 255.0), ValueError, r"\[0, 1\].*uint8"),
        (torch.full((2, 3, 64, 64), float("nan")), ValueError, r"NaN"),
    ],
)
def test_bad_frames_name_the_expected_shape(enc, bad, exc, match):
    with pytest.raises(exc, match=match):
        enc.encode(bad)


def test_bad_batch_size(enc, frames):
    with pytest.raises(ValueError, match="batch_size"):
        enc.encode(frames[:2], batch_size=0)


def test_unknown_name_lists_valid_names(tmp_path):
    assert ENCODERS == VJEPA2_HUB_IDS
    assert set(ENCODERS) == {"vjepa2_vitl", "vjepa2_vith", "vjepa2_vitg", "vjepa2_vitg_384"}
    for name in ("vjepa2_vitx", str(tmp_path / "missing")):
        with pytest.raises(ValueError) as info:
            load_encoder(name)
        msg = str(info.value)
        assert all(n in msg for n in ENCODERS) and all(h in msg for h in ENCODERS.values())
        assert "directory" in msg


def test_offline_and_not_cached_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderUnavailableError) as info:
        load_encoder("vjepa2_vitl", device="cpu", cache_dir=tmp_path / "empty-cache")
    msg = str(info.value)
    assert "HF_HUB_OFFLINE=1" in msg and "facebook/vjepa2-vitl-fpc64-256" in msg
    assert "not in the Hugging Face cache" in msg


def test_hub_id_loads_offline_from_a_populated_cache(monkeypatch, tmp_path, tiny_dir, frames):
    # lay out a Hugging Face cache by hand: refs/main -> snapshots/<commit>/{config, weights}
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--facebook--vjepa2-vitl-fpc64-256"
    (repo / "snapshots" / commit).mkdir(parents=True)
    for f in tiny_dir.iterdir():
        (repo / "snapshots" / commit / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    enc = load_encoder("vjepa2_vitl", device="cpu", cache_dir=tmp_path / "cache")
    ref = enc.reference()
    assert ref["source"] == "facebook/vjepa2-vitl-fpc64-256"
    assert ref["revision"] == commit and ref["weights_sha256"] is None
    same = load_encoder(
        "facebook/vjepa2-vitl-fpc64-256",
        device="cpu",
        cache_dir=tmp_path / "cache",
        revision=commit,
    )
    assert same.reference() == ref
    again = load_encoder_from_reference(ref, device="cpu", cache_dir=tmp_path / "cache")
    assert torch.equal(again.encode(frames[:2]), enc.encode(frames[:2]))
    with pytest.raises(
        EncoderUnavailableError, match="revision v9.*HF_HUB_OFFLINE=1.*--revision v9"
    ):
        load_encoder("vjepa2_vitl", device="cpu", cache_dir=tmp_path / "cache", revision="v9")


def test_bfloat16_compute_still_returns_float32(tiny_dir, enc, frames):
    half = load_encoder(str(tiny_dir), device="cpu", dtype="bfloat16")
    assert half.dtype == torch.bfloat16
    out = half.encode(frames[:2])
    assert out.dtype == torch.float32
    assert (out - enc.encode(frames[:2])).abs().mean() < 0.05  # bf16 noise, same model
    assert half.reference()["dtype"] == "bfloat16" and half.reference() != enc.reference()
    with pytest.raises(ValueError, match="dtype"):
        load_encoder(str(tiny_dir), device="cpu", dtype="int8")


def test_bad_directories(tmp_path, tiny_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EncoderUnavailableError, match="no config.json"):
        load_encoder(str(empty), device="cpu")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ValueError, match="expected 'vjepa2'"):
        load_encoder(str(tmp_path / "other"), device="cpu")
    with pytest.raises(ValueError, match="revision"):
        load_encoder(str(tiny_dir), device="cpu", revision="main")
    with pytest.raises(ValueError, match="resize_ratio"):
        load_encoder(str(tiny_dir), device="cpu", resize_ratio=0.9)


def test_no_network_fails_at_once_without_retries_unless_the_weights_are_cached(monkeypatch, tmp_path):
    from jepa_robot.world_model import hub

    monkeypatch.setattr(hub, "is_offline", lambda: False)
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=hub.HUB_CONNECT_TIMEOUT_S: False)
    with pytest.raises(EncoderUnavailableError) as info:
        load_encoder("vjepa2_vitl", device="cpu", cache_dir=tmp_path / "empty-cache")
    msg = str(info.value)
    assert "cannot be reached" in msg and "huggingface-cli download facebook/vjepa2-vitl-fpc64-256" in msg
    assert hub.SHIPPED_ENCODER in msg and "\n" not in msg
    # cached: loaded from the cache alone, with no hub call
    snapshot = tmp_path / "cache" / "models--facebook--vjepa2-vitl-fpc64-256" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    assert hub.require_hub_weights("facebook/vjepa2-vitl-fpc64-256", cache_dir=tmp_path / "cache") is True
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=hub.HUB_CONNECT_TIMEOUT_S: True)
    assert hub.require_hub_weights("facebook/vjepa2-vitl-fpc64-256", cache_dir=tmp_path / "empty-cache") is False


def test_hub_id_of_tells_hub_encoders_from_directories(tmp_path):
    from jepa_robot.world_model.hub import hub_id_of

    assert hub_id_of("vjepa2_vitl") == "facebook/vjepa2-vitl-fpc64-256"
    assert hub_id_of("org/model") == "org/model"
    (tmp_path / "org" / "model").mkdir(parents=True)
    assert hub_id_of(str(tmp_path / "org" / "model")) is None
    assert hub_id_of("default") is None and hub_id_of("./org/model") is None
