"""Trajectory encoders for the progress reward, behind one interface (``TrajectoryEncoder``).

========  ================================================================  ==========================
name      what it is                                                        ``path``
========  ================================================================  ==========================
builtin   the project's own latent world model (``srpo worldmodel train``)  world-model folder
vjepa2    V-JEPA 2 video encoder (``transformers.VJEPA2Model``)              HF model dir or cached id
image     per-frame DINOv2 / SigLIP / CLIP backbone, mean-pooled            HF model dir or cached id
pixels    downsampled raw frames (the paper's ablation)                     -
random    an untrained world-model encoder (the floor)                      -
========  ================================================================  ==========================
"""

from __future__ import annotations

from srpo_trainer.encoders.base import EncoderError, TrajectoryEncoder, sample_frames

ENCODERS = ("builtin", "vjepa2", "image", "pixels", "random")


def load_encoder(name: str, path: str | None = None, **options) -> TrajectoryEncoder:
    """Build the encoder ``name``; ``path`` is its checkpoint where it needs one (see the table above)."""
    if name not in ENCODERS:
        raise EncoderError(f"unknown encoder {name!r}; available: {', '.join(ENCODERS)}")
    needs_path = name in ("builtin", "vjepa2", "image")
    if needs_path and not path:
        raise EncoderError(f"encoder {name!r} needs a checkpoint path (e.g. --world-model / --encoder-path)")
    if name == "builtin":
        from srpo_trainer.world_model import BuiltinEncoder

        return BuiltinEncoder.from_pretrained(path)
    if name == "random":
        from srpo_trainer.world_model import BuiltinEncoder

        return BuiltinEncoder.random(seed=int(options.get("seed", 0)))
    if name == "pixels":
        from srpo_trainer.encoders.pixels import PixelEncoder

        return PixelEncoder(**options)
    from srpo_trainer.encoders.hf import ImageBackboneEncoder, VJEPA2Encoder

    return (VJEPA2Encoder if name == "vjepa2" else ImageBackboneEncoder)(path, **options)


__all__ = ["ENCODERS", "EncoderError", "TrajectoryEncoder", "load_encoder", "sample_frames"]
