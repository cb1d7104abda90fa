"""Where ``srpo train`` runs: this process (``local``) or a Ray cluster (``ray``), as ``distributed.*`` settings.

The section says *where* the work runs, never *what* is computed: a run folder can be resumed under another
backend or cluster size (``open_run`` ignores this section when it checks that a folder holds the same run).
"""

from __future__ import annotations

from dataclasses import dataclass

BACKENDS = ("local", "ray")
COLLECTIVES = ("auto", "gloo", "nccl")


@dataclass
class DistributedConfig:
    """``distributed.*``: the Ray scale-out of rollouts and of the update."""

    backend: str = "local"
    """``local``: simulator processes and the update in this process (the default, unchanged). ``ray``: rollouts
    on Ray actors and, with ``learners`` > 1, a ``torch.distributed`` data-parallel update on Ray actors."""
    address: str | None = None
    """Ray cluster to join: ``auto`` (the cluster ``ray start`` set up on this node, or the one ``ray job submit``
    runs in), ``HOST:PORT`` (its GCS address), or unset to start a private Ray instance on this machine."""
    rollout_workers: int = 2
    """Rollout actors; each holds ``envs_per_worker`` simulator processes and a copy of the policy."""
    envs_per_worker: int = 1
    """Simulator processes per rollout actor, batched into one policy call per decision as the local backend does."""
    cpus_per_rollout_worker: float = 1.0
    """CPUs Ray reserves for each rollout actor (its simulators included)."""
    gpus_per_rollout_worker: float = 0.0
    """GPU share of each rollout actor's policy copy (0: inference on CPU; 0.25 packs 4 actors on one GPU)."""
    learners: int = 1
    """Update ranks. 1: the update runs in the driver, exactly as the local backend's. N > 1: N Ray actors form a
    ``torch.distributed`` group (DistributedDataParallel) and split every mini-batch's decisions between them."""
    gpus_per_learner: float = 0.0
    """GPUs per learner (0: CPU with gloo; 1: one GPU each, NCCL)."""
    cpus_per_learner: float = 1.0
    collective: str = "auto"
    """``torch.distributed`` backend of the learners: ``auto`` is NCCL with GPUs, gloo without."""
    local_cpus: int | None = None
    """CPUs of the private Ray instance (unset address only; default: all of this machine's)."""
    max_worker_restarts: int = 4
    """Dead rollout actors replaced per run before the run gives up; a replaced actor's jobs rerun with the same
    seeds, so the step's result does not change."""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"distributed.backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.collective not in COLLECTIVES:
            raise ValueError(f"distributed.collective must be one of {COLLECTIVES}, got {self.collective!r}")
        for name in ("rollout_workers", "envs_per_worker", "learners"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"distributed.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("cpus_per_rollout_worker", "gpus_per_rollout_worker", "gpus_per_learner", "cpus_per_learner"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"distributed.{name} must be >= 0, got {getattr(self, name)}")
        if self.max_worker_restarts < 0:
            raise ValueError(f"distributed.max_worker_restarts must be >= 0, got {self.max_worker_restarts}")
        if self.collective == "nccl" and not self.gpus_per_learner:
            raise ValueError("distributed.collective=nccl needs distributed.gpus_per_learner > 0")
        if self.backend == "local" and (self.learners > 1 or self.address):
            raise ValueError("distributed.learners > 1 and distributed.address need distributed.backend=ray")

    def collective_backend(self) -> str:
        if self.collective != "auto":
            return self.collective
        return "nccl" if self.gpus_per_learner > 0 else "gloo"


__all__ = ["BACKENDS", "COLLECTIVES", "DistributedConfig"]
