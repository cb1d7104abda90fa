"""Run a controller in a tabletop env and capture the result as an ``Episode`` (the shared episode schema)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from srpo.episodes.schema import Episode, EpisodeMeta
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
    frames: dict[str, list[np.ndarray]] = {c: [obs[c]] for c in cams}
    proprio, actions, progress, times = [obs["proprio"]], [], [info["progress"]], [0.0]
    t0 = info["sim_time"]
    limit = min(max_steps or env.max_steps, env.max_steps)
    while len(actions) < limit:
        action = np.asarray(controller(obs, env), dtype=np.float32)
        obs, _, terminated, truncated, info = env.step(action)
        actions.append(validate_action(action, env.spec_contract.action).action)  # what the env actually applied
        for c in cams:
            frames[c].append(obs[c])
        proprio.append(obs["proprio"])
        progress.append(info["progress"])
        times.append(info["sim_time"] - t0)
        if terminated or truncated:
            break
    meta = EpisodeMeta(
        task=env.task.name,
        instruction=env.instruction,
        source="sim",
        success=bool(info["success"]),
        length=len(actions),
        spec=env.spec_contract.to_dict(),
        suite="tabletop",
        init_state_id=info["init_state_id"],
        split=info["split"],
        policy_version=policy_version,
        seed=seed,
        final_progress=float(info["progress"]),
    )
    return Episode(
        meta=meta,
        timestamps=np.asarray(times, dtype=np.float64),
        images={c: np.stack(v) for c, v in frames.items()},
        proprio=np.stack(proprio).astype(np.float32),
        actions=np.stack(actions).astype(np.float32) if actions else np.zeros((0, 7), np.float32),
        progress=np.asarray(progress, dtype=np.float32),
    ).validate()


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
