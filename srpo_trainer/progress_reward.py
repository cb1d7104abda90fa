"""SRPO's self-referential progress reward: failures are scored by how close they came to this batch's successes.

For the trajectories of one task in one batch (embeddings ``e_i`` from a trajectory encoder, success flags ``s_i``):

    r_i = 1                                          if s_i                              (success)
    C   = centres of DBSCAN clusters of the standardised success embeddings (the success mean if none form)
    d_i = min_{c in C} dist(e_i, c)                  for every failure i
    d^_i = (d_i - min_j d_j) / (max_j d_j - min_j d_j)   over the task's failures (0.5 if the range < 1e-6)
    r_i = 0.6 * sigmoid(10 * (0.5 - d^_i))           in (0.004, 0.596): always below a success
    r_i = 0                                          for every failure when the task has no success at all

Every constant is a field of ``ProgressRewardConfig`` (defaults: the paper's reference implementation).

Departure from the paper (off by default): ``SuccessMemory`` keeps a bounded per-task set of past successful
embeddings. With ``memory_size > 0`` a task with no success in the current batch is scored against the remembered
ones, so hard tasks get shaping before the policy first solves them within a batch.
"""

from __future__ import annotations

import os
from collections import OrderedDict, deque
from pathlib import Path
from dataclasses import dataclass, field

import numpy as np

METRICS = ("euclidean", "cosine", "manhattan")
REFERENCES = ("task", "prompt", "prompt_or_task")


@dataclass
class ProgressRewardConfig:
    """Constants of the progress reward (defaults follow the SRPO reference implementation)."""

    success_reward: float = 1.0
    max_failure_reward: float = 0.6
    """Failures are mapped into (0, max_failure_reward): strictly below a success."""
    sigmoid_scale: float = 10.0
    """Steepness of the sigmoid over normalised distance (reference: 10)."""
    dbscan_eps: float = 0.5
    dbscan_min_samples: int = 2
    metric: str = "euclidean"
    """Distance for DBSCAN and for failure-to-centre distances: euclidean, cosine or manhattan."""
    standardize: bool = True
    """Cluster the success embeddings after per-dimension standardisation (StandardScaler), as the reference does."""
    degenerate_range: float = 1e-6
    """Failure distances spanning less than this are all given the midpoint (normalised distance 0.5)."""
    memory_size: int = 0
    """Past successful embeddings remembered per task (0: off, the paper's behaviour; see ``SuccessMemory``)."""
    reference: str = "task"
    """Which successes a failure is compared with: ``task`` (every success of its task in the batch, the paper),
    ``prompt`` (only those from the same initial state: same layout, so distances measure progress rather than
    where the objects happened to be), or ``prompt_or_task`` (the prompt's, else the task's)."""

    def __post_init__(self) -> None:
        if self.reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got {self.reference!r}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if self.dbscan_eps <= 0 or self.dbscan_min_samples < 1:
            raise ValueError("dbscan_eps must be > 0 and dbscan_min_samples >= 1")
        if not 0 < self.max_failure_reward < self.success_reward:
            raise ValueError("need 0 < max_failure_reward < success_reward")
        if self.sigmoid_scale <= 0 or self.memory_size < 0:
            raise ValueError("sigmoid_scale must be > 0 and memory_size >= 0")


@dataclass
class TaskRewardDiagnostics:
    """What happened for one task: how the reference set was formed and how far the failures were."""

    successes: int
    failures: int
    reference_size: int
    """Successful embeddings used as the reference (this batch's, plus remembered ones)."""
    clusters: int
    """DBSCAN clusters formed (0 means the mean fallback ran)."""
    fallback: str | None
    """``"mean"`` (no cluster formed), ``"no_success"`` (failures left at 0), ``"external"`` (no success in this set:
    the reference came from the memory or, for ``prompt_or_task``, from the task's other prompts)."""
    distances: list[float] = field(default_factory=list)
    """Raw distance of each failure to its nearest centre, in batch order of the failures."""


def _pairwise(x: np.ndarray, y: np.ndarray, metric: str) -> np.ndarray:
    if metric == "euclidean":
        return np.sqrt(np.maximum(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1), 0.0))
    if metric == "manhattan":
        return np.abs(x[:, None, :] - y[None, :, :]).sum(-1)
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    yn = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
    return 1.0 - xn @ yn.T


def success_centres(success_embeddings: np.ndarray, cfg: ProgressRewardConfig) -> tuple[np.ndarray, int]:
    """Cluster centres of the successful embeddings, in raw embedding space, and how many clusters DBSCAN formed.

    The embeddings are put in a canonical (lexicographic) order first, so the result never depends on batch order
    (DBSCAN's assignment of border points does). With no cluster, the single centre is the mean.
    """
    from sklearn.cluster import DBSCAN
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(success_embeddings, dtype=np.float64)
    x = x[np.lexsort(x.T[::-1])]
    z = StandardScaler().fit_transform(x) if cfg.standardize and len(x) > 1 else x
    labels = DBSCAN(eps=cfg.dbscan_eps, min_samples=cfg.dbscan_min_samples, metric=cfg.metric).fit(z).labels_
    ids = sorted(set(labels.tolist()) - {-1})
    if not ids:
        return x.mean(axis=0, keepdims=True), 0
    return np.stack([x[labels == k].mean(axis=0) for k in ids]), len(ids)


def failure_reward(normalised_distance: np.ndarray, cfg: ProgressRewardConfig) -> np.ndarray:
    """r = max_failure_reward * sigmoid(sigmoid_scale * (0.5 - d^)) for normalised distances d^ in [0, 1]."""
    d = np.asarray(normalised_distance, dtype=np.float64)
    return cfg.max_failure_reward / (1.0 + np.exp(-cfg.sigmoid_scale * (0.5 - d)))


def normalise_distances(d: np.ndarray, degenerate_range: float = 1e-6) -> np.ndarray:
    """Min-max normalisation over the failures, d^ = (d - min) / (max - min); all 0.5 when max - min < the range."""
    d = np.asarray(d, dtype=np.float64)
    span = float(d.max() - d.min()) if d.size else 0.0
    if span < degenerate_range:
        return np.full_like(d, 0.5)
    return (d - d.min()) / span


def task_progress_rewards(embeddings: np.ndarray, successes: np.ndarray, cfg: ProgressRewardConfig,
                          remembered: np.ndarray | None = None) -> tuple[np.ndarray, TaskRewardDiagnostics]:
    """Rewards for the trajectories of ONE task (see the module docstring); ``remembered``: past success embeddings."""
    e = np.asarray(embeddings, dtype=np.float64)
    s = np.asarray(successes, dtype=bool)
    if e.ndim != 2 or len(e) != len(s):
        raise ValueError(f"need embeddings (N, D) and N success flags, got {e.shape} and {s.shape}")
    if not np.all(np.isfinite(e)):
        raise ValueError("embeddings contain NaN or inf")
    rewards = np.where(s, cfg.success_reward, 0.0)
    reference = e[s]
    fallback = None
    if remembered is not None and len(remembered):
        if not len(reference):
            fallback = "external"
        reference = np.concatenate([reference, np.asarray(remembered, dtype=np.float64)])
    fails = np.flatnonzero(~s)
    diag = TaskRewardDiagnostics(int(s.sum()), len(fails), len(reference), 0, fallback)
    if not len(fails):
        return rewards, diag
    if not len(reference):
        diag.fallback = "no_success"
        return rewards, diag
    centres, diag.clusters = success_centres(reference, cfg)
    if diag.clusters == 0 and diag.fallback is None:
        diag.fallback = "mean"
    d = _pairwise(e[fails], centres, cfg.metric).min(axis=1)
    rewards[fails] = failure_reward(normalise_distances(d, cfg.degenerate_range), cfg)
    diag.distances = d.tolist()
    return rewards, diag


class SuccessMemory:
    """A bounded per-task memory of successful trajectory embeddings (FIFO; a departure from the paper)."""

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"memory size must be >= 0, got {size}")
        self.size = size
        self._store: OrderedDict[str, deque] = OrderedDict()

    def get(self, task: str) -> np.ndarray | None:
        items = self._store.get(task)
        return np.stack(items) if items else None

    def add(self, task: str, embeddings: np.ndarray) -> None:
        if self.size == 0:
            return
        q = self._store.setdefault(task, deque(maxlen=self.size))
        q.extend(np.asarray(embeddings, dtype=np.float64))

    def __len__(self) -> int:
        return sum(len(q) for q in self._store.values())

    FILE = "success_memory.npz"

    def save(self, path) -> None:
        """Write the memory as an ``.npz`` of plain arrays (one per task; no pickle), atomically."""
        path = Path(path)
        tmp = path.with_name(f".{path.stem}.tmp.npz")
        np.savez(tmp, **{task: np.stack(q) for task, q in self._store.items() if q})
        os.replace(tmp, path)

    def save_into(self, folder) -> None:
        """Save as ``FILE`` inside ``folder`` (a run checkpoint)."""
        self.save(Path(folder) / self.FILE)

    def load(self, path) -> None:
        with np.load(path, allow_pickle=False) as data:
            self._store = OrderedDict()
            for task in data.files:
                self._store[task] = deque(data[task], maxlen=self.size)


def progress_rewards(embeddings: np.ndarray, successes: np.ndarray, tasks: list[str], cfg: ProgressRewardConfig,
                     memory: SuccessMemory | None = None, prompts: list | None = None,
                     ) -> tuple[np.ndarray, dict[str, TaskRewardDiagnostics]]:
    """Progress rewards for a whole batch: each failure is scored against the successes of its reference set.

    ``cfg.reference`` picks the set: the trajectory's task (the paper), its prompt (``prompts[i]`` identifies the
    task's initial state), or the prompt's successes falling back to the task's. Min-max normalisation runs over the
    failures of the same set. With a ``memory`` (and ``cfg.memory_size > 0``) a task's remembered successes join its
    reference; this batch's successes are added afterwards, so a batch never references itself twice.
    Diagnostics are keyed by task, or by ``task/prompt`` for per-prompt references.
    """
    e = np.asarray(embeddings, dtype=np.float64)
    s = np.asarray(successes, dtype=bool)
    if len(tasks) != len(e) or len(s) != len(e):
        raise ValueError(f"got {len(e)} embeddings, {len(s)} success flags and {len(tasks)} tasks")
    if cfg.reference != "task" and (prompts is None or len(prompts) != len(e)):
        raise ValueError(f"reference={cfg.reference!r} needs one prompt id per trajectory")
    rewards = np.zeros(len(e))
    diagnostics = {}
    names = np.asarray(tasks)
    for task in sorted(set(tasks)):
        in_task = names == task
        remembered = memory.get(task) if memory is not None and cfg.memory_size > 0 else None
        if cfg.reference == "task":
            idx = np.flatnonzero(in_task)
            rewards[idx], diagnostics[task] = task_progress_rewards(e[idx], s[idx], cfg, remembered)
            continue
        keys = [str(prompts[i]) for i in np.flatnonzero(in_task)]
        for key in sorted(set(keys)):
            idx = np.flatnonzero(in_task)[np.asarray(keys) == key]
            extra = remembered
            if cfg.reference == "prompt_or_task" and not s[idx].any():
                task_succ = e[in_task & s]
                extra = task_succ if remembered is None else np.concatenate([task_succ, remembered])
            rewards[idx], diagnostics[f"{task}/{key}"] = task_progress_rewards(e[idx], s[idx], cfg, extra)
    if memory is not None and cfg.memory_size > 0:
        for task in sorted(set(tasks)):
            idx = np.flatnonzero((names == task) & s)
            if len(idx):
                memory.add(task, e[idx])
    return rewards, diagnostics


__all__ = ["METRICS", "REFERENCES", "ProgressRewardConfig", "SuccessMemory", "TaskRewardDiagnostics", "failure_reward",
           "normalise_distances", "progress_rewards", "success_centres", "task_progress_rewards"]
