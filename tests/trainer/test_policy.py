"""The built-in VLA policy: shapes, exact log-probabilities, checkpoints and input validation."""

import json

import numpy as np
import pytest
import torch

from srpo.spec import TABLETOP_SPEC
from srpo_trainer.policies.tiny_vla import CheckpointError, TinyVLAPolicy, gaussian_log_prob
from srpo_trainer.processor import ObservationError
from tests.trainer.conftest import make_obs


def test_sample_shapes_and_bounds(policy):
    out = policy.sample(make_obs(3))
    assert out.chunks.shape == (3, 8, 7) and out.log_probs.shape == (3,)
    chunk = policy.predict_action_chunk(make_obs(3))
    assert chunk.shape == (3, 8, 7) and chunk.min() >= -1 and chunk.max() <= 1


def test_log_prob_of_a_sample_matches_torch_distributions(policy):
    obs = make_obs(3)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        out = policy.sample(obs, temperature=1.3, generator=gen)
        mean, log_std = policy.distribution(obs, temperature=1.3)
        x = policy.processor.normalize_actions(out.chunks)
        ref = torch.distributions.Normal(mean, log_std.exp()).log_prob(x).sum(dim=(-2, -1))
        again = policy.log_prob(obs, out.chunks, temperature=1.3)
    assert torch.allclose(out.log_probs, ref, atol=1e-4)
    assert torch.allclose(again, ref, atol=1e-4)


def test_gaussian_log_prob_hand_computed():
    x = torch.tensor([[[1.0, 0.0]]])
    mean = torch.zeros(1, 1, 2)
    log_std = torch.tensor([[0.0, np.log(2.0)]], dtype=torch.float32)
    expected = (-0.5 - 0.5 * np.log(2 * np.pi)) + (-np.log(2.0) - 0.5 * np.log(2 * np.pi))
    assert gaussian_log_prob(x, mean, log_std).item() == pytest.approx(expected, abs=1e-6)


def test_temperature_scales_the_spread_and_must_be_positive(policy):
    obs = make_obs(3)
    with torch.no_grad():
        _, ls1 = policy.distribution(obs, 1.0)
        _, ls2 = policy.distribution(obs, 2.0)
    assert torch.allclose(ls2 - ls1, torch.full_like(ls1, np.log(2.0)))
    with pytest.raises(ValueError, match="temperature"):
        policy.sample(obs, temperature=0.0)


def test_log_prob_is_differentiable(policy):
    obs = make_obs(3)
    chunks = policy.sample(obs).chunks.detach()
    policy.log_prob(obs, chunks).sum().backward()
    grads = [p.grad for p in policy.model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_checkpoint_round_trip_is_bit_identical(policy, tmp_path):
    obs = make_obs(3)
    policy.version = "test-1"
    policy.save_pretrained(tmp_path / "ckpt")
    loaded = TinyVLAPolicy.from_pretrained(tmp_path / "ckpt", expected_spec=policy.spec)
    assert loaded.version == policy.version and loaded.version.startswith("test-1@")
    assert np.array_equal(policy.predict_action_chunk(obs), loaded.predict_action_chunk(obs))
    chunks = policy.sample(obs, generator=torch.Generator().manual_seed(1)).chunks.detach()
    with torch.no_grad():
        assert torch.equal(policy.log_prob(obs, chunks), loaded.log_prob(obs, chunks))
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["norm_stats"]["action_std"]


def test_mismatched_spec_is_rejected_with_the_difference(policy, tmp_path):
    policy.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="cameras"):
        TinyVLAPolicy.from_pretrained(tmp_path / "ckpt", expected_spec=TABLETOP_SPEC.with_image_size(64, 64))


def test_missing_or_corrupt_checkpoint_gives_a_clear_error(policy, tmp_path):
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        TinyVLAPolicy.from_pretrained(tmp_path / "nothing")
    policy.save_pretrained(tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cannot load weights"):
        TinyVLAPolicy.from_pretrained(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="malformed"):
        TinyVLAPolicy.from_pretrained(tmp_path / "ckpt")


def test_bad_observations_are_refused(policy):
    obs = make_obs(3)
    obs.images["wrist"] = obs.images["wrist"][:, :16]
    with pytest.raises(ObservationError, match="camera 'wrist'"):
        policy.sample(obs)
    obs = make_obs(3)
    del obs.images["agentview"]
    with pytest.raises(ObservationError, match="missing camera 'agentview'"):
        policy.predict_action_chunk(obs)
    obs = make_obs(3)
    obs.instructions[1] = "   "
    with pytest.raises(ObservationError, match="instruction 1 is empty"):
        policy.sample(obs)
    obs = make_obs(3)
    obs.proprio[0, 0] = np.nan
    with pytest.raises(ObservationError, match="NaN"):
        policy.sample(obs)


def test_every_saved_checkpoint_has_its_own_version_naming_its_weights(policy, tmp_path):
    from srpo_trainer.policies.base import weights_fingerprint

    policy.version = "rl:run"
    policy.save_pretrained(tmp_path / "a")
    first = policy.version
    assert first == f"rl:run@{weights_fingerprint(policy)}"
    policy.save_pretrained(tmp_path / "a_again")  # same weights: same version
    assert policy.version == first
    with torch.no_grad():
        next(policy.model.parameters()).add_(1e-3)  # one update later
    policy.save_pretrained(tmp_path / "b")
    assert policy.version != first and policy.version.startswith("rl:run@")
    versions = {TinyVLAPolicy.from_pretrained(tmp_path / d).version for d in ("a", "a_again", "b")}
    assert versions == {first, policy.version}


def test_a_checkpoint_saved_without_a_fingerprint_gets_one_on_load(policy, tmp_path):
    policy.save_pretrained(tmp_path / "old")
    cfg = json.loads((tmp_path / "old" / "config.json").read_text())
    cfg["version"] = "sft:legacy"  # as checkpoints written before versions named their weights
    (tmp_path / "old" / "config.json").write_text(json.dumps(cfg))
    loaded = TinyVLAPolicy.from_pretrained(tmp_path / "old")
    assert loaded.version == policy.version.replace(policy.version.split("@")[0], "sft:legacy")
