"""Pretrained encoders through Hugging Face ``transformers``, loaded from a local directory (or the local HF cache).

- ``VJEPA2Encoder``: the V-JEPA 2 video encoder (``VJEPA2Model`` with ``skip_predictor=True``); the embedding is the
  mean of its output tokens over space and time, as the SRPO reference does.
- ``ImageBackboneEncoder``: a per-frame image backbone (DINOv2, SigLIP, CLIP vision towers); the embedding is the mean
  over tokens, then over frames.

Nothing is downloaded: ``local_files_only=True`` always. A missing or corrupt checkpoint raises ``EncoderError``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from srpo_trainer.encoders.base import EncoderError, TrajectoryEncoder, sample_frames, to_tensor


def _load(kind: str, source: str, loader):
    path = Path(source)
    looks_local = path.is_absolute() or source.startswith(".") or path.exists()
    if looks_local and not (path / "config.json").is_file():
        raise EncoderError(f"{kind}: {source} is not a model directory (no config.json there)")
    try:
        return loader(source)
    except EncoderError:
        raise
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError/ValueError/safetensors errors alike
        hint = "" if looks_local else " (hub ids work only when the model is already in the local Hugging Face cache)"
        raise EncoderError(f"{kind}: cannot load {source}: {type(exc).__name__}: {exc}{hint}") from exc


class VJEPA2Encoder(TrajectoryEncoder):
    """V-JEPA 2 encoder; ``frames`` defaults to the checkpoint's ``frames_per_clip``, pixels to its ``crop_size``."""

    name = "vjepa2"

    def __init__(self, source: str, frames: int | None = None, device: str = "cpu") -> None:
        from transformers import VJEPA2Model

        def load(src):
            return VJEPA2Model.from_pretrained(src, local_files_only=True)

        self.model = _load(self.name, source, load).to(device).eval()
        cfg = self.model.config
        self.frames = frames or cfg.frames_per_clip
        if self.frames % cfg.tubelet_size:
            raise EncoderError(f"vjepa2: frames={self.frames} must be a multiple of tubelet_size={cfg.tubelet_size}")
        self.size, self.device = cfg.crop_size, device

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def _encode_batch(self, videos: list[np.ndarray]) -> np.ndarray:
        clips = np.stack([sample_frames(v, self.frames) for v in videos])
        x = to_tensor(clips, self.size).to(self.device)  # (B, T, 3, S, S)
        tokens = self.model(pixel_values_videos=x, skip_predictor=True).last_hidden_state
        return tokens.mean(dim=1).cpu().numpy()


class ImageBackboneEncoder(TrajectoryEncoder):
    """A per-frame vision backbone (DINOv2 / SigLIP / CLIP), token-mean per frame, then mean over ``frames`` frames."""

    name = "image"

    def __init__(self, source: str, frames: int = 16, device: str = "cpu") -> None:
        from transformers import AutoModel

        def load(src):
            model = AutoModel.from_pretrained(src, local_files_only=True)
            return getattr(model, "vision_model", model)  # SigLIP/CLIP: keep the vision tower only

        self.model = _load(self.name, source, load).to(device).eval()
        cfg = self.model.config
        cfg = getattr(cfg, "vision_config", cfg)
        if not hasattr(cfg, "image_size"):
            raise EncoderError(f"image: {source} ({type(self.model).__name__}) is not an image backbone")
        self.size, self.frames, self.device = int(cfg.image_size), frames, device
        self._dim = int(cfg.hidden_size)

    @property
    def dim(self) -> int:
        return self._dim

    def _encode_batch(self, videos: list[np.ndarray]) -> np.ndarray:
        clips = np.stack([sample_frames(v, self.frames) for v in videos])
        x = to_tensor(clips, self.size).to(self.device)
        B, T = x.shape[:2]
        tokens = self.model(pixel_values=x.flatten(0, 1)).last_hidden_state  # (B*T, tokens, d)
        return tokens.mean(dim=1).reshape(B, T, -1).mean(dim=1).cpu().numpy()


__all__ = ["ImageBackboneEncoder", "VJEPA2Encoder"]
