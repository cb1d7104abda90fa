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

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from srpo.runtime.observation import Observation
from srpo.spec import RobotSpec


@dataclass
class PolicyOutput:
    """Sampled chunks in env action units (B, K, A), unclipped, and their log-probabilities (B,)."""

    chunks: torch.Tensor
    log_probs: torch.Tensor


class Policy(nn.Module, ABC):
    """Abstract VLA policy. Subclasses also provide ``save_pretrained`` / ``from_pretrained``."""

    spec: RobotSpec
    chunk_size: int
    version: str
    backend = "torch"

    @abstractmethod
    def sample(self, obs: Observation, temperature: float = 1.0, generator: torch.Generator | None = None) -> PolicyOutput:
        """Draw one chunk per batch item; ``temperature`` scales the spread (1.0 = the learned distribution)."""

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
