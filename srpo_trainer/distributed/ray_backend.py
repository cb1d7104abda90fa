"""``distributed.backend=ray``: rollouts on Ray actors, the update on a ``torch.distributed`` group of Ray actors.

Only existing engines do the work: Ray places the actors, moves the data (its object store) and reports dead
processes; ``torch.distributed`` (gloo on CPUs, NCCL on GPUs) averages the gradients through
DistributedDataParallel. Nothing here is a hand-written RPC, queue or process pool.

* ``RayRolloutPool``: ``rollout_workers`` actors, each with ``envs_per_worker`` simulator processes and a copy of the
  policy. A job list is cut into shards of a fixed size, independent of the number of actors; idle actors take the
  next shard. Each episode samples from its own seed (``episode_seed(seed, i)``, i its index in the whole list), so
  where it runs does not change what it samples. Weights go out once per update as one object in the object store
  that every actor reads. An actor that dies is replaced and its shard rerun with the same seeds: the step's result
  is the same as without the failure.
* ``LearnerGroup``: ``learners`` actors forming one ``torch.distributed`` group. Every rank holds the policy and
  the optimizer, receives the step's episodes and the driver's RNG state, and runs ``ppo_update`` on its share of
  every mini-batch (``srpo_trainer/distributed/update_group.py``). Rank 0 returns the metrics, the new weights and
  the advanced RNG state; the driver keeps the copy that checkpoints, evaluation and the next broadcast use.

Policies travel as their checkpoint files (safetensors + JSON) and weights as safetensors bytes, never as pickled
modules. Episodes and optimizer state travel through Ray's object store inside the cluster.
"""

from __future__ import annotations

import copy
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from srpo_trainer.distributed.config import DistributedConfig
from srpo_trainer.policies.base import episode_seed, weights_fingerprint


# --------------------------------------------------------------------------------------------- checkpoint transfer
def pack_checkpoint(policy) -> dict[str, bytes]:
    """The files of ``policy.save_pretrained`` (relative path -> bytes): how a policy reaches another node."""
    version = policy.version  # saving stamps the version; packing must not change the caller's policy
    try:
        with tempfile.TemporaryDirectory(prefix="srpo_pack_") as tmp:
            policy.save_pretrained(tmp)
            return {str(f.relative_to(tmp)): f.read_bytes() for f in sorted(Path(tmp).rglob("*")) if f.is_file()}
    finally:
        policy.version = version


def unpack_checkpoint(files: dict[str, bytes], directory: str | os.PathLike) -> Path:
    """Write ``pack_checkpoint``'s files under ``directory`` (which becomes a checkpoint folder)."""
    root = Path(directory)
    for name, data in files.items():
        path = (root / name).resolve()
        if root.resolve() not in path.parents:
            raise ValueError(f"checkpoint file {name!r} escapes the checkpoint folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def load_packed_policy(files: dict[str, bytes]):
    from srpo_trainer.policies import load_policy

    with tempfile.TemporaryDirectory(prefix="srpo_unpack_") as tmp:
        return load_policy(unpack_checkpoint(files, tmp))


def weights_bytes(module: torch.nn.Module) -> bytes:
    """The module's parameters and buffers as safetensors bytes (copies: tied tensors cannot be saved shared)."""
    from safetensors.torch import save

    return save({k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()})


def load_weights_bytes(module: torch.nn.Module, data: bytes) -> None:
    from safetensors.torch import load

    device = next(module.parameters()).device
    module.load_state_dict({k: v.to(device) for k, v in load(data).items()})


# ---------------------------------------------------------------------------------------------------- ray setup
def init_ray(cfg: DistributedConfig) -> None:
    """Join the cluster ``distributed.address`` names, or start a private instance on this machine."""
    import ray

    if ray.is_initialized():
        return
    if cfg.address:
        ray.init(address=cfg.address, log_to_driver=True)
    else:
        ray.init(num_cpus=cfg.local_cpus, include_dashboard=False, log_to_driver=True)


def _dead(exc: BaseException) -> bool:
    """A failure of the actor's process (to replace it), not of the code it ran (to report)."""
    import ray.exceptions as rx

    return isinstance(exc, (rx.RayActorError, rx.WorkerCrashedError, rx.ObjectLostError))


# ----------------------------------------------------------------------------------------------- rollout actors
class RolloutWorker:
    """A Ray actor: simulator processes and a policy copy; runs shards of a job list with ``run_policy_episodes``."""

    def __init__(self, checkpoint: dict[str, bytes], exploration, suite: str, env_options: dict | None, envs: int,
                 threads: int, device: str) -> None:
        from srpo.sim.vector import make_vector_env
        from srpo_trainer.rl.exploration import ExplorationPolicy

        torch.set_num_threads(threads)
        self.threads = threads
        policy = load_packed_policy(checkpoint).to(device)
        self.explore = ExplorationPolicy(policy, exploration).eval()
        self.envs = make_vector_env(envs, image_size=policy.spec.observation.cameras[0].height,
                                    max_chunk=policy.chunk_size, suite=suite, env_options=env_options)

    def set_weights(self, version: str, weights: bytes) -> str:
        load_weights_bytes(self.explore.policy, weights)
        self.explore.policy.version = version
        return weights_fingerprint(self.explore.policy)

    def run(self, jobs: list[tuple[str, int]], seeds: list[int], split: str, execute_steps: int,
            temperature: float | None, seed: int, record: bool, record_frames: str, suite: str):
        from srpo_trainer.rollouts import run_policy_episodes

        results, _, episodes = run_policy_episodes(self.explore, jobs, split, self.envs.num_envs, execute_steps,
                                                   temperature, seed, record=record, envs=self.envs,
                                                   threads=self.threads, record_frames=record_frames, suite=suite,
                                                   seeds=seeds)
        return results, episodes

    def pid(self) -> int:
        return os.getpid()

    def close(self) -> None:
        self.envs.close()


@dataclass
class PoolStats:
    restarts: int = 0
    """Rollout actors replaced after they died."""
    broadcasts: int = 0
    broadcast_s: float = 0.0
    """Time of the latest weight broadcast (put + every actor loaded it)."""
    shards: int = 0
    driver_s: float = 0.0
    """Driver time spent on finished shards (fetching their episodes, bookkeeping, submitting the next): what
    bounds how many actors one driver can keep busy."""


class RayRolloutPool:
    """``rollout_workers`` ``RolloutWorker`` actors behind ``run_policy_episodes``'s signature."""

    def __init__(self, cfg: DistributedConfig, policy, exploration, suite: str, env_options: dict | None,
                 threads: int = 1, shard_size: int | None = None) -> None:
        import ray

        init_ray(cfg)
        self.cfg, self.suite, self.env_options = cfg, suite, env_options
        self.exploration, self.threads = exploration, threads
        # a shard's episodes are batched together on one actor; its size depends on the actor's envs only, never on
        # how many actors there are, so adding actors does not change any episode's inference batch
        self.shard_size = shard_size or 2 * cfg.envs_per_worker
        self.stats = PoolStats()
        self._checkpoint = ray.put(pack_checkpoint(policy))
        self._actor_cls = ray.remote(num_cpus=cfg.cpus_per_rollout_worker,
                                     num_gpus=cfg.gpus_per_rollout_worker)(RolloutWorker)
        self._version: tuple[str, str] | None = None  # (version, fingerprint) the actors hold
        self._weights = None
        self.workers = [self._start() for _ in range(cfg.rollout_workers)]
        self.sync(policy)

    def _start(self):
        device = "cuda" if self.cfg.gpus_per_rollout_worker > 0 else "cpu"
        return self._actor_cls.remote(self._checkpoint, self.exploration, self.suite, self.env_options,
                                      self.cfg.envs_per_worker, self.threads, device)

    def sync(self, policy) -> bool:
        """Broadcast ``policy``'s weights when they differ from the actors'; True when it did."""
        import ray

        policy = getattr(policy, "policy", policy)  # an ExplorationPolicy acts with the policy it wraps
        key = (policy.version, weights_fingerprint(policy))
        if key == self._version:
            return False
        t0 = time.perf_counter()
        self._weights = ray.put(weights_bytes(policy))
        self._version = key
        ray.get([w.set_weights.remote(policy.version, self._weights) for w in self.workers])
        self.stats.broadcasts += 1
        self.stats.broadcast_s = time.perf_counter() - t0
        return True

    def _replace(self, i: int) -> None:
        import ray

        self.stats.restarts += 1
        if self.stats.restarts > self.cfg.max_worker_restarts:
            raise RuntimeError(f"rollout actors died {self.stats.restarts} times in this run (more than "
                               f"distributed.max_worker_restarts={self.cfg.max_worker_restarts}); giving up")
        try:
            ray.kill(self.workers[i])
        except Exception:  # noqa: BLE001 - it is already gone
            pass
        print(f"rollout actor {i} died; replacing it and rerunning its jobs (restart {self.stats.restarts})")
        self.workers[i] = self._start()
        if self._version is not None:
            ray.get(self.workers[i].set_weights.remote(self._version[0], self._weights))

    def run_policy_episodes(self, policy, jobs: list[tuple[str, int]], split: str, workers: int | None,
                            execute_steps: int, temperature: float | None, seed: int, record: bool = False,
                            gif_episodes: int = 0, on_episode: Callable[[dict], None] | None = None, envs=None,
                            threads: int | None = None, record_frames: str = "decisions", suite: str | None = None,
                            env_options: dict | None = None, seeds: list[int] | None = None):
        """``srpo_trainer.rollouts.run_policy_episodes`` on the actors (``workers``, ``envs`` and ``threads``
        belong to the local backend and are ignored). The actors act with ``policy``'s current weights."""
        import ray

        if gif_episodes:
            raise ValueError("GIFs are rendered by the local backend only (srpo eval --out ...)")
        if suite not in (None, self.suite) or (env_options not in (None, self.env_options)):
            raise ValueError(f"the pool's simulators run {self.suite} {self.env_options}, not {suite} {env_options}")
        if not jobs:
            return [], [], []
        self.sync(policy)
        if seeds is None:
            seeds = [episode_seed(seed, i) for i in range(len(jobs))]
        shards = [list(range(s, min(s + self.shard_size, len(jobs)))) for s in range(0, len(jobs), self.shard_size)]
        pending = list(range(len(shards)))
        results: dict[int, dict] = {}
        episodes: dict[int, object] = {}
        running: dict = {}  # object ref -> (actor index, shard index)

        def submit(i: int) -> None:
            k = pending.pop(0)
            idx = shards[k]
            ref = self.workers[i].run.remote([jobs[j] for j in idx], [seeds[j] for j in idx], split, execute_steps,
                                             temperature, seed, record, record_frames, self.suite)
            running[ref] = (i, k)

        for i in range(len(self.workers)):
            if pending:
                submit(i)
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            t0 = time.perf_counter()
            i, k = running.pop(done[0])
            try:
                res, eps = ray.get(done[0])
            except Exception as exc:  # noqa: BLE001 - only a dead actor is handled; anything else is re-raised
                if not _dead(exc):
                    raise
                pending.insert(0, k)  # the same jobs with the same seeds: the same episodes
                self._replace(i)
            else:
                for j, r, e in zip(shards[k], res, eps or [None] * len(res)):
                    results[j] = r
                    if record:
                        episodes[j] = e
                    if on_episode:
                        on_episode(r)
            if pending:
                submit(i)
            self.stats.shards += 1
            self.stats.driver_s += time.perf_counter() - t0
        order = sorted(results)
        return [results[j] for j in order], [], [episodes[j] for j in order] if record else []

    def pids(self) -> list[int]:
        import ray

        return ray.get([w.pid.remote() for w in self.workers])

    def close(self) -> None:
        import ray

        for w in self.workers:
            try:
                ray.get(w.close.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - closing a dead or stuck actor: kill it
                pass
            ray.kill(w)
        self.workers = []


# ------------------------------------------------------------------------------------------------------ learners
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class Learner:
    """A Ray actor: one rank of the data-parallel update."""

    def __init__(self, rank: int, world: int, init_checkpoint: dict[str, bytes], weights: bytes, cfg,
                 optimizer_state: dict | None, device: str, threads: float) -> None:
        from srpo_trainer.rl.exploration import ExplorationPolicy

        torch.set_num_threads(max(1, int(threads)))
        self.rank, self.world, self.cfg = rank, world, cfg
        self.device = torch.device(device)
        initial = load_packed_policy(init_checkpoint)
        # the KL penalty's reference is the run's initial policy, as in the single-process trainer
        self.reference = (ExplorationPolicy(copy.deepcopy(initial), cfg.exploration).to(self.device).eval()
                          if cfg.update.kl_coef > 0 else None)
        load_weights_bytes(initial, weights)
        self.policy = initial.to(self.device)
        self.explore = ExplorationPolicy(self.policy, cfg.exploration)
        self.optimizer = torch.optim.AdamW(self.explore.parameters(), lr=cfg.update.lr,
                                           weight_decay=cfg.update.weight_decay)
        if optimizer_state is not None:
            self.optimizer.load_state_dict(optimizer_state)
        self.group = None

    def address(self) -> tuple[str, int]:
        import ray

        return ray.util.get_node_ip_address(), _free_port()

    def join(self, host: str, port: int, backend: str) -> int:
        import torch.distributed as dist

        from srpo_trainer.distributed.update_group import UpdateGroup

        dist.init_process_group(backend, init_method=f"tcp://{host}:{port}", rank=self.rank, world_size=self.world)
        self.group = UpdateGroup(self.explore, self.rank, self.world)
        return self.rank

    def update(self, episodes, advantages, rng_state: dict, measure_snr: bool):
        from srpo_trainer.rl.trainer import ppo_update

        rng = np.random.default_rng()
        rng.bit_generator.state = rng_state
        metrics = ppo_update(self.explore, self.optimizer, episodes, advantages, self.cfg, rng, self.reference,
                             measure_snr=measure_snr, group=self.group)
        if self.rank:
            return None
        return metrics, rng.bit_generator.state, weights_bytes(self.policy)

    def fingerprint(self) -> str:
        return weights_fingerprint(self.policy)

    def optimizer_state(self) -> dict:
        state = self.optimizer.state_dict()
        return {"state": {k: {n: (v.cpu() if isinstance(v, torch.Tensor) else v) for n, v in s.items()}
                          for k, s in state["state"].items()}, "param_groups": state["param_groups"]}

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


class LearnerGroup:
    """``learners`` ``Learner`` actors in one ``torch.distributed`` group, packed by a Ray placement group."""

    def __init__(self, cfg: DistributedConfig, rl_cfg, init_checkpoint: dict[str, bytes], policy,
                 optimizer: torch.optim.Optimizer) -> None:
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        init_ray(cfg)
        self.cfg = cfg
        bundle = {"CPU": cfg.cpus_per_learner, **({"GPU": cfg.gpus_per_learner} if cfg.gpus_per_learner else {})}
        self.placement = placement_group([bundle] * cfg.learners, strategy="PACK")
        ray.get(self.placement.ready(), timeout=600)
        cls = ray.remote(num_cpus=cfg.cpus_per_learner, num_gpus=cfg.gpus_per_learner)(Learner)
        device = "cuda" if cfg.gpus_per_learner > 0 else "cpu"
        init_ref, weights_ref = ray.put(init_checkpoint), ray.put(weights_bytes(policy))
        state = optimizer.state_dict() if optimizer.state_dict()["state"] else None
        self.actors = [cls.options(scheduling_strategy=PlacementGroupSchedulingStrategy(
            placement_group=self.placement, placement_group_bundle_index=r)).remote(
                r, cfg.learners, init_ref, weights_ref, rl_cfg, state, device, cfg.cpus_per_learner)
            for r in range(cfg.learners)]
        host, port = ray.get(self.actors[0].address.remote())
        ray.get([a.join.remote(host, port, cfg.collective_backend()) for a in self.actors])

    def update(self, policy, optimizer, episodes, advantages, rng: np.random.Generator, measure_snr: bool) -> dict:
        """One data-parallel ``ppo_update``; ``policy`` gets the new weights, ``rng`` the advanced state and the
        optimizer's learning rate follows the learners' (its full state arrives with ``sync_optimizer``)."""
        import ray

        refs = ray.put(episodes), ray.put(advantages)
        outs = ray.get([a.update.remote(*refs, rng.bit_generator.state, measure_snr) for a in self.actors])
        metrics, rng_state, weights = outs[0]
        load_weights_bytes(policy, weights)
        rng.bit_generator.state = rng_state
        for params in optimizer.param_groups:
            params["lr"] = metrics["update/lr"]
        return metrics

    def fingerprints(self) -> list[str]:
        import ray

        return ray.get([a.fingerprint.remote() for a in self.actors])

    def sync_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Load rank 0's optimizer state into the driver's optimizer (before a checkpoint is written)."""
        import ray

        optimizer.load_state_dict(ray.get(self.actors[0].optimizer_state.remote()))

    def close(self) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        try:
            ray.get([a.close.remote() for a in self.actors], timeout=60)
        finally:
            for a in self.actors:
                ray.kill(a)
            remove_placement_group(self.placement)


__all__ = ["LearnerGroup", "PoolStats", "RayRolloutPool", "RolloutWorker", "init_ray", "load_packed_policy",
           "load_weights_bytes", "pack_checkpoint", "unpack_checkpoint", "weights_bytes"]
