"""Which RL update learns: the paper's GRPO/PPO-clip settings against the candidates, with the oracle reward.

    python benchmarks/update_ablation.py --out benchmarks/results                    # every variant, 1 seed
    python benchmarks/update_ablation.py --variants paper,default --steps 2 --eval-episodes-per-task 5 --out /tmp/a

The oracle reward (the simulator's true progress) isolates the update from the reward: if an update cannot learn
from it, no reward will help. Every variant starts from the learning benchmark's weak SFT start
(``benchmarks/learning.py`` builds and caches it), runs the same number of RL steps on the same tasks with the same
prompts and seed, and is evaluated on the same held-out states (deterministic and sampled actions). The start is
evaluated once. One seed per variant: a screen for the learning benchmark, which then runs the winner with 3 seeds.

Writes ``update_ablation.json`` and ``update_ablation.png`` (held-out success per variant with Wilson 95% bars, and
the update diagnostics: KL per step, gradient cosine, kept groups).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, pyplot, write_json  # noqa: E402
from learning import TASKS, ensure_start, start_evaluation  # noqa: E402

PAPER = ["exploration.std_mode=learned", "update.ratio=element", "update.lr=2e-5", "update.epochs=2",
         "update.minibatch_size=256", "update.target_kl=null", "update.adv_std_floor=0", "filter.kind=success_rate"]
VARIANTS = {
    "paper": PAPER,  # the previous benchmark's setting: learned std, per-element ratios, small update, no guard
    "paper_more_steps": [*PAPER[:2], "update.lr=1e-4", "update.epochs=8", "update.minibatch_size=64",
                         "update.target_kl=null", "update.adv_std_floor=0", "filter.kind=success_rate"],
    "default": [],  # configs/srpo.yaml as shipped
    "fixed_std_0.1": ["exploration.std=0.1"],
    "fixed_std_0.3": ["exploration.std=0.3"],
    "correlated_chunk": ["exploration.chunk_correlation=0.5", "update.ratio=chunk"],
    "clamped_std": ["exploration.std_mode=clamped"],
    "element_ratio": ["update.ratio=element"],
    "rloo": ["update.advantage=rloo"],
    "no_kl_guard": ["update.target_kl=null"],
    "success_rate_filter": ["filter.kind=success_rate"],
    # per-decision credit from the per-step progress (oracle only): every group carries signal, so no filter
    "progress_gae": ["update.advantage=progress_gae", "filter.kind=none"],
    "progress_gae_lambda1": ["update.advantage=progress_gae", "update.gae_lambda=1.0", "filter.kind=none"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--mode", default="oracle", help="reward mode for every variant")
    parser.add_argument("--tasks", default=TASKS)
    parser.add_argument("--demos", type=int, default=10)
    parser.add_argument("--sft-steps", type=int, default=2000)
    parser.add_argument("--init")
    parser.add_argument("--config", default="configs/srpo.yaml")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-episodes-per-task", type=int, default=25)
    parser.add_argument("--work", default="outputs/bench_learning")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()

    from srpo.config import load_config
    from srpo_trainer.evaluate import wilson_interval
    from srpo_trainer.rl.config import RLConfig
    from srpo_trainer.rl.trainer import train_rl

    init = ensure_start(args)
    work, tasks = Path(args.work), args.tasks.split(",")
    common = [f"init={init}", f"rollout.tasks=[{','.join(tasks)}]", f"steps={args.steps}",
              f"eval_every={args.steps}", f"eval_episodes_per_task={args.eval_episodes_per_task}",
              "eval_sampled=true", "eval_start=false", "filter.max_refills=0", f"reward.mode={args.mode}",
              f"seed={args.seed}", f"reward.world_model.data={work / 'demos'}"]
    start = start_evaluation(init, args.config, common, work, args.eval_episodes_per_task)

    def point(row: dict, name: str) -> dict:
        o = row[f"{name}_episodes/success"]
        return {"success": float(np.mean(o)), "ci95": list(wilson_interval(int(sum(o)), len(o)))}

    result = {"machine": machine(), "init": init, "mode": args.mode, "tasks": tasks, "steps": args.steps,
              "seed": args.seed, "config": args.config,
              "start": {"eval": point(start, "eval"), "eval_sampled": point(start, "eval_sampled")}, "variants": {}}
    previous = Path(args.out) / "update_ablation.json"
    if previous.is_file():  # variants screened by an earlier invocation on the same setting are kept
        old = json.loads(previous.read_text())
        if all(old.get(k) == result[k] for k in ("init", "mode", "tasks", "steps", "seed", "config")):
            result["variants"] = old["variants"]
    for name in args.variants.split(","):
        run = work / f"ablation_{args.mode}_{name}_seed{args.seed}"
        cfg = load_config(RLConfig, args.config, [*common, *VARIANTS[name], f"out={run}"])
        print(f"== {name}: {' '.join(VARIANTS[name]) or '(defaults)'}")
        t0 = time.perf_counter()
        train_rl(cfg)
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        steps = [r for r in rows if "rollout/success" in r]
        last = rows[-1]
        diag = {k: float(np.nanmean([r.get(k, np.nan) for r in steps])) for k in (
            "update/kl_final", "update/clip_fraction", "update/grad_cosine", "update/optimizer_steps",
            "update/epochs_done", "filter/kept_prompts", "filter/kept_all_fail_prompts", "policy/explore_std")}
        result["variants"][name] = {
            "overrides": VARIANTS[name], "eval": point(last, "eval"), "eval_sampled": point(last, "eval_sampled"),
            "rollout_success": [r["rollout/success"] for r in steps], "trajectories": last["trajectories"],
            "per_task": {t: last[f"eval_task/{t}"] for t in tasks}, "diagnostics": diag,
            "kl_per_step": [r.get("update/kl_final") for r in steps],
            "wall_s": time.perf_counter() - t0}
        v = result["variants"][name]
        print(f"   held-out {100 * result['start']['eval']['success']:.1f}% -> {100 * v['eval']['success']:.1f}% "
              f"(det), {100 * result['start']['eval_sampled']['success']:.1f}% -> {100 * v['eval_sampled']['success']:.1f}%"
              f" (sampled); rollout success {[round(x, 2) for x in v['rollout_success']]}")
        write_json(Path(args.out) / "update_ablation.json", result)  # partial results survive an interruption
    plot(result, Path(args.out) / "update_ablation.png")
    return 0


def plot(result: dict, path: Path) -> None:
    plt = pyplot()
    names = list(result["variants"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    ax = axes[0]
    x = np.arange(len(names))
    for off, name, colour in ((-0.2, "eval", "tab:blue"), (0.2, "eval_sampled", "tab:cyan")):
        y = np.array([100 * result["variants"][n][name]["success"] for n in names])
        ci = np.array([result["variants"][n][name]["ci95"] for n in names]) * 100
        ax.bar(x + off, y, 0.4, yerr=[y - ci[:, 0], ci[:, 1] - y], capsize=2, color=colour,
               label=f"{'deterministic' if name == 'eval' else 'sampled'} (start "
                     f"{100 * result['start'][name]['success']:.1f}%)")
        ax.axhline(100 * result["start"][name]["success"], color=colour, ls="--", lw=0.8)
    ax.set_xticks(x, names, rotation=25, ha="right", fontsize=7)
    ax.set_ylabel("held-out success (%), Wilson 95%")
    ax.set_ylim(0, 100)
    ax.set_title(f"{result['mode']} reward, {result['steps']} RL steps, seed {result['seed']} (dashed: start)",
                 fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1]
    for n in names:
        ax.plot(range(1, len(result["variants"][n]["rollout_success"]) + 1),
                100 * np.array(result["variants"][n]["rollout_success"]), "o-", ms=3, label=n)
    ax.set_xlabel("RL step")
    ax.set_ylabel("rollout success on train states (%)")
    ax.set_title("training-state success while learning (sampled)", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
