"""The torch side of input/output processing: the runtime's numpy ``Preprocessor`` (``srpo/runtime/processing.py``)
as tensors on the training device. Validation and the normalisation statistics (``NormStats``) are the runtime's own,
defined once; the arithmetic here is the same as there, and a parity test keeps it so.

- Images: uint8 (H, W, 3) -> float (3, H, W) in [-1, 1].
- Proprioception and actions: ``(x - mean) / std`` with the checkpoint's statistics.
- Instructions: the policy's tokenizer (UTF-8 bytes by default, see ``policies/text.py``) gives ids and a mask.
"""

from __future__ import annotations

import numpy as np
import torch

from srpo.runtime.observation import Observation, ObservationError
from srpo.runtime.processing import STD_FLOOR, NormStats, Preprocessor
from srpo.spec import RobotSpec


class Processor:
    """Validates raw observations and turns them into model tensors; maps actions to and from normalised units."""

    def __init__(self, spec: RobotSpec, stats: NormStats, tokenizer=None) -> None:
        from srpo_trainer.policies.text import ByteTokenizer

        self.spec, self.stats = spec, stats
        self.tokenizer = tokenizer or ByteTokenizer(96)
        self.cameras = [c.name for c in spec.observation.cameras]
        self._numpy = Preprocessor(spec, stats, self.tokenizer)  # validates the stats against the spec

    # ------------------------------------------------------------------------------------------------ observations
    def check(self, obs: Observation) -> None:
        """The runtime's validation (one definition for every backend): raises ``ObservationError``."""
        self._numpy.check(obs)

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


__all__ = ["NormStats", "ObservationError", "Processor", "STD_FLOOR"]
