"""The learning benchmark: SRPO vs GRPO (binary reward) vs an oracle-progress reward, from one weak SFT policy.

    python benchmarks/learning.py --out benchmarks/results                 # the full benchmark (see README for time)
    python benchmarks/learning.py --modes oracle --seeds 0 --steps 2 --eval-episodes-per-task 5 --out /tmp/learn

Stages, each cached under ``--work`` (an interrupted benchmark resumes where it stopped):
1. the weak start: perturbed (DART) expert demos for ``--tasks`` and a few-demo SFT of the built-in VLA on them
   (or ``--init CKPT``);
2. the start's held-out evaluation, once, shared by every run (same states, same sampling seed as the runs' own);
3. for every seed and reward mode: ``srpo train --config configs/srpo.yaml`` with only ``reward.mode`` and the seed
   changed. Refills are off, so every mode uses exactly the same number of trajectories per step. The srpo runs
   fit the built-in world model on the demos plus their first step's rollouts (never on labels or progress).

Evaluation: all ``--eval-episodes-per-task`` held-out initial states of every task (200 episodes per point by
default), deterministic (mean) actions, and sampled actions as a second view; the same states for every run, so
differences are paired. Intervals: Wilson 95% for one evaluation; for a mode over seeds, and for every difference, a
95% bootstrap that resamples training seeds and then held-out states (it carries both sources of noise).

Writes ``learning.json`` (curves against trajectories, finals, differences, per-task finals, diagnostics, targets,
time per step) and ``learning.png`` (success against trajectories with 95% bands; final per task).
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

TASKS = "place_red_cube_in_tray,push_red_cube,stack_red_cube_on_blue_cube,press_button"
COLOURS = {"srpo": "tab:blue", "binary": "tab:orange", "oracle": "tab:green", "demos_only": "tab:purple"}
CONTROL = "demos_only"
"""The control run (``--modes`` may name it): the same update on the demonstrations alone, rollouts collected but
never learned from (``update.regression.use_rollouts=false``, needs ``update.loss=rwr``). What RL adds is the
difference to it, not to the start."""
BOOTSTRAP = 4000


def bootstrap_mean(outcomes: np.ndarray, rng: np.random.Generator, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``outcomes`` (seeds x episodes; a difference for paired data) with a percentile interval from
    resampling seeds, then episodes (states), with replacement."""
    outcomes = np.atleast_2d(np.asarray(outcomes, dtype=np.float64))
    s, n = outcomes.shape
    seeds = rng.integers(0, s, (BOOTSTRAP, s))
    states = rng.integers(0, n, (BOOTSTRAP, n))
    per_seed = outcomes[seeds]  # (B, s, n)
    means = np.take_along_axis(per_seed, states[:, None, :].repeat(s, axis=1), axis=2).mean(axis=(1, 2))
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(outcomes.mean()), float(lo), float(hi)


def wilson(k: int, n: int) -> tuple[float, float]:
    from srpo_trainer.evaluate import wilson_interval

    return wilson_interval(k, n)


def ensure_start(args) -> str:
    """The weak SFT start (cached): DART demos for the benchmark's tasks, then few-demo SFT."""
    if args.init:
        if not Path(args.init, "config.json").is_file():
            raise SystemExit(f"--init {args.init}: not a policy checkpoint")
        return args.init
    from srpo.episodes.store import EpisodeStore
    from srpo.sim.demos import generate_successful_demos
    from srpo_trainer.sft import SFTConfig, train_sft

    work, tasks = Path(args.work), args.tasks.split(",")
    store = EpisodeStore(work / "demos")
    generate_successful_demos(store, tasks, args.demos, "train", 64, dart_noise=0.3, workers=2)
    run = work / f"sft_{args.demos}demos_{args.sft_steps}steps"
    return str(train_sft(SFTConfig(data=str(store.root), out=str(run), tasks=tasks, demos_per_task=args.demos,
                                   steps=args.sft_steps, seed=0)))


def start_evaluation(init: str, config: str, overrides: list[str], work: Path, episodes_per_task: int) -> dict:
    """The start's held-out evaluation (deterministic and sampled, the runs' own evaluation function and seed), done
    once per start checkpoint and evaluation size and shared by every run (cached under ``work``)."""
    import torch

    from srpo.config import load_config
    from srpo_trainer.policies import load_policy
    from srpo_trainer.rl.config import RLConfig
    from srpo_trainer.rl.exploration import ExplorationPolicy
    from srpo_trainer.rl.trainer import evaluate_heldout

    path = work / f"start_eval_{episodes_per_task}.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("init") == str(init):
            return cached["row"]
    cfg = load_config(RLConfig, config, overrides)
    torch.set_num_threads(cfg.threads)
    policy = load_policy(init)
    row = evaluate_heldout(policy, ExplorationPolicy(policy, cfg.exploration), cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"init": str(init), "row": row}))
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=TASKS, help="comma-separated tasks (SFT and RL)")
    parser.add_argument("--demos", type=int, default=10, help="DART demos per task for the weak SFT start")
    parser.add_argument("--sft-steps", type=int, default=2000)
    parser.add_argument("--init", help="start from this checkpoint instead of training the weak start")
    parser.add_argument("--config", default="configs/srpo.yaml")
    parser.add_argument("--modes", default="oracle,srpo,binary")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--eval-episodes-per-task", type=int, default=50)
    parser.add_argument("--work", default="outputs/bench_learning")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("overrides", nargs="*", help="extra RLConfig overrides for every run")
    args = parser.parse_args()

    from srpo.config import load_config
    from srpo_trainer.rl.config import RLConfig
    from srpo_trainer.rl.trainer import train_rl

    t_start = time.perf_counter()
    init = ensure_start(args)
    work, tasks = Path(args.work), args.tasks.split(",")
    modes, seeds = args.modes.split(","), [int(s) for s in args.seeds.split(",")]
    common = [f"init={init}", f"rollout.tasks=[{','.join(tasks)}]", f"steps={args.steps}",
              f"eval_every={args.eval_every}", f"eval_episodes_per_task={args.eval_episodes_per_task}",
              "eval_sampled=true", "eval_start=false", "filter.max_refills=0",
              f"reward.world_model.data={work / 'demos'}" if not args.init else "",
              # the demonstrations reward-weighted regression mixes in (update.loss=rwr): the start's own SFT data
              f"update.regression.demos={work / 'demos'}" if not args.init else "",
              f"update.regression.demos_per_task={args.demos}" if not args.init else "", *args.overrides]
    common = [c for c in common if c]

    start_row = start_evaluation(init, args.config, common, work, args.eval_episodes_per_task)
    print(f"start: held-out success {100 * start_row['eval/success']:.1f}% deterministic, "
          f"{100 * start_row['eval_sampled/success']:.1f}% sampled ({start_row['eval/episodes']} episodes)")

    runs: dict[str, list[dict]] = {m: [] for m in modes}
    for seed in seeds:  # seeds outermost: an interrupted benchmark has every mode at equal depth
        for mode in modes:
            run = work / f"{mode}_seed{seed}"
            mode_args = (["reward.mode=binary", "update.regression.use_rollouts=false"] if mode == CONTROL
                         else [f"reward.mode={mode}"])
            cfg = load_config(RLConfig, args.config, [*common, f"out={run}", *mode_args, f"seed={seed}"])
            t0 = time.perf_counter()
            print(f"== {mode} seed {seed} -> {run}")
            train_rl(cfg)
            wall = time.perf_counter() - t0
            timing = run / "wall_time.json"
            if timing.exists():
                wall = max(wall, json.loads(timing.read_text())["wall_s"])
            timing.write_text(json.dumps({"wall_s": wall}))
            rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
            runs[mode].append({"seed": seed, "rows": [{**start_row, "step": 0, "trajectories": 0}] + rows,
                               "wall_s": wall})

    result = summarise(runs, start_row, tasks, args, init)
    result["total_wall_min"] = (time.perf_counter() - t_start) / 60
    out = Path(args.out)
    write_json(out / "learning.json", result)
    plot(result, out / "learning.png")
    for mode, r in result["modes"].items():
        d = r["final"]["eval"]
        c = r["change"]["eval"]
        print(f"{mode:7s} held-out {100 * result['start']['eval']['mean']:.1f}% -> {100 * d['mean']:.1f}% "
              f"(95% CI {100 * d['ci95'][0]:.1f}-{100 * d['ci95'][1]:.1f}); change {100 * c['mean']:+.1f} "
              f"[{100 * c['ci95'][0]:+.1f}, {100 * c['ci95'][1]:+.1f}] after {r['trajectories']} trajectories")
    print("targets:", json.dumps(result["targets"], indent=1))
    return 0


def summarise(runs: dict, start_row: dict, tasks: list[str], args, init: str) -> dict:
    rng = np.random.default_rng(0)
    result: dict = {"machine": machine(), "init": init, "config": args.config, "tasks": tasks, "steps": args.steps,
                    "seeds": [int(s) for s in args.seeds.split(",")], "overrides": args.overrides,
                    "episodes_per_point": start_row["eval/episodes"], "modes": {}, "start": {}}
    for name in ("eval", "eval_sampled"):
        o = np.array(start_row[f"{name}_episodes/success"])
        result["start"][name] = {"mean": float(o.mean()), "ci95": list(wilson(int(o.sum()), len(o))),
                                 "per_task": {t: start_row[f"{name}_task/{t}"] for t in tasks}}
    finals = {}
    for mode, items in runs.items():
        evals = [[r for r in it["rows"] if "eval/success" in r] for it in items]
        r: dict = {"trajectories": int(evals[0][-1]["trajectories"]), "curve": {}, "final": {}, "change": {},
                   "per_seed_final": {}, "per_task_final": {}, "wall_s_mean": float(np.mean([it["wall_s"] for it in
                                                                                             items]))}
        for name in ("eval", "eval_sampled"):
            key = f"{name}_episodes/success"
            outcomes = np.array([[ev[k][key] for k in range(len(ev))] for ev in evals])  # seeds x points x episodes
            curve = [bootstrap_mean(outcomes[:, k], rng) for k in range(outcomes.shape[1])]
            r["curve"][name] = {"trajectories": [int(e["trajectories"]) for e in evals[0]],
                                "mean": [c[0] for c in curve], "ci95": [[c[1], c[2]] for c in curve]}
            r["final"][name] = {"mean": curve[-1][0], "ci95": [curve[-1][1], curve[-1][2]]}
            change = bootstrap_mean(outcomes[:, -1] - outcomes[:, 0], rng)
            r["change"][name] = {"mean": change[0], "ci95": [change[1], change[2]]}
            r["per_seed_final"][name] = outcomes[:, -1].mean(axis=1).tolist()
            r["per_task_final"][name] = {t: float(np.mean([ev[-1][f"{name}_task/{t}"] for ev in evals])) for t in tasks}
            finals[(mode, name)] = outcomes[:, -1]
        steps = [row for it in items for row in it["rows"] if row["step"] > 0 and "rollout/success" in row]
        r["time_per_step_s"] = {k.split("/")[1]: float(np.median([row.get(k, 0.0) for row in steps]))
                                for k in ("time/rollout_s", "time/reward_s", "time/update_s")}
        r["time_per_step_s"]["eval_s_per_eval"] = float(np.mean([row["time/eval_s"] for ev in evals for row in ev[1:]]))
        r["env_steps_mean"] = float(np.mean([it["rows"][-1]["env_steps"] for it in items]))
        r["diagnostics"] = {k: float(np.nanmean([row.get(k, np.nan) for row in steps])) for k in (
            "rollout/success", "filter/kept_prompts", "filter/kept_all_fail_prompts", "update/kl_final",
            "update/clip_fraction", "update/epochs_done", "update/optimizer_steps", "update/grad_cosine",
            "policy/explore_std", "advantage/abs_max", "regression/failure_weight_share",
            "regression/successes", "update/l1")}
        result["modes"][mode] = r
    targets: dict = {}
    m = result["modes"]
    start = result["start"]["eval"]
    for mode in ("oracle", "srpo"):
        if mode in m:
            c = m[mode]["change"]["eval"]
            targets[f"{mode}_change_points"] = 100 * c["mean"]
            targets[f"{mode}_ge_start_plus_20"] = c["mean"] >= 0.20
            targets[f"{mode}_ci_above_start_ci"] = m[mode]["final"]["eval"]["ci95"][0] > start["ci95"][1]
    if "srpo" in m:
        targets["srpo_final_ge_0.8"] = m["srpo"]["final"]["eval"]["mean"] >= 0.8
        weakest = sorted(result["start"]["eval"]["per_task"], key=lambda t: result["start"]["eval"]["per_task"][t])
        targets["srpo_weakest_tasks_change"] = {t: m["srpo"]["per_task_final"]["eval"][t] -
                                                result["start"]["eval"]["per_task"][t] for t in weakest[:3]}
    if "srpo" in m and "binary" in m:
        diff = bootstrap_mean(finals[("srpo", "eval")] - finals[("binary", "eval")], rng)
        targets["srpo_minus_binary_points"] = 100 * diff[0]
        targets["srpo_minus_binary_ci95_points"] = [100 * diff[1], 100 * diff[2]]
        targets["srpo_ge_binary_plus_10"] = diff[0] >= 0.10
        b_final = m["binary"]["final"]["eval"]["mean"]
        curve = m["srpo"]["curve"]["eval"]
        reach = next((t for t, v in zip(curve["trajectories"], curve["mean"]) if v >= b_final - 1e-9), None)
        if b_final > start["mean"]:
            targets["srpo_trajectories_to_binary_final"] = reach
            targets["srpo_reaches_binary_final_within_0.6x"] = (reach is not None and
                                                                reach <= 0.6 * m["binary"]["trajectories"])
        else:
            targets["srpo_trajectories_to_binary_final"] = None
            targets["note"] = "binary did not improve on the start: trajectories-to-match is undefined"
    for mode in ("srpo", "binary", "oracle"):
        if mode in m and CONTROL in m:  # what learning from the rollouts adds over more steps on the demos alone
            diff = bootstrap_mean(finals[(mode, "eval")] - finals[(CONTROL, "eval")], rng)
            targets[f"{mode}_minus_{CONTROL}_points"] = 100 * diff[0]
            targets[f"{mode}_minus_{CONTROL}_ci95_points"] = [100 * diff[1], 100 * diff[2]]
    result["targets"] = targets
    return result


def plot(result: dict, path: Path) -> None:
    plt = pyplot()
    tasks = result["tasks"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.9), gridspec_kw={"width_ratios": [3, 3, 3]})
    for ax, name, label in ((axes[0], "eval", "deterministic (mean) actions"),
                            (axes[1], "eval_sampled", "sampled actions")):
        start = result["start"][name]
        for mode, r in result["modes"].items():
            c = r["curve"][name]
            x = np.array(c["trajectories"])
            y = 100 * np.array(c["mean"])
            lo, hi = 100 * np.array(c["ci95"]).T
            ax.plot(x, y, "o-", color=COLOURS.get(mode), label=f"{mode}: {y[-1]:.1f}%")
            ax.fill_between(x, lo, hi, color=COLOURS.get(mode), alpha=0.15)
        ax.axhspan(100 * start["ci95"][0], 100 * start["ci95"][1], color="gray", alpha=0.15,
                   label=f"start {100 * start['mean']:.1f}% (95% CI)")
        ax.set_xlabel("trajectories (RL rollouts)")
        ax.set_ylabel("held-out success (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"{label}: {len(result['seeds'])} seeds x {result['episodes_per_point']} held-out episodes, "
                     "95% bootstrap", fontsize=8)
        ax.legend(fontsize=7, loc="upper left")
    ax = axes[2]
    width = 0.8 / (len(result["modes"]) + 1)
    x = np.arange(len(tasks))
    ax.bar(x, [100 * result["start"]["eval"]["per_task"][t] for t in tasks], width, color="gray", label="start")
    for k, (mode, r) in enumerate(result["modes"].items(), start=1):
        ax.bar(x + k * width, [100 * r["per_task_final"]["eval"][t] for t in tasks], width, color=COLOURS.get(mode),
               label=mode)
    ax.set_xticks(x + width * len(result["modes"]) / 2, [t.replace("_", " ") for t in tasks], rotation=15,
                  ha="right", fontsize=7)
    ax.set_ylabel("held-out success (%), deterministic")
    ax.set_ylim(0, 100)
    ax.set_title("final success per task (mean over seeds)", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
