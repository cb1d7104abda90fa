"""Episodes through the ROS 2 nodes: real time at 20 Hz against the arm's simulated clock (lockstep with the policy).

    python benchmarks/sim_clock.py --init outputs/rollout_concentration/sft3/final --out benchmarks/results
        # about 6 min on 2 cores; JSON + PNG

Each mode runs one ``srpo loop --robot sim`` round (real nodes in their own processes: the arm, the policy on ONNX
Runtime, the recorder; the loop asks the arm for every episode and waits for the recorder's file) with the same
episode schedule: ``--episodes`` episodes, 4 tasks, prompts drawn from 10 train states, 4 episodes per prompt,
exploration std 0.2 at temperature 1, the same policy. Only ``sim_clock`` differs:

- ``real time``: the arm ticks at 20 Hz of wall time and the policy prefetches its next chunk in a worker thread;
- ``simulated clock``: the arm publishes ``/clock``, steps the moment the policy answers the state it published, and
  the policy infers in its tick (``srpo bringup sim_clock:=true``).

Measured per mode, from the loop's row and the recorded files alone: wall seconds per episode (request to the
recorder's closed file, the loop's ``time/record_s``), simulated control steps per wall second, the control steps
between two decisions (8, the chunk's length, when no row is dropped while the policy is thinking), the share of
executed actions no chunk row explains (the safety filter changed them, e.g. at the workspace's edge), and the
recorded success with its Wilson interval (the same policy should succeed as often either way; the schedule is
the same, the sampled actions are not). The speed-up is the ratio of the two modes' wall seconds per episode, measured
in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, pyplot, write_json  # noqa: E402

TASKS = ["reach_red_cube", "reach_green_cylinder", "press_button", "open_drawer"]
MODES = {"real time": "false", "simulated clock": "true"}


def run_mode(args, name: str, sim_clock: str) -> dict:
    from srpo.episodes.store import EpisodeStore
    from srpo_cli.loop import loop_config, run_loop
    from srpo_trainer.evaluate import wilson_interval
    from srpo_trainer.rl.offline import served_rows

    out = Path(args.work) / name.replace(" ", "_")
    cfg = loop_config([f"init={args.init}", f"out={out}", "rounds=1", f"episodes_per_round={args.episodes}",
                       f"tasks=[{','.join(TASKS)}]", "train_states=10", "group_size=4", f"sim_clock={sim_clock}",
                       "seed=0", "train.reward.mode=binary", "train.filter.kind=none", "train.steps=1",
                       "train.threads=1"])
    state = json.loads((run_loop(cfg, progress=False) / "loop.json").read_text())
    row = state["rounds"][0]
    episodes = list(EpisodeStore(out / "episodes" / "round_000").iter_episodes())
    decided = [e for e in episodes if e.chunk_steps is not None and len(e.chunk_steps)]
    served = np.concatenate([served_rows(e.chunk_steps, e.chunks, e.actions).sum(axis=1) for e in decided])
    gaps = np.concatenate([np.diff(e.chunk_steps) for e in decided])
    unexplained = sum(e.length - int(served_rows(e.chunk_steps, e.chunks, e.actions).sum()) for e in decided)
    steps = int(sum(e.length for e in episodes))
    success = [bool(e.meta.success) for e in episodes if e.meta.success is not None]
    lo, hi = wilson_interval(sum(success), len(success))
    return {"sim_clock": sim_clock == "true", "episodes": len(episodes), "record_s": row["time/record_s"],
            "s_per_episode": row["time/record_s"] / max(1, row["episodes"]), "steps": steps,
            "steps_per_wall_s": steps / row["time/record_s"], "mean_length": steps / max(1, len(episodes)),
            "served_rows_mean": float(served.mean()),
            "steps_between_decisions_mean": float(gaps.mean()),
            "steps_between_decisions_hist": np.bincount(gaps, minlength=9).tolist(),
            "decisions_a_full_chunk_apart": float((gaps == 8).mean()),
            "actions_no_row_explains": unexplained / max(1, steps),
            "success": float(np.mean(success)) if success else float("nan"), "success_ci95": [lo, hi],
            "timeouts": row.get("timeouts", 0), "lost": row.get("lost", 0)}


def plot(result: dict, path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    names = list(result["modes"])
    colours = ["tab:grey", "tab:green"]
    rows = [result["modes"][n] for n in names]
    axes[0].bar(names, [r["s_per_episode"] for r in rows], color=colours)
    axes[0].set_ylabel("wall seconds per recorded episode")
    axes[0].set_title(f"speed-up x{result['speedup']:.1f} (same run, same schedule)", fontsize=9)
    axes[1].bar(names, [r["steps_between_decisions_mean"] for r in rows], color=colours)
    axes[1].set_ylim(0, 8.5)
    axes[1].set_ylabel("control steps between decisions")
    axes[1].set_title("chunks of 8: rows dropped while the policy thinks make it < 8", fontsize=9)
    for i, r in enumerate(rows):
        lo, hi = r["success_ci95"]
        axes[2].errorbar(i, 100 * r["success"], yerr=[[100 * (r["success"] - lo)], [100 * (hi - r["success"])]],
                         fmt="o", color=colours[i], capsize=5)
    axes[2].set_xticks(range(len(names)), names)
    axes[2].set_xlim(-0.5, len(names) - 0.5)
    axes[2].set_ylim(0, 100)
    axes[2].set_ylabel("recorded success (%, Wilson 95%)")
    axes[2].set_title(f"{rows[0]['episodes']} episodes per mode", fontsize=9)
    fig.suptitle("srpo loop episodes through the ROS 2 nodes: real time at 20 Hz vs the arm's simulated clock",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--init", required=True, help="policy checkpoint that acts")
    ap.add_argument("--episodes", type=int, default=32)
    ap.add_argument("--work", default="outputs/bench_sim_clock")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    modes = {name: run_mode(args, name, flag) for name, flag in MODES.items()}
    result = {"machine": machine(), "init": args.init, "tasks": TASKS, "modes": modes,
              "speedup": modes["real time"]["s_per_episode"] / modes["simulated clock"]["s_per_episode"]}
    out = Path(args.out)
    write_json(out / "sim_clock.json", result)
    plot(result, out / "sim_clock.png")
    for name, r in modes.items():
        print(f"{name:16s} {r['s_per_episode']:.2f} s/episode, {r['steps_per_wall_s']:.0f} steps/s, steps between "
              f"decisions {r['steps_between_decisions_mean']:.2f} (a full chunk apart: "
              f"{100 * r['decisions_a_full_chunk_apart']:.0f}%), success {100 * r['success']:.0f}% "
              f"({100 * r['success_ci95'][0]:.0f}-{100 * r['success_ci95'][1]:.0f})")
    print(f"speed-up x{result['speedup']:.2f}")


if __name__ == "__main__":
    main()
