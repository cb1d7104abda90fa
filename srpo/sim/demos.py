"""Generate scripted-expert demonstrations into an episode store, in parallel worker processes, resumably."""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from srpo.episodes.store import EpisodeStore
from srpo.sim.tabletop.tasks import SPLIT_SIZES, get_task

_WORKER_ENV = None


@dataclass(frozen=True)
class DemoJob:
    task: str
    split: str
    init_state_id: int
    image_size: int
    noise_std: float = 0.0
    seed: int = 0
    stop_fraction: float | None = None
    """Stop the (noisy) attempt after this fraction of the clean expert's episode length on the same state."""
    motion_noise_only: bool = False
    """Perturb only the hand's motion (DART-style demonstrations)."""


def _run_job(job: DemoJob, out: str) -> tuple[str, int, bool, int]:
    global _WORKER_ENV
    from srpo.sim.rollout import expert_episode
    from srpo.sim.tabletop.env import TabletopEnv

    if _WORKER_ENV is None or _WORKER_ENV.sim.image_size != job.image_size:
        _WORKER_ENV = TabletopEnv(image_size=job.image_size)
    max_steps = None
    if job.stop_fraction is not None:
        clean = expert_episode(_WORKER_ENV, job.task, job.split, job.init_state_id, 0.0, job.seed)
        max_steps = max(1, round(job.stop_fraction * clean.length))
    ep = expert_episode(_WORKER_ENV, job.task, job.split, job.init_state_id, job.noise_std, job.seed, max_steps,
                        job.motion_noise_only)
    if job.stop_fraction is not None:
        ep.meta.policy_version += f"_stop{job.stop_fraction:g}"
    EpisodeStore(out).write(ep)
    return job.task, job.init_state_id, ep.meta.success, ep.length


def plan_demo_jobs(store: EpisodeStore, tasks: list[str], per_task: int, split: str, image_size: int,
                   dart_noise: float = 0.0) -> list[DemoJob]:
    """Jobs for the (task, initial state) pairs the store does not hold yet, so an interrupted run resumes.

    ``dart_noise`` > 0: perturbed (DART) demonstrations with that std on the motion dimensions.
    """
    version = "scripted_expert" if dart_noise == 0 else f"scripted_expert_dart{dart_noise:g}"
    for task in tasks:
        get_task(task)
        if per_task > SPLIT_SIZES[split]:
            raise ValueError(f"--per-task {per_task} exceeds the {SPLIT_SIZES[split]} {split} initial states of {task}")
    done = {
        (r.meta.task, r.meta.init_state_id)
        for r in store.list(split=split, source="sim")
        if r.meta.policy_version == version and r.meta.spec["cameras"][0]["height"] == image_size
    }
    # The seed varies with the state so that perturbations differ between demos.
    return [DemoJob(t, split, i, image_size, dart_noise, seed=i if dart_noise > 0 else 0,
                   motion_noise_only=dart_noise > 0)
            for t in tasks for i in range(per_task) if (t, i) not in done]


def generate_successful_demos(store: EpisodeStore, tasks: list[str], successes: int, split: str, image_size: int,
                              dart_noise: float = 0.0, workers: int = 2, on_done=None) -> dict[str, int]:
    """Demos on initial states 0, 1, 2, ... until every task has ``successes`` successful ones (perturbed demos can
    fail). Resumable like ``plan_demo_jobs``; returns the successful count per task."""
    version = "scripted_expert" if dart_noise == 0 else f"scripted_expert_dart{dart_noise:g}"

    def counts() -> tuple[dict[str, int], dict[str, int]]:
        ok, tried = dict.fromkeys(tasks, 0), dict.fromkeys(tasks, 0)
        for r in store.list(split=split, source="sim"):
            if (r.meta.task in ok and r.meta.policy_version == version
                    and r.meta.spec["cameras"][0]["height"] == image_size):
                tried[r.meta.task] = max(tried[r.meta.task], r.meta.init_state_id + 1)
                ok[r.meta.task] += int(r.meta.success)
        return ok, tried

    while True:
        ok, tried = counts()
        jobs = []
        for t in tasks:
            missing = successes - ok[t]
            if missing <= 0:
                continue
            if tried[t] == 0:
                states = range(successes)
            else:  # enough extra states for the failure rate seen so far
                rate = max(ok[t] / tried[t], 0.25)
                states = range(tried[t], min(SPLIT_SIZES[split], tried[t] + int(np.ceil(missing / rate)) + 1))
            if not len(states):
                raise ValueError(f"{t}: only {ok[t]} of the {SPLIT_SIZES[split]} {split} demos succeed "
                                 f"(dart_noise={dart_noise}); {successes} are needed")
            jobs += [DemoJob(t, split, i, image_size, dart_noise, seed=i if dart_noise > 0 else 0,
                             motion_noise_only=dart_noise > 0) for i in states]
        if not jobs:
            return ok
        generate_demos(jobs, store.root, workers=workers, on_done=on_done)


def plan_attempt_jobs(tasks: list[str], per_task: int, split: str, image_size: int,
                      noise_levels: tuple[float, ...] = (0.3, 0.8), stop_fractions: tuple[float | None, ...] = (
                          0.25, 0.5, 0.75, None), seed: int = 0) -> list[DemoJob]:
    """Imperfect expert attempts for reward-fidelity studies: on each of ``per_task`` initial states, one clean
    (successful) expert episode plus one attempt per (noise level, early stop) pair; most attempts fail, at every
    stage of the task."""
    for task in tasks:
        get_task(task)
    if per_task > SPLIT_SIZES[split]:
        raise ValueError(f"per_task {per_task} exceeds the {SPLIT_SIZES[split]} {split} initial states")
    jobs = []
    for t in tasks:
        for i in range(per_task):
            jobs.append(DemoJob(t, split, i, image_size, seed=seed))
            for k, (noise, stop) in enumerate((n, s) for n in noise_levels for s in stop_fractions):
                jobs.append(DemoJob(t, split, i, image_size, noise, seed + 1 + k, stop))
    return jobs


def generate_demos(jobs: list[DemoJob], out: str | os.PathLike, workers: int = 2, on_done=None) -> list[tuple[str, int, bool, int]]:
    """Run ``jobs``; ``on_done(result)`` is called as each episode lands (for progress bars)."""
    Path(out).mkdir(parents=True, exist_ok=True)
    results = []
    if workers <= 1:
        for job in jobs:
            results.append(_run_job(job, str(out)))
            if on_done:
                on_done(results[-1])
        return results
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("forkserver")) as pool:
        futures = [pool.submit(_run_job, job, str(out)) for job in jobs]
        for fut in as_completed(futures):
            results.append(fut.result())
            if on_done:
                on_done(results[-1])
    return results
