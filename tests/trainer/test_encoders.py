"""Trajectory encoders: shapes, determinism, frame sampling, and real loading of tiny Hugging Face checkpoints."""

import numpy as np
import pytest

from srpo_trainer.encoders import EncoderError, load_encoder, sample_frames


def _videos(n=3, T=(5, 9, 2), size=32, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (T[i % len(T)], size, size, 3), dtype=np.uint8) for i in range(n)]


def test_frames_are_spread_over_the_episode_and_short_clips_repeat_cyclically():
    video = np.arange(10)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    assert sample_frames(video, 4)[:, 0, 0, 0].tolist() == [0, 3, 6, 9]
    assert sample_frames(video[:3], 7)[:, 0, 0, 0].tolist() == [0, 1, 2, 0, 1, 2, 0]
    with pytest.raises(EncoderError, match="no frames"):
        sample_frames(video[:0], 4)
    with pytest.raises(EncoderError, match="shape"):
        sample_frames(np.zeros((4, 2, 2)), 4)


@pytest.mark.parametrize("name", ["pixels", "random"])
def test_builtin_style_encoders_have_fixed_shape_and_are_deterministic(name):
    enc = load_encoder(name)
    videos = _videos()
    a, b = enc.encode(videos), enc.encode(list(reversed(videos)))
    assert a.shape == (3, enc.dim) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b[::-1])
    assert not np.allclose(a[0], a[1])


def _tiny_vjepa2(path):
    from transformers import VJEPA2Config, VJEPA2Model

    cfg = VJEPA2Config(crop_size=16, frames_per_clip=2, hidden_size=32, num_attention_heads=2, num_hidden_layers=2,
                       mlp_ratio=1.0, pred_hidden_size=32, pred_num_attention_heads=2, pred_num_hidden_layers=2,
                       pred_num_mask_tokens=10)
    VJEPA2Model(cfg).save_pretrained(path)


def _tiny_dinov2(path):
    from transformers import Dinov2Config, Dinov2Model

    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             image_size=28, patch_size=14)).save_pretrained(path)


@pytest.mark.parametrize("name,make,dim", [("vjepa2", _tiny_vjepa2, 32), ("image", _tiny_dinov2, 32)])
def test_tiny_hugging_face_checkpoints_load_through_the_real_path(tmp_path, name, make, dim):
    make(tmp_path / "model")
    enc = load_encoder(name, str(tmp_path / "model"))
    videos = _videos(4, T=(5, 1, 12))
    emb = enc.encode(videos, batch_size=3)
    assert emb.shape == (4, dim)
    np.testing.assert_allclose(emb, enc.encode(videos), rtol=1e-5, atol=1e-6)
    assert not np.allclose(emb[0], emb[1])


def test_missing_or_corrupt_checkpoints_give_clear_errors(tmp_path):
    with pytest.raises(EncoderError, match="not a model directory"):
        load_encoder("vjepa2", str(tmp_path / "nowhere"))
    _tiny_dinov2(tmp_path / "dino")
    weights = next((tmp_path / "dino").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(EncoderError, match="cannot load"):
        load_encoder("image", str(tmp_path / "dino"))
    with pytest.raises(EncoderError, match="needs a checkpoint path"):
        load_encoder("builtin")
    with pytest.raises(EncoderError, match="unknown encoder"):
        load_encoder("resnet")
    with pytest.raises(EncoderError, match="not a world model"):
        load_encoder("builtin", str(tmp_path))
