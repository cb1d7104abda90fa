"""One policy decision on a robot: the chunk to execute and everything a recorder stores about it, in numpy.

Every backend gives the chunk distribution in normalised action units (``predict_distribution``: mean ``mu`` (K, A)
and log-std ``s`` (K, A)). A decision at temperature ``T`` acts with

    T = 0:  x = mu                                   (deterministic; scored under T = 1)
    T > 0:  x = mu + T exp(s) z,  z ~ N(0, I)        (exploration, for robot data that RL learns from)
    fixed:  x = mu + T sigma_0 z                      (``fixed_std`` = sigma_0: the trainer's ``exploration.std_mode
                                                       = fixed``, so the robot explores as the simulator rollouts do)

    log p(x) = sum_ka [ -0.5 ((x - mu) / sigma)^2 - log sigma - 0.5 log(2 pi) ]
    sigma = T exp(s) for T > 0, exp(s) for T = 0

and returns the chunk in env units (unnormalised, unclipped: the chunker and the arm's safety filter bound what is
executed), its log-probability, and the mean and log-std it was drawn from, exactly what ``Episode.chunk_means`` /
``chunk_log_stds`` hold. It matches the trainer's Gaussian policies, so robot episodes feed the same offline update.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from srpo.runtime.observation import Observation

_LOG_2PI = math.log(2 * math.pi)


@dataclass
class Decision:
    """One chunk chosen from one observation (``chunk`` (K, A) env units; ``mean``/``log_std`` normalised units)."""

    chunk: np.ndarray
    log_prob: float
    mean: np.ndarray
    log_std: np.ndarray
    temperature: float


def gaussian_log_prob(x: np.ndarray, mean: np.ndarray, log_std: np.ndarray) -> float:
    """log N(x | mean, diag(exp(log_std))^2), summed over every element."""
    z = (x - mean) * np.exp(-log_std)
    return float(np.sum(-0.5 * z * z - log_std - 0.5 * _LOG_2PI))


def decide(policy: Any, obs: Observation, temperature: float, rng: np.random.Generator,
           fixed_std: float | None = None) -> Decision:
    """Choose a chunk for the single observation ``obs`` (batch 1) with ``policy`` (any ``InferencePolicy`` that
    has a ``processor`` with the normalisation statistics); ``fixed_std`` replaces the policy's own std."""
    if obs.batch_size != 1:
        raise ValueError(f"decide() takes one observation, got a batch of {obs.batch_size}")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if fixed_std is not None and not fixed_std > 0:
        raise ValueError(f"fixed_std must be > 0 (or None: the policy's own std), got {fixed_std}")
    mean, log_std = policy.predict_distribution(obs)
    mean = np.asarray(mean, np.float32)[0]
    if fixed_std is not None:
        log_std = np.full(mean.shape, math.log(fixed_std), np.float32)
    log_std = np.broadcast_to(np.asarray(log_std, np.float32), mean.shape)
    if temperature > 0:
        log_std = (log_std + math.log(temperature)).astype(np.float32)
        x = (mean + np.exp(log_std) * rng.standard_normal(mean.shape)).astype(np.float32)
    else:
        x = mean.copy()
    chunk = policy.processor.unnormalize_actions(x)
    if not (np.all(np.isfinite(chunk)) and np.all(np.isfinite(log_std))):
        raise FloatingPointError("the policy produced a non-finite chunk or scale")
    return Decision(chunk, gaussian_log_prob(x, mean, log_std), mean, np.array(log_std, np.float32), float(temperature))


__all__ = ["Decision", "decide", "gaussian_log_prob"]
