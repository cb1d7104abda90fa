"""SFT baselines: train the built-in VLA on 1, 2, 5, 10 and 50 expert demos per task, evaluate on held-out states.

    python benchmarks/sft_baselines.py --out benchmarks/results                 # full run (~60 min on 2 cores)
    python benchmarks/sft_baselines.py --demos 1,5 --steps 300 --episodes-per-task 4 --out /tmp/sft_quick
    python benchmarks/sft_baselines.py --dart-noise 0 ...                       # unperturbed demos instead

The demos are perturbed expert demonstrations (DART, ``--dart-noise`` on the motion dimensions, see
``srpo/sim/tabletop/experts.py``): the first N successful ones per task on the train initial states.

Writes ``sft_baselines.json`` and ``sft_baselines.png``. The **weak start** for RL is the fewest demos per task whose
mean held-out success lies in [20%, 60%] with every task above 0%: RL needs some successes per group to learn from.
Every stage is cached under ``--work`` (demos, each SFT run, each evaluation), so an interrupted run resumes.
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


def weak_start(rows: list[dict], low: float = 0.2, high: float = 0.6) -> dict | None:
    """The row with the fewest demos whose mean success is in [low, high] and whose every task succeeds sometimes."""
    for r in sorted(rows, key=lambda r: r["demos_per_task"]):
        if low <= r["success_rate"] <= high and min(t["success_rate"] for t in r["per_task"].values()) > 0:
            return r
    return None


def inference_latency(policy, repeats: int = 50) -> dict:
    """Median batch-1 ``predict_action_chunk`` time with 1 and 2 torch threads."""
    import torch

    from srpo_trainer.policies.base import Observation

    cams = policy.spec.observation.cameras
    obs = Observation({c.name: np.zeros((1, c.height, c.width, 3), np.uint8) for c in cams},
                      np.zeros((1, policy.spec.observation.proprio_dim), np.float32), ["open the drawer"])
    policy.eval()
    result = {"parameters": sum(p.numel() for p in policy.parameters())}
    before = torch.get_num_threads()
    for threads, key in ((1, "median_ms_1_thread"), (2, "median_ms_2_threads")):
        torch.set_num_threads(threads)
        times = []
        for i in range(repeats + 5):
            t = time.perf_counter()
            policy.predict_action_chunk(obs)
            if i >= 5:
                times.append(1000 * (time.perf_counter() - t))
        result[key] = float(np.median(times))
    torch.set_num_threads(before)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demos", default="1,2,5,10,50")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--episodes-per-task", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dart-noise", type=float, default=0.3, help="expert motion noise std of the demos (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="outputs/bench_sft", help="cache folder for demos, runs and evaluations")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()

    from srpo.episodes.store import EpisodeStore
    from srpo.sim.demos import generate_successful_demos
    from srpo.sim.tabletop.tasks import TASKS
    from srpo_trainer.evaluate import EvalConfig, evaluate
    from srpo_trainer.policies.tiny_vla import TinyVLAPolicy
    from srpo_trainer.sft import SFTConfig, train_sft

    demo_counts = sorted(int(x) for x in args.demos.split(","))
    work = Path(args.work)
    tag = f"dart{args.dart_noise:g}" if args.dart_noise > 0 else "clean"
    store = EpisodeStore(work / f"demos_{tag}")
    t0 = time.perf_counter()
    generate_successful_demos(store, list(TASKS), max(demo_counts), "train", 64, args.dart_noise, args.workers)
    print(f"demos ready in {store.root} ({time.perf_counter() - t0:.0f} s)")
    rows = []
    for n in demo_counts:
        run = work / f"sft_{tag}_{n}demos_{args.steps}steps_seed{args.seed}"
        t0 = time.perf_counter()
        final = train_sft(SFTConfig(data=str(store.root), out=str(run), demos_per_task=n, steps=args.steps,
                                    seed=args.seed))
        sft_wall = time.perf_counter() - t0
        timing = run / "wall_time.json"
        if timing.exists():  # a resumed (cached) run: keep the wall time of the run that did the work
            sft_wall = max(sft_wall, json.loads(timing.read_text())["sft_wall_s"])
        timing.write_text(json.dumps({"sft_wall_s": sft_wall}))
        eval_dir = run / f"eval_heldout_{args.episodes_per_task}"
        if (eval_dir / "eval.json").exists():
            summary = json.loads((eval_dir / "eval.json").read_text())
        else:
            policy = TinyVLAPolicy.from_pretrained(final)
            summary = evaluate(policy, EvalConfig(episodes_per_task=args.episodes_per_task, workers=args.workers,
                                                  seed=args.seed), eval_dir)
        row = {"demos_per_task": n, "success_rate": summary["success_rate"], "ci95": summary["ci95"],
               "mean_progress": summary["mean_progress"], "per_task": summary["per_task"], "sft_wall_s": sft_wall,
               "eval_wall_s": summary["wall_s"], "checkpoint": str(final)}
        rows.append(row)
        print(f"{n:3d} demos/task: held-out success {row['success_rate']:.1%} "
              f"(95% CI {row['ci95'][0]:.1%}-{row['ci95'][1]:.1%}), SFT {sft_wall / 60:.1f} min")
    latency = inference_latency(TinyVLAPolicy.from_pretrained(rows[-1]["checkpoint"]))
    print(f"batch-1 inference: {latency['median_ms_1_thread']:.1f} ms (1 thread), "
          f"{latency['median_ms_2_threads']:.1f} ms (2 threads)")
    weak = weak_start(rows)
    print("weak start:", f"{weak['demos_per_task']} demos/task at {weak['success_rate']:.1%}" if weak else "none in range")
    out = Path(args.out)
    write_json(out / "sft_baselines.json", {
        "machine": machine(), "steps": args.steps, "demos": tag, "batch_size": 64,
        "episodes_per_task": args.episodes_per_task, "split": "heldout",
        "rows": rows, "inference_latency": latency, "weak_start_demos_per_task": weak["demos_per_task"] if weak else None,
        "target_50_demos_ge_80": next((r["success_rate"] >= 0.8 for r in rows if r["demos_per_task"] == 50), None),
    })
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    xs = [r["demos_per_task"] for r in rows]
    for task in rows[0]["per_task"]:
        ax.plot(xs, [100 * r["per_task"][task]["success_rate"] for r in rows], color="gray", alpha=0.25, lw=0.8)
    ax.plot(xs, [100 * r["success_rate"] for r in rows], "o-", color="tab:blue", label="mean over tasks")
    ax.fill_between(xs, [100 * r["ci95"][0] for r in rows], [100 * r["ci95"][1] for r in rows], alpha=0.2,
                    color="tab:blue", label="95% CI (all episodes)")
    ax.axhspan(20, 60, color="tab:orange", alpha=0.08, label="weak-start band (20-60%)")
    if weak:
        ax.annotate("weak start", (weak["demos_per_task"], 100 * weak["success_rate"]), textcoords="offset points",
                    xytext=(8, -14), fontsize=8)
    ax.set_xscale("log")
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel("expert demonstrations per task")
    ax.set_ylabel("held-out success (%)")
    ax.set_ylim(0, 102)
    ax.set_title(f"TinyVLA SFT on tabletop ({tag} demos, {args.steps} steps; grey: tasks)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "sft_baselines.png", dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
