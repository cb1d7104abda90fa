"""A robot's decision in numpy (``srpo.runtime.sampling``) scores chunks exactly as the trainer's torch policy does, so
robot episodes feed the same offline update."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from srpo.runtime.loading import load_inference_policy
from srpo.runtime.sampling import decide
from tests.export.conftest import recorded


@pytest.mark.parametrize("temperature", [0.0, 0.5, 1.0])
def test_decision_log_prob_equals_the_torch_policy(exported, checkpoint, episode_store, temperature):
    from srpo_trainer.policies import load_policy

    ort_policy, torch_policy = load_inference_policy(exported, "onnxruntime"), load_policy(checkpoint)
    obs = recorded(episode_store, 1, seed=3)
    d = decide(ort_policy, obs, temperature, np.random.default_rng(0))
    assert d.chunk.shape == d.mean.shape == d.log_std.shape == (8, 7)
    with torch.no_grad():
        # a deterministic decision is scored under the untempered distribution (T = 1)
        ref = torch_policy.log_prob(obs, torch.from_numpy(d.chunk[None]), temperature=temperature or 1.0)
    assert d.log_prob == pytest.approx(float(ref[0]), abs=2e-3)
    if temperature == 0:  # deterministic: the chunk is the mean, what predict_action_chunk executes
        np.testing.assert_allclose(np.clip(d.chunk, -1, 1), ort_policy.predict_action_chunk(obs)[0], atol=1e-6)
    else:  # sampled: drawn around the mean with the tempered scale
        z = (ort_policy.processor.normalize_actions(d.chunk) - d.mean) / np.exp(d.log_std)
        assert 0.3 < z.std() < 2.0
        np.testing.assert_allclose(d.log_std - np.log(temperature), ort_policy.predict_distribution(obs)[1], atol=1e-5)


def test_decisions_are_seeded_and_refuse_bad_input(exported, episode_store):
    policy = load_inference_policy(exported, "onnxruntime")
    obs = recorded(episode_store, 1, seed=4)
    a, b = (decide(policy, obs, 1.0, np.random.default_rng(7)) for _ in range(2))
    assert np.array_equal(a.chunk, b.chunk) and a.log_prob == b.log_prob
    with pytest.raises(ValueError, match="batch of 2"):
        decide(policy, recorded(episode_store, 2), 1.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="temperature"):
        decide(policy, obs, -1.0, np.random.default_rng(0))
