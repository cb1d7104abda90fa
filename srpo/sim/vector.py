"""Several tabletop envs stepping in parallel processes, through gymnasium's ``AsyncVectorEnv``.

Each worker can run any task: ``reset_envs`` gives every env its own task / split / initial state (or leaves it
running), which is what batched evaluation and RL rollouts need.

>>> venv = make_vector_env(2)                                                  # doctest: +SKIP
>>> obs, info = venv.reset_envs([{"task": "open_drawer", "split": "heldout", "init_state_id": 0},
...                              {"task": "press_button", "split": "heldout", "init_state_id": 0}])  # doctest: +SKIP
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode

from srpo.sim.tabletop.env import TabletopEnv


def _make_env(index: int, task: str, image_size: int, split: str) -> TabletopEnv:
    return TabletopEnv(task=task, image_size=image_size, split=split, vector_index=index)


class TabletopVectorEnv(AsyncVectorEnv):
    """``AsyncVectorEnv`` of ``TabletopEnv`` workers with per-env reset options."""

    def reset_envs(self, per_env: list[dict[str, Any] | None], seed: int | list[int | None] | None = None):
        """Reset env i with ``per_env[i]`` (task/split/init_state_id); envs given ``None`` keep running."""
        if len(per_env) != self.num_envs:
            raise ValueError(f"per_env has {len(per_env)} entries for {self.num_envs} envs")
        mask = np.array([o is not None for o in per_env], dtype=bool)
        options: dict[str, Any] = {"per_env": per_env}
        if not mask.all():
            options["reset_mask"] = mask
        return self.reset(seed=seed, options=options)


def make_vector_env(
    num_envs: int,
    task: str = "place_red_cube_in_tray",
    image_size: int = 64,
    split: str = "train",
    autoreset: bool = False,
    context: str = "forkserver",
) -> TabletopVectorEnv:
    """``num_envs`` worker processes. Without ``autoreset`` finished envs wait for ``reset_envs`` (rollout style)."""
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    fns = [partial(_make_env, i, task, image_size, split) for i in range(num_envs)]
    mode = AutoresetMode.NEXT_STEP if autoreset else AutoresetMode.DISABLED
    # forkserver: workers must not inherit a parent's OpenGL context, and fork after threads is unsafe.
    return TabletopVectorEnv(fns, context=context, autoreset_mode=mode)
