"""RL rollout throughput: env steps per second with policy inference and full recording, beside the raw vector env.

    python benchmarks/rollout_throughput.py --out benchmarks/results        # JSON + PNG, ~5 min on 2 cores

What an RL step's rollout does (``srpo_trainer/rollouts.py``): parallel simulator processes, batched sampling from
the built-in VLA (64x64, both cameras), every frame, action and decision recorded as an ``Episode``. Measured in one
run, on the same job list:
- ``raw_2w``: the vector env alone stepping random actions with 2 workers (no inference, no recording);
- ``per_call_env_2w_2t``: the rollout as the trainer used to run it: simulator processes started for every call,
  2 workers, 2 torch threads;
- ``persistent_*``: the processes started once and reused across calls (as ``srpo train`` does now), with 2 or 4
  simulator workers (``w``) and 1 or 2 torch intra-op threads for inference (``t``; the workers need the cores too).
Speeds are quoted as ratios to ``raw_2w`` and to the previous trainer's rollout, measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, pyplot, write_json  # noqa: E402
from sim_throughput import vectorised  # noqa: E402  (the raw vector env, random actions)

TASKS = ["place_red_cube_in_tray", "push_red_cube", "stack_red_cube_on_blue_cube", "press_button"]


def _policy():
    import torch

    from srpo.spec import TABLETOP_SPEC
    from srpo_trainer.policies.tiny_vla import TinyVLAConfig, TinyVLAPolicy
    from srpo_trainer.processor import NormStats

    torch.manual_seed(0)
    stats = NormStats(np.zeros(7, np.float32), np.full(7, 0.5, np.float32), np.zeros(8, np.float32),
                      np.ones(8, np.float32))
    return TinyVLAPolicy(TinyVLAConfig(), TABLETOP_SPEC.with_image_size(64, 64), stats)


def rollout(policy, jobs, workers: int, threads: int, persistent: bool, calls: int) -> float:
    """Env steps per second over ``calls`` recorded, sampled rollout calls of ``jobs``."""
    import torch

    from srpo.sim.vector import make_vector_env
    from srpo_trainer.rollouts import run_policy_episodes

    torch.set_num_threads(threads)
    envs = make_vector_env(workers, image_size=64) if persistent else None
    steps = 0
    start = time.perf_counter()
    try:
        for call in range(calls):
            results, _, _ = run_policy_episodes(policy, jobs, "train", workers, 8, 1.0, seed=call, record=True,
                                                envs=envs)
            steps += sum(r["length"] for r in results)
    finally:
        if envs is not None:
            envs.close()
    return steps / (time.perf_counter() - start)


VARIANTS = {  # name: (persistent env, simulator workers, torch threads)
    "per_call_env_2w_2t": (False, 2, 2),  # the previous trainer: new processes per call, 2 inference threads
    "persistent_2w_2t": (True, 2, 2),
    "persistent_2w_1t": (True, 2, 1),
    "persistent_4w_1t": (True, 4, 1),
    "persistent_4w_2t": (True, 4, 2),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--episodes", type=int, default=8, help="episodes per rollout call")
    parser.add_argument("--calls", type=int, default=3, help="rollout calls per measurement (an RL run makes many)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()

    policy = _policy()
    jobs = [(TASKS[i % len(TASKS)], i) for i in range(args.episodes)]
    rows = {"raw_2w": statistics.median(vectorised(64, 3000, 2) for _ in range(args.repeats))}
    print(f"raw vector env (2 workers, random actions): {rows['raw_2w']:.0f} steps/s")
    for name in args.variants.split(","):
        persistent, workers, threads = VARIANTS[name]
        rows[name] = statistics.median(rollout(policy, jobs, workers, threads, persistent, args.calls)
                                       for _ in range(args.repeats))
        print(f"{name}: {rows[name]:.0f} steps/s ({rows[name] / rows['raw_2w']:.2f}x raw)")
    baseline = rows.get("per_call_env_2w_2t")
    best = max((k for k in rows if k != "raw_2w"), key=rows.get)
    result = {"machine": machine(), "episodes_per_call": args.episodes, "calls": args.calls, "repeats": args.repeats,
              "variants": {k: dict(zip(("persistent", "workers", "threads"), v)) for k, v in VARIANTS.items()},
              "steps_per_s": rows, "ratio_to_raw": {k: v / rows["raw_2w"] for k, v in rows.items()},
              "best": best, "best_vs_previous_trainer": rows[best] / baseline if baseline else None,
              "target_2x_previous": (rows[best] / baseline >= 2.0) if baseline else None}
    out = Path(args.out)
    write_json(out / "rollout_throughput.json", result)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    names = list(rows)
    ax.bar(range(len(names)), [rows[k] for k in names],
           color=["tab:gray"] + ["tab:blue" if "persistent" in k else "tab:orange" for k in names[1:]])
    for i, k in enumerate(names):
        ax.text(i, rows[k], f"{rows[k]:.0f}\n{rows[k] / rows['raw_2w']:.2f}x raw", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(names)), [k.replace("_", "\n") for k in names], fontsize=7)
    ax.set_ylabel("env steps / s")
    ax.set_ylim(0, 1.3 * max(rows.values()))
    ax.set_title("RL rollouts with sampling + recording (64x64, 2 cameras) vs the raw vector env; w: sim workers, "
                 "t: torch threads", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "rollout_throughput.png", dpi=120)
    if baseline:
        print(f"best ({best}) vs the previous trainer's rollout: {rows[best] / baseline:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
