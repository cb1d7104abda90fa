"""Input/output processing shared by training, evaluation, export and the ROS runtime: validation, normalisation
and tokenisation. Normalisation lives here, outside the model, and its statistics travel with every checkpoint.

- Images: uint8 (H, W, 3) -> float (3, H, W) in [-1, 1].
- Proprioception and actions: ``(x - mean) / std`` with statistics from the training episodes; std is floored at
  ``STD_FLOOR`` so that a dimension the demos never move (e.g. roll) does not blow up rare values.
- Instructions: the policy's tokenizer (UTF-8 bytes by default, see ``policies/text.py``) gives ids and a mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

import numpy as np
import torch

from srpo.episodes.schema import Episode
from srpo.spec import RobotSpec

if TYPE_CHECKING:
    from srpo_trainer.policies.base import Observation

STD_FLOOR = 0.05


class ObservationError(ValueError):
    """An observation the policy must not act on; the message names the problem."""


@dataclass
class NormStats:
    """Per-dimension mean and std of actions and proprioception."""

    action_mean: np.ndarray
    action_std: np.ndarray
    proprio_mean: np.ndarray
    proprio_std: np.ndarray

    @classmethod
    def from_episodes(cls, episodes: Iterable[Episode]) -> "NormStats":
        actions, proprio = [], []
        for ep in episodes:
            actions.append(ep.actions)
            proprio.append(ep.proprio)
        if not actions:
            raise ValueError("cannot compute normalisation statistics from zero episodes")
        a, p = np.concatenate(actions), np.concatenate(proprio)
        return cls(a.mean(0), np.maximum(a.std(0), STD_FLOOR), p.mean(0), np.maximum(p.std(0), STD_FLOOR))

    def to_dict(self) -> dict[str, list[float]]:
        return {k: np.asarray(getattr(self, k), dtype=np.float64).tolist() for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: dict) -> "NormStats":
        return cls(**{k: np.asarray(d[k], dtype=np.float32) for k in cls.__dataclass_fields__})


class Processor:
    """Validates raw observations and turns them into model tensors; maps actions to and from normalised units."""

    def __init__(self, spec: RobotSpec, stats: NormStats, tokenizer=None) -> None:
        from srpo_trainer.policies.text import ByteTokenizer

        self.spec, self.stats = spec, stats
        self.tokenizer = tokenizer or ByteTokenizer(96)
        self.cameras = [c.name for c in spec.observation.cameras]
        A, P = spec.action.dim, spec.observation.proprio_dim
        if stats.action_mean.shape != (A,) or stats.proprio_mean.shape != (P,):
            raise ValueError(f"normalisation stats have action {stats.action_mean.shape} / proprio "
                             f"{stats.proprio_mean.shape}, the spec needs ({A},) / ({P},)")

    # ------------------------------------------------------------------------------------------------ observations
    def check(self, obs: Observation) -> None:
        B = obs.batch_size
        if B == 0:
            raise ObservationError("empty batch")
        for cam in self.spec.observation.cameras:
            if cam.name not in obs.images:
                raise ObservationError(f"missing camera {cam.name!r}; got {sorted(obs.images)}")
            img = np.asarray(obs.images[cam.name])
            want = (B, cam.height, cam.width, 3)
            if img.shape != want or img.dtype != np.uint8:
                raise ObservationError(f"camera {cam.name!r}: got {img.dtype} {img.shape}, expected uint8 {want}")
        prop = np.asarray(obs.proprio)
        if prop.shape != (B, self.spec.observation.proprio_dim):
            raise ObservationError(f"proprio has shape {prop.shape}, expected ({B}, {self.spec.observation.proprio_dim})")
        if not np.all(np.isfinite(prop)):
            raise ObservationError("proprio contains NaN or inf")
        for i, text in enumerate(obs.instructions):
            if not isinstance(text, str) or not text.strip():
                raise ObservationError(f"instruction {i} is empty")
            if len(text.encode()) > self.tokenizer.max_bytes():
                raise ObservationError(f"instruction {i} is {len(text.encode())} bytes; the limit is {self.tokenizer.max_bytes()}")

    def images(self, obs: Observation, device=None) -> torch.Tensor:
        """(B, n_cameras, 3, H, W) float in [-1, 1]."""
        stacked = np.stack([np.asarray(obs.images[c]) for c in self.cameras], axis=1)
        x = torch.as_tensor(stacked, device=device).permute(0, 1, 4, 2, 3).float()
        return x / 127.5 - 1.0

    def proprio(self, obs: Observation, device=None) -> torch.Tensor:
        p = (np.asarray(obs.proprio, np.float32) - self.stats.proprio_mean) / self.stats.proprio_std
        return torch.as_tensor(p, dtype=torch.float32, device=device)

    def tokenize(self, instructions: list[str], device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (B, L) and mask (B, L), padded to the longest instruction of the batch."""
        return self.tokenizer(instructions, device)

    # ----------------------------------------------------------------------------------------------------- actions
    def normalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        mean = torch.as_tensor(self.stats.action_mean, dtype=actions.dtype, device=actions.device)
        std = torch.as_tensor(self.stats.action_std, dtype=actions.dtype, device=actions.device)
        return (actions - mean) / std

    def unnormalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        mean = torch.as_tensor(self.stats.action_mean, dtype=actions.dtype, device=actions.device)
        std = torch.as_tensor(self.stats.action_std, dtype=actions.dtype, device=actions.device)
        return actions * std + mean
