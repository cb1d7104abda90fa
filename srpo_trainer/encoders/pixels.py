"""Raw-pixel trajectory embedding: a few downsampled frames, concatenated (the paper's ablation baseline)."""

from __future__ import annotations

import numpy as np

from srpo_trainer.encoders.base import TrajectoryEncoder, sample_frames, to_tensor


class PixelEncoder(TrajectoryEncoder):
    """``frames`` frames spread over the episode, each resized to ``size`` x ``size``, in [0, 1], flattened."""

    name = "pixels"

    def __init__(self, frames: int = 8, size: int = 16) -> None:
        if frames < 1 or size < 1:
            raise ValueError("frames and size must be >= 1")
        self.frames, self.size = frames, size

    @property
    def dim(self) -> int:
        return self.frames * 3 * self.size * self.size

    def _encode_batch(self, videos: list[np.ndarray]) -> np.ndarray:
        clips = np.stack([sample_frames(v, self.frames) for v in videos])
        return to_tensor(clips, self.size, mean=None).reshape(len(videos), -1).numpy()
