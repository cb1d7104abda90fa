"""Evaluation harness: parallel envs, batched policy inference, open-loop action chunks (as OpenVLA-OFT).

    srpo eval --policy runs/sft5/final --suite tabletop --episodes-per-task 10 --split heldout --out runs/sft5/eval
    srpo eval --policy exports/sft5 --backend onnxruntime --out runs/sft5/eval_ort     # an exported model

Writes ``eval.json`` (overall and per-task success with Wilson 95% intervals, mean final progress, every episode),
``eval.png`` (per-task bar chart) and ``episodes.gif`` (the first few episodes, both cameras).
Held-out initial states are the default; evaluation is deterministic for a given seed.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from srpo.sim.tabletop.tasks import SPLIT_SIZES, TASKS
from srpo.runtime.policy import InferencePolicy
from srpo_trainer.policies.base import Policy
from srpo_trainer.rollouts import run_policy_episodes


@dataclass
class EvalConfig:
    """One evaluation."""

    suite: str = "tabletop"
    tasks: list[str] | None = None
    """Tasks to evaluate (default: all of the suite)."""
    episodes_per_task: int = 10
    """Initial states 0..N-1 of the split, one episode each."""
    split: str = "heldout"
    workers: int = 2
    execute_steps: int = 8
    """Actions executed from each predicted chunk before predicting again (<= chunk size)."""
    temperature: float | None = None
    """None: act with the chunk mean (deterministic); else sample at this temperature."""
    seed: int = 0
    gifs: int = 4
    """Episodes recorded into episodes.gif."""

    def __post_init__(self) -> None:
        if self.suite != "tabletop":
            raise ValueError(f"suite {self.suite!r} is not available for evaluation; supported: tabletop")
        if self.split not in SPLIT_SIZES:
            raise ValueError(f"split must be one of {sorted(SPLIT_SIZES)}, got {self.split!r}")
        if not 1 <= self.episodes_per_task <= SPLIT_SIZES[self.split]:
            raise ValueError(f"episodes_per_task must be in 1..{SPLIT_SIZES[self.split]} for {self.split}")
        for t in self.tasks or []:
            if t not in TASKS:
                raise ValueError(f"unknown task {t!r}; available: {sorted(TASKS)}")
        if self.workers < 1 or self.execute_steps < 1:
            raise ValueError("workers and execute_steps must be >= 1")


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (well-behaved at 0% and 100%, unlike the normal one)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_difference(before: np.ndarray, after: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean change after - before of paired outcomes (the same states evaluated twice) with a t-interval on the
    per-state differences. Pairing removes the between-state variance that two independent intervals would carry."""
    from scipy.stats import t

    d = np.asarray(after, dtype=np.float64) - np.asarray(before, dtype=np.float64)
    if d.shape[0] < 2:
        raise ValueError("a paired interval needs at least 2 pairs")
    mean = float(d.mean())
    half = float(t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return mean, mean - half, mean + half


def summarise(episodes: list[dict]) -> dict:
    by_task = defaultdict(list)
    for e in episodes:
        by_task[e["task"]].append(e)
    per_task = {}
    for task, eps in sorted(by_task.items()):
        k, n = sum(e["success"] for e in eps), len(eps)
        lo, hi = wilson_interval(k, n)
        per_task[task] = {"success_rate": k / n, "ci95": [lo, hi], "episodes": n,
                          "mean_progress": float(np.mean([e["progress"] for e in eps])),
                          "mean_length": float(np.mean([e["length"] for e in eps]))}
    k, n = sum(e["success"] for e in episodes), len(episodes)
    lo, hi = wilson_interval(k, n)
    return {"success_rate": float(np.mean([v["success_rate"] for v in per_task.values()])), "ci95": [lo, hi],
            "episodes": n, "mean_progress": float(np.mean([e["progress"] for e in episodes])), "per_task": per_task}


def _plot(summary: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(summary["per_task"])
    rates = [100 * summary["per_task"][t]["success_rate"] for t in tasks]
    lo = [100 * summary["per_task"][t]["ci95"][0] for t in tasks]
    hi = [100 * summary["per_task"][t]["ci95"][1] for t in tasks]
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(tasks) + 2), 3.6))
    ax.bar(range(len(tasks)), rates, yerr=[np.subtract(rates, lo), np.subtract(hi, rates)], capsize=3, color="tab:blue")
    ax.axhline(100 * summary["success_rate"], color="k", ls="--", lw=0.8, label=f"mean {100 * summary['success_rate']:.1f}%")
    ax.set_xticks(range(len(tasks)), tasks, rotation=40, ha="right", fontsize=7)
    ax.set_ylim(0, 105)
    ax.set_ylabel("success (%), 95% CI")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def evaluate(policy: Policy | InferencePolicy, cfg: EvalConfig, out: str | Path | None = None, progress: bool = True,
             envs=None, threads: int | None = None) -> dict:
    """Evaluate ``policy``; with ``out`` write eval.json, eval.png and episodes.gif there. Returns the summary.
    ``envs``: a running vector env to reuse (see ``run_policy_episodes``)."""
    from tqdm import tqdm

    tasks = cfg.tasks or list(TASKS)
    jobs = [(t, i) for t in tasks for i in range(cfg.episodes_per_task)]
    bar = tqdm(total=len(jobs), desc="eval", unit="ep", disable=not progress)
    start = time.perf_counter()
    episodes, clips, _ = run_policy_episodes(policy, jobs, cfg.split, cfg.workers, cfg.execute_steps, cfg.temperature,
                                             cfg.seed, gif_episodes=cfg.gifs if out else 0,
                                             on_episode=lambda e: bar.update(), envs=envs,
                                             threads=threads)
    bar.close()
    summary = summarise(episodes)
    summary.update({"policy_version": policy.version, "backend": getattr(policy, "backend", "torch"),
                    "device": str(getattr(policy, "device", "cpu")), "config": asdict(cfg), "wall_s": time.perf_counter() - start,
                    "episodes_detail": episodes})
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(json.dumps(summary, indent=2))
        _plot(summary, out / "eval.png", f"{policy.version} on {cfg.split} ({cfg.episodes_per_task} ep/task)")
        if clips:
            import imageio.v2 as imageio

            imageio.mimsave(out / "episodes.gif", list(np.concatenate(clips)), duration=50, loop=0)
    return summary
