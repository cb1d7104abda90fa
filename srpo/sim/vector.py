"""Several simulator envs (tabletop or LIBERO) stepping in parallel processes, through gymnasium's ``AsyncVectorEnv``.

Each worker can run any task: ``reset_envs`` gives every env its own task / split / initial state (or leaves it
running), which is what batched evaluation and RL rollouts need.

A policy that acts in open-loop chunks needs the simulator only once per chunk: with ``max_chunk`` every worker is a
``ChunkStepEnv`` that executes a whole chunk per ``step`` call, so a rollout costs one inter-process round trip per
decision instead of one per control step (``benchmarks/rollout_throughput.py``).

>>> venv = make_vector_env(2)                                                  # doctest: +SKIP
>>> obs, info = venv.reset_envs([{"task": "open_drawer", "split": "heldout", "init_state_id": 0},
...                              {"task": "press_button", "split": "heldout", "init_state_id": 0}])  # doctest: +SKIP
"""

from __future__ import annotations

from functools import partial
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AsyncVectorEnv, AutoresetMode

from srpo.sim.tabletop.env import TabletopEnv


class ChunkStepEnv(gymnasium.Wrapper):
    """Executes up to ``max_chunk`` actions per ``step``: the action is a (max_chunk, A) array whose all-NaN rows are
    not executed (a shorter chunk, or nothing at all for an idle env); a row with only some NaNs is invalid.

    Execution stops at termination or truncation. The observation and ``info`` are those after the last executed
    step; ``info`` adds what each executed step produced, padded to ``max_chunk`` rows: ``chunk_executed`` (n),
    ``chunk_proprio`` (max_chunk, P), ``chunk_progress``, ``chunk_sim_time`` and ``chunk_image_fresh``; with
    ``image_every=1`` (every step rendered) also ``chunk_frames``: camera -> list of the n frames. The reward is the
    last step's.
    """

    def __init__(self, env: TabletopEnv, max_chunk: int) -> None:
        super().__init__(env)
        if max_chunk < 1:
            raise ValueError(f"max_chunk must be >= 1, got {max_chunk}")
        self.max_chunk = max_chunk
        inner = env.action_space
        self.action_space = spaces.Box(np.repeat(inner.low[None], max_chunk, 0), np.repeat(inner.high[None], max_chunk, 0),
                                       dtype=np.float32)
        self._last: tuple | None = None

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._last = (obs, info)
        return obs, self._with_chunk(info, [])

    def step(self, chunk):
        chunk = np.asarray(chunk, dtype=np.float32)
        if chunk.shape != self.action_space.shape:
            raise ValueError(f"chunk has shape {chunk.shape}, expected {self.action_space.shape}")
        skip = np.isnan(chunk).all(axis=1)
        if self._last is None:
            if not skip.all():
                raise RuntimeError("call reset() before step()")
            # an idle worker that never had an episode (more workers than jobs): nothing to run, nothing to report
            blank = {k: np.zeros(space.shape, space.dtype) for k, space in self.observation_space.spaces.items()}
            return blank, 0.0, False, False, self._with_chunk({}, [])
        obs, info = self._last
        reward, terminated, truncated, steps = 0.0, False, False, []
        for action in chunk[~skip]:
            obs, reward, terminated, truncated, info = self.env.step(action)
            steps.append((obs, info))
            if terminated or truncated:
                break
        self._last = (obs, info)
        return obs, reward, terminated, truncated, self._with_chunk(info, steps)

    def _with_chunk(self, info: dict, steps: list[tuple[dict, dict]]) -> dict:
        inner: TabletopEnv = self.env.unwrapped
        n, K = len(steps), self.max_chunk
        proprio = np.zeros((K, inner.spec_contract.observation.proprio_dim), np.float32)
        progress, sim_time, fresh = np.zeros(K, np.float32), np.zeros(K, np.float64), np.zeros(K, bool)
        for j, (o, i) in enumerate(steps):
            proprio[j], progress[j], sim_time[j], fresh[j] = o["proprio"], i["progress"], i["sim_time"], i["image_fresh"]
        out = {**info, "chunk_executed": n, "chunk_proprio": proprio, "chunk_progress": progress,
               "chunk_sim_time": sim_time, "chunk_image_fresh": fresh}
        if inner.image_every == 1 and n:
            out["chunk_frames"] = {c.name: [o[c.name] for o, _ in steps] for c in inner.spec_contract.observation.cameras}
        return out


def _make_env(index: int, task: str | None, image_size: int, split: str, max_chunk: int | None = None,
              suite: str = "tabletop", options: dict[str, Any] | None = None) -> gymnasium.Env:
    if suite == "tabletop":
        env = TabletopEnv(task=task or "place_red_cube_in_tray", image_size=image_size, split=split,
                          vector_index=index, **(options or {}))
    else:
        from srpo.sim.libero.env import LiberoEnv

        env = LiberoEnv(suite, task=task or 0, image_size=image_size, split=split, vector_index=index,
                        **(options or {}))
    return env if max_chunk is None else ChunkStepEnv(env, max_chunk)


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
    task: str | None = None,
    image_size: int = 64,
    split: str = "train",
    autoreset: bool = False,
    context: str = "forkserver",
    max_chunk: int | None = None,
    suite: str = "tabletop",
    env_options: dict[str, Any] | None = None,
) -> TabletopVectorEnv:
    """``num_envs`` worker processes. Without ``autoreset`` finished envs wait for ``reset_envs`` (rollout style).
    ``max_chunk``: workers are ``ChunkStepEnv`` (one ``step`` runs up to that many actions).
    ``suite``: ``tabletop`` or a LIBERO suite (``srpo.sim.suites``); ``env_options``: extra keyword arguments of
    the suite's env (e.g. ``{"fast_render": True}`` for LIBERO)."""
    from srpo.sim.suites import check_suite

    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    check_suite(suite)
    if suite != "tabletop":
        from srpo.sim.libero.env import require_libero

        require_libero()  # here, with the install command, rather than as a traceback from every worker
    fns = [partial(_make_env, i, task, image_size, split, max_chunk, suite, env_options) for i in range(num_envs)]
    mode = AutoresetMode.NEXT_STEP if autoreset else AutoresetMode.DISABLED
    # forkserver: workers must not inherit a parent's OpenGL context, and fork after threads is unsafe.
    return TabletopVectorEnv(fns, context=context, autoreset_mode=mode)
