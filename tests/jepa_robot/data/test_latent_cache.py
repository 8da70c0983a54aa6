import json
import shutil

import numpy as np
import pytest

from jepa_robot.data.dataset import episode_frames, open_dataset
from jepa_robot.data.latent_cache import CacheError, build_latent_cache, load_latent_cache
from jepa_robot.world_model.encoders import load_encoder


@pytest.fixture()
def encoder(tiny_encoder_dir):
    return load_encoder(str(tiny_encoder_dir), device="cpu", resize_ratio=1.0)


def test_cache_holds_the_encoder_latents(small_dataset, encoder, tmp_path):
    dataset, spec = open_dataset(str(small_dataset[0]))
    cache = build_latent_cache(dataset, spec, encoder, tmp_path, batch_size=8, progress=False)
    assert cache.latents.shape == (36, encoder.num_tokens, encoder.embed_dim)
    assert cache.manifest["complete"] and cache.manifest["encoder"] == encoder.reference()
    expected = encoder.encode(episode_frames(dataset, spec.image_key, 1)).numpy()
    np.testing.assert_allclose(cache.latents[12:24].astype(np.float32), expected, atol=2e-2)
    assert load_latent_cache(cache.directory).num_frames == 36


def test_a_matching_cache_is_reused_without_encoding(small_dataset, encoder, tmp_path, monkeypatch):
    dataset, spec = open_dataset(str(small_dataset[0]))
    first = build_latent_cache(dataset, spec, encoder, tmp_path, progress=False)
    monkeypatch.setattr(encoder, "encode", lambda *a, **k: pytest.fail("encoded again"))
    again = build_latent_cache(dataset, spec, encoder, tmp_path, progress=False)
    assert again.directory == first.directory


def test_interrupted_cache_resumes_and_is_never_taken_as_complete(small_dataset, encoder, tmp_path, monkeypatch):
    dataset, spec = open_dataset(str(small_dataset[0]))
    real_encode = encoder.encode
    calls = []

    def encode_then_die(frames, batch_size=64):
        calls.append(len(frames))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_encode(frames, batch_size=batch_size)

    monkeypatch.setattr(encoder, "encode", encode_then_die)
    with pytest.raises(KeyboardInterrupt):
        build_latent_cache(dataset, spec, encoder, tmp_path, progress=False)
    (directory,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["episodes_done"] == 1 and manifest["complete"] is False
    with pytest.raises(CacheError, match="incomplete"):
        load_latent_cache(directory)

    calls.clear()
    monkeypatch.setattr(encoder, "encode", lambda frames, batch_size=64: (calls.append(len(frames)), real_encode(frames))[1])
    cache = build_latent_cache(dataset, spec, encoder, tmp_path, progress=False)
    assert calls == [12, 12]  # only episodes 1 and 2
    reference = real_encode(episode_frames(dataset, spec.image_key, 0)).numpy()
    np.testing.assert_allclose(cache.latents[:12].astype(np.float32), reference, atol=2e-2)


def test_changed_inputs_get_a_new_cache(small_dataset, encoder, tiny_encoder_dir, tmp_path):
    dataset, spec = open_dataset(str(small_dataset[0]))
    first = build_latent_cache(dataset, spec, encoder, tmp_path, progress=False)
    pooled = load_encoder(str(tiny_encoder_dir), device="cpu", resize_ratio=1.0, pool_grid=2)
    second = build_latent_cache(dataset, spec, pooled, tmp_path, progress=False)
    assert second.directory != first.directory and second.latents.shape[1] == 4

    copy = tmp_path / "copy"
    shutil.copytree(small_dataset[0], copy)
    (copy / "meta" / "info.json").write_text((copy / "meta" / "info.json").read_text().replace('"fps": 80', '"fps": 80 '))
    dataset_copy, spec_copy = open_dataset(str(copy))
    third = build_latent_cache(dataset_copy, spec_copy, encoder, tmp_path / "caches", progress=False)
    assert third.directory.name != first.directory.name


def test_not_a_cache(tmp_path):
    with pytest.raises(CacheError, match="manifest.json is missing"):
        load_latent_cache(tmp_path)


def test_a_copied_encoder_directory_reuses_the_cache(small_dataset, tiny_encoder_dir, tmp_path, monkeypatch):
    dataset, spec = open_dataset(str(small_dataset[0]))
    original = load_encoder(str(tiny_encoder_dir), device="cpu", resize_ratio=1.0)
    first = build_latent_cache(dataset, spec, original, tmp_path / "caches", progress=False)
    copy = tmp_path / "moved-encoder"
    shutil.copytree(tiny_encoder_dir, copy)
    moved = load_encoder(str(copy), device="cpu", resize_ratio=1.0)
    assert moved.reference()["source"] != original.reference()["source"]
    monkeypatch.setattr(moved, "encode", lambda *a, **k: pytest.fail("encoded again"))
    again = build_latent_cache(dataset, spec, moved, tmp_path / "caches", progress=False)
    assert again.directory == first.directory
