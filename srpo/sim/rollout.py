"""Run a controller in a tabletop env and capture the result as an ``Episode`` (the shared episode schema)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from srpo.episodes.builder import EpisodeBuilder
from srpo.episodes.schema import Episode
from srpo.spec import validate_action
from srpo.sim.tabletop.env import TabletopEnv
from srpo.sim.tabletop.experts import make_expert
from srpo.sim.tabletop.tasks import get_task

Controller = Callable[[dict, TabletopEnv], np.ndarray]


def run_episode(
    env: TabletopEnv,
    controller: Controller,
    reset_options: dict,
    policy_version: str,
    seed: int | None = None,
    max_steps: int | None = None,
) -> Episode:
    """Reset with ``reset_options``, act until success or the step limit, and return the recorded episode."""
    obs, info = env.reset(seed=seed, options=reset_options)
    cams = [c.name for c in env.spec_contract.observation.cameras]
    builder = EpisodeBuilder(env.spec_contract.to_dict(), task=env.task.name, instruction=env.instruction,
                             source="sim", policy_version=policy_version, suite=getattr(env, "suite_name", "tabletop"),
                             init_state_id=info["init_state_id"], split=info["split"], seed=seed)
    t0 = info["sim_time"]
    builder.observe(0.0, obs["proprio"], {c: obs[c] for c in cams}, info["progress"])
    limit = min(max_steps or env.max_steps, env.max_steps)
    while builder.length < limit:
        action = np.asarray(controller(obs, env), dtype=np.float32)
        obs, _, terminated, truncated, info = env.step(action)
        builder.act(validate_action(action, env.spec_contract.action).action)  # what the env actually applied
        builder.observe(info["sim_time"] - t0, obs["proprio"], {c: obs[c] for c in cams}, info["progress"])
        if terminated or truncated:
            break
    return builder.finish(success=bool(info["success"]), final_progress=float(info["progress"]))


def expert_episode(
    env: TabletopEnv,
    task: str,
    split: str,
    init_state_id: int,
    noise_std: float = 0.0,
    seed: int = 0,
    max_steps: int | None = None,
    motion_noise_only: bool = False,
) -> Episode:
    """One scripted-expert episode (``noise_std`` > 0 and ``max_steps`` give imperfect, partial attempts).

    ``motion_noise_only``: perturb only translation and yaw (DART-style demonstrations, see ``experts.py``).
    """
    from srpo.sim.tabletop.experts import MOTION_DIMS

    expert = make_expert(get_task(task), noise_std=noise_std, seed=seed,
                         noise_dims=MOTION_DIMS if motion_noise_only else None)

    def controller(obs: dict, e: TabletopEnv) -> np.ndarray:
        return expert.act(e.sim)

    version = "scripted_expert" if noise_std == 0 else f"scripted_expert_{'dart' if motion_noise_only else 'noise'}{noise_std:g}"
    return run_episode(env, controller, {"task": task, "split": split, "init_state_id": init_state_id}, version, seed, max_steps)
