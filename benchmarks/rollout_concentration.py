"""RL that learns: the same rollout budget concentrated on few train states lifts held-out success.

    srpo sim demos --suite tabletop --per-task 10 --split train --dart-noise 0.3 --out outputs/demos
    python benchmarks/rollout_concentration.py --demos outputs/demos --work outputs/rollout_concentration \\
        --out benchmarks/results                     # about 13 min per run alone on 2 cores; every stage is cached

The start is the self-imitation benchmark's (``benchmarks/self_imitation.py``): 3 DART demos per task for
reach_red_cube, reach_green_cylinder, press_button and open_drawer, 1200 SFT steps. Every run is
``configs/srpo_concentrated.yaml`` (SRPO reward, reward-weighted regression, 16 prompts x 16 rollouts per step,
8 steps = 2048 trajectories, exploration std 0.4, 150 regression steps per RL step), and the runs differ only in how
many train states per task the prompts are drawn from:

- ``spread``: all 50 train states per task (each state is drawn about 0.6 times in 8 steps);
- ``concentrated``: 10 train states per task (each drawn about 3 times: about 50 rollouts and, at the start's success
  rate, about 20 successes per state), one run per training seed;
- ``demos_only`` (the control): the concentrated run's settings with the rollouts left out of the regression
  (``update.regression.use_rollouts=false``), so it takes the same 1200 regression steps on the 12 demos alone. The
  start is not converged (1200 SFT steps), so more steps on the demos could lift it by themselves: what the
  concentrated runs gain over this control is what learning from the rollouts adds.

Each policy is evaluated with deterministic actions on the same 200 held-out states per task (800 episodes) and
the same 50 train states per task (200 episodes), paired with the start's outcomes on the same states. The held-out
figure is also split into states 0-49 (what this benchmark reported before the held-out split grew from 50 to 200
states) and 50-199 (evaluated only after that report, so an independent replication); the train figure into the 10
states per task the concentrated runs rolled out on and the 40 others. The seeds are pooled with a bootstrap over
seeds, then states (``benchmarks/learning.py``). Writes ``rollout_concentration.json`` and
``rollout_concentration.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from srpo.sim.tabletop.tasks import SPLIT_SIZES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, per_task_bars, pyplot, write_json  # noqa: E402
from learning import bootstrap_mean  # noqa: E402
from self_imitation import TASKS, ensure_start, evaluate, outcomes, paired, sh  # noqa: E402

CONFIG = "configs/srpo_concentrated.yaml"
SPLITS = ("heldout", "heldout_0_49", "heldout_50_199", "train", "train_rolled_out", "train_not_rolled_out")
HELDOUT_STATES = SPLIT_SIZES["heldout"]  # per task: all of the suite's held-out split
MID_STEP = 5  # the runs' intermediate checkpoint (the config's checkpoint_every): what a smaller budget gives
FIRST_REPORT_STATES = 50  # the held-out states of the first report (the split's size then)


KINDS = ("concentrated", "spread", "demos_only")


def runs(seeds: list[int], spread_seeds: list[int], control_seeds: list[int] = ()) -> dict[str, list[str]]:
    """Run name -> overrides on top of the config; the first run fits the world model the others score with."""
    out = {f"spread_seed{s}": ["rollout.train_states=50", f"seed={s}"] for s in spread_seeds}
    out.update({f"concentrated_seed{s}": [f"seed={s}"] for s in seeds})
    out.update({f"demos_only_seed{s}": ["update.regression.use_rollouts=false", f"seed={s}"] for s in control_seeds})
    return out


def bootstrap_difference(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, level: float = 0.95,
                         resamples: int = 10_000) -> tuple[float, float, float]:
    """mean(a) - mean(b) for two arms of outcomes on the same states (``a``: seeds_a x states, ``b``: seeds_b x
    states), with a percentile interval from resampling each arm's seeds and, jointly for both arms, the states."""
    a, b = np.atleast_2d(a).astype(np.float64), np.atleast_2d(b).astype(np.float64)
    n = a.shape[1]
    states = rng.integers(0, n, (resamples, n))
    seeds_a = rng.integers(0, a.shape[0], (resamples, a.shape[0]))
    seeds_b = rng.integers(0, b.shape[0], (resamples, b.shape[0]))
    # per resample: the arm's mean over its drawn seeds of each state, then over the drawn states
    mean_a = np.take_along_axis(a[seeds_a].mean(axis=1), states, axis=1).mean(axis=1)
    mean_b = np.take_along_axis(b[seeds_b].mean(axis=1), states, axis=1).mean(axis=1)
    lo, hi = np.quantile(mean_a - mean_b, [(1 - level) / 2, (1 + level) / 2])
    return float(a.mean() - b.mean()), float(lo), float(hi)


def split_outcomes(ev_heldout: dict, ev_train: dict, rolled_out: int) -> dict[str, dict]:
    """Outcomes per split; the concentrated runs draw their prompts from train states 0..``rolled_out``-1."""
    train, heldout = outcomes(ev_train), outcomes(ev_heldout)
    return {"heldout": heldout, "heldout_0_49": {k: v for k, v in heldout.items() if k[1] < FIRST_REPORT_STATES},
            "heldout_50_199": {k: v for k, v in heldout.items() if k[1] >= FIRST_REPORT_STATES}, "train": train,
            "train_rolled_out": {k: v for k, v in train.items() if k[1] < rolled_out},
            "train_not_rolled_out": {k: v for k, v in train.items() if k[1] >= rolled_out}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demos", required=True, help="episode store with at least 3 successful demos per task")
    ap.add_argument("--work", default="outputs/rollout_concentration")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--seeds", default="0,1,2,3,4", help="training seeds of the concentrated runs")
    ap.add_argument("--spread-seeds", default="0", help="training seeds of the spread runs")
    ap.add_argument("--control-seeds", default="0", help="training seeds of the demos-only control runs")
    args = ap.parse_args()
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    spread_seeds = [int(s) for s in args.spread_seeds.split(",") if s.strip()]
    control_seeds = [int(s) for s in args.control_seeds.split(",") if s.strip()]
    plan = runs(seeds, spread_seeds, control_seeds)

    start = ensure_start(args.demos, work)
    world_model = work / next(iter(plan)) / "world_model" / "final"
    for i, (name, overrides) in enumerate(plan.items()):
        run = work / name
        if not (run / "final" / "config.json").is_file():
            wm = [f"reward.world_model.data={args.demos}"] if i == 0 else [f"reward.encoder_path={world_model}"]
            sh(["srpo", "train", "--config", CONFIG, "--init", str(start / "final"), "--out", str(run),
                "rollout.tasks=[" + ",".join(TASKS) + "]", *wm, f"update.regression.demos={args.demos}",
                "update.regression.demos_per_task=3", *overrides], work / f"{name}.log")

    from srpo.config import load_config
    from srpo_trainer.rl.config import RLConfig

    rolled_out = load_config(RLConfig, CONFIG, []).rollout.train_states  # the concentrated runs' states per task
    policies = {"start": start / "final", **{n: work / n / "final" for n in plan}}
    evals = {n: split_outcomes(evaluate(p, "heldout", work / f"eval{HELDOUT_STATES}_heldout_{n}",
                                        episodes_per_task=HELDOUT_STATES),
                               evaluate(p, "train", work / f"eval_train_{n}"), rolled_out)
             for n, p in policies.items()}
    result: dict = {"machine": machine(), "tasks": TASKS, "config": CONFIG, "overrides": plan,
                    "rolled_out_states": f"train states 0..{rolled_out - 1} of every task (the spread runs drew "
                                         "from all 50: for them the two train sub-splits are only a partition)",
                    "start": "3 DART demos per task, 1200 SFT steps",
                    "start_success": {s: float(np.mean(list(evals["start"][s].values()))) for s in SPLITS},
                    "runs": {}, "pooled": {}}
    for name in plan:
        summary = json.loads((work / name / "summary.json").read_text())
        result["runs"][name] = {**{s: paired(evals["start"][s], evals[name][s]) for s in SPLITS},
                                "trajectories": summary["trajectories"],
                                "mean_step_time_s": summary["mean_step_time_s"]}

    # pooled over training seeds: bootstrap over seeds, then states, of the paired per-state change
    rng = np.random.default_rng(0)
    for kind in KINDS:
        names = [n for n in plan if n.startswith(kind)]
        if not names:
            continue
        pooled = {"seeds": len(names)}
        for s in SPLITS:
            keys = sorted(evals["start"][s])
            diff = np.array([[evals[n][s][k] - evals["start"][s][k] for k in keys] for n in names], dtype=float)
            mean, lo, hi = bootstrap_mean(diff, rng)
            after = float(np.mean([[evals[n][s][k] for k in keys] for n in names]))
            pooled[s] = {"after": after, "change": mean, "change_ci95": [lo, hi], "episodes_per_seed": len(keys),
                         "per_task_after": {t: float(np.mean([evals[n][s][k] for n in names for k in keys
                                                              if k[0] == t])) for t in TASKS}}
        result["pooled"][kind] = pooled
    conc = [n for n in plan if n.startswith("concentrated")]
    ctrl = [n for n in plan if n.startswith("demos_only")]
    if conc and ctrl:  # what learning from the rollouts adds over the same regression steps on the demos alone
        result["concentrated_minus_demos_only"] = {}
        for s in SPLITS:
            keys = sorted(evals["start"][s])
            mean, lo, hi = bootstrap_difference(np.array([[evals[n][s][k] for k in keys] for n in conc]),
                                                np.array([[evals[n][s][k] for k in keys] for n in ctrl]), rng)
            result["concentrated_minus_demos_only"][s] = {"change": mean, "change_ci95": [lo, hi]}
    result["per_task_start"] = {s: {t: float(np.mean([v for k, v in evals["start"][s].items() if k[0] == t]))
                                    for t in TASKS} for s in ("heldout", "train")}

    # the budget: the concentrated runs' checkpoint after MID_STEP of their steps, on the same held-out states
    cfg = load_config(RLConfig, CONFIG, [])
    names = [n for n in plan if n.startswith("concentrated")]
    mid = {n: outcomes(evaluate(work / n / "checkpoints" / f"step_{MID_STEP:07d}", "heldout",
                                work / f"eval{HELDOUT_STATES}_heldout_{n}_step{MID_STEP}",
                                episodes_per_task=HELDOUT_STATES))
           for n in names if (work / n / "checkpoints" / f"step_{MID_STEP:07d}" / "config.json").is_file()}
    if mid:
        keys = sorted(evals["start"]["heldout"])
        diff = np.array([[mid[n][k] - evals["start"]["heldout"][k] for k in keys] for n in mid], dtype=float)
        mean, lo, hi = bootstrap_mean(diff, rng)
        per_seed = {n: paired(evals["start"]["heldout"], mid[n]) for n in mid}
        result["heldout_by_budget"] = {
            "trajectories_per_step": cfg.rollout.prompts_per_step * cfg.rollout.group_size,
            f"step_{MID_STEP}": {"seeds": len(mid), "change": mean, "change_ci95": [lo, hi],
                                 "per_seed": {n: r["change"] for n, r in per_seed.items()}},
            f"step_{cfg.steps}": {k: result["pooled"]["concentrated"]["heldout"][k] for k in ("change", "change_ci95")}}
        print(f"concentrated at step {MID_STEP} of {cfg.steps} ({len(mid)} seeds): held-out {100 * mean:+.1f} "
              f"({100 * lo:+.1f}..{100 * hi:+.1f})")
    write_json(out / "rollout_concentration.json", result)
    plot(result, out / "rollout_concentration.png")
    for name, row in result["runs"].items():
        print(f"{name:20s} " + "; ".join(f"{s} {100 * row[s]['change']:+.1f} ({100 * row[s]['change_ci95'][0]:+.1f}.."
                                         f"{100 * row[s]['change_ci95'][1]:+.1f})" for s in SPLITS))
    for kind, pooled in result["pooled"].items():
        print(f"{kind} ({pooled['seeds']} seeds) " + "; ".join(
            f"{s} {100 * pooled[s]['change']:+.1f} ({100 * pooled[s]['change_ci95'][0]:+.1f}.."
            f"{100 * pooled[s]['change_ci95'][1]:+.1f})" for s in SPLITS))
    for s, d in result.get("concentrated_minus_demos_only", {}).items():
        print(f"concentrated - demos_only, {s}: {100 * d['change']:+.1f} ({100 * d['change_ci95'][0]:+.1f}.."
              f"{100 * d['change_ci95'][1]:+.1f})")


def plot(result: dict, path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4), gridspec_kw={"width_ratios": [1.2, 1.2, 1.4]})
    names = list(result["runs"])
    for ax, split in zip(axes[:2], ("heldout", "train")):
        ax.axhline(0, color="grey", lw=0.8)
        rows = [(n, result["runs"][n][split]) for n in names]
        rows += [(f"{k} pooled ({p['seeds']} seeds)", p[split]) for k, p in result["pooled"].items() if p["seeds"] > 1]
        for i, (n, r) in enumerate(rows):
            c, (lo, hi) = 100 * r["change"], (100 * x for x in r["change_ci95"])
            colour = {"concentrated": "tab:green", "demos_only": "tab:orange"}.get(n.split("_seed")[0].split(" ")[0],
                                                                                 "tab:grey")
            ax.errorbar(i, c, yerr=[[c - lo], [hi - c]], fmt="s" if "pooled" in n else "o", color=colour, capsize=4)
        ax.set_xticks(range(len(rows)), [n for n, _ in rows], rotation=25, ha="right", fontsize=8)
        label = f"held-out ({HELDOUT_STATES} per task)" if split == "heldout" else "train (50 per task)"
        ax.set_title(f"{label} states: change from {100 * result['start_success'][split]:.1f}% (95% CI)", fontsize=9)
    axes[0].set_ylabel("change in success (points)")
    pooled = result["pooled"].get("concentrated")
    if pooled:
        per_task_bars(axes[2], TASKS, result["per_task_start"]["heldout"], pooled["heldout"]["per_task_after"],
                      f"concentrated, mean of {pooled['seeds']} seeds",
                      f"held-out success per task ({HELDOUT_STATES} states each)")
    fig.suptitle("same rollouts (2048), different concentration: 16 prompts x 16 rollouts x 8 steps from 10 or 50 "
                 "train states per task", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
