"""Generate scripted-expert demonstrations into an episode store, in parallel worker processes, resumably."""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

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


def _run_job(job: DemoJob, out: str) -> tuple[str, int, bool, int]:
    global _WORKER_ENV
    from srpo.sim.rollout import expert_episode
    from srpo.sim.tabletop.env import TabletopEnv

    if _WORKER_ENV is None or _WORKER_ENV.sim.image_size != job.image_size:
        _WORKER_ENV = TabletopEnv(image_size=job.image_size)
    ep = expert_episode(_WORKER_ENV, job.task, job.split, job.init_state_id, job.noise_std, job.seed)
    EpisodeStore(out).write(ep)
    return job.task, job.init_state_id, ep.meta.success, ep.length


def plan_demo_jobs(store: EpisodeStore, tasks: list[str], per_task: int, split: str, image_size: int) -> list[DemoJob]:
    """Jobs for the (task, initial state) pairs the store does not hold yet, so an interrupted run resumes."""
    for task in tasks:
        get_task(task)
        if per_task > SPLIT_SIZES[split]:
            raise ValueError(f"--per-task {per_task} exceeds the {SPLIT_SIZES[split]} {split} initial states of {task}")
    done = {
        (r.meta.task, r.meta.init_state_id)
        for r in store.list(split=split, source="sim")
        if r.meta.policy_version == "scripted_expert" and r.meta.spec["cameras"][0]["height"] == image_size
    }
    return [DemoJob(t, split, i, image_size) for t in tasks for i in range(per_task) if (t, i) not in done]


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
