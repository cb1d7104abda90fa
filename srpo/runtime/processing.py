"""Observation and action processing in numpy: what every backend (torch, ONNX Runtime, TensorRT) runs around the
network, so that one checkpoint gives the same actions everywhere.

- Validation: the cameras of the spec at their size, uint8; finite proprio of the right width; non-empty instructions
  that fit the tokenizer. A bad observation raises ``ObservationError`` and never reaches the network (or the arm).
- Images: uint8 (H, W, 3) -> float32 (3, H, W) in [-1, 1], stacked over cameras in spec order: (B, n_cams, 3, H, W).
- Proprioception and actions: ``(x - mean) / std`` with ``NormStats`` from the training episodes; std is floored at
  ``STD_FLOOR`` so that a dimension the demos never move (e.g. roll) does not blow up rare values. The statistics are
  defined here once and travel with every checkpoint and every exported model.
- Instructions: UTF-8 bytes + BOS/EOS (``ByteTokenizer``), padded with 0 to the batch's longest or to a fixed length
  (exported graphs take a fixed length).

The torch ``Processor`` of the trainer does the same arithmetic on tensors (on the training device); a parity test
keeps the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

import numpy as np

from srpo.runtime.observation import Observation, ObservationError
from srpo.spec import RobotSpec

if TYPE_CHECKING:
    from srpo.episodes.schema import Episode

STD_FLOOR = 0.05
PAD, BOS, EOS = 0, 1, 2
BYTE_OFFSET = 3
BYTE_VOCAB = 256 + BYTE_OFFSET


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
        try:
            stats = cls(**{k: np.asarray(d[k], dtype=np.float32) for k in cls.__dataclass_fields__})
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed normalisation statistics: {exc}") from exc
        for k in cls.__dataclass_fields__:
            v = getattr(stats, k)
            if v.ndim != 1 or not np.all(np.isfinite(v)):
                raise ValueError(f"normalisation statistic {k} must be a finite vector, got {v.tolist()}")
        if np.any(stats.action_std <= 0) or np.any(stats.proprio_std <= 0):
            raise ValueError("normalisation std must be > 0")
        return stats


class ByteTokenizer:
    """UTF-8 bytes + BOS/EOS: no vocabulary file to ship. Returns int64 ids and a bool mask (True = real token)."""

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len

    def max_bytes(self) -> int:
        return self.max_len - 2

    def encode(self, texts: list[str], pad_to: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Ids (B, L) and mask (B, L); L is the longest row, or ``pad_to`` (an exported graph's fixed length)."""
        rows = [[BOS, *(b + BYTE_OFFSET for b in t.encode()), EOS][: self.max_len] for t in texts]
        width = pad_to if pad_to is not None else max(len(r) for r in rows)
        ids = np.full((len(rows), width), PAD, np.int64)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
        return ids, ids != PAD


class Preprocessor:
    """Validates raw observations and turns them into the network's float arrays; maps actions to and from the
    normalised units the network predicts."""

    def __init__(self, spec: RobotSpec, stats: NormStats, tokenizer=None) -> None:
        self.spec, self.stats = spec, stats
        self.tokenizer = tokenizer if tokenizer is not None else ByteTokenizer(96)
        self.cameras = [c.name for c in spec.observation.cameras]
        A, P = spec.action.dim, spec.observation.proprio_dim
        if stats.action_mean.shape != (A,) or stats.proprio_mean.shape != (P,):
            raise ValueError(f"normalisation stats have action {stats.action_mean.shape} / proprio "
                             f"{stats.proprio_mean.shape}, the spec needs ({A},) / ({P},)")

    # ------------------------------------------------------------------------------------------------ observations
    def check(self, obs: Observation) -> None:
        """Raise ``ObservationError`` naming the first problem; return None for an observation the policy may use."""
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
                raise ObservationError(f"instruction {i} is {len(text.encode())} bytes; the limit is "
                                       f"{self.tokenizer.max_bytes()}")

    def images(self, obs: Observation) -> np.ndarray:
        """(B, n_cameras, 3, H, W) float32 in [-1, 1]."""
        stacked = np.stack([np.asarray(obs.images[c]) for c in self.cameras], axis=1)
        return stacked.transpose(0, 1, 4, 2, 3).astype(np.float32) / np.float32(127.5) - np.float32(1.0)

    def proprio(self, obs: Observation) -> np.ndarray:
        p = (np.asarray(obs.proprio, np.float32) - self.stats.proprio_mean) / self.stats.proprio_std
        return p.astype(np.float32)

    def tokenize(self, instructions: list[str], pad_to: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.tokenizer.encode(list(instructions), pad_to)

    def inputs(self, obs: Observation, text_len: int | None = None) -> dict[str, np.ndarray]:
        """Validated network inputs by name (the exported graphs' input names)."""
        self.check(obs)
        ids, mask = self.tokenize(obs.instructions, text_len)
        return {"images": self.images(obs), "proprio": self.proprio(obs), "text_ids": ids, "text_mask": mask}

    # ----------------------------------------------------------------------------------------------------- actions
    def normalize_actions(self, actions: np.ndarray) -> np.ndarray:
        return ((np.asarray(actions, np.float32) - self.stats.action_mean) / self.stats.action_std).astype(np.float32)

    def unnormalize_actions(self, actions: np.ndarray) -> np.ndarray:
        return (np.asarray(actions, np.float32) * self.stats.action_std + self.stats.action_mean).astype(np.float32)

    def action_chunk(self, mean: np.ndarray) -> np.ndarray:
        """The executable chunk (B, K, A) in env units: the network's normalised mean, unnormalised and clipped to the
        action bounds. A non-finite value is an error, never an action."""
        chunk = self.unnormalize_actions(mean)
        if not np.all(np.isfinite(chunk)):
            raise FloatingPointError("the policy produced a non-finite action chunk")
        return np.clip(chunk, self.spec.action.low, self.spec.action.high)


__all__ = ["BOS", "BYTE_OFFSET", "BYTE_VOCAB", "ByteTokenizer", "EOS", "NormStats", "PAD", "Preprocessor", "STD_FLOOR"]
