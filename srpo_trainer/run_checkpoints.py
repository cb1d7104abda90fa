"""Resumable training runs: step checkpoints (model + optimizer, scheduler and RNG state) and a ``latest`` pointer.

A checkpoint folder is complete before the pointer, renamed into place, names it; so an interruption at any moment
leaves the previous checkpoint as the one a re-run resumes from. Used by ``srpo sft``, ``srpo worldmodel train`` and ``srpo train``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

LATEST = "latest"


PLACEMENT_KEYS = ("distributed",)
"""Config sections that say where a run executes, not what it computes: a run may resume under other values."""


def open_run(out: str | os.PathLike, config) -> Path:
    """Create the run folder and record ``config`` (a dataclass) in ``config.yaml``; a folder that holds a run with
    another config is refused (ValueError), so a re-run with the same command resumes and nothing else mixes in.
    The ``PLACEMENT_KEYS`` sections are not compared: a run started locally can resume on a cluster."""
    import dataclasses

    import yaml

    run = Path(out)
    run.mkdir(parents=True, exist_ok=True)
    plain = json.loads(json.dumps(dataclasses.asdict(config)))  # tuples -> lists, as YAML stores them
    saved = run / "config.yaml"

    def what(c: dict) -> dict:
        return {k: v for k, v in c.items() if k not in PLACEMENT_KEYS}

    if saved.exists() and what(yaml.safe_load(saved.read_text())) != what(plain):
        raise ValueError(f"{run} holds a run with another config; use a new --out or delete {run}")
    saved.write_text(yaml.safe_dump(plain, sort_keys=False))
    return run


def save_run_checkpoint(run: Path, step: int, save_model: Callable[[Path], object], optimizer, scheduler,
                        rng: np.random.Generator, save_extra: Callable[[Path], object] | None = None) -> Path:
    """Write ``run/checkpoints/step_N`` (``save_model(folder)`` writes the weights, ``save_extra(folder)`` any other
    state of the run, e.g. the success memory) and only then point ``latest`` at it."""
    ckpt = Path(run) / "checkpoints" / f"step_{step:07d}"
    save_model(ckpt)
    if save_extra is not None:
        save_extra(ckpt)
    state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "torch_rng": torch.get_rng_state()}
    tmp = ckpt / ".trainer_state.pt.tmp"
    torch.save(state, tmp)
    os.replace(tmp, ckpt / "trainer_state.pt")
    (ckpt / "numpy_rng.json").write_text(json.dumps(rng.bit_generator.state))
    pointer = ckpt.parent / f".{LATEST}.tmp"
    pointer.write_text(ckpt.name)
    os.replace(pointer, ckpt.parent / LATEST)
    return ckpt


def latest_checkpoint(run: Path) -> Path | None:
    """The folder ``latest`` names, if it is complete."""
    pointer = Path(run) / "checkpoints" / LATEST
    if not pointer.is_file():
        return None
    ckpt = pointer.parent / pointer.read_text().strip()
    return ckpt if (ckpt / "trainer_state.pt").is_file() else None


def restore_trainer_state(ckpt: Path, optimizer, scheduler, rng: np.random.Generator) -> int:
    """Load optimizer, scheduler and RNG states saved with ``save_run_checkpoint``; returns the step."""
    state = torch.load(ckpt / "trainer_state.pt", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    rng.bit_generator.state = json.loads((ckpt / "numpy_rng.json").read_text())
    return int(state["step"])
