"""Tabletop env throughput: steps per second with both cameras rendered, one process vs the vectorised env.

    python benchmarks/sim_throughput.py --out benchmarks/results            # JSON + PNG

Random actions, episodes reset when they end (resets are counted in the time). Each configuration runs
``--repeats`` times and the median is reported; the vectorised speed-up is a ratio to the single-process figure of
the same run, since these machines are noisy. Targets: >= 300 steps/s single-process at 64x64, >= 1.6x with 2 workers.
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

TASKS = ["place_red_cube_in_tray", "open_drawer", "push_red_cube", "press_button"]


def single_process(image_size: int, steps: int) -> float:
    from srpo.sim.tabletop.env import TabletopEnv

    env = TabletopEnv(image_size=image_size)
    rng = np.random.default_rng(0)
    env.reset(seed=0, options={"task": TASKS[0]})
    k = 0
    start = time.perf_counter()
    for _ in range(steps):
        _, _, term, trunc, _ = env.step(rng.uniform(-1, 1, 7).astype(np.float32))
        if term or trunc:
            k += 1
            env.reset(options={"task": TASKS[k % len(TASKS)]})
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def vectorised(image_size: int, steps: int, workers: int) -> float:
    from srpo.sim.vector import make_vector_env

    venv = make_vector_env(workers, image_size=image_size, autoreset=True)
    rng = np.random.default_rng(0)
    venv.reset_envs([{"task": TASKS[i % len(TASKS)]} for i in range(workers)])
    n = steps // workers
    start = time.perf_counter()
    for _ in range(n):
        venv.step(rng.uniform(-1, 1, (workers, 7)).astype(np.float32))
    rate = n * workers / (time.perf_counter() - start)
    venv.close()
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sizes", default="64,128")
    args = parser.parse_args()

    results = []
    for size in [int(s) for s in args.sizes.split(",")]:
        single = statistics.median(single_process(size, args.steps) for _ in range(args.repeats))
        vec = statistics.median(vectorised(size, args.steps, args.workers) for _ in range(args.repeats))
        row = {"image_size": size, "single_steps_per_s": single, "vector_steps_per_s": vec,
               "vector_workers": args.workers, "speedup": vec / single}
        results.append(row)
        print(f"{size}x{size}: single {single:.0f} steps/s, {args.workers} workers {vec:.0f} steps/s "
              f"({vec / single:.2f}x)")
    row64 = next((r for r in results if r["image_size"] == 64), None)
    targets = None
    if row64:
        targets = {"single_64_ge_300": row64["single_steps_per_s"] >= 300, "speedup_64_ge_1.6": row64["speedup"] >= 1.6}
    out = Path(args.out)
    write_json(out / "sim_throughput.json", {"machine": machine(), "steps": args.steps, "repeats": args.repeats,
                                              "cameras": ["agentview", "wrist"], "results": results, "targets_met": targets})
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    x = np.arange(len(results))
    ax.bar(x - 0.2, [r["single_steps_per_s"] for r in results], 0.4, label="1 process")
    ax.bar(x + 0.2, [r["vector_steps_per_s"] for r in results], 0.4, label=f"vectorised, {args.workers} workers")
    for i, r in enumerate(results):
        ax.text(i + 0.2, r["vector_steps_per_s"], f"{r['speedup']:.2f}x", ha="center", va="bottom", fontsize=8)
    ax.axhline(300, color="gray", ls="--", lw=0.8, label="target: 300 steps/s (1 process, 64 px)")
    ax.set_xticks(x, [f"{r['image_size']}x{r['image_size']}" for r in results])
    ax.set_ylabel("env steps / s (2 cameras rendered)")
    ax.set_title("tabletop simulation throughput")
    ax.set_ylim(0, 1.35 * max(r["vector_steps_per_s"] for r in results))
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(out / "sim_throughput.png", dpi=120)
    print(f"wrote {out / 'sim_throughput.json'} and {out / 'sim_throughput.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
