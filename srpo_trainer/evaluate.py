"""Evaluation harness: parallel envs, batched policy inference, open-loop action chunks (as OpenVLA-OFT).

    srpo eval --policy runs/sft5/final --suite tabletop --episodes-per-task 10 --split heldout --out runs/sft5/eval
    srpo eval --policy exports/sft5 --backend onnxruntime --out runs/sft5/eval_ort     # an exported model
    srpo eval --policy runs/libero/final --suite libero_spatial --episodes-per-task 10 --out runs/libero/eval
    srpo eval --policy runs/libero/final --suite libero_spatial --perturbations lan,swap --out runs/libero/pro

LIBERO suites need ``srpo[libero]`` (see ``srpo.sim.libero.env`` for the protocol and the splits; ``--split
standard`` is the published 50-state protocol, which overlaps the training states and is labelled as such).

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

from srpo.sim.suites import check_suite, resolve_task, splits, suite_tasks
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
    """Initial states ``first_state``..``first_state``+N-1 of the split, one episode each."""
    first_state: int = 0
    """The first initial state (default 0). E.g. ``split=train first_state=10``: train states an RL run on states
    0..9 never saw, a validation set that leaves the held-out states untouched."""
    split: str = "heldout"
    workers: int = 2
    execute_steps: int = 8
    """Actions executed from each predicted chunk before predicting again (<= chunk size)."""
    temperature: float | None = None
    """None: act with the chunk mean (deterministic); else sample at this temperature."""
    seed: int = 0
    gifs: int = 4
    """Episodes recorded into episodes.gif."""
    max_steps: int | None = None
    """Cut episodes at this many steps (default: each task's limit). A cut run is not the benchmark's protocol."""
    fast_render: bool = False
    """LIBERO: shadows, multisampling and reflections off (about 3x faster on a CPU; other pixels than the reference
    renderer). Recorded in the results."""
    perturb: str | None = None
    """tabletop, held-out states only: ``DIM:LEVEL[,DIM:LEVEL...]`` (``srpo/sim/tabletop/perturbations.py``)."""

    def __post_init__(self) -> None:
        check_suite(self.suite)
        sizes = splits(self.suite)
        if self.split not in sizes:
            raise ValueError(f"split must be one of {sorted(sizes)}, got {self.split!r}")
        if not 1 <= self.episodes_per_task <= sizes[self.split]:
            raise ValueError(f"episodes_per_task must be in 1..{sizes[self.split]} for {self.split}")
        if self.first_state < 0 or self.first_state + self.episodes_per_task > sizes[self.split]:
            raise ValueError(f"states first_state={self.first_state} .. {self.first_state + self.episodes_per_task - 1}"
                             f" do not fit in the {sizes[self.split]} {self.split} states")
        if self.tasks:
            self.tasks = [resolve_task(self.suite, t) for t in self.tasks]
        if self.workers < 1 or self.execute_steps < 1:
            raise ValueError("workers and execute_steps must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.fast_render and self.suite == "tabletop":
            raise ValueError("fast_render is a LIBERO option (tabletop always renders cheaply)")
        if self.perturb:
            from srpo.sim.tabletop.perturbations import format_perturbations, parse_perturbations

            if self.suite != "tabletop":
                raise ValueError("perturb is a tabletop option (LIBERO-PRO's variants: --perturbations)")
            if self.split != "heldout":
                raise ValueError("perturbations apply to held-out states only (split=heldout)")
            self.perturb = format_perturbations(parse_perturbations(self.perturb))
            if self.perturb == "none":
                self.perturb = None

    def env_options(self) -> dict:
        options: dict = {"max_steps": self.max_steps} if self.max_steps else {}
        if self.fast_render:
            options["fast_render"] = True
        if self.perturb:
            options["perturb"] = self.perturb
        return options


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
             envs=None, threads: int | None = None, runner=None) -> dict:
    """Evaluate ``policy``; with ``out`` write eval.json, eval.png and episodes.gif there. Returns the summary.
    ``envs``: a running vector env to reuse (see ``run_policy_episodes``). ``runner``: what runs the episodes, with
    ``run_policy_episodes``'s signature (default: it; a Ray rollout pool's ``run_policy_episodes`` spreads them)."""
    from tqdm import tqdm

    tasks = cfg.tasks or list(suite_tasks(cfg.suite))
    jobs = [(t, cfg.first_state + i) for t in tasks for i in range(cfg.episodes_per_task)]
    bar = tqdm(total=len(jobs), desc="eval", unit="ep", disable=not progress)
    start = time.perf_counter()
    episodes, clips, _ = (runner or run_policy_episodes)(policy, jobs, cfg.split, cfg.workers, cfg.execute_steps,
                                                         cfg.temperature, cfg.seed, gif_episodes=cfg.gifs if out else 0,
                                                         on_episode=lambda e: bar.update(), envs=envs,
                                                         threads=threads, suite=cfg.suite,
                                                         env_options=cfg.env_options())
    bar.close()
    summary = summarise(episodes)
    if cfg.perturb:  # which meaning of each dimension produced this (DIMENSION_VERSIONS)
        from srpo.sim.tabletop.perturbations import parse_perturbations, perturbation_version

        summary["perturb_version"] = perturbation_version(parse_perturbations(cfg.perturb))
    summary.update({"policy_version": policy.version, "backend": getattr(policy, "backend", "torch"),
                    "device": str(getattr(policy, "device", "cpu")), "config": asdict(cfg), "wall_s": time.perf_counter() - start,
                    "episodes_detail": episodes})
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(json.dumps(summary, indent=2))
        label = f"{cfg.suite} {cfg.split}" + (" (published protocol)" if cfg.split == "standard" else "")
        _plot(summary, out / "eval.png", f"{policy.version} on {label} ({cfg.episodes_per_task} ep/task)"
              + (", fast render" if cfg.fast_render else "") + (f", cut at {cfg.max_steps} steps" if cfg.max_steps else "")
              + (f", perturbed {cfg.perturb}" if cfg.perturb else ""))
        if clips:
            import imageio.v2 as imageio

            imageio.mimsave(out / "episodes.gif", list(np.concatenate(clips)), duration=50, loop=0)
    return summary


def relative_drop(base: np.ndarray, perturbed: np.ndarray, samples: int = 2000, seed: int = 0,
                  paired: bool = False) -> dict:
    """LIBERO-Plus's robustness measure, 1 - success(perturbed) / success(base), with a 95% bootstrap interval.
    Episodes are resampled independently within each run (LIBERO-PRO's perturbed scenes are not paired with the
    base ones) or, with ``paired``, as pairs: tabletop's perturbations start from the same held-out states."""
    base, perturbed = np.asarray(base, np.float64), np.asarray(perturbed, np.float64)
    rng = np.random.default_rng(seed)
    if paired:
        if len(base) != len(perturbed):
            raise ValueError(f"paired episodes need equal counts, got {len(base)} and {len(perturbed)}")
        idx = rng.integers(len(base), size=(samples, len(base)))
        b, p = base[idx].mean(1), perturbed[idx].mean(1)
    else:
        b = rng.choice(base, (samples, len(base))).mean(1)
        p = rng.choice(perturbed, (samples, len(perturbed))).mean(1)
    ok = b > 0
    drops = 1 - p[ok] / b[ok]
    point = 1 - perturbed.mean() / base.mean() if base.mean() > 0 else float("nan")
    lo, hi = (np.percentile(drops, [2.5, 97.5]) if ok.any() else (float("nan"), float("nan")))
    return {"relative_drop": float(point), "ci95": [float(lo), float(hi)]}


def evaluate_robustness(policy: Policy | InferencePolicy, cfg: EvalConfig, perturbations: list[str],
                        out: str | Path | None = None, progress: bool = True) -> dict:
    """Evaluate on a standard LIBERO suite and on its LIBERO-PRO perturbed versions (same task indices, split and
    number of states); report each one's success and its relative drop against the unperturbed suite. Writes
    ``robustness.json`` and ``robustness.png`` (plus each run's own eval files under ``<suite>/``)."""
    from dataclasses import replace

    from srpo.sim.libero.env import PERTURBATIONS, SUITES

    if cfg.suite not in SUITES or cfg.suite == "libero_90":
        raise ValueError(f"perturbation suites exist for {sorted(set(SUITES) - {'libero_90'})}, not {cfg.suite!r}")
    unknown = [p for p in perturbations if p not in PERTURBATIONS]
    if unknown or not perturbations:
        raise ValueError(f"unknown perturbations {unknown}; available: {', '.join(PERTURBATIONS)}")
    names = suite_tasks(cfg.suite)
    indices = [names.index(t) for t in cfg.tasks] if cfg.tasks else list(range(len(names)))
    runs = {}
    for suite in [cfg.suite] + [f"{cfg.suite}_{p}" for p in perturbations]:
        tasks = [suite_tasks(suite)[i] for i in indices]
        sub = replace(cfg, suite=suite, tasks=tasks)
        runs[suite] = evaluate(policy, sub, Path(out) / suite if out is not None else None, progress=progress)
    base = np.array([e["success"] for e in runs[cfg.suite]["episodes_detail"]], np.float64)
    report = {"policy_version": policy.version, "base_suite": cfg.suite, "split": cfg.split,
              "episodes_per_task": cfg.episodes_per_task, "task_indices": indices, "fast_render": cfg.fast_render,
              "max_steps": cfg.max_steps,
              "base": {"success_rate": runs[cfg.suite]["success_rate"], "ci95": runs[cfg.suite]["ci95"]},
              "perturbed": {}}
    for p in perturbations:
        run = runs[f"{cfg.suite}_{p}"]
        pert = np.array([e["success"] for e in run["episodes_detail"]], np.float64)
        report["perturbed"][p] = {"suite": f"{cfg.suite}_{p}", "what": PERTURBATIONS[p],
                                  "success_rate": run["success_rate"], "ci95": run["ci95"], **relative_drop(base, pert)}
    if out is not None:
        out = Path(out)
        (out / "robustness.json").write_text(json.dumps(report, indent=2))
        _plot_robustness(report, out / "robustness.png")
    return report


# tasks whose goal holds in other tasks' start states (a closed drawer) or whose start state satisfies another task's
# goal (close_drawer starts open): a probe pair with them would score a success nobody performed
PROBE_EXCLUDED = ("close_drawer",)


def probe_pairs(tasks: list[str], which: str = "next") -> list[tuple[str, str]]:
    """(layout task, instructed task) pairs: ``next`` gives each task's layout the instruction of the next task in
    the list (cyclically), ``all`` every ordered pair."""
    tasks = [t for t in tasks if t not in PROBE_EXCLUDED]
    if len(tasks) < 2:
        raise ValueError(f"the instruction probe needs two tasks besides {PROBE_EXCLUDED}, got {tasks}")
    if which == "all":
        return [(a, b) for a in tasks for b in tasks if a != b]
    if which != "next":
        raise ValueError(f"probe pairs must be 'next' or 'all', got {which!r}")
    return [(a, tasks[(k + 1) % len(tasks)]) for k, a in enumerate(tasks)]


def instruction_probe(policy: Policy | InferencePolicy, cfg: EvalConfig, out: str | Path | None = None,
                      pairs: str = "next", progress: bool = True, runner=None, envs=None,
                      threads: int | None = None) -> dict:
    """Does the policy do what it is told, or what the scene suggests? From task T's held-out initial states it gets
    task U's instruction (``probe_pairs``); each episode counts as ``instructed`` (U's goal reached), ``original``
    (T's goal reached instead) or neither. A policy that ignores language scores as often on T as it would with T's
    own instruction, and rarely on U. With ``out``: probe.json and probe.png. ``runner`` as in ``evaluate``."""
    if cfg.suite != "tabletop":
        raise ValueError("the instruction probe runs on tabletop (one scene serves every task)")
    from tqdm import tqdm

    chosen = probe_pairs(cfg.tasks or list(suite_tasks(cfg.suite)), pairs)
    jobs = [(u, cfg.first_state + i, {"layout_of": t}) for t, u in chosen for i in range(cfg.episodes_per_task)]
    bar = tqdm(total=len(jobs), desc="probe", unit="ep", disable=not progress)
    results, _, _ = (runner or run_policy_episodes)(policy, jobs, cfg.split, cfg.workers, cfg.execute_steps,
                                                    cfg.temperature, cfg.seed, on_episode=lambda e: bar.update(),
                                                    envs=envs, threads=threads, suite=cfg.suite,
                                                    env_options=cfg.env_options())
    bar.close()
    report = score_probe(chosen, results, cfg.episodes_per_task)
    report.update({"policy_version": policy.version, "config": asdict(cfg)})
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "probe.json").write_text(json.dumps(report, indent=2))
        _plot_probe(report, out / "probe.png", f"{policy.version}: instruction probe ({cfg.episodes_per_task} "
                    f"held-out states per pair)" + (f", perturbed {cfg.perturb}" if cfg.perturb else ""))
    return report


def score_probe(pairs: list[tuple[str, str]], results: list[dict], per_pair: int) -> dict:
    """Rates (with Wilson 95% intervals) of instructed / original / neither, per pair and over all episodes."""
    def rates(rows: list[dict]) -> dict:
        n = len(rows)
        out = {"episodes": n}
        for key, hit in (("instructed", lambda r: r["success"]), ("original", lambda r: r["layout_task_success"]),
                         ("neither", lambda r: not r["success"] and not r["layout_task_success"])):
            k = sum(1 for r in rows if hit(r))
            out[key] = k / n if n else 0.0
            out[f"{key}_ci95"] = list(wilson_interval(k, n))
        return out

    if any("layout_task_success" not in r for r in results):
        raise ValueError("probe episodes must report layout_task_success (tabletop's layout_of reset option)")
    per = {f"{t} -> {u}": rates(results[k * per_pair : (k + 1) * per_pair]) for k, (t, u) in enumerate(pairs)}
    return {"pairs": per, "overall": rates(results)}


def _plot_probe(report: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["pairs"])
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(names) + 2), 3.8))
    for offset, key, colour, label in ((-0.2, "instructed", "tab:green", "did the instructed task"),
                                       (0.2, "original", "tab:red", "did the layout's own task instead")):
        y = np.array([100 * report["pairs"][n][key] for n in names])
        ci = np.array([report["pairs"][n][f"{key}_ci95"] for n in names]) * 100
        ax.bar(x + offset, y, 0.4, yerr=[y - ci[:, 0], ci[:, 1] - y], capsize=2, color=colour, label=label)
    ax.set_xticks(x, names, rotation=35, ha="right", fontsize=6)
    ax.set_ylabel("episodes (%), 95% CI")
    ax.set_ylim(0, 105)
    o = report["overall"]
    ax.set_title(f"{title}\noverall: instructed {100 * o['instructed']:.0f}%, original {100 * o['original']:.0f}%, "
                 f"neither {100 * o['neither']:.0f}% of {o['episodes']}", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_robustness(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [report["base_suite"]] + [f"_{p}" for p in report["perturbed"]]
    rows = [report["base"]] + list(report["perturbed"].values())
    rates = np.array([100 * r["success_rate"] for r in rows])
    lo = np.array([100 * r["ci95"][0] for r in rows])
    hi = np.array([100 * r["ci95"][1] for r in rows])
    fig, ax = plt.subplots(figsize=(1.3 * len(rows) + 2, 3.4))
    ax.bar(range(len(rows)), rates, yerr=[rates - lo, hi - rates], capsize=3,
           color=["tab:blue"] + ["tab:orange"] * (len(rows) - 1))
    for i, r in enumerate(rows[1:], start=1):
        ax.text(i, rates[i] + 2, f"drop {100 * r['relative_drop']:.0f}%", ha="center", fontsize=7)
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel("success (%), 95% CI")
    ax.set_title(f"{report['policy_version']}: LIBERO-PRO perturbations ({report['split']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
