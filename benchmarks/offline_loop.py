"""The closed loop, measured: does offline SRPO fed only by recorder episodes raise held-out success?

    python benchmarks/offline_loop.py --init outputs/bench_learning/sft_10demos_4000steps/final \\
        --demos outputs/bench_learning/demos --seeds 0,1,2 --rounds 2 --episodes-per-round 40 --eval-per-task 20 \\
        --out benchmarks/results --work outputs/bench_loop

Runs ``srpo loop --robot sim`` (real ROS 2 nodes at 20 Hz, the recorder's files as the only training data, the
offline update of ``configs/srpo_rwr.yaml``) and evaluates every version on the same held-out states with the same
seeds (deterministic actions), so versions are compared pairwise. Each loop seed draws its own episodes and trains
with its own seed. Writes ``offline_loop.json`` and ``offline_loop.png``: recorded success per round, held-out
success of the active version after each round, and the change from the start, with 95% bootstrap intervals that
resample seeds and then held-out states (as ``benchmarks/learning.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, pyplot, write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def run_seed(args, seed: int) -> dict:
    from srpo_cli.loop import loop_config, run_loop

    cfg = loop_config([f"init={args.init}", f"out={Path(args.work) / f'seed_{seed}'}", f"rounds={args.rounds}",
                       f"episodes_per_round={args.episodes_per_round}", f"eval_episodes_per_task={args.eval_per_task}",
                       f"seed={seed}", f"train_config={REPO / 'configs' / 'srpo_rwr.yaml'}",
                       f"train.reward.world_model.data={args.demos}", f"train.update.regression.demos={args.demos}",
                       "train.update.regression.demos_per_task=10", "train.steps=1", *args.overrides])
    return json.loads((run_loop(cfg) / "loop.json").read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--init", required=True)
    ap.add_argument("--demos", required=True, help="the SFT demonstrations (world model data, regression anchor)")
    ap.add_argument("--seeds", default="0,1,2", help="loop seeds: episode schedule and training seed")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--episodes-per-round", type=int, default=40)
    ap.add_argument("--eval-per-task", type=int, default=20)
    ap.add_argument("--work", default="outputs/bench_loop")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("overrides", nargs="*", help="more loop overrides (train.key=value for the update)")
    args = ap.parse_args()

    from learning import bootstrap_mean

    from srpo_trainer.evaluate import wilson_interval

    seeds = [int(x) for x in args.seeds.split(",")]
    states = {s: run_seed(args, s) for s in seeds}
    rng = np.random.default_rng(0)
    per_seed, curves = {}, []
    for s, state in states.items():
        evals, rounds = state["evals"], state["rounds"]
        versions = [rounds[0]["acted"]] + [r["active_after"] for r in rounds]  # the active version after each round
        curve = [np.array(evals[v]["episodes"]) for v in versions]
        curves.append(curve)
        per_seed[s] = {"versions": versions, "heldout": [float(c.mean()) for c in curve],
                       "recorded_success": [r["successes"] / max(r["labelled"], 1) for r in rounds],
                       "pushes": [r["push"] for r in rounds],
                       "mean_progress_reward": [r.get("mean_progress_reward") for r in rounds],
                       "is_weight_mean": [r.get("is_weight_mean") for r in rounds]}
    outcomes = np.stack([np.stack(c) for c in curves])  # (seeds, versions, episodes)
    points = [bootstrap_mean(outcomes[:, k], rng) for k in range(outcomes.shape[1])]
    change = bootstrap_mean(outcomes[:, -1] - outcomes[:, 0], rng)
    recorded = np.array([[r["successes"] for r in states[s]["rounds"]] for s in seeds])
    labelled = np.array([[r["labelled"] for r in states[s]["rounds"]] for s in seeds])
    result = {"machine": machine(), "command": " ".join(sys.argv), "seeds": seeds,
              "heldout_episodes": int(outcomes.shape[2]), "per_seed": per_seed,
              "heldout_after_round": [{"round": k, "mean": m, "ci95": [lo, hi]} for k, (m, lo, hi) in enumerate(points)],
              "change_vs_start": {"mean": change[0], "ci95": [change[1], change[2]]},
              "recorded_success_per_round": [
                  {"round": k + 1, "successes": int(recorded[:, k].sum()), "episodes": int(labelled[:, k].sum()),
                   "ci95": list(wilson_interval(int(recorded[:, k].sum()), int(labelled[:, k].sum())))}
                  for k in range(recorded.shape[1])]}
    out = Path(args.out)
    write_json(out / "offline_loop.json", result)

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6))
    x = np.arange(1, recorded.shape[1] + 1)
    rec = recorded.sum(0) / np.maximum(labelled.sum(0), 1)
    ci = np.array([r["ci95"] for r in result["recorded_success_per_round"]])
    axes[0].errorbar(x, 100 * rec, yerr=[100 * (rec - ci[:, 0]), 100 * (ci[:, 1] - rec)], fmt="o-", capsize=3)
    axes[0].set(xlabel="round", ylabel="recorded success (%)", ylim=(0, 100), xticks=x)
    axes[0].set_title(f"episodes recorded through ROS 2 ({len(seeds)} seeds pooled, train states, sampled)",
                      fontsize=8)
    k = np.arange(outcomes.shape[1])
    m = np.array([p[0] for p in points])
    lo, hi = np.array([p[1] for p in points]), np.array([p[2] for p in points])
    for i, s in enumerate(seeds):
        axes[1].plot(k, 100 * outcomes[i].mean(axis=1), color="tab:gray", lw=0.8, alpha=0.6,
                     label="per seed" if i == 0 else None)
    axes[1].errorbar(k, 100 * m, yerr=[100 * (m - lo), 100 * (hi - m)], fmt="s-", capsize=3, color="tab:green",
                     label="mean (95% bootstrap over seeds, states)")
    axes[1].set(xticks=k, xticklabels=["start"] + [f"after r{i}" for i in k[1:]], ylabel="held-out success (%)",
                ylim=(0, 100))
    d, (dlo, dhi) = result["change_vs_start"]["mean"], result["change_vs_start"]["ci95"]
    axes[1].set_title(f"held-out, deterministic, {outcomes.shape[2]} episodes per point\nchange vs start "
                      f"{100 * d:+.1f} pts (95% CI {100 * dlo:+.1f}..{100 * dhi:+.1f})", fontsize=8)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "offline_loop.png", dpi=120)
    print(json.dumps({k: v for k, v in result.items() if k not in ("per_seed", "machine")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
