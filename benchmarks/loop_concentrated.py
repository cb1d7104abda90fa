"""The closed loop with the recipe that learns online: does offline SRPO fed only by recorder episodes raise held-out
success?

    srpo sim demos --suite tabletop --per-task 10 --split train --dart-noise 0.3 --out outputs/demos
    python benchmarks/rollout_concentration.py --demos outputs/demos ...      # the start, and the online comparison
    python benchmarks/loop_concentrated.py --demos outputs/demos --start outputs/rollout_concentration/sft3/final \\
        --seeds 0,1 --out benchmarks/results       # about 1.7 h per seed on 2 cores; every stage is cached

Each seed is one ``srpo loop --robot sim`` run (real ROS 2 nodes in their own processes, the arm on its simulated
clock, ONNX Runtime acting, the recorder writing the only training data) with the settings of
``configs/srpo_concentrated.yaml`` spread over rounds as the online run spreads them over steps: 8 rounds of 256
episodes (16 prompts x 16 episodes, prompts on 10 train states per task of the 4 tasks, exploration std 0.4 at
temperature 1), each followed by one offline update (SRPO reward from the world model fitted on the demos and the
first round, reward-weighted regression anchored on the 3 SFT demos per task, 150 regression steps, every round so far
accepted: ``offline.max_version_lag=8``), an ONNX export checked against PyTorch, a registry version and a push the
policy node validates before it swaps it in.

The final active version is evaluated with deterministic actions on the same 200 held-out states per task as the
start (800 episodes, paired); seeds are pooled with a bootstrap over seeds, then states. For the seeds in
``--per-round-seeds`` the active version after every round is evaluated the same way (about 3 min each). The plot
sets the change beside its references (grey): the same recipe online, and the first loop, which regressed on the
executed, post-safety-filter actions (``loop_concentrated_executed_targets.json``). Writes
``loop_concentrated.json`` and ``loop_concentrated.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, per_task_bars, pyplot, write_json  # noqa: E402
from learning import bootstrap_mean  # noqa: E402
from rollout_concentration import HELDOUT_STATES  # noqa: E402 - one held-out size for both
from self_imitation import TASKS, evaluate, outcomes, paired  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def run_seed(args, seed: int) -> dict:
    from srpo_cli.loop import loop_config, run_loop

    cfg = loop_config([f"init={args.start}", f"out={Path(args.work) / f'seed_{seed}'}", f"rounds={args.rounds}",
                       f"episodes_per_round={args.episodes_per_round}", f"tasks=[{','.join(TASKS)}]",
                       "train_states=10", "group_size=16", "exploration_std=0.4", "temperature=1.0", f"seed={seed}",
                       f"train_config={REPO / 'configs' / 'srpo_concentrated.yaml'}", "train.steps=1",
                       f"train.reward.world_model.data={args.demos}", f"train.update.regression.demos={args.demos}",
                       "train.update.regression.demos_per_task=3", f"train.offline.max_version_lag={args.rounds}"])
    return json.loads((run_loop(cfg) / "loop.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demos", required=True, help="the SFT demonstrations (world model data, regression anchor)")
    ap.add_argument("--start", required=True, help="the starting checkpoint (rollout_concentration.py's sft3/final)")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--episodes-per-round", type=int, default=256)
    ap.add_argument("--per-round-seeds", default="0",
                    help="seeds whose every round's active version is also evaluated on the held-out states (about "
                         "3 min per version on 2 cores; cached); empty: none")
    ap.add_argument("--work", default="outputs/loop_concentrated")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    from srpo.runtime.registry import PolicyRegistry
    from srpo_trainer.evaluate import wilson_interval

    work = Path(args.work)
    seeds = [int(s) for s in args.seeds.split(",")]
    start = outcomes(evaluate(Path(args.start), "heldout", work / "eval_heldout_start",
                              episodes_per_task=HELDOUT_STATES))
    runs, finals = {}, {}
    for s in seeds:
        state = run_seed(args, s)
        final = state["rounds"][-1]["active_after"]
        checkpoint = PolicyRegistry(work / f"seed_{s}" / "registry").get(final).path / "checkpoint"
        finals[s] = outcomes(evaluate(checkpoint, "heldout", work / f"eval_heldout_seed{s}",
                                      episodes_per_task=HELDOUT_STATES))
        rounds = state["rounds"]
        runs[s] = {"final_version": final, "heldout": paired(start, finals[s]),
                   "pushes_accepted": sum(bool(r["push"].get("accepted")) for r in rounds),
                   "rounds": [{k: r.get(k) for k in ("round", "acted", "episodes", "labelled", "successes", "timeouts",
                                                     "lost", "episodes_used", "mean_progress_reward",
                                                     "is_weight_mean", "time/record_s", "time/train_s", "push")}
                              for r in rounds]}
    per_round_seeds = [int(x) for x in args.per_round_seeds.split(",") if x.strip() and int(x) in seeds]
    per_round = {s: heldout_per_round(work, s, start, finals[s]) for s in per_round_seeds}
    keys = sorted(start)
    diff = np.array([[finals[s][k] - start[k] for k in keys] for s in seeds], dtype=float)
    mean, lo, hi = bootstrap_mean(diff, np.random.default_rng(0))
    recorded = np.array([[r["successes"] for r in runs[s]["rounds"]] for s in seeds])
    labelled = np.array([[r["labelled"] for r in runs[s]["rounds"]] for s in seeds])
    result = {"machine": machine(), "command": " ".join(sys.argv), "seeds": seeds, "tasks": TASKS,
              "heldout_episodes": len(keys), "start_success": float(np.mean([start[k] for k in keys])),
              "after_success": float(np.mean([[finals[s][k] for k in keys] for s in seeds])),
              "change": mean, "change_ci95": [lo, hi], "runs": runs,
              "per_task": {t: {"start": float(np.mean([v for k, v in start.items() if k[0] == t])),
                               "after": float(np.mean([finals[s][k] for s in seeds for k in keys if k[0] == t]))}
                           for t in TASKS},
              "recorded_success_per_round": [
                  {"round": k + 1, "successes": int(recorded[:, k].sum()), "episodes": int(labelled[:, k].sum()),
                   "ci95": list(wilson_interval(int(recorded[:, k].sum()), int(labelled[:, k].sum())))}
                  for k in range(recorded.shape[1])],
              "heldout_per_round": per_round}
    out = Path(args.out)
    result["references"] = references(seeds)
    write_json(out / "loop_concentrated.json", result)
    plot(result, out / "loop_concentrated.png")
    for s in seeds:
        h = runs[s]["heldout"]
        print(f"seed {s}: held-out {100 * h['change']:+.1f} ({100 * h['change_ci95'][0]:+.1f}.."
              f"{100 * h['change_ci95'][1]:+.1f}), {runs[s]['pushes_accepted']}/{len(runs[s]['rounds'])} pushes")
    print(f"pooled ({len(seeds)} seeds): {100 * result['start_success']:.1f}% -> {100 * result['after_success']:.1f}%, "
          f"change {100 * mean:+.1f} ({100 * lo:+.1f}..{100 * hi:+.1f})")


def heldout_per_round(work: Path, seed: int, start: dict, final: dict) -> list[dict]:
    """Held-out success of the active version after each round of one seed (round 0: the start), each paired with
    the start on the same states: where the loop gained and where it lost, which the final version alone hides."""
    from srpo.runtime.registry import PolicyRegistry

    state = json.loads((work / f"seed_{seed}" / "loop.json").read_text())
    registry = PolicyRegistry(work / f"seed_{seed}" / "registry")
    rows = [{"round": 0, "version": state["rounds"][0]["acted"], **paired(start, start)}]
    for k, r in enumerate(state["rounds"], start=1):
        if k == len(state["rounds"]):
            after = final
        else:
            entry = registry.get(r["active_after"])
            after = outcomes(evaluate(entry.path / "checkpoint", "heldout",
                                      work / f"eval_rounds_seed{seed}" / entry.path.name.split("@")[0],
                                      episodes_per_task=HELDOUT_STATES))
        rows.append({"round": k, "version": r["active_after"], **paired(start, after)})
    return rows


def references(seeds: list[int]) -> dict:
    """What to read the loop's change against, from the results already in ``benchmarks/results``: the same recipe
    online (rollout_concentration.py, its seeds pooled, and the run with each of these seeds) and this project's
    first loop, which regressed on the executed (post-safety-filter) actions (loop_concentrated_executed_targets.json,
    seed 0)."""
    results, out = REPO / "benchmarks" / "results", {}
    online = results / "rollout_concentration.json"
    if online.is_file():
        d = json.loads(online.read_text())
        pooled = d["pooled"]["concentrated"]["heldout"]
        out["online, same recipe (pooled)"] = {"change": pooled["change"], "change_ci95": pooled["change_ci95"],
                                               "seeds": d["pooled"]["concentrated"]["seeds"]}
        for s in seeds:
            run = d["runs"].get(f"concentrated_seed{s}")
            if run:
                out[f"online, seed {s}"] = {k: run["heldout"][k] for k in ("change", "change_ci95")}
    first = results / "loop_concentrated_executed_targets.json"
    if first.is_file():
        d = json.loads(first.read_text())
        out["loop, executed-action targets (seed 0)"] = {"change": d["change"], "change_ci95": d["change_ci95"]}
    return out


def plot(result: dict, path: Path) -> None:
    plt = pyplot()
    fig, grid = plt.subplots(2, 2, figsize=(13, 9))
    axes = [grid[0, 0], grid[1, 0], grid[1, 1]]
    rec = result["recorded_success_per_round"]
    x = np.array([r["round"] for r in rec])
    rate = np.array([r["successes"] / max(r["episodes"], 1) for r in rec])
    ci = np.array([r["ci95"] for r in rec])
    axes[0].errorbar(x, 100 * rate, yerr=[100 * (rate - ci[:, 0]), 100 * (ci[:, 1] - rate)], fmt="o-", capsize=3)
    axes[0].set(xlabel="round", ylabel="recorded success (%)", ylim=(0, 100), xticks=x)
    axes[0].set_title("episodes recorded through ROS 2 (train states, sampled; Wilson 95%)", fontsize=8)
    ax = axes[1]
    ax.axhline(0, color="grey", lw=0.8)
    rows = [(f"seed {s}", r["heldout"]) for s, r in result["runs"].items()]
    rows.append((f"pooled ({len(result['seeds'])} seeds)", {"change": result["change"],
                                                            "change_ci95": result["change_ci95"]}))
    looped = len(rows)
    rows += list(result.get("references", {}).items())
    for i, (name, r) in enumerate(rows):
        c, (lo, hi) = 100 * r["change"], (100 * v for v in r["change_ci95"])
        ax.errorbar(i, c, yerr=[[c - lo], [hi - c]], fmt="s" if "pooled" in name else "o",
                    color="tab:green" if i < looped else "grey", capsize=4)
    ax.set_xticks(range(len(rows)), [n.replace(", ", ",\n") for n, _ in rows], fontsize=7, rotation=30, ha="right")
    ax.set_ylabel("change in held-out success (points)")
    ax.set_title(f"held-out change from {100 * result['start_success']:.1f}% ({result['heldout_episodes']} "
                 "paired episodes, 95% CI)", fontsize=8)
    per_task_bars(axes[2], result["tasks"], {t: v["start"] for t, v in result["per_task"].items()},
                  {t: v["after"] for t, v in result["per_task"].items()}, "after the loop",
                  f"per task ({HELDOUT_STATES} held-out states each)")
    ax = grid[0, 1]
    for seed, rows in result.get("heldout_per_round", {}).items():
        k = np.array([r["round"] for r in rows])
        after = np.array([100 * r["after"] for r in rows])
        lo = np.array([100 * (r["before"] + r["change_ci95"][0]) for r in rows])
        hi = np.array([100 * (r["before"] + r["change_ci95"][1]) for r in rows])
        line = ax.plot(k, after, "o-", label=f"seed {seed}")[0]
        ax.fill_between(k, lo, hi, color=line.get_color(), alpha=0.15)
    ax.axhline(100 * result["start_success"], color="grey", lw=0.8, ls="--", label="start")
    ax.set(xlabel="round (0: the start)", ylabel="held-out success (%)")
    ax.set_title(f"active version after each round on the {result['heldout_episodes']} held-out states "
                 "(band: start + paired 95% CI of the change)", fontsize=8)
    if result.get("heldout_per_round"):
        ax.legend(fontsize=8)
    fig.suptitle("srpo loop, concentrated recipe: 8 rounds x 256 episodes through the ROS 2 nodes, offline SRPO + "
                 "regression each round", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
