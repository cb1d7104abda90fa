"""Scripted-expert success on every initial state of a split (the full check behind the CI's reduced test).

    python benchmarks/expert_success.py --split heldout --out benchmarks/results      # JSON + PNG

Also reports mean episode length and the largest drop of ground-truth progress below its running maximum along an
expert episode (progress should be nearly monotone for a clean expert).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, pyplot, write_json  # noqa: E402


def _task_sweep(task: str, split: str) -> dict:
    from srpo.sim.rollout import expert_episode
    from srpo.sim.tabletop.env import TabletopEnv
    from srpo.sim.tabletop.tasks import SPLIT_SIZES

    env = TabletopEnv(image_size=64)
    ok, lengths, drops, failed = [], [], [], []
    for i in range(SPLIT_SIZES[split]):
        ep = expert_episode(env, task, split, i)
        ok.append(ep.meta.success)
        lengths.append(ep.length)
        drops.append(float((np.maximum.accumulate(ep.progress) - ep.progress).max()))
        if not ep.meta.success:
            failed.append(i)
    return {"task": task, "episodes": len(ok), "success_rate": float(np.mean(ok)), "mean_length": float(np.mean(lengths)),
            "max_progress_drop": max(drops), "failed_init_states": failed}


def main() -> int:
    from srpo.sim.tabletop.tasks import TASKS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="heldout", choices=("train", "heldout"))
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("forkserver")) as pool:
        rows = list(pool.map(_task_sweep, list(TASKS), [args.split] * len(TASKS)))
    wall = time.perf_counter() - start
    for r in rows:
        print(f"{r['task']:32s} {r['success_rate']:6.1%}  len {r['mean_length']:5.1f}  max drop {r['max_progress_drop']:.3f}"
              + (f"  failed {r['failed_init_states']}" if r["failed_init_states"] else ""))
    overall = float(np.mean([r["success_rate"] for r in rows]))
    print(f"overall {overall:.1%} ({args.split}), {wall:.0f} s")
    out = Path(args.out)
    write_json(out / f"expert_success_{args.split}.json", {"machine": machine(), "split": args.split, "rows": rows,
                                                           "overall_success": overall, "wall_s": wall,
                                                           "target_met_95": min(r["success_rate"] for r in rows) >= 0.95})
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.bar(range(len(rows)), [100 * r["success_rate"] for r in rows], color="tab:green")
    ax.axhline(95, color="gray", ls="--", lw=0.8, label="target 95%")
    ax.set_xticks(range(len(rows)), [r["task"] for r in rows], rotation=40, ha="right", fontsize=7)
    ax.set_ylim(0, 105)
    ax.set_ylabel(f"expert success on {args.split} (%)")
    ax.set_title(f"scripted experts, {rows[0]['episodes']} {args.split} initial states per task")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / f"expert_success_{args.split}.png", dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
