"""Policies behind one interface (``base.Policy``); ``tiny_vla`` is the built-in CPU-sized VLA.

``load_policy`` opens any checkpoint folder by the ``format`` recorded in its ``config.json``, so the evaluator, the
trainer and (later) the exporter and ROS node never name a concrete policy class. A new policy registers itself with
``register_policy(format, cls)``; ``cls.from_pretrained(path, expected_spec=...)`` does the loading.
"""

from __future__ import annotations

import json
from pathlib import Path

from srpo.spec import RobotSpec
from srpo_trainer.policies.base import Observation, Policy, PolicyOutput
from srpo_trainer.policies.tiny_vla import CHECKPOINT_FORMAT, CheckpointError, TinyVLAPolicy

_REGISTRY: dict[str, type] = {CHECKPOINT_FORMAT: TinyVLAPolicy}


def register_policy(checkpoint_format: str, cls: type) -> None:
    _REGISTRY[checkpoint_format] = cls


def load_torch_inference(path: str | Path) -> Policy:
    """The ``torch`` backend of the runtime's ``load_inference_policy`` (entry point ``srpo.backends``)."""
    policy = load_policy(path)
    policy.eval()
    return policy


def load_policy(path: str | Path, expected_spec: RobotSpec | None = None) -> Policy:
    """Load the policy checkpoint at ``path``; raise ``CheckpointError`` with the reason if it cannot be used."""
    cfg = Path(path) / "config.json"
    try:
        fmt = json.loads(cfg.read_text()).get("format")
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not a checkpoint ({cfg.name} unreadable: {exc})") from exc
    if fmt not in _REGISTRY:
        raise CheckpointError(f"{path}: unknown checkpoint format {fmt!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[fmt].from_pretrained(path, expected_spec=expected_spec)


__all__ = ["CheckpointError", "Observation", "Policy", "PolicyOutput", "load_policy", "load_torch_inference", "register_policy"]
