"""The trajectory-encoder interface: an episode's frames in, one embedding vector out.

The progress reward compares trajectories in an encoder's latent space, so every encoder owns its own frame sampling
(how many frames, spread over the episode with ``sample_frames``), resizing and pixel normalisation. Encoders load only
from local paths (or a Hugging Face cache): nothing is downloaded at run time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class EncoderError(ValueError):
    """An encoder that cannot be loaded (missing or corrupt checkpoint) or input it cannot encode."""


def sample_frames(video: np.ndarray, n: int) -> np.ndarray:
    """``n`` frames spread evenly over the episode (linspace), or the clip repeated cyclically when it is shorter.

    ``video``: (T, H, W, 3) uint8 -> (n, H, W, 3).
    """
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3:
        raise EncoderError(f"expected frames (T, H, W, 3), got shape {video.shape}")
    T = len(video)
    if T == 0:
        raise EncoderError("an episode with no frames cannot be encoded")
    if T >= n:
        idx = np.round(np.linspace(0, T - 1, n)).astype(int)
    else:
        idx = np.arange(n) % T
    return video[idx]


def to_tensor(frames: np.ndarray, size: int | None = None, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, size, size), resized (bilinear, antialiased) and normalised."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).float().div_(255.0)
    lead = x.shape[:-3]
    x = x.reshape(-1, *x.shape[-3:]).permute(0, 3, 1, 2)
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    if mean is not None:
        x = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    return x.reshape(*lead, *x.shape[1:])


class TrajectoryEncoder(ABC):
    """Maps each episode's frames to one embedding: ``encode([video, ...]) -> (N, dim)`` float32."""

    name: str = "encoder"

    @property
    @abstractmethod
    def dim(self) -> int:
        """Length of the embedding vector."""

    @abstractmethod
    def _encode_batch(self, videos: list[np.ndarray]) -> np.ndarray:
        """Embeddings of a batch of videos (each (T, H, W, 3) uint8)."""

    def encode(self, videos: list[np.ndarray], batch_size: int = 16) -> np.ndarray:
        """Embed every video; deterministic (eval mode, no dropout)."""
        if not len(videos):
            return np.zeros((0, self.dim), np.float32)
        out = []
        with torch.no_grad():
            for i in range(0, len(videos), batch_size):
                out.append(np.asarray(self._encode_batch(list(videos[i : i + batch_size])), dtype=np.float32))
        emb = np.concatenate(out)
        if not np.all(np.isfinite(emb)):
            raise EncoderError(f"{self.name} produced non-finite embeddings")
        return emb


__all__ = ["EncoderError", "IMAGENET_MEAN", "IMAGENET_STD", "TrajectoryEncoder", "sample_frames", "to_tensor"]
