"""RL exploration: exact densities and KLs against torch.distributions, sampling statistics, and that the fixed-std
distribution trains only the policy's mean."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from srpo_trainer.rl.exploration import (ExplorationConfig, ExplorationPolicy, chunk_log_prob, decision_kl,
                                         decision_log_probs)

from .conftest import make_obs

B, K, A = 3, 8, 7


def _equicorrelated(m: int, sigma: float, rho: float) -> torch.Tensor:
    return sigma**2 * ((1 - rho) * torch.eye(m) + rho * torch.ones(m, m))


def test_correlated_chunk_density_and_kl_match_torch_over_the_executed_steps():
    torch.manual_seed(0)
    mean, x = torch.randn(B, K, A), torch.randn(B, K, A)
    sigma, rho = 0.3, 0.6
    log_std = torch.full((1, K, A), math.log(sigma))
    steps = torch.tensor([8, 5, 1])
    mean2 = mean + 0.1 * torch.randn(B, K, A)
    logp = chunk_log_prob(x, mean, log_std, steps, rho)
    kl = decision_kl(mean, log_std, mean2, log_std, steps, rho)
    for b in range(B):
        m = int(steps[b])
        cov = _equicorrelated(m, sigma, rho)
        ref = sum(torch.distributions.MultivariateNormal(mean[b, :m, a], cov).log_prob(x[b, :m, a]) for a in range(A))
        ref_kl = sum(torch.distributions.kl_divergence(torch.distributions.MultivariateNormal(mean[b, :m, a], cov),
                                                       torch.distributions.MultivariateNormal(mean2[b, :m, a], cov))
                     for a in range(A))
        assert float(logp[b]) == pytest.approx(float(ref), rel=1e-5)
        assert float(kl[b]) == pytest.approx(float(ref_kl), rel=1e-4)


def test_diagonal_kl_and_the_three_ratio_granularities_agree():
    torch.manual_seed(1)
    mean, x = torch.randn(B, K, A), torch.randn(B, K, A)
    ls_old, ls_new = torch.randn(K, A) * 0.3 - 1, torch.randn(K, A) * 0.3 - 1
    steps = torch.tensor([8, 3, 1])
    mean2 = mean + 0.2 * torch.randn(B, K, A)
    kl = decision_kl(mean, ls_old, mean2, ls_new, steps)
    for b in range(B):
        m = int(steps[b])
        ref = torch.distributions.kl_divergence(torch.distributions.Normal(mean[b, :m], ls_old[:m].exp()),
                                                torch.distributions.Normal(mean2[b, :m], ls_new[:m].exp())).sum()
        assert float(kl[b]) == pytest.approx(float(ref), rel=1e-5)
    chunk, cm = decision_log_probs(x, mean, ls_old, steps, "chunk")
    step, sm = decision_log_probs(x, mean, ls_old, steps, "step")
    elem, em = decision_log_probs(x, mean, ls_old, steps, "element")
    assert chunk.shape == (B, 1) and step.shape == (B, K) and elem.shape == (B, K * A)
    assert sm.sum(dim=1).tolist() == [8, 3, 1] and em.sum(dim=1).tolist() == [56, 21, 7] and cm.sum() == B
    torch.testing.assert_close(chunk[:, 0], (step * sm).sum(dim=1))
    torch.testing.assert_close(chunk[:, 0], (elem * em).sum(dim=1))
    with pytest.raises(ValueError, match="ratio=chunk"):
        decision_log_probs(x, mean, ls_old, steps, "step", rho=0.5)


def test_fixed_std_sampling_has_the_configured_spread_and_correlation(policy):
    explore = ExplorationPolicy(policy, ExplorationConfig(std_mode="fixed", std=0.25, chunk_correlation=0.7))
    obs = make_obs(batch=1)
    batch = type(obs)({c: np.repeat(v, 400, axis=0) for c, v in obs.images.items()}, np.repeat(obs.proprio, 400, 0),
                      obs.instructions * 400)
    with torch.no_grad():
        out = explore.sample(batch, 1.0, torch.Generator().manual_seed(0))
        mean, _ = explore.distribution(batch)
        noise = explore.normalise(out.chunks, mean) - mean
        # the returned log-probs are the exact density of what was sampled
        torch.testing.assert_close(out.log_probs, explore.log_prob(batch, out.chunks), rtol=1e-5, atol=1e-3)
    assert float(noise.std()) == pytest.approx(0.25, rel=0.05)
    corr = np.corrcoef(noise[:, 0, 0].numpy(), noise[:, 5, 0].numpy())[0, 1]
    assert corr == pytest.approx(0.7, abs=0.08)
    assert abs(np.corrcoef(noise[:, 0, 0].numpy(), noise[:, 0, 1].numpy())[0, 1]) < 0.15  # dims independent


def test_fixed_std_trains_the_mean_only_and_clamped_std_stays_in_range(policy):
    obs = make_obs(batch=2)
    explore = ExplorationPolicy(policy, ExplorationConfig(std_mode="fixed", std=0.2))
    with torch.no_grad():
        chunks = explore.sample(obs, 1.0, torch.Generator().manual_seed(0)).chunks
    explore.log_prob(obs, chunks).sum().backward()
    assert policy.model.log_std.grad is None  # the SFT log-std is not what RL explores with
    assert policy.model.head[1].weight.grad is not None and policy.model.head[1].weight.grad.abs().sum() > 0
    with torch.no_grad():
        policy.model.log_std.fill_(2.0)  # far above the range
    clamped = ExplorationPolicy(policy, ExplorationConfig(std_mode="clamped", min_std=0.05, max_std=0.3))
    _, log_std = clamped.distribution(obs, 1.0)
    assert torch.allclose(log_std.exp(), torch.tensor(0.3))
    _, log_std = clamped.distribution(obs, 2.0)  # the temperature scales what the clamp allows
    assert torch.allclose(log_std.exp(), torch.tensor(0.6))


@pytest.mark.parametrize("kwargs, message", [
    (dict(std_mode="wide"), "std_mode"),
    (dict(std=0.0), "std > 0"),
    (dict(chunk_correlation=1.0), "chunk_correlation"),
    (dict(std_mode="learned", chunk_correlation=0.5), "std_mode=fixed"),
])
def test_bad_exploration_configs_fail_when_built(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ExplorationConfig(**kwargs)
