"""Reward fidelity: does the progress reward track how far a failed trajectory really got?

Each task's episodes (successes and failures, e.g. from ``srpo sim attempts``) are scored as one batch with the
progress reward in an encoder's latent space. The fidelity of the reward is the Spearman rank correlation between the
failures' rewards and their ground-truth final progress from the simulator (which the reward never sees), reported

- per task, and over all failures pooled (``spearman_overall``);
- within each reference group (``spearman_within_group``: the mean over groups with at least 3 failures). With the
  per-prompt reference this is the ranking GRPO actually uses, because advantages are normalised per prompt group;
- for an oracle encoder whose distance is the true remaining progress (``oracle_bound``): min-max normalisation per
  reference group caps the pooled correlation below 1 even for a perfect encoder, and this says by how much.

    srpo reward fidelity --data outputs/attempts --encoder builtin --encoder-path runs/wm/final --out runs/fidelity
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from srpo.episodes.store import EpisodeStore
from srpo_trainer.encoders.base import TrajectoryEncoder
from srpo_trainer.progress_reward import ProgressRewardConfig, progress_rewards


@dataclass
class FidelityConfig:
    data: str = "outputs/attempts"
    split: str | None = "heldout"
    tasks: list[str] | None = None
    camera: str = "agentview"
    """Camera whose frames the encoder sees (the reference uses the third-person view)."""
    batch_size: int = 16
    reward: ProgressRewardConfig = field(default_factory=ProgressRewardConfig)


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's rho, or None where it is undefined (fewer than 3 points or a constant side)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(spearmanr(x, y).statistic)


def load_task_videos(store: EpisodeStore, cfg: FidelityConfig) -> dict[str, list[tuple[np.ndarray, bool, float, int]]]:
    """task -> [(frames of ``cfg.camera``, success, final ground-truth progress, initial-state id)]; only one camera
    is kept in memory."""
    by_task: dict[str, list] = defaultdict(list)
    records = store.list(split=cfg.split, strict=True)
    for r in records:
        if cfg.tasks and r.meta.task not in cfg.tasks:
            continue
        ep = store.load(r).require_labels()
        if cfg.camera not in ep.images:
            raise ValueError(f"{r.path}: no camera {cfg.camera!r} (has {sorted(ep.images)})")
        by_task[ep.meta.task].append((ep.images[cfg.camera], bool(ep.meta.success), float(ep.progress[-1]),
                                      ep.meta.init_state_id if ep.meta.init_state_id is not None else -1))
    if not by_task:
        raise ValueError(f"no episodes in {store.root} (split={cfg.split}, tasks={cfg.tasks})")
    return dict(sorted(by_task.items()))


def reward_fidelity(encoder: TrajectoryEncoder, videos: dict[str, list[tuple[np.ndarray, bool, float, int]]],
                    cfg: FidelityConfig) -> dict:
    """Score each task's episodes with the progress reward and correlate the failures' rewards with true progress.

    With ``cfg.reward.reference`` = ``prompt`` the episodes of one initial state form one group (as the n samples of
    one prompt do in RL)."""
    per_task, points, within = {}, [], []
    encode_s, n_encoded = 0.0, 0
    for task, items in videos.items():
        t0 = time.perf_counter()
        emb = encoder.encode([item[0] for item in items], batch_size=cfg.batch_size)
        encode_s += time.perf_counter() - t0
        n_encoded += len(items)
        success = np.array([item[1] for item in items])
        progress = np.array([item[2] for item in items])
        rewards, diags = progress_rewards(emb, success, [task] * len(items), cfg.reward,
                                          prompts=[item[3] for item in items])
        fail = ~success
        fallbacks = sorted({d.fallback for d in diags.values() if d.fallback})
        within += _within_group_rhos(rewards, progress, success, [task] * len(items),
                                     [item[3] for item in items], cfg.reward.reference)
        per_task[task] = {"spearman": spearman(rewards[fail], progress[fail]), "failures": int(fail.sum()),
                          "successes": int(success.sum()), "groups": len(diags),
                          "clusters": int(sum(d.clusters for d in diags.values())),
                          "fallback": ",".join(fallbacks) or None}
        points += [(task, float(r), float(p)) for r, p in zip(rewards[fail], progress[fail])]
    rewards_all = np.array([r for _, r, _ in points])
    progress_all = np.array([p for _, _, p in points])
    rhos = [v["spearman"] for v in per_task.values() if v["spearman"] is not None]
    return {
        "encoder": encoder.name, "embedding_dim": encoder.dim,
        "spearman_overall": spearman(rewards_all, progress_all),
        "spearman_task_mean": float(np.mean(rhos)) if rhos else None,
        "spearman_within_group": float(np.mean(within)) if within else None,
        "per_task": per_task, "failures": len(points),
        "trajectories_per_s": n_encoded / encode_s if encode_s > 0 else None,
        "points": points, "config": asdict(cfg),
    }


def _within_group_rhos(rewards: np.ndarray, progress: np.ndarray, success: np.ndarray, tasks: list[str],
                       prompts: list, reference: str) -> list[float]:
    keys = np.array([t if reference == "task" else f"{t}/{p}" for t, p in zip(tasks, prompts)])
    rhos = []
    for key in sorted(set(keys.tolist())):
        f = (keys == key) & ~success
        rho = spearman(rewards[f], progress[f]) if f.sum() >= 3 else None
        if rho is not None:
            rhos.append(rho)
    return rhos


def oracle_bound(videos: dict[str, list[tuple[np.ndarray, bool, float, int]]], cfg: FidelityConfig) -> dict:
    """Fidelity of a perfect encoder: the 1-D embedding ``1 - true progress`` (successes sit at 0), scored through the
    same reward. What it leaves below 1 is lost to the reward's per-group min-max normalisation, not to any encoder."""
    per_task, rewards_all, progress_all, within = {}, [], [], []
    for task, items in videos.items():
        success = np.array([item[1] for item in items])
        progress = np.array([item[2] for item in items])
        emb = np.where(success, 0.0, 1.0 - progress)[:, None]
        prompts = [item[3] for item in items]
        rewards, _ = progress_rewards(emb, success, [task] * len(items), cfg.reward, prompts=prompts)
        fail = ~success
        per_task[task] = spearman(rewards[fail], progress[fail])
        within += _within_group_rhos(rewards, progress, success, [task] * len(items), prompts, cfg.reward.reference)
        rewards_all += rewards[fail].tolist()
        progress_all += progress[fail].tolist()
    rhos = [v for v in per_task.values() if v is not None]
    return {"spearman_overall": spearman(np.array(rewards_all), np.array(progress_all)),
            "spearman_task_mean": float(np.mean(rhos)) if rhos else None,
            "spearman_within_group": float(np.mean(within)) if within else None, "per_task": per_task}


def plot_fidelity(results: list[dict], path: Path) -> None:
    """One scatter panel per encoder: progress reward against ground-truth progress of every failure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(3.4 * len(results), 3.3), squeeze=False)
    tasks = sorted({t for r in results for t, _, _ in r["points"]})
    colours = {t: plt.cm.tab10(i % 10) for i, t in enumerate(tasks)}
    for ax, res in zip(axes[0], results):
        for task in tasks:
            pts = [(p, r) for t, r, p in res["points"] if t == task]
            if pts:
                ax.scatter(*zip(*pts), s=6, alpha=0.6, color=colours[task], label=task)
        rho = res["spearman_overall"]
        ax.set_title(f"{res['encoder']}: rho = {rho:.2f}" if rho is not None else res["encoder"], fontsize=9)
        ax.set_xlabel("ground-truth final progress")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(0, 0.62)
    axes[0][0].set_ylabel("progress reward (failures)")
    axes[0][-1].legend(fontsize=5, loc="lower right", markerscale=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_fidelity(results: list[dict], out: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fidelity.json").write_text(json.dumps(results, indent=2))
    plot_fidelity(results, out / "fidelity.png")
    return out


__all__ = ["FidelityConfig", "load_task_videos", "oracle_bound", "plot_fidelity", "reward_fidelity", "spearman",
           "write_fidelity"]
