"""The distribution RL samples from and scores with, decoupled from the SFT policy's own log-std.

A Gaussian chunk policy gives a mean ``mu(s)`` (K x A, normalised action units) and a log-std learned by maximum
likelihood on a few demonstrations. PPO on that learned std is fragile (it neither moves nor stays put where it is
useful; see the README's diagnosis), so RL explores with a distribution chosen by config:

    std.mode = learned:  sigma_ka = T * exp(log_std_ka)                             (the policy's own; the SFT value)
    std.mode = clamped:  sigma_ka = T * clip(exp(log_std_ka), min_std, max_std)     (learned, kept in a range)
    std.mode = fixed:    sigma    = T * std                                         (one constant, not trained)

``T`` is the sampling temperature. With ``chunk_correlation = rho > 0`` (fixed std only) the noise of each action
dimension is correlated across the chunk's steps, so exploration is a coherent deviation rather than per-step
jitter that the arm averages away:

    eps_ka = sigma * (sqrt(1 - rho) z_ka + sqrt(rho) z_a),    z ~ N(0, 1)
    Sigma_a = sigma^2 ((1 - rho) I_m + rho 1 1^T)   over the m executed steps of the chunk

The marginal of an equicorrelated Gaussian over its first m steps is equicorrelated with the same rho, so a chunk
executed only partly (``execute_steps`` < K, or the episode ended) is scored exactly over the steps that ran:

    log p(x) = sum_a [ -0.5 d_a^T Sigma_a^-1 d_a ] - 0.5 A log det Sigma - 0.5 A m log(2 pi),   d_a = x_a - mu_a
    Sigma^-1 = (I - c 1 1^T) / (sigma^2 (1 - rho)),   c = rho / (1 - rho + m rho)
    log det Sigma = m log sigma^2 + (m - 1) log(1 - rho) + log(1 - rho + m rho)

Log-probabilities come at three granularities (``update.ratio``): per chunk element (K x A), per step (summed over
the A action dimensions) or per chunk (summed over the executed elements). Correlated noise has no per-element
density, so it needs ``ratio = chunk``. The exact KL between the old and the current distribution of each decision
(``decision_kl``) is what the update's KL guard measures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from srpo_trainer.policies.base import Generators, Observation, Policy, PolicyOutput, standard_normal
from srpo_trainer.policies.tiny_vla import gaussian_log_prob_elements

STD_MODES = ("learned", "clamped", "fixed")
RATIOS = ("element", "step", "chunk")


@dataclass
class ExplorationConfig:
    """How rollouts sample chunks and how the update scores them (see the module docstring)."""

    std_mode: str = "fixed"
    """learned (the SFT log-std, trained by PPO: the paper's setting), clamped, or fixed (not trained)."""
    std: float = 0.2
    """The fixed std, in normalised action units (``std_mode=fixed``)."""
    min_std: float = 0.05
    max_std: float = 0.5
    """The range of the learned std (``std_mode=clamped``)."""
    chunk_correlation: float = 0.0
    """rho in [0, 1): correlation of the noise across the steps of a chunk (needs std_mode=fixed)."""

    def __post_init__(self) -> None:
        if self.std_mode not in STD_MODES:
            raise ValueError(f"exploration.std_mode must be one of {STD_MODES}, got {self.std_mode!r}")
        if self.std <= 0 or not 0 < self.min_std < self.max_std:
            raise ValueError("need exploration.std > 0 and 0 < exploration.min_std < exploration.max_std")
        if not 0 <= self.chunk_correlation < 1:
            raise ValueError(f"exploration.chunk_correlation must be in [0, 1), got {self.chunk_correlation}")
        if self.chunk_correlation > 0 and self.std_mode != "fixed":
            raise ValueError("exploration.chunk_correlation > 0 needs exploration.std_mode=fixed")


class ExplorationPolicy(Policy):
    """Wraps a Gaussian chunk policy (one with ``distribution(obs, T) -> mean, log_std`` in normalised units and a
    ``processor``) and samples / scores with the configured exploration distribution. The mean network is the
    wrapped policy's, so updating through this object trains it; evaluation and checkpoints use the wrapped policy."""

    def __init__(self, policy: Policy, cfg: ExplorationConfig) -> None:
        super().__init__()
        if not hasattr(policy, "distribution") or not hasattr(policy, "processor"):
            raise TypeError(f"{type(policy).__name__} is not a Gaussian chunk policy (needs distribution() and a "
                            "processor); RL exploration cannot wrap it")
        self.policy, self.cfg = policy, cfg
        self.spec, self.chunk_size = policy.spec, policy.chunk_size

    @property
    def version(self) -> str:  # the wrapped policy's, so recorded episodes name the acting checkpoint
        return self.policy.version

    @version.setter
    def version(self, value: str) -> None:
        if "policy" in self._modules:
            self.policy.version = value

    def distribution(self, obs: Observation, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (B, K, A) and log-std broadcastable to it, normalised units."""
        mean, log_std = self.policy.distribution(obs, 1.0)
        log_t = math.log(temperature)
        if self.cfg.std_mode == "fixed":
            return mean, torch.full_like(mean[:1], math.log(self.cfg.std) + log_t)
        if self.cfg.std_mode == "clamped":
            log_std = log_std.clamp(math.log(self.cfg.min_std), math.log(self.cfg.max_std))
        return mean, log_std + log_t

    def sample(self, obs: Observation, temperature: float = 1.0, generator: Generators = None) -> PolicyOutput:
        mean, log_std = self.distribution(obs, temperature)
        z = standard_normal(tuple(mean.shape), generator, mean.dtype, mean.device)
        rho = self.cfg.chunk_correlation
        if rho > 0:
            shared = standard_normal((mean.shape[0], 1, mean.shape[2]), generator, mean.dtype, mean.device)
            z = math.sqrt(1 - rho) * z + math.sqrt(rho) * shared
        x = mean + z * log_std.exp()
        steps = torch.full((mean.shape[0],), mean.shape[1], device=mean.device)
        logp = chunk_log_prob(x, mean, log_std, steps, rho)
        return PolicyOutput(self.policy.processor.unnormalize_actions(x), logp, mean,
                            torch.broadcast_to(log_std, mean.shape), rho)

    def normalise(self, chunks: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return self.policy.processor.normalize_actions(torch.as_tensor(chunks, dtype=like.dtype, device=like.device))

    def log_prob(self, obs: Observation, chunks: torch.Tensor, temperature: float = 1.0,
                 per_element: bool = False) -> torch.Tensor:
        if per_element and self.cfg.chunk_correlation > 0:
            raise ValueError("correlated exploration noise has no per-element density; score whole chunks")
        mean, log_std = self.distribution(obs, temperature)
        x = self.normalise(chunks, mean)
        if per_element:
            return element_log_prob(x, mean, log_std)
        return chunk_log_prob(x, mean, log_std, torch.full((mean.shape[0],), mean.shape[1], device=mean.device),
                              self.cfg.chunk_correlation)

    def predict_action_chunk(self, obs: Observation):
        return self.policy.predict_action_chunk(obs)

    def save_pretrained(self, directory):
        """The wrapped policy's checkpoint: exploration is a training-time choice, not part of the policy."""
        return self.policy.save_pretrained(directory)

    def entropy(self, obs: Observation, temperature: float = 1.0) -> torch.Tensor:
        """Entropy (B,) of the whole chunk's exploration distribution (closed form)."""
        mean, log_std = self.distribution(obs, temperature)
        B, K, A = mean.shape
        steps = torch.full((B,), K, device=mean.device)
        log_det = _log_det(torch.broadcast_to(log_std, mean.shape), steps, self.cfg.chunk_correlation)
        return 0.5 * log_det + 0.5 * K * A * math.log(2 * math.pi * math.e)


# ------------------------------------------------------------------------------------------- pure functions
# log N(x_ka | mu_ka, sigma_ka^2) per chunk element, (B, K, A): the policy's own definition
element_log_prob = gaussian_log_prob_elements


def _step_mask(steps: torch.Tensor, K: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, K, 1) which rows of each chunk count: the first ``steps[b]`` rows, or, for a (B, K) mask, the rows it marks
    (a robot's asynchronous chunker executes rows that need not start at row 0; ``offline.served_rows``)."""
    if steps.ndim == 2:
        return steps.to(dtype)[..., None]
    return (torch.arange(K, device=steps.device)[None, :] < steps[:, None]).to(dtype)[..., None]


def _log_det(log_std: torch.Tensor, steps: torch.Tensor, rho: float) -> torch.Tensor:
    """log det of the covariance over the first ``steps`` steps of every action dimension, (B,)."""
    m = _step_mask(steps, log_std.shape[1], log_std.dtype)
    log_det = (2 * log_std * m).sum(dim=(1, 2))
    if rho > 0:
        mf = steps.to(log_std.dtype)
        A = log_std.shape[2]
        log_det = log_det + A * ((mf - 1) * math.log(1 - rho) + torch.log(1 - rho + mf * rho))
    return log_det


def chunk_log_prob(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor, steps: torch.Tensor,
                   rho: float = 0.0) -> torch.Tensor:
    """log-density (B,) of the first ``steps[b]`` steps of each chunk (all A dims); equicorrelated across steps
    with ``rho`` (then ``log_std`` must be the same for every element, as with a fixed std)."""
    B, K, A = x.shape
    m = _step_mask(steps, K, x.dtype)
    log_std = torch.broadcast_to(log_std, x.shape)
    z = (x - mean) * torch.exp(-log_std) * m  # standardised, zero on steps that did not run
    quad = z.pow(2).sum(dim=(1, 2))
    if rho > 0:
        if steps.ndim != 1:
            raise ValueError("correlated noise is scored over a prefix of the chunk: pass step counts, not a row mask")
        mf = steps.to(x.dtype)
        c = rho / (1 - rho + mf * rho)
        quad = (quad - c[:, None].mul(z.sum(dim=1).pow(2)).sum(dim=1)) / (1 - rho)
    n = m.sum(dim=(1, 2)) * A
    return -0.5 * quad - 0.5 * _log_det(log_std, steps, rho) - 0.5 * n * math.log(2 * math.pi)


def decision_log_probs(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor, steps: torch.Tensor,
                       ratio: str, rho: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of sampled chunks at the granularity the PPO ratio is taken at, and which of them count:

    element: (B, K*A) per-element log-densities; step: (B, K) summed over the A dims; chunk: (B, 1) over the
    executed steps. The mask (same shape) is 1 where the step ran (``steps[b]`` executed steps per chunk)."""
    B, K, A = x.shape
    if ratio == "chunk":
        return chunk_log_prob(x, mean, log_std, steps, rho)[:, None], torch.ones(B, 1, dtype=x.dtype, device=x.device)
    if rho > 0:
        raise ValueError("correlated exploration noise needs update.ratio=chunk")
    el = element_log_prob(x, mean, torch.broadcast_to(log_std, x.shape))
    m = _step_mask(steps, K, x.dtype)
    if ratio == "step":
        return el.sum(dim=2), m[..., 0]
    if ratio == "element":
        return el.reshape(B, K * A), torch.broadcast_to(m, x.shape).reshape(B, K * A)
    raise ValueError(f"ratio must be one of {RATIOS}, got {ratio!r}")


def decision_kl(mean_old: torch.Tensor, log_std_old: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor,
                steps: torch.Tensor, rho: float = 0.0) -> torch.Tensor:
    """Exact KL(old || new) (B,) of each chunk's distribution over its executed steps.

    Diagonal: sum_ka [log(s_n / s_o) + (s_o^2 + (mu_o - mu_n)^2) / (2 s_n^2) - 1/2] over executed elements.
    Equicorrelated with equal stds (fixed std): 0.5 sum_a d_a^T Sigma^-1 d_a, d = mu_n - mu_o."""
    B, K, A = mean.shape
    log_std_old = torch.broadcast_to(log_std_old, mean.shape)
    log_std = torch.broadcast_to(log_std, mean.shape)
    m = _step_mask(steps, K, mean.dtype)
    if rho > 0:
        zeros = torch.zeros_like(mean)
        return -(chunk_log_prob(mean_old, mean, log_std, steps, rho) - chunk_log_prob(zeros, zeros, log_std, steps,
                                                                                       rho))
    var_o, var_n = torch.exp(2 * log_std_old), torch.exp(2 * log_std)
    kl = (log_std - log_std_old) + (var_o + (mean_old - mean).pow(2)) / (2 * var_n) - 0.5
    return (kl * m).sum(dim=(1, 2))


__all__ = ["ExplorationConfig", "ExplorationPolicy", "RATIOS", "STD_MODES", "chunk_log_prob", "decision_kl",
           "decision_log_probs", "element_log_prob"]
