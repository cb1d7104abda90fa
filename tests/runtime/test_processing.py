"""The runtime's numpy processing against the trainer's torch ``Processor``: the same arrays, one validation, one
definition of the statistics (read from a real checkpoint)."""

from __future__ import annotations

import numpy as np
import pytest

from srpo.runtime.observation import Observation, ObservationError
from srpo.runtime.processing import ByteTokenizer, NormStats, Preprocessor
from srpo.spec import TABLETOP_SPEC

torch = pytest.importorskip("torch")

SPEC = TABLETOP_SPEC.with_image_size(32, 32)


def _obs(batch=5, seed=0):
    rng = np.random.default_rng(seed)
    return Observation({c: rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8) for c in ("agentview", "wrist")},
                       rng.normal(0, 0.3, (batch, 8)).astype(np.float32),
                       [["open the drawer", "put the red cube in the tray", "é"][i % 3] for i in range(batch)])


@pytest.fixture
def checkpoint_processor(tmp_path):
    """The torch processor of a saved and reloaded checkpoint, and the numpy one built from the same file."""
    import json

    from srpo_trainer.policies import load_policy
    from srpo_trainer.policies.tiny_vla import TinyVLAConfig, TinyVLAPolicy

    rng = np.random.default_rng(1)
    stats = NormStats(rng.normal(0, 0.1, 7).astype(np.float32), rng.uniform(0.2, 1, 7).astype(np.float32),
                      rng.normal(0, 0.1, 8).astype(np.float32), rng.uniform(0.2, 1, 8).astype(np.float32))
    TinyVLAPolicy(TinyVLAConfig(d_model=32, n_heads=2, n_layers=1, cnn_channels=(8, 16, 16)), SPEC, stats
                  ).save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    numpy_side = Preprocessor(SPEC, NormStats.from_dict(meta["norm_stats"]), ByteTokenizer(meta["config"]["max_text_len"]))
    return load_policy(tmp_path).processor, numpy_side


def test_numpy_processing_equals_the_torch_processor(checkpoint_processor):
    torch_side, numpy_side = checkpoint_processor
    obs = _obs()
    np.testing.assert_array_equal(numpy_side.images(obs), torch_side.images(obs).numpy())
    np.testing.assert_allclose(numpy_side.proprio(obs), torch_side.proprio(obs).numpy(), rtol=0, atol=1e-7)
    ids, mask = numpy_side.tokenize(obs.instructions)
    t_ids, t_mask = torch_side.tokenize(obs.instructions)
    np.testing.assert_array_equal(ids, t_ids.numpy())
    np.testing.assert_array_equal(mask, t_mask.numpy())
    chunk = np.random.default_rng(2).normal(0, 1, (5, 8, 7)).astype(np.float32)
    np.testing.assert_allclose(numpy_side.unnormalize_actions(chunk),
                               torch_side.unnormalize_actions(torch.as_tensor(chunk)).numpy(), atol=1e-6)
    np.testing.assert_allclose(numpy_side.normalize_actions(chunk),
                               torch_side.normalize_actions(torch.as_tensor(chunk)).numpy(), atol=1e-6)


def test_fixed_length_tokens_pad_the_same_ids():
    tok = ByteTokenizer(24)
    ids, mask = tok.encode(["hi", "open it"])
    fixed, fixed_mask = tok.encode(["hi", "open it"], pad_to=24)
    assert fixed.shape == (2, 24) and fixed.dtype == np.int64
    np.testing.assert_array_equal(fixed[:, : ids.shape[1]], ids)
    assert not fixed_mask[:, ids.shape[1]:].any() and mask.sum() == fixed_mask.sum() == 4 + 9


@pytest.mark.parametrize("breakage, message", [
    (lambda o: o.images.pop("wrist"), "missing camera 'wrist'"),
    (lambda o: o.images.__setitem__("agentview", o.images["agentview"].astype(np.float32)), "expected uint8"),
    (lambda o: o.images.__setitem__("agentview", o.images["agentview"][:, :16]), "expected uint8"),
    (lambda o: setattr(o, "proprio", o.proprio[:, :7]), "proprio has shape"),
    (lambda o: o.proprio.__setitem__((0, 0), np.inf), "NaN or inf"),
    (lambda o: o.instructions.__setitem__(1, "  "), "instruction 1 is empty"),
    (lambda o: o.instructions.__setitem__(0, "x" * 200), "bytes; the limit"),
])
def test_bad_observations_are_named_by_both_sides(checkpoint_processor, breakage, message):
    torch_side, numpy_side = checkpoint_processor
    obs = _obs(3)
    breakage(obs)
    for side in (numpy_side, torch_side):
        with pytest.raises(ObservationError, match=message):
            side.check(obs)


def test_non_finite_network_output_never_becomes_an_action():
    rng = np.random.default_rng(0)
    stats = NormStats(np.zeros(7, np.float32), np.ones(7, np.float32), np.zeros(8, np.float32), np.ones(8, np.float32))
    pre = Preprocessor(SPEC, stats)
    mean = rng.normal(0, 3, (1, 8, 7)).astype(np.float32)
    chunk = pre.action_chunk(mean)
    assert chunk.min() >= -1 and chunk.max() <= 1  # clipped to the action bounds
    mean[0, 3, 2] = np.nan
    with pytest.raises(FloatingPointError):
        pre.action_chunk(mean)


def test_statistics_from_a_malformed_checkpoint_are_refused():
    good = NormStats(np.zeros(7), np.ones(7), np.zeros(8), np.ones(8)).to_dict()
    with pytest.raises(ValueError, match="malformed"):
        NormStats.from_dict({k: v for k, v in good.items() if k != "action_std"})
    with pytest.raises(ValueError, match="finite"):
        NormStats.from_dict({**good, "proprio_mean": [float("nan")] * 8})
    with pytest.raises(ValueError, match="> 0"):
        NormStats.from_dict({**good, "action_std": [0.0] * 7})
    with pytest.raises(ValueError, match="spec needs"):
        Preprocessor(SPEC, NormStats.from_dict({**good, "action_mean": [0.0] * 6, "action_std": [1.0] * 6}))
