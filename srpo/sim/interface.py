"""What every suite's env shares, defined once (``tabletop`` and LIBERO): its gymnasium spaces, derived from the
robot spec, and the reset options it accepts."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from srpo.spec import RobotSpec

RESET_OPTIONS = ("task", "split", "init_state_id", "image_every")


def parse_reset_options(options: dict[str, Any] | None, vector_index: int | None,
                        extra: tuple[str, ...] = ()) -> tuple[dict[str, Any], int]:
    """This env's options, checked, and ``image_every``. A vectorised reset passes ``{"per_env": [...]}``: each
    worker takes its own entry (an env made without ``vector_index`` cannot). ``extra``: options only this suite
    has (tabletop's ``layout_of``)."""
    options = dict(options or {})
    if "per_env" in options:
        if vector_index is None:
            raise ValueError("options['per_env'] needs an env created with vector_index")
        options = dict(options["per_env"][vector_index] or {})
    unknown = set(options) - set(RESET_OPTIONS) - set(extra)
    if unknown:
        raise ValueError(f"unknown reset options {sorted(unknown)}; expected {', '.join(RESET_OPTIONS + extra)}")
    image_every = options.get("image_every", 1)
    if isinstance(image_every, bool) or not isinstance(image_every, (int, np.integer)) or image_every < 1:
        raise ValueError(f"image_every must be an integer >= 1, got {image_every!r}")
    return options, int(image_every)


def env_spaces(spec: RobotSpec) -> tuple[spaces.Dict, spaces.Box]:
    """The observation space (each camera H x W x 3 uint8, ``proprio``) and the action space of ``spec``."""
    cams = {c.name: spaces.Box(0, 255, (c.height, c.width, 3), np.uint8) for c in spec.observation.cameras}
    observation = spaces.Dict(
        {**cams, "proprio": spaces.Box(-np.inf, np.inf, (spec.observation.proprio_dim,), np.float32)})
    action = spaces.Box(spec.action.low, spec.action.high, (spec.action.dim,), np.float32)
    return observation, action
