"""Ray scale-out: rollout episodes per second with the local backend and with 1 and 2 Ray rollout actors, the weight
broadcast, and a projection to 8 and 64 actors from the measured per-actor costs.

    python benchmarks/scale_out.py --out benchmarks/results        # JSON + PNG, ~6 min on 2 cores

Every variant runs the same RL-style job list (4 tasks x ``--states`` train states, sampled actions, every episode
recorded in full as the trainer records it), with the built-in VLA at 64x64, all four set up at once in one process
and measured in interleaved rounds (each round runs every variant once, in a rotated order; ratios are taken within
a round, so a slow phase of this noisy machine hits both sides of a ratio):
- ``local_1w``: the local backend (``run_policy_episodes``) with one simulator process: the baseline;
- ``ray_1w``: ``distributed.backend=ray`` with one rollout actor (one simulator process): Ray's overhead is
  1 - ray_1w / local_1w (target: at most 15%);
- ``ray_2w``: two rollout actors: the scaling ratio is ray_2w / ray_1w (target: at least 1.6x on this 2-core machine);
- ``local_2w``: the local backend with two simulator processes batched into one policy call, for comparison.
After a warm-up call, ``--repeats`` rounds; the output gives medians and ranges of the rates and of the ratios.

The broadcast is the time from new weights in the driver to every actor having loaded them (``RayRolloutPool.sync``:
one ``ray.put`` and one read per actor), median of ``--broadcasts`` updates.

The projection assumes what a cluster provides and this machine cannot show: one core per simulator, so an actor
runs at the single-actor speed measured here (``ray_1w``); the driver serially handles every finished shard
(``driver_s_per_shard``: the driver's measured time per finished shard, fetching its episodes and submitting the
next, the larger of the two pools'); the weights reach every node
once per update (the measured put + load, plus ``--link-gbps`` per node for the transfer). Projected episodes/s at
N actors = min(N x per-actor rate, shard size / driver time per shard).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, pyplot, write_json  # noqa: E402
from rollout_throughput import TASKS, _policy  # noqa: E402  (the 64x64 built-in VLA, random weights)


def _jobs(states: int) -> list[tuple[str, int]]:
    return [(t, i) for t in TASKS for i in range(states)]


class LocalRunner:
    """The local backend with ``workers`` simulator processes, kept open across calls."""

    def __init__(self, workers: int) -> None:
        from srpo.sim.vector import make_vector_env

        self.workers = workers
        self.envs = make_vector_env(workers, image_size=64, max_chunk=8)

    def __call__(self, explore, jobs, seed: int):
        from srpo_trainer.rollouts import run_policy_episodes

        return run_policy_episodes(explore, jobs, "train", self.workers, 8, 1.0, seed, record=True, envs=self.envs,
                                   threads=1)[0]

    def close(self) -> None:
        self.envs.close()


class RayRunner:
    """A Ray rollout pool of ``actors`` actors (one simulator each), kept open across calls."""

    def __init__(self, explore, actors: int) -> None:
        from srpo_trainer.distributed.config import DistributedConfig
        from srpo_trainer.distributed.ray_backend import RayRolloutPool

        t0 = time.perf_counter()
        self.pool = RayRolloutPool(DistributedConfig(backend="ray", rollout_workers=actors), explore.policy,
                                   explore.cfg, "tabletop", {}, threads=1)
        self.startup_s = time.perf_counter() - t0

    def __call__(self, explore, jobs, seed: int):
        return self.pool.run_policy_episodes(explore, jobs, "train", None, 8, 1.0, seed, record=True)[0]

    def close(self) -> None:
        self.pool.close()


def measure(runners: dict, explore, jobs, repeats: int) -> dict:
    """Episodes/s of every runner on the same job list, interleaved: each round runs every variant once (in a
    rotated order), so slow phases of a noisy machine hit every variant alike and ratios are taken within a round."""
    for run in runners.values():
        run(explore, jobs[:2], 0)  # warm-up: first calls pay imports and allocation
    rates: dict[str, list[float]] = {k: [] for k in runners}
    names = list(runners)
    for rep in range(repeats):
        for name in names[rep % len(names):] + names[: rep % len(names)]:
            t0 = time.perf_counter()
            results = runners[name](explore, jobs, rep)
            rates[name].append(len(results) / (time.perf_counter() - t0))
    return rates


def measure_broadcast(runner: "RayRunner", explore, count: int) -> list[float]:
    import torch

    times = []
    for _ in range(count):
        with torch.no_grad():
            next(explore.policy.parameters()).add_(1e-6)  # new weights: a new fingerprint to broadcast
        runner.pool.sync(explore.policy)
        times.append(runner.pool.stats.broadcast_s)
    return times


def project(per_actor_rate: float, driver_s_per_shard: float, shard_size: int, broadcast_s: float, weights_mb: float,
            link_gbps: float, actors: int, episodes_per_step: int) -> dict:
    """Episodes/s and time per RL step's rollout at ``actors`` actors from the measured per-actor costs."""
    driver_limit = shard_size / driver_s_per_shard if driver_s_per_shard > 0 else float("inf")
    rate = min(actors * per_actor_rate, driver_limit)
    nodes = max(1, -(-actors // 8))  # 8 actors per node
    broadcast = broadcast_s + nodes * weights_mb * 8e-3 / link_gbps
    return {"actors": actors, "episodes_per_s": rate, "driver_bound": actors * per_actor_rate > driver_limit,
            "broadcast_s": broadcast, "rollout_s_per_step": episodes_per_step / rate + broadcast}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--states", type=int, default=4, help="train states per task (4 tasks)")
    ap.add_argument("--repeats", type=int, default=5, help="rounds; each runs every variant once")
    ap.add_argument("--broadcasts", type=int, default=5)
    ap.add_argument("--link-gbps", type=float, default=10.0, help="network per node, for the projection")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from srpo_trainer.rl.exploration import ExplorationConfig, ExplorationPolicy

    explore = ExplorationPolicy(_policy(), ExplorationConfig(std_mode="fixed", std=0.2)).eval()
    jobs = _jobs(args.states)
    # 3 actors exist at once (the 1- and the 2-actor pool) but only one variant runs at a time
    ray.init(num_cpus=4, include_dashboard=False)
    runners: dict = {}
    try:
        runners = {"local_1w": LocalRunner(1), "ray_1w": RayRunner(explore, 1), "ray_2w": RayRunner(explore, 2),
                   "local_2w": LocalRunner(2)}
        print(f"{len(jobs)} recorded episodes per call, {args.repeats} interleaved rounds")
        rates = measure(runners, explore, jobs, args.repeats)
        broadcast = measure_broadcast(runners["ray_2w"], explore, args.broadcasts)
        pool_stats = {k: vars(r.pool.stats) for k, r in runners.items() if isinstance(r, RayRunner)}
        startup = {k: r.startup_s for k, r in runners.items() if isinstance(r, RayRunner)}
        shard_size = runners["ray_1w"].pool.shard_size
    finally:
        for r in runners.values():
            r.close()
        ray.shutdown()
    from srpo_trainer.distributed.ray_backend import weights_bytes

    weights_mb = len(weights_bytes(explore.policy)) / 1e6
    med = {k: statistics.median(v) for k, v in rates.items()}

    def ratios(a: str, b: str) -> list[float]:
        return [x / y for x, y in zip(rates[a], rates[b])]

    overhead = [1 - r for r in ratios("ray_1w", "local_1w")]
    speedup = ratios("ray_2w", "ray_1w")
    driver_s_per_shard = max(s["driver_s"] / s["shards"] for s in pool_stats.values())
    for k, v in rates.items():
        print(f"{k:9s} {med[k]:6.2f} episodes/s (range {min(v):.2f}-{max(v):.2f})")
    summary = {
        "ray_overhead_vs_local_1w": statistics.median(overhead), "ray_overhead_range": [min(overhead), max(overhead)],
        "ray_2w_over_ray_1w": statistics.median(speedup), "ray_2w_over_ray_1w_range": [min(speedup), max(speedup)],
        "ray_2w_over_local_2w": statistics.median(ratios("ray_2w", "local_2w")),
        "local_2w_over_local_1w": statistics.median(ratios("local_2w", "local_1w")),
        "broadcast_s_median_2w": statistics.median(broadcast), "weights_mb": weights_mb,
        "actor_startup_s": startup, "pool_stats": pool_stats,
        "driver_s_per_shard": driver_s_per_shard, "shard_size": shard_size,
        "targets": {"ray_2w_over_ray_1w >= 1.6": statistics.median(speedup) >= 1.6,
                    "ray_overhead_vs_local_1w <= 0.15": statistics.median(overhead) <= 0.15},
    }
    for k, v in summary.items():
        print(f"{k}: {v}")
    per_actor = med["ray_1w"]
    paper_step = 64 * 8
    projection = [project(per_actor, driver_s_per_shard, shard_size, summary["broadcast_s_median_2w"], weights_mb,
                          args.link_gbps, n, paper_step) for n in (1, 2, 8, 64)]
    for p in projection:
        print(f"projected {p['actors']:3d} actors: {p['episodes_per_s']:7.1f} episodes/s, a 64x8 step's rollout "
              f"{p['rollout_s_per_step']:.1f} s{' (driver-bound)' if p['driver_bound'] else ''}")
    out = Path(args.out)
    write_json(out / "scale_out.json", {"machine": machine(), "jobs": len(jobs), "repeats": args.repeats,
                                        "episodes_per_s": rates, "broadcast_s": broadcast,
                                        "median_episodes_per_s": med, "summary": summary, "projection": projection,
                                        "projection_assumptions": {
                                            "per_actor_episodes_per_s": per_actor, "link_gbps": args.link_gbps,
                                            "actors_per_node": 8, "episodes_per_step": paper_step}})
    plot(rates, med, summary, projection, out / "scale_out.png")
    print(f"wrote {out / 'scale_out.json'} and {out / 'scale_out.png'}")


def plot(rates: dict, med: dict, summary: dict, projection: list[dict], path: Path) -> None:
    plt = pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.6))
    names = list(rates)
    lo = [med[k] - min(rates[k]) for k in names]
    hi = [max(rates[k]) - med[k] for k in names]
    colours = ["tab:gray" if k.startswith("local") else "tab:blue" for k in names]
    ax.bar(names, [med[k] for k in names], yerr=[lo, hi], capsize=4, color=colours)
    ax.set_ylabel("recorded episodes / s (median, range)")
    ax.set_title(f"{os.cpu_count()} cores, medians of per-round ratios: Ray 2 actors = "
                 f"{summary['ray_2w_over_ray_1w']:.2f}x 1 actor; Ray overhead at 1 actor "
                 f"{100 * summary['ray_overhead_vs_local_1w']:+.0f}%", fontsize=8)
    xs = [p["actors"] for p in projection]
    bx.plot(xs, [p["episodes_per_s"] for p in projection], "o-", label="projected")
    bx.plot([1, 2], [med["ray_1w"], med["ray_2w"]], "s", color="tab:red", label="measured")
    bx.set_xscale("log", base=2)
    bx.set_yscale("log")
    bx.set_xlabel("rollout actors (one core each)")
    bx.set_ylabel("episodes / s")
    bx.set_title("projection from per-actor costs (see scale_out.json)", fontsize=8)
    bx.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
