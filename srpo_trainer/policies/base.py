"""The policy interface that the trainer, the evaluator, the exporter and the ROS policy node talk to.

A policy maps a batch of raw observations (uint8 images, proprioception, instruction strings) to an *action chunk*
of K future actions in the env's action units. It is stochastic for RL: ``sample`` draws a chunk and returns its
exact log-probability, and ``log_prob`` scores a given chunk. Larger VLAs (OpenVLA-OFT, SmolVLA, pi0) plug in by
implementing these methods; nothing downstream looks inside. A ``Policy`` is also an ``InferencePolicy`` (the
torch-free runtime's protocol, ``srpo/runtime/policy.py``): the PyTorch reference backend.

Log-probabilities are densities of the chunk in the policy's *normalised* action space. They differ from densities
in env units by a constant (the normaliser's Jacobian), which cancels in every PPO ratio.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from srpo.runtime.observation import Observation
from srpo.spec import RobotSpec


@dataclass
class PolicyOutput:
    """Sampled chunks in env action units (B, K, A), unclipped, and their log-probabilities (B,).

    ``means`` / ``log_stds`` (B, K, A): the Gaussian they were drawn from, in normalised action units at the sampling
    temperature, with noise correlated ``chunk_correlation`` across a chunk's steps. Episodes store them, so offline
    learners can recompute old log-probabilities without the acting checkpoint."""

    chunks: torch.Tensor
    log_probs: torch.Tensor
    means: torch.Tensor | None = None
    log_stds: torch.Tensor | None = None
    chunk_correlation: float = 0.0

    def distribution_meta(self) -> dict:
        """The ``EpisodeMeta.policy_distribution`` entry that says how to read ``means`` and ``log_stds``."""
        return {"family": "gaussian", "space": "normalised", "chunk_correlation": float(self.chunk_correlation)}


Generators = torch.Generator | list[torch.Generator] | None
"""Sampling noise: one generator for the whole batch, or one per batch row (``standard_normal``)."""


def standard_normal(shape: tuple[int, ...], generator: Generators, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """N(0, 1) noise of ``shape``. With a list of generators, row ``i`` is drawn from generator ``i`` alone: an
    episode that owns its generator gets the same noise whichever other episodes share its inference batch, so a
    rollout does not depend on how its episodes were spread over workers."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)
    if len(generator) != shape[0]:
        raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
    rows = [torch.randn(tuple(shape[1:]), generator=g, dtype=dtype) for g in generator]
    return torch.stack(rows).to(device) if rows else torch.zeros(shape, dtype=dtype, device=device)


def episode_seed(seed: int, index: int) -> int:
    """The seed of the ``index``-th episode of a job list sampled with ``seed``: episodes own their noise."""
    return int(np.random.SeedSequence([int(seed), int(index), 41]).generate_state(1)[0])


class Policy(nn.Module, ABC):
    """Abstract VLA policy. Subclasses also provide ``save_pretrained`` / ``from_pretrained``."""

    spec: RobotSpec
    chunk_size: int
    version: str
    backend = "torch"

    @abstractmethod
    def sample(self, obs: Observation, temperature: float = 1.0, generator: Generators = None) -> PolicyOutput:
        """Draw one chunk per batch item; ``temperature`` scales the spread (1.0 = the learned distribution).
        ``generator``: one for the batch, or one per row (``standard_normal``)."""

    @abstractmethod
    def log_prob(self, obs: Observation, chunks: torch.Tensor, temperature: float = 1.0,
                 per_element: bool = False) -> torch.Tensor:
        """Exact log-probability (B,) of ``chunks`` (B, K, A, env units) under the policy at ``temperature``.

        ``per_element``: the log-density of every chunk element (B, K, A) instead (they sum to the chunk's); the
        RL update takes its ratios per element, as token-level PPO does for VLAs that emit action tokens."""

    @abstractmethod
    def predict_action_chunk(self, obs: Observation) -> np.ndarray:
        """The deterministic (mode) chunk (B, K, A) in env units, clipped to the action bounds."""

    def predict_distribution(self, obs: Observation) -> tuple[np.ndarray, np.ndarray]:
        """The runtime protocol's view: normalised chunk mean (B, K, A) and log-std (K, A) at temperature 1."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its chunk distribution")

    def entropy(self, obs: Observation, temperature: float = 1.0) -> torch.Tensor | None:
        """Entropy (B,) of the chunk distribution, where the policy can give it in closed form (else None)."""
        return None

    def reset(self) -> None:
        """Clear per-episode state (the built-in policy has none)."""

    @abstractmethod
    def save_pretrained(self, directory) -> None: ...


def weights_fingerprint(module: nn.Module) -> str:
    """12 hex digits of the SHA-256 of every parameter and buffer (names and bytes, sorted by name): the same weights
    give the same fingerprint, different weights (in practice) never do."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:12]


def version_lineage(version: str) -> str:
    """The part of a policy version before ``@``: where the weights come from (``sft:<run>``, ``rl:<run>``)."""
    return version.split("@", 1)[0]


def stamp_version(policy: nn.Module, lineage: str | None = None) -> str:
    """Set ``policy.version`` to ``<lineage>@<weights fingerprint>`` and return it.

    Every saved checkpoint and every set of weights that acts in a rollout carries its own version, so a recorded
    episode names exactly the weights that produced it (two checkpoints of one run differ by their fingerprint)."""
    policy.version = f"{version_lineage(lineage or policy.version)}@{weights_fingerprint(policy)}"
    return policy.version
