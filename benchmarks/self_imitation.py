"""Does the policy learn from its own successes? A diagnosis of why RL does not lift few-demo TinyVLA.

    python benchmarks/self_imitation.py --demos outputs/demo/demos --work outputs/self_imitation \
        --out benchmarks/results                                    # about 65 min on 2 cores; every stage is cached

The start is a few-demo SFT policy (3 DART demos per task for 4 tasks with headroom, 1200 steps), so successes under
exploration are plentiful (about 40% of the rollouts). Five ways of learning from those successes are compared, each
evaluated with deterministic actions on the same 50 held-out states per task (200 episodes) and on 50 TRAIN states
per task (the states the rollouts come from: what the paper's LIBERO protocol measures):

- ``rwr_std0.2``: SRPO + reward-weighted regression (``configs/srpo_rwr.yaml``), exploration std 0.2, 32 prompts x 2;
- ``rwr_std0.6``: the same with 3x the exploration noise and 32 prompts x 4;
- ``awr_std0.6``: advantage-weighted regression (``update.regression.weighting=advantage``): a success among failures
  of its own prompt weighs up to 20x, a prompt solved every time 1x;
- ``rwr_10states_seed0/1``: many rollouts per state instead: 10 train states per task, 8 prompts x 16 rollouts,
  std 0.4, two training seeds; also evaluated on the 10 states it rolled out on and on the 40 others;
- ``sft_on_successes``: no RL update at all, a fresh SFT on the demos plus every success ``rwr_std0.2`` collected (the
  most a filtered behaviour cloning on those rollouts can give).

Two probes explain the result:

- exploration: on reach_red_cube, how many held-out states the deterministic policy fails are solved at least once
  by 4 sampled episodes at temperatures 1, 2 and 3;
- memorisation: for ``sft_on_successes``, the TRAIN-state success on the states whose successes it was trained on,
  against the other states.

Writes ``self_imitation.json`` and ``self_imitation.png`` (success before/after with paired 95% intervals).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, pyplot, write_json  # noqa: E402

TASKS = ["reach_red_cube", "reach_green_cylinder", "press_button", "open_drawer"]
RUNS = {
    "rwr_std0.2": ["steps=6", "eval_every=3", "rollout.prompts_per_step=32", "rollout.group_size=2",
                   "update.regression.steps=100"],
    "rwr_std0.6": ["steps=4", "eval_every=4", "rollout.prompts_per_step=32", "rollout.group_size=4",
                   "exploration.std=0.6", "update.regression.steps=150"],
    "awr_std0.6": ["steps=4", "eval_every=4", "rollout.prompts_per_step=16", "rollout.group_size=8",
                   "exploration.std=0.6", "update.regression.weighting=advantage", "update.regression.beta=1.0",
                   "update.regression.min_weight=0.05", "update.regression.steps=150"],
    # many rollouts per state: 10 train states per task, 16 rollouts each per prompt; two training seeds
    **{f"rwr_10states_seed{k}": ["steps=4", "eval_every=4", "rollout.train_states=10", "rollout.prompts_per_step=8",
                                 "rollout.group_size=16", "exploration.std=0.4", "update.regression.steps=150",
                                 f"seed={k}"] for k in (0, 1)},
}
"""The RL runs: ``configs/srpo_rwr.yaml`` from the start with these overrides. The first fits the world model; the
others reuse it, so every run scores with the same encoder."""


def sh(cmd: list[str], log: Path) -> None:
    print("$", " ".join(cmd), f"> {log}", flush=True)
    with log.open("w") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "MUJOCO_GL": "egl"})


def evaluate(policy: Path, split: str, out: Path, extra: list[str] = (), tasks: list[str] = TASKS,
             episodes_per_task: int = 50) -> dict:
    if not (out / "eval.json").is_file():
        sh(["srpo", "eval", "--policy", str(policy), "--episodes-per-task", str(episodes_per_task), "--split", split,
            "--out", str(out),
            "--tasks", ",".join(tasks), "gifs=0", *extra], out.parent / f"{out.name}.log")
    return json.loads((out / "eval.json").read_text())


def outcomes(ev: dict) -> dict[tuple[str, int], int]:
    return {(e["task"], int(e["init_state_id"])): int(e["success"]) for e in ev["episodes_detail"]}


def paired(before: dict, after: dict) -> dict:
    from srpo_trainer.evaluate import paired_difference, wilson_interval

    keys = sorted(before)
    b, a = np.array([before[k] for k in keys]), np.array([after[k] for k in keys])
    diff, lo, hi = paired_difference(b, a)
    return {"before": float(b.mean()), "after": float(a.mean()),
            "after_ci95": list(wilson_interval(int(a.sum()), len(a))),
            "change": float(diff), "change_ci95": [float(lo), float(hi)], "episodes": len(keys),
            "per_task_after": {t: float(np.mean([after[k] for k in keys if k[0] == t])) for t in TASKS}}


def ensure_start(demos: str, work: Path) -> Path:
    """The few-demo start (cached): 1200 SFT steps on the first 3 demos per task of ``demos``; its folder."""
    start = work / "sft3"
    if not (start / "final" / "config.json").is_file():
        sh(["srpo", "sft", "--data", demos, "--out", str(start), "tasks=[" + ",".join(TASKS) + "]",
            "demos_per_task=3", "steps=1200", "batch_size=32", "checkpoint_every=400"], work / "sft3.log")
    return start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demos", required=True, help="episode store with at least 3 successful demos per task")
    ap.add_argument("--work", default="outputs/self_imitation")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    tasks = "[" + ",".join(TASKS) + "]"

    start = ensure_start(args.demos, work)
    world_model = work / "rwr_std0.2" / "world_model" / "final"
    for name, overrides in RUNS.items():
        run = work / name
        if not (run / "final" / "config.json").is_file():
            wm = ([f"reward.world_model.data={args.demos}"] if name == "rwr_std0.2"
                  else [f"reward.encoder_path={world_model}"])
            sh(["srpo", "train", "--config", "configs/srpo_rwr.yaml", "--init", str(start / "final"), "--out", str(run),
                f"rollout.tasks={tasks}", "eval_episodes_per_task=50", *wm, f"update.regression.demos={args.demos}",
                "update.regression.demos_per_task=3", *overrides], work / f"{name}.log")

    # filtered behaviour cloning, no RL: a fresh SFT on the demos plus every success the first run collected
    from srpo.episodes import EpisodeStore
    from srpo_trainer.datasets import select_episodes

    trained_on: dict[str, set[int]] = defaultdict(set)
    successes = [e for d in sorted((work / "rwr_std0.2" / "rollouts").glob("step_*"))
                 for e in EpisodeStore(d).iter_episodes() if e.meta.success]
    for e in successes:
        trained_on[e.meta.task].add(int(e.meta.init_state_id))
    data, sft_si = work / "sft_on_successes_data", work / "sft_on_successes"
    if not (sft_si / "final" / "config.json").is_file():
        store = EpisodeStore(data)
        if not any(store.iter_episodes()):
            for e in select_episodes(EpisodeStore(args.demos), TASKS, 3) + successes:
                store.write(e)
        sh(["srpo", "sft", "--data", str(data), "--out", str(sft_si), f"tasks={tasks}", "steps=1200",
            "batch_size=32", "checkpoint_every=400"], work / "sft_on_successes.log")

    result: dict = {"machine": machine(), "tasks": TASKS, "start": "3 DART demos per task, 1200 SFT steps",
                    "runs": {}, "overrides": RUNS}
    policies = {"start": start / "final", **{n: work / n / "final" for n in RUNS}, "sft_on_successes": sft_si / "final"}
    evals = {(n, s): outcomes(evaluate(p, s, work / f"eval_{s}_{n}")) for n, p in policies.items()
             for s in ("heldout", "train")}
    for name in policies:
        if name == "start":
            continue
        row = {s: paired(evals[("start", s)], evals[(name, s)]) for s in ("heldout", "train")}
        states = [int(o.split("=")[1]) for o in RUNS.get(name, []) if o.startswith("rollout.train_states=")]
        if states:  # the train states the run rolled out on, and the others
            before, after = evals[("start", "train")], evals[(name, "train")]
            row["train_rolled_out"] = paired({k: v for k, v in before.items() if k[1] < states[0]},
                                             {k: v for k, v in after.items() if k[1] < states[0]})
            row["train_not_rolled_out"] = paired({k: v for k, v in before.items() if k[1] >= states[0]},
                                                 {k: v for k, v in after.items() if k[1] >= states[0]})
        if name in RUNS:
            rows = [json.loads(x) for x in (work / name / "metrics.jsonl").read_text().splitlines() if x.strip()]
            row["trajectories"] = rows[-1]["trajectories"]
            row["successes_collected"] = max(r.get("regression/successes", 0) for r in rows)
        result["runs"][name] = row
    result["start_success"] = {s: float(np.mean(list(evals[("start", s)].values()))) for s in ("heldout", "train")}

    # memorisation: does a policy trained on successes from a state then solve that state?
    train_si, train_start = evals[("sft_on_successes", "train")], evals[("start", "train")]
    memo = {}
    for t in TASKS:
        seen = [k for k in train_si if k[0] == t and k[1] in trained_on[t]]
        memo[t] = {"states_with_a_success_trained_on": len(seen),
                   "solved_by_sft_on_successes": int(sum(train_si[k] for k in seen)),
                   "solved_by_start": int(sum(train_start[k] for k in seen))}
    result["memorisation"] = memo

    # exploration: which held-out states that the deterministic start fails does sampling solve?
    det = evals[("start", "heldout")]
    failing = [k for k, v in det.items() if k[0] == "reach_red_cube" and v == 0]
    explore = {}
    for temp in (1.0, 2.0, 3.0):
        runs = [outcomes(evaluate(start / "final", "heldout", work / f"explore_t{temp}_s{s}",
                                  [f"temperature={temp}", f"seed={s}"], ["reach_red_cube"])) for s in range(4)]
        explore[str(temp)] = {
            "failing_states": len(failing),
            "solved_at_least_once": float(np.mean([max(r[k] for r in runs) for k in failing])),
            "success_rate_on_failing": float(np.mean([r[k] for r in runs for k in failing]))}
    result["exploration_reach_red_cube"] = explore
    write_json(out / "self_imitation.json", result)

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), sharey=True)
    names = list(result["runs"])
    for ax, split in zip(axes, ("heldout", "train")):
        base = 100 * result["start_success"][split]
        ax.axhline(0, color="grey", lw=0.8)
        for i, n in enumerate(names):
            r = result["runs"][n][split]
            lo, hi = (100 * x for x in r["change_ci95"])
            ax.errorbar(i, 100 * r["change"], yerr=[[100 * r["change"] - lo], [hi - 100 * r["change"]]], fmt="o",
                        capsize=4)
        ax.set_xticks(range(len(names)), names, rotation=25, ha="right", fontsize=8)
        label = "held-out" if split == "heldout" else split
        ax.set_title(f"{label} states (start {base:.1f}%, 200 episodes, paired 95% CI)", fontsize=9)
    axes[0].set_ylabel("change in success (points)")
    fig.suptitle("learning from its own successes: few-demo TinyVLA, 4 tasks", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "self_imitation.png", dpi=120)
    for n in names:
        if "train_rolled_out" in result["runs"][n]:
            r, o = result["runs"][n]["train_rolled_out"], result["runs"][n]["train_not_rolled_out"]
            print(f"{n:18s} train states rolled out on: {100 * r['change']:+.1f} ({100 * r['change_ci95'][0]:+.1f}.."
                  f"{100 * r['change_ci95'][1]:+.1f}, {r['episodes']} episodes); the others {100 * o['change']:+.1f} "
                  f"({100 * o['change_ci95'][0]:+.1f}..{100 * o['change_ci95'][1]:+.1f})")
        h, t = result["runs"][n]["heldout"], result["runs"][n]["train"]
        print(f"{n:18s} held-out {100 * h['before']:.1f} -> {100 * h['after']:.1f} ({100 * h['change']:+.1f}, "
              f"{100 * h['change_ci95'][0]:+.1f}..{100 * h['change_ci95'][1]:+.1f}); train {100 * t['before']:.1f} -> "
              f"{100 * t['after']:.1f} ({100 * t['change']:+.1f}, {100 * t['change_ci95'][0]:+.1f}.."
              f"{100 * t['change_ci95'][1]:+.1f})")
    print(json.dumps({"memorisation": memo, "exploration": explore}, indent=1))


if __name__ == "__main__":
    main()
