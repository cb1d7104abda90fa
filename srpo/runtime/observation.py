"""The observation a policy acts on, defined once for the trainer, the evaluator, the exporter and the ROS nodes.

A batch of raw sensor data: ``images[camera]`` uint8 (B, H, W, 3), ``proprio`` float32 (B, P) and one instruction
string per item. Nothing here needs torch: a robot that runs an ONNX or TensorRT policy builds the same object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class ObservationError(ValueError):
    """An observation the policy must not act on; the message names the problem."""


@dataclass
class Observation:
    """A batch of raw observations: images[cam] (B, H, W, 3) uint8, proprio (B, P), one instruction per item."""

    images: dict[str, np.ndarray]
    proprio: np.ndarray
    instructions: list[str]

    @property
    def batch_size(self) -> int:
        return len(self.instructions)

    @classmethod
    def from_env(cls, obs: dict[str, np.ndarray], instructions: list[str] | str, cameras: list[str]) -> "Observation":
        """From a (vectorised or single) env observation dict."""
        single = np.asarray(obs["proprio"]).ndim == 1
        images = {c: (obs[c][None] if single else obs[c]) for c in cameras}
        proprio = obs["proprio"][None] if single else obs["proprio"]
        if isinstance(instructions, str):
            instructions = [instructions] * len(proprio)
        return cls(images, np.asarray(proprio, dtype=np.float32), list(instructions))

    def select(self, rows: list[int] | np.ndarray) -> "Observation":
        """The sub-batch of the given rows (e.g. the envs that must decide now)."""
        rows = list(rows)
        return Observation({c: np.asarray(v)[rows] for c, v in self.images.items()}, np.asarray(self.proprio)[rows],
                           [self.instructions[i] for i in rows])


__all__ = ["Observation", "ObservationError"]
