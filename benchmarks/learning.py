"""The learning benchmark: SRPO vs GRPO (binary reward) vs an oracle-progress reward, from one weak SFT policy.

    python benchmarks/learning.py --out benchmarks/results                        # 3 modes x 3 seeds (~90 min)
    python benchmarks/learning.py --modes srpo,binary --seeds 0 --steps 4 --eval-every 2 --out /tmp/learn

Every run starts from the same weak SFT checkpoint (the few-demo start picked by ``benchmarks/sft_baselines.py``),
uses ``configs/srpo.yaml`` with only ``reward.mode`` and the seed changed, and gets the same number of RL steps;
the environment steps each run actually used are reported too. Held-out success (deterministic actions, held-out
initial states that RL never trains on) is measured every ``--eval-every`` steps.

The ``srpo`` runs score failures with the built-in world model named by ``--world-model`` (by default the one
``benchmarks/reward_fidelity.py`` trained on train-split attempts and demos; it is trained here if missing).

Writes ``learning.json`` (curves, finals, targets, wall time per RL step split into rollout / reward / update /
eval) and ``learning.png`` (mean held-out success per mode with a 95% band over seeds). Runs are cached under
``--work`` and resume where they stopped.
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

DEFAULT_INIT = "outputs/bench_sft/sft_dart0.3_10demos_3000steps_seed0/final"
DEFAULT_WM = "outputs/bench_fidelity/wm_4000/final"
COLOURS = {"srpo": "tab:blue", "binary": "tab:orange", "oracle": "tab:green"}


def band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over seeds (axis 0) and a 95% t-interval (none with one seed)."""
    from scipy.stats import t

    mean = values.mean(0)
    if len(values) < 2:
        return mean, mean, mean
    half = t.ppf(0.975, len(values) - 1) * values.std(0, ddof=1) / np.sqrt(len(values))
    return mean, mean - half, mean + half


def first_step_reaching(steps: list[int], curve: np.ndarray, level: float) -> int | None:
    for s, v in zip(steps, curve):
        if v >= level - 1e-9:
            return s
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--init", default=DEFAULT_INIT, help="the weak SFT checkpoint every run starts from")
    parser.add_argument("--world-model", default=DEFAULT_WM, help="built-in world model for the srpo reward")
    parser.add_argument("--config", default="configs/srpo.yaml")
    parser.add_argument("--modes", default="srpo,binary,oracle")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--eval-every", type=int, default=4)
    parser.add_argument("--eval-episodes-per-task", type=int, default=10)
    parser.add_argument("--work", default="outputs/bench_learning")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("overrides", nargs="*", help="extra RLConfig overrides for every run")
    args = parser.parse_args()

    from srpo_trainer.config import load_config
    from srpo_trainer.rl.config import RLConfig
    from srpo_trainer.rl.trainer import train_rl

    if not Path(args.init, "config.json").is_file():
        raise SystemExit(f"--init {args.init}: no SFT checkpoint; run benchmarks/sft_baselines.py first "
                         "(it writes the weak start there) or pass --init")
    modes, seeds = args.modes.split(","), [int(s) for s in args.seeds.split(",")]
    if "srpo" in modes and not Path(args.world_model, "config.json").is_file():
        from srpo_trainer.world_model import WorldModelTrainConfig, train_world_model

        data = "outputs/bench_fidelity/attempts_train,outputs/bench_sft/demos_dart0.3"
        missing = [d for d in data.split(",") if not Path(d).is_dir()]
        if missing:
            raise SystemExit(f"--world-model {args.world_model} is missing and so is its data {missing}; run "
                             "benchmarks/reward_fidelity.py first or pass --world-model")
        args.world_model = str(train_world_model(WorldModelTrainConfig(
            data=data, out=str(Path(args.world_model).parent), steps=4000)))

    work = Path(args.work)
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    for seed in seeds:  # seeds outermost: an interrupted benchmark has every mode at equal depth
        for mode in modes:
            run = work / f"{mode}_seed{seed}"
            overrides = [f"init={args.init}", f"out={run}", f"reward.mode={mode}", f"seed={seed}",
                         f"steps={args.steps}", f"eval_every={args.eval_every}",
                         f"eval_episodes_per_task={args.eval_episodes_per_task}", *args.overrides]
            if mode == "srpo":
                overrides.append(f"reward.encoder_path={args.world_model}")
            cfg = load_config(RLConfig, args.config, overrides)
            t0 = time.perf_counter()
            print(f"== {mode} seed {seed} -> {run}")
            train_rl(cfg)
            wall = time.perf_counter() - t0
            timing = run / "wall_time.json"
            if timing.exists():
                wall = max(wall, json.loads(timing.read_text())["wall_s"])
            timing.write_text(json.dumps({"wall_s": wall}))
            rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
            runs[mode].append({"seed": seed, "rows": rows, "wall_s": wall})

    result: dict = {"machine": machine(), "init": args.init, "world_model": args.world_model,
                    "config": args.config, "steps": args.steps, "seeds": seeds, "overrides": args.overrides,
                    "modes": {}}
    for mode, items in runs.items():
        evals = [[r for r in it["rows"] if "eval/success" in r] for it in items]
        steps = [r["step"] for r in evals[0]]
        curves = np.array([[r["eval/success"] for r in ev] for ev in evals])
        mean, lo, hi = band(curves)
        step_rows = [r for it in items for r in it["rows"] if r["step"] > 0]
        timing = {k.split("/")[1]: float(np.median([r.get(k, 0.0) for r in step_rows]))
                  for k in ("time/rollout_s", "time/reward_s", "time/update_s")}
        timing["eval_s_per_eval"] = float(np.mean([r["time/eval_s"] for ev in evals for r in ev]))
        result["modes"][mode] = {
            "steps": steps, "mean": mean.tolist(), "ci95_low": lo.tolist(), "ci95_high": hi.tolist(),
            "per_seed": {str(it["seed"]): c.tolist() for it, c in zip(items, curves)},
            "final_mean": float(mean[-1]), "final_ci95": [float(lo[-1]), float(hi[-1])],
            "env_steps_mean": float(np.mean([it["rows"][-1]["env_steps"] for it in items])),
            "rollout_success_last": float(np.mean([it["rows"][-1]["rollout/success"] for it in items])),
            "wall_s_mean": float(np.mean([it["wall_s"] for it in items])), "time_per_step_s": timing,
            "per_task_final": {k[len("eval_task/"):]: float(np.mean([ev[-1][k] for ev in evals]))
                               for k in evals[0][-1] if k.startswith("eval_task/")},
        }
    targets = {}
    if "srpo" in result["modes"]:
        s = result["modes"]["srpo"]
        targets["srpo_final_ge_0.9"] = s["final_mean"] >= 0.9
        if "binary" in result["modes"]:
            b = result["modes"]["binary"]
            if b["final_mean"] > b["mean"][0]:
                reach = first_step_reaching(s["steps"], np.array(s["mean"]), b["final_mean"])
                targets["srpo_steps_to_binary_final"] = reach
                targets["srpo_reaches_binary_final_within_60pct"] = reach is not None and reach <= 0.6 * args.steps
            else:  # matching a baseline that never rose above the start says nothing about speed
                targets["srpo_steps_to_binary_final"] = None
                targets["srpo_reaches_binary_final_within_60pct"] = None
                targets["note"] = "binary did not improve on the SFT start: the steps-to-match target is undefined"
            targets["srpo_minus_binary_final"] = s["final_mean"] - b["final_mean"]
            targets["srpo_ge_binary_plus_0.10"] = s["final_mean"] - b["final_mean"] >= 0.10
    result["targets"] = targets
    out = Path(args.out)
    write_json(out / "learning.json", result)

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    ax = axes[0]
    for mode, r in result["modes"].items():
        c = COLOURS.get(mode, None)
        ax.plot(r["steps"], 100 * np.array(r["mean"]), "o-", color=c, label=f"{mode} (final {100 * r['final_mean']:.1f}%)")
        ax.fill_between(r["steps"], 100 * np.array(r["ci95_low"]), 100 * np.array(r["ci95_high"]), color=c, alpha=0.15)
    ax.axhline(90, color="gray", ls=":", lw=0.8)
    ax.set_xlabel("RL step")
    ax.set_ylabel("held-out success (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"mean over {len(seeds)} seeds, 95% band", fontsize=9)
    ax.legend(fontsize=8)
    ax = axes[1]
    modes_list = list(result["modes"])
    parts = ["rollout_s", "reward_s", "update_s"]
    bottom = np.zeros(len(modes_list))
    for part, colour in zip(parts, ["tab:gray", "tab:purple", "tab:red"]):
        vals = np.array([result["modes"][m]["time_per_step_s"][part] for m in modes_list])
        ax.bar(modes_list, vals, bottom=bottom, label=part[:-2], color=colour)
        bottom += vals
    ax.set_ylabel("seconds per RL step")
    ax.set_title("where an RL step's time goes (2-core CPU)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "learning.png", dpi=120)
    for mode, r in result["modes"].items():
        print(f"{mode:7s} held-out success {100 * r['mean'][0]:.1f}% -> {100 * r['final_mean']:.1f}% "
              f"(95% CI {100 * r['final_ci95'][0]:.1f}-{100 * r['final_ci95'][1]:.1f}), "
              f"{r['env_steps_mean']:.0f} env steps, {r['wall_s_mean'] / 60:.1f} min/run")
    print("targets:", targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
