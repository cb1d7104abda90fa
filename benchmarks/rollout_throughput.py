"""RL rollout throughput: env steps per second with policy inference and full recording, beside the raw vector env.

    python benchmarks/rollout_throughput.py --out benchmarks/results        # JSON + PNG, ~4 min on 2 cores

What an RL step's rollout does (``srpo_trainer/rollouts.py``): parallel simulator processes, batched sampling from
the built-in VLA (64x64, both cameras), every action and decision recorded as an ``Episode`` with its frames. Measured in
one run, on the same job list:
- ``raw_2w``: the vector env alone, one control step per call, every step rendered, random actions, 2 workers (no
  inference, no recording): the yardstick every other number is divided by;
- ``chunked_2w_every_step``: the rollout with 2 simulator workers that execute a whole open-loop chunk per call
  (``ChunkStepEnv``), rendering and recording every step's frames;
- ``chunked_*w_decisions``: the same, rendering only where the policy decides and at the last step
  (``rollout.record_frames: decisions``, the trainer's default), with 2, 4 (the trainer's default) or 8 workers;
- ``per_call_4w_decisions``: as above, but the simulator processes are started for every call instead of reused.
The trainer before issue 10 (a round trip per control step, every frame rendered, processes started per call) ran at
``PREVIOUS_TRAINER_RATIO_TO_RAW`` of ``raw_2w`` (``git show 676fef6:benchmarks/results/rollout_throughput.json``,
``per_call_env_2w_2t``); ``vs_previous_trainer`` divides each variant's ratio to raw by it.
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


def rollout(policy, jobs, workers: int, threads: int, persistent: bool, calls: int, frames: str) -> float:
    """Env steps per second over ``calls`` recorded, sampled rollout calls of ``jobs``."""
    import torch

    from srpo.sim.vector import make_vector_env
    from srpo_trainer.rollouts import run_policy_episodes

    torch.set_num_threads(threads)
    envs = make_vector_env(workers, image_size=64, max_chunk=8) if persistent else None
    steps = 0
    start = time.perf_counter()
    try:
        for call in range(calls):
            results, _, _ = run_policy_episodes(policy, jobs, "train", workers, 8, 1.0, seed=call, record=True,
                                                envs=envs, record_frames=frames)
            steps += sum(r["length"] for r in results)
    finally:
        if envs is not None:
            envs.close()
    return steps / (time.perf_counter() - start)


VARIANTS = {  # name: (persistent env, simulator workers, torch threads, frames rendered and recorded)
    "chunked_2w_every_step": (True, 2, 1, "every_step"),
    "chunked_2w_decisions": (True, 2, 1, "decisions"),
    "chunked_4w_decisions": (True, 4, 1, "decisions"),
    "chunked_8w_decisions": (True, 8, 1, "decisions"),
    "per_call_4w_decisions": (False, 4, 1, "decisions"),
}
# the pre-issue-10 trainer's rollout over the raw vector env, measured in one run (169.4 / 297.5 steps/s)
PREVIOUS_TRAINER_RATIO_TO_RAW = 0.57


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--episodes", type=int, default=16,
                        help="episodes per rollout call (an RL step runs 64: short calls overweight the tail)")
    parser.add_argument("--calls", type=int, default=3, help="rollout calls per measurement (an RL run makes many)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of the variants")
    args = parser.parse_args()

    policy = _policy()
    jobs = [(TASKS[i % len(TASKS)], i) for i in range(args.episodes)]
    rows = {"raw_2w": statistics.median(vectorised(64, 3000, 2) for _ in range(args.repeats))}
    print(f"raw vector env (2 workers, random actions): {rows['raw_2w']:.0f} steps/s")
    for name in args.variants.split(","):
        persistent, workers, threads, frames = VARIANTS[name]
        rows[name] = statistics.median(rollout(policy, jobs, workers, threads, persistent, args.calls, frames)
                                       for _ in range(args.repeats))
        print(f"{name}: {rows[name]:.0f} steps/s ({rows[name] / rows['raw_2w']:.2f}x raw)")
    best = max((k for k in rows if k != "raw_2w"), key=rows.get)
    ratio = {k: v / rows["raw_2w"] for k, v in rows.items()}
    vs_previous = {k: ratio[k] / PREVIOUS_TRAINER_RATIO_TO_RAW for k in rows if k != "raw_2w"}
    result = {"machine": machine(), "episodes_per_call": args.episodes, "calls": args.calls, "repeats": args.repeats,
              "variants": {k: dict(zip(("persistent", "workers", "threads", "frames"), v)) for k, v in VARIANTS.items()},
              "steps_per_s": rows, "ratio_to_raw": ratio, "previous_trainer_ratio_to_raw": PREVIOUS_TRAINER_RATIO_TO_RAW,
              "vs_previous_trainer": vs_previous, "best": best, "best_vs_previous_trainer": vs_previous[best],
              "target_2x_previous": vs_previous[best] >= 2.0}
    out = Path(args.out)
    write_json(out / "rollout_throughput.json", result)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    names = list(rows)
    ax.bar(range(len(names)), [rows[k] for k in names],
           color=["tab:gray"] + ["tab:blue" if "decisions" in k else "tab:orange" for k in names[1:]])
    ax.axhline(2 * PREVIOUS_TRAINER_RATIO_TO_RAW * rows["raw_2w"], color="tab:red", ls="--", lw=1,
               label="2x the pre-issue-10 trainer (its ratio to raw)")
    ax.legend(fontsize=7, loc="upper left")
    for i, k in enumerate(names):
        ax.text(i, rows[k], f"{rows[k]:.0f}\n{rows[k] / rows['raw_2w']:.2f}x raw", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(names)), [k.replace("_", "\n") for k in names], fontsize=7)
    ax.set_ylabel("env steps / s")
    ax.set_ylim(0, 1.3 * max(rows.values()))
    ax.set_title("RL rollouts with sampling + recording (64x64, 2 cameras) vs the raw per-step vector env; "
                 "w: sim workers", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "rollout_throughput.png", dpi=120)
    print(f"best ({best}): {ratio[best]:.2f}x raw, {vs_previous[best]:.2f}x the pre-issue-10 trainer's rollout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
