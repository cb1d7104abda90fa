"""The demo's RL stage, measured: does SRPO lift ``press_button`` within the demo's budget, and is it the rollouts?

    srpo sim demos --suite tabletop --per-task 10 --split train --dart-noise 0.3 --out outputs/demos
    python benchmarks/demo_recipe.py --demos outputs/demos --out benchmarks/results   # 8-10 min per run

``make demo`` runs this stage from its own few-demo SFT. Here every run starts from the rollout-concentration
benchmark's start (3 DART demos per task for 4 tasks, 1200 SFT steps: the demo's SFT recipe), so the runs share one
start and its evaluation. Each run is ``configs/srpo_concentrated.yaml`` at the demo's size: ``press_button`` only,
12 steps of 4 prompts x 16 rollouts from 10 train states (768 trajectories), 40 regression steps per RL step (the
share of the benchmark's 150 that fell to one of its 4 tasks), the regression anchored on the 3 SFT demos. The
control leaves the rollouts out of the regression (``update.regression.use_rollouts=false``: the same 320 steps on
the demos alone), so RL minus control is what learning from the rollouts adds.

The runs also evaluate on the way (every 4 steps; the runs the README reports were 8-step runs resumed to 12, so
they evaluated at steps 8 and 12), so the budget's effect shows.

Every policy is evaluated by its run with deterministic actions on the same 200 held-out states (paired with the
start). Seeds are pooled with a bootstrap over seeds, then states. Writes ``demo_recipe.json`` and ``demo_recipe.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, pyplot, write_json  # noqa: E402
from learning import bootstrap_mean  # noqa: E402
from rollout_concentration import bootstrap_difference  # noqa: E402
from self_imitation import ensure_start, sh  # noqa: E402

CONFIG = "configs/srpo_concentrated.yaml"
TASK = "press_button"
SETTINGS = [f"rollout.tasks=[{TASK}]", "rollout.prompts_per_step=4", "rollout.group_size=16",
            "rollout.train_states=10", "update.regression.steps=40", "update.regression.demos_per_task=3",
            "eval_episodes_per_task=200", "eval_every=4", "steps=12", "checkpoint_every=1", "rollout.workers=4"]


def runs(seeds: list[int], control_seeds: list[int]) -> dict[str, list[str]]:
    """Run name -> its own overrides; the first run fits the world model the others score with."""
    out = {f"press_s{s}": [f"seed={s}"] for s in seeds}
    out.update({f"press_control_s{s}": [f"seed={s}", "update.regression.use_rollouts=false"] for s in control_seeds})
    return out


def eval_outcomes(run: Path) -> dict[int, np.ndarray]:
    """The run's per-state held-out outcomes at every evaluated step (step 0: the start; the same states, in order)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {int(r["step"]): np.array(r["eval_episodes/success"]) for r in rows if "eval_episodes/success" in r}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demos", required=True, help="episode store with at least 3 successful demos per task")
    ap.add_argument("--start-work", default="outputs/rollout_concentration", help="where the shared start is cached")
    ap.add_argument("--work", default="outputs/demo_recipe")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--control-seeds", default="0")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    control_seeds = [int(s) for s in args.control_seeds.split(",") if s.strip()]
    plan = runs(seeds, control_seeds)
    start = ensure_start(args.demos, Path(args.start_work))
    world_model = work / next(iter(plan)) / "world_model" / "final"
    for i, (name, own) in enumerate(plan.items()):
        if not (work / name / "final" / "config.json").is_file():
            wm = ([f"reward.world_model.data={args.demos}", "reward.world_model.steps=600"] if i == 0
                  else [f"reward.encoder_path={world_model}"])
            sh(["srpo", "train", "--config", CONFIG, "--init", str(start / "final"), "--out", str(work / name),
                *SETTINGS, f"update.regression.demos={args.demos}", *wm, *own], work / f"{name}.log")

    by_step = {name: eval_outcomes(work / name) for name in plan}
    outcomes = {name: (ev[0], ev[max(ev)]) for name, ev in by_step.items()}
    before = next(iter(outcomes.values()))[0]
    for name, (b, _) in outcomes.items():
        if not np.array_equal(b, before):  # evaluation is not bit-exact between runs: say so, pair with the first
            print(f"note: {name}'s start evaluation differs from the first run's on {int((b != before).sum())} states")
    rng = np.random.default_rng(0)
    result: dict = {"machine": machine(), "config": CONFIG, "settings": SETTINGS, "task": TASK,
                    "start": "3 DART demos per task for 4 tasks, 1200 SFT steps", "heldout_states": len(before),
                    "start_success": float(before.mean()), "runs": {}, "pooled": {}}
    for name in plan:
        after = outcomes[name][1]
        mean, lo, hi = bootstrap_mean((after - before)[None, :], rng)
        summary = json.loads((work / name / "summary.json").read_text())
        result["runs"][name] = {"after": float(after.mean()), "change": mean, "change_ci95": [lo, hi],
                                "trajectories": summary["trajectories"],
                                "mean_step_time_s": summary["mean_step_time_s"],
                                "change_by_step": {str(k): float((v - before).mean()) for k, v in by_step[name].items()
                                                   if k}}
    arms = {"srpo": [n for n in plan if not n.startswith("press_control")],
            "control": [n for n in plan if n.startswith("press_control")]}
    for arm, names in arms.items():
        if names:
            diff = np.array([outcomes[n][1] - before for n in names], dtype=float)
            mean, lo, hi = bootstrap_mean(diff, rng)
            result["pooled"][arm] = {"seeds": len(names), "after": float(np.mean([outcomes[n][1] for n in names])),
                                     "change": mean, "change_ci95": [lo, hi]}
    if arms["srpo"] and arms["control"]:
        mean, lo, hi = bootstrap_difference(np.array([outcomes[n][1] for n in arms["srpo"]]),
                                            np.array([outcomes[n][1] for n in arms["control"]]), rng)
        result["srpo_minus_control"] = {"change": mean, "change_ci95": [lo, hi]}
    write_json(out / "demo_recipe.json", result)
    plot(result, out / "demo_recipe.png")
    for name, r in result["runs"].items():
        print(f"{name:18s} {100 * result['start_success']:.1f}% -> {100 * r['after']:.1f}%: {100 * r['change']:+.1f} "
              f"({100 * r['change_ci95'][0]:+.1f}..{100 * r['change_ci95'][1]:+.1f}); by step: "
              + ", ".join(f"{k}: {100 * v:+.1f}" for k, v in r["change_by_step"].items()))
    for arm, r in result["pooled"].items():
        print(f"{arm} ({r['seeds']} seeds): {100 * r['change']:+.1f} ({100 * r['change_ci95'][0]:+.1f}.."
              f"{100 * r['change_ci95'][1]:+.1f})")
    if "srpo_minus_control" in result:
        d = result["srpo_minus_control"]
        lo, hi = d["change_ci95"]
        print(f"srpo - control: {100 * d['change']:+.1f} ({100 * lo:+.1f}..{100 * hi:+.1f})")


def plot(result: dict, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.axhline(0, color="grey", lw=0.8)
    rows = list(result["runs"].items()) + [(f"{a} pooled ({r['seeds']} seeds)", r) for a, r in
                                           result["pooled"].items() if r["seeds"] > 1]
    if "srpo_minus_control" in result:
        rows.append(("srpo - control", result["srpo_minus_control"]))
    for i, (name, r) in enumerate(rows):
        c, (lo, hi) = 100 * r["change"], (100 * x for x in r["change_ci95"])
        colour = "tab:orange" if "control" in name and "-" not in name else "tab:green"
        ax.errorbar(i, c, yerr=[[c - lo], [hi - c]], fmt="s" if "pooled" in name or "-" in name else "o",
                    color=colour, capsize=4)
    ax.set_xticks(range(len(rows)), [n for n, _ in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("change in held-out success (points)")
    ax.set_title(f"the demo's RL stage on {result['task']}: change from {100 * result['start_success']:.1f}% on "
                 f"{result['heldout_states']} held-out states (95% CI)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
