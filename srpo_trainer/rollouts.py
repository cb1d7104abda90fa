"""Policy rollouts in parallel simulator processes with batched inference: the engine of evaluation and of RL.

Each job is one episode, a (task, initial state) pair of a split. Envs that need a new chunk at the same step are
batched into one policy call; a chunk's first ``execute_steps`` actions run open loop (as OpenVLA-OFT), served by
one synchronous ``ActionChunker`` per env, the chunk server of the robot runtime.

With ``record=True`` every episode comes back as a full ``Episode`` in the shared schema, built by the shared
``EpisodeBuilder``: both cameras, proprio, the applied actions, ground-truth progress (privileged: only the ``oracle``
reward mode and the metrics read it) and, for RL, each decision's step, sampled chunk (unclipped), its
log-probability and the Gaussian it was drawn from. The observation of a decision is ``episode`` data at
``chunk_steps[j]``, so nothing is stored twice.

Rendering is most of a simulated step, and the policy only looks at the observation where it decides: the envs render
at decision steps (every ``execute_steps``) and at the last step only. An evaluation is unchanged by this; recorded
episodes then have sparse frames (``Episode.frame_steps``) unless ``record_frames="every_step"`` asks for all.

Sampling noise is per episode: the episode at position i of the job list draws from its own ``torch.Generator``
seeded by ``episode_seed(seed, i)``, whichever env runs it and whichever episodes share its inference batch. So a
rollout is reproducible for a given policy, job list and seed, and a job list split over several machines
(``srpo_trainer/distributed``) samples exactly what one machine would. (Batched inference itself can round
differently at another batch size, ~1e-7: runs are bit-identical where each policy copy batches the same envs.)
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from srpo.episodes.builder import EpisodeBuilder
from srpo.episodes.schema import Episode
from srpo.runtime.chunker import ActionChunker, ChunkerConfig
from srpo.runtime.policy import InferencePolicy
from srpo_trainer.policies.base import Observation, Policy, episode_seed


def run_policy_episodes(policy: Policy | InferencePolicy, jobs: list[tuple[str, int]], split: str, workers: int, execute_steps: int,
                        temperature: float | None, seed: int, record: bool = False, gif_episodes: int = 0,
                        on_episode: Callable[[dict], None] | None = None, envs=None, threads: int | None = None,
                        record_frames: str = "decisions", suite: str = "tabletop",
                        env_options: dict | None = None, seeds: list[int] | None = None,
                        ) -> tuple[list[dict], list[np.ndarray], list[Episode]]:
    """Run one episode per (task, init_state_id) job on ``workers`` env processes with batched inference. A job
    may carry a third element, extra reset options of its env (``{"layout_of": T}``: the instruction probe).

    ``envs``: a running vector env (``make_vector_env``) to reuse, e.g. across RL steps: starting the simulator
    processes costs seconds per call. It is left open; without it one is started and closed here.
    ``threads``: torch intra-op threads for inference during the call (restored after): the simulator workers need
    the cores, and on 2 cores one inference thread is faster overall (``benchmarks/rollout_throughput.py``).
    ``record_frames``: ``decisions`` (frames where the policy decided, and the last step) or ``every_step``; GIF
    episodes always render every step.

    ``suite``/``env_options``: which simulator the workers run (``make_vector_env``); ignored with ``envs``.

    ``seeds``: each job's noise seed (default ``episode_seed(seed, i)`` for job i); a part of a larger job list
    passes the seeds of its jobs in the whole list.

    ``temperature`` None acts with the chunk mean (deterministic), else samples at that temperature.
    Returns per-episode results (task, init_state_id, success, progress, length) in job order, side-by-side camera
    clips of the first ``gif_episodes`` jobs, and with ``record`` the recorded episodes in job order.
    """
    from srpo.sim.vector import make_vector_env

    if record_frames not in RECORD_FRAMES:
        raise ValueError(f"record_frames must be one of {RECORD_FRAMES}, got {record_frames!r}")
    if not jobs:
        return [], [], []
    if temperature is not None and not hasattr(policy, "sample"):
        raise ValueError(f"sampled rollouts need a torch policy; the {getattr(policy, 'backend', '?')} backend only "
                         "gives the deterministic chunk (temperature=None)")
    cams = [c.name for c in policy.spec.observation.cameras]
    size = policy.spec.observation.cameras[0].height
    steps = min(execute_steps, policy.chunk_size)
    if seeds is None:
        seeds = [episode_seed(seed, i) for i in range(len(jobs))]
    elif len(seeds) != len(jobs):
        raise ValueError(f"{len(seeds)} seeds for {len(jobs)} jobs")
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds] if temperature is not None else []
    if envs is not None:
        venv, n_env = envs, envs.num_envs
        shape = venv.single_action_space.shape
        if len(shape) != 2 or shape[0] < steps:
            raise ValueError(f"envs must step chunks of at least {steps} actions (make_vector_env(max_chunk=...)); "
                             f"their action space is {shape}")
    else:
        n_env = min(workers, len(jobs))
        venv = make_vector_env(n_env, image_size=size, max_chunk=steps, suite=suite, env_options=env_options)
    max_chunk = venv.single_action_space.shape[0]
    # the same chunk server the robot's policy node runs, in its synchronous mode: this loop batches the inference
    chunk_cfg = ChunkerConfig(chunk_size=policy.chunk_size, action_dim=policy.spec.action.dim, execute_steps=steps,
                              control_hz=policy.spec.control_hz, prefetch=False)
    chunkers = [ActionChunker(None, chunk_cfg) for _ in range(n_env)]
    pending = list(enumerate(jobs))
    current: list[tuple[int, tuple[str, int]] | None] = [None] * n_env
    instructions = [""] * n_env
    lengths = [0] * n_env
    fresh_at = [0] * n_env  # the step of each env's latest rendered frame
    gifs: dict[int, list[np.ndarray]] = {}
    recorders: list[EpisodeBuilder | None] = [None] * n_env
    t0 = [0.0] * n_env
    obs_now: dict[str, np.ndarray] = {}
    results: dict[int, dict] = {}
    episodes: dict[int, Episode] = {}
    spec_dict = policy.spec.to_dict()

    def assign(slots: list[int]) -> None:
        per_env: list[dict | None] = [None] * n_env
        for i in slots:
            if pending:
                current[i] = pending.pop(0)
                task, init, *extra = current[i][1]
                dense = current[i][0] < gif_episodes or (record and record_frames == "every_step")
                per_env[i] = {"task": task, "split": split, "init_state_id": init, "image_every": 1 if dense else steps,
                              **(extra[0] if extra else {})}
                lengths[i], fresh_at[i] = 0, 0
                chunkers[i].reset()
            else:
                current[i] = None
        if any(o is not None for o in per_env):
            obs, info = venv.reset_envs(per_env)
            for i, o in enumerate(per_env):
                if o is None:
                    continue
                for k in obs:
                    obs_now.setdefault(k, np.zeros_like(obs[k]))[i] = obs[k][i]
                instructions[i] = info["instruction"][i]
                if current[i][0] < gif_episodes:
                    gifs[current[i][0]] = [np.concatenate([obs[c][i] for c in cams], axis=1)]
                if record:
                    task, init = current[i][1][:2]
                    recorders[i] = EpisodeBuilder(spec_dict, task=task, instruction=instructions[i], source="sim",
                                                  policy_version=policy.version, suite=suite,
                                                  init_state_id=init, split=split, seed=seed)
                    t0[i] = float(info["sim_time"][i])
                    recorders[i].observe(0.0, obs["proprio"][i], {c: obs[c][i] for c in cams},
                                         float(info["progress"][i]))

    def finish(i: int, info: dict) -> None:
        index, (task, init, *_) = current[i]
        results[index] = {"task": task, "init_state_id": init, "success": bool(info["success"][i]),
                          "progress": float(info["progress"][i]), "length": lengths[i]}
        if "layout_task_success" in info and info["_layout_task_success"][i]:  # the instruction-following probe
            results[index]["layout_task_success"] = bool(info["layout_task_success"][i])
        if record:
            episodes[index] = recorders[i].finish(results[index]["success"], results[index]["progress"])
        if on_episode:
            on_episode(results[index])

    threads_before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        assign(list(range(n_env)))
        if hasattr(policy, "eval"):  # torch policies; the runtime's graph backends have no training mode
            policy.eval()
        while any(c is not None for c in current):
            # every running env has just finished a chunk (or been reset): all of them decide, in one batch
            need = [i for i, c in enumerate(current) if c is not None]
            stale = [i for i in need if fresh_at[i] != lengths[i]]
            if stale:  # a decision on a black frame would be silent garbage
                raise RuntimeError(f"env {stale[0]} must decide at step {lengths[stale[0]]} but its last frame is "
                                   f"from step {fresh_at[stale[0]]}")
            batch = Observation({c: obs_now[c][need] for c in cams}, obs_now["proprio"][need],
                                [instructions[i] for i in need])
            out = None
            with torch.no_grad():
                if temperature is None:
                    chunks = policy.predict_action_chunk(batch)
                else:
                    out = policy.sample(batch, temperature, [generators[current[i][0]] for i in need])
                    chunks = out.chunks.cpu().numpy()
            actions = np.full((n_env, max_chunk, policy.spec.action.dim), np.nan, np.float32)  # NaN rows: not run
            for j, i in enumerate(need):
                chunkers[i].push_chunk(np.clip(chunks[j], policy.spec.action.low, policy.spec.action.high))
                actions[i, :steps] = chunkers[i].take(steps)
                if record and out is not None:
                    rec = recorders[i]
                    if out.means is not None:
                        rec.set_policy_distribution(out.distribution_meta())
                    rec.decide(chunks[j], float(out.log_probs[j]),
                               None if out.means is None else out.means[j].cpu().numpy(),
                               None if out.log_stds is None else out.log_stds[j].cpu().numpy())
            obs, _, term, trunc, info = venv.step(actions)
            finished = []
            for i in need:
                executed = int(info["chunk_executed"][i])
                every_frame = "chunk_frames" in info and bool(info["_chunk_frames"][i])
                for k in range(executed):
                    lengths[i] += 1
                    last = k == executed - 1
                    # the chunk's last observation is the vector env's; earlier frames exist when every step renders
                    fresh = bool(info["chunk_image_fresh"][i][k]) and (last or every_frame)
                    if fresh:
                        frame = ({cam: obs[cam][i] for cam in cams} if last else
                                 {cam: info["chunk_frames"][cam][i][k] for cam in cams})
                        fresh_at[i] = lengths[i]
                        if current[i][0] in gifs:
                            gifs[current[i][0]].append(np.concatenate([frame[cam] for cam in cams], axis=1))
                    if record:
                        rec = recorders[i]
                        rec.act(actions[i, k])
                        rec.observe(float(info["chunk_sim_time"][i][k]) - t0[i], info["chunk_proprio"][i][k],
                                    frame if fresh else None, float(info["chunk_progress"][i][k]))
                obs_now["proprio"][i] = obs["proprio"][i]
                for cam in cams:
                    obs_now[cam][i] = obs[cam][i]
                if term[i] or trunc[i]:
                    finish(i, info)
                    finished.append(i)
            if finished:
                assign(finished)
    finally:
        torch.set_num_threads(threads_before)
        if envs is None:
            venv.close()
    order = sorted(results)
    return ([results[k] for k in order], [np.stack(gifs[k]) for k in sorted(gifs)],
            [episodes[k] for k in order] if record else [])


def decision_observation(episode: Episode, step: int) -> tuple[dict[str, np.ndarray], np.ndarray, str]:
    """The observation a decision at ``step`` of ``episode`` was taken from: images per camera (the latest frame at
    or before ``step``, as the policy held it when a recording has no frame of that step), proprio, instruction."""
    frame = episode.held_frame_index(step)
    return ({c: v[frame] for c, v in episode.images.items()}, episode.proprio[step], episode.meta.instruction)


RECORD_FRAMES = ("decisions", "every_step")

__all__ = ["RECORD_FRAMES", "decision_observation", "run_policy_episodes"]
