"""Reward fidelity of every trajectory encoder: Spearman rho between progress reward and true progress of failures.

    python benchmarks/reward_fidelity.py --out benchmarks/results                       # full run (~25 min, 2 cores)
    python benchmarks/reward_fidelity.py --per-task 4 --wm-steps 200 --out /tmp/fid     # a quick look
    python benchmarks/reward_fidelity.py --vjepa2 /models/vjepa2-vitl-fpc64-256 --image /models/dinov2-small ...

Stages (each cached under ``--work``):
1. expert attempts with noise and early stops on ``--train-per-task`` TRAIN initial states (unlabelled world-model
   data, together with the SFT demos) and on ``--per-task`` HELD-OUT initial states (the fidelity test set);
2. the built-in world model trained on the train-split episodes only (it never sees success flags or progress);
3. each encoder embeds the held-out episodes; each task's episodes are scored as one batch with the progress reward
   and its failures' rewards are rank-correlated with their ground-truth final progress.

Encoders: ``builtin`` (the trained world model), ``pixels`` (the paper's ablation), ``random`` (an untrained world
model: the floor), and ``vjepa2`` / ``image`` when a local checkpoint is given (they are skipped, and say so,
otherwise: nothing is downloaded). Writes ``reward_fidelity.json`` and ``reward_fidelity.png``.
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


def _attempts(store_dir: Path, per_task: int, split: str, workers: int, seed: int) -> None:
    from srpo.episodes.store import EpisodeStore
    from srpo.sim.demos import generate_demos, plan_attempt_jobs
    from srpo.sim.tabletop.tasks import TASKS

    done = store_dir / "COMPLETE"
    if done.exists():
        return
    from tqdm import tqdm

    if store_dir.exists():  # a half-written set from an interrupted run: start it again
        import shutil

        shutil.rmtree(store_dir)
    jobs = plan_attempt_jobs(list(TASKS), per_task, split, 64, seed=seed)
    bar = tqdm(total=len(jobs), desc=f"attempts ({split})", unit="ep")
    generate_demos(jobs, store_dir, workers=workers, on_done=lambda r: bar.update())
    bar.close()
    EpisodeStore(store_dir)  # the folder is a valid store
    done.write_text(str(len(jobs)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-task", type=int, default=20, help="held-out initial states per task (9 episodes each)")
    parser.add_argument("--train-per-task", type=int, default=20, help="train initial states per task for the WM")
    parser.add_argument("--demos", default="outputs/bench_sft/demos", help="SFT demos (train split) for the WM too")
    parser.add_argument("--wm-steps", type=int, default=4000)
    parser.add_argument("--vjepa2", help="local V-JEPA 2 checkpoint directory (or cached hub id)")
    parser.add_argument("--image", help="local DINOv2 / SigLIP checkpoint directory (or cached hub id)")
    parser.add_argument("--reference", default="task,prompt",
                        help="reward reference sets to compare: task (the paper), prompt (same initial state)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="outputs/bench_fidelity")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()

    from srpo.episodes.store import EpisodeStore
    from srpo_trainer.encoders import load_encoder
    from srpo_trainer.reward_fidelity import FidelityConfig, load_task_videos, oracle_bound, reward_fidelity
    from srpo_trainer.world_model import WorldModelTrainConfig, train_world_model

    work = Path(args.work)
    t0 = time.perf_counter()
    _attempts(work / "attempts_train", args.train_per_task, "train", args.workers, args.seed)
    _attempts(work / "attempts_heldout", args.per_task, "heldout", args.workers, args.seed + 1000)
    data_wall = time.perf_counter() - t0
    wm_data = [str(work / "attempts_train")]
    if args.demos and Path(args.demos).is_dir():
        wm_data.append(args.demos)
    t0 = time.perf_counter()
    wm_dir = train_world_model(WorldModelTrainConfig(data=",".join(wm_data), out=str(work / f"wm_{args.wm_steps}"),
                                                     steps=args.wm_steps, seed=args.seed))
    wm_wall = time.perf_counter() - t0

    from srpo_trainer.progress_reward import ProgressRewardConfig

    base = FidelityConfig(data=str(work / "attempts_heldout"), split="heldout")
    videos = load_task_videos(EpisodeStore(base.data), base)
    encoders = {"builtin": lambda: load_encoder("builtin", str(wm_dir)), "pixels": lambda: load_encoder("pixels"),
                "random": lambda: load_encoder("random", seed=args.seed)}
    skipped = {}
    for name, path in (("vjepa2", args.vjepa2), ("image", args.image)):
        if path:
            encoders[name] = lambda n=name, p=path: load_encoder(n, p)
        else:
            skipped[name] = "no local checkpoint given (--%s); nothing is downloaded at run time" % name
    results, bounds = [], {}
    for reference in args.reference.split(","):
        cfg = FidelityConfig(data=base.data, split="heldout", reward=ProgressRewardConfig(reference=reference))
        bounds[reference] = oracle_bound(videos, cfg)
        for name, make in encoders.items():
            res = reward_fidelity(make(), videos, cfg)
            res["encoder"] = f"{name} ({reference})"
            res["reference"] = reference
            results.append(res)
            print(f"{res['encoder']:18s} rho overall {res['spearman_overall']:.3f}, mean over tasks "
                  f"{res['spearman_task_mean']:.3f}, within groups {res['spearman_within_group']:.3f}, "
                  f"{res['trajectories_per_s']:.0f} trajectories/s")
        b = bounds[reference]
        print(f"{'oracle (' + reference + ')':18s} rho overall {b['spearman_overall']:.3f}, mean over tasks "
              f"{b['spearman_task_mean']:.3f}, within groups {b['spearman_within_group']:.3f}")

    def best(encoder: str, metric: str) -> float:
        return max(r[metric] for r in results if r["encoder"].split(" ")[0] == encoder)

    out = Path(args.out)
    summary = {
        "machine": machine(), "per_task_heldout": args.per_task, "train_per_task": args.train_per_task,
        "world_model": {"dir": str(wm_dir), "steps": args.wm_steps, "data": wm_data, "wall_s": wm_wall,
                        "meta": json.loads((Path(wm_dir) / "config.json").read_text())},
        "data_wall_s": data_wall, "skipped": skipped,
        "encoders": {r["encoder"]: {k: v for k, v in r.items() if k not in ("points", "config")} for r in results},
        "oracle_bound": bounds,
        "targets": {
            "builtin_rho_overall": best("builtin", "spearman_overall"),
            "pixels_rho_overall": best("pixels", "spearman_overall"),
            "builtin_rho_ge_0.6": best("builtin", "spearman_overall") >= 0.6,
            "builtin_minus_pixels_ge_0.15": best("builtin", "spearman_overall") - best("pixels", "spearman_overall")
            >= 0.15,
        },
    }
    write_json(out / "reward_fidelity.json", summary)

    plt = pyplot()
    refs = args.reference.split(",")
    metrics = [("spearman_overall", "all failures"), ("spearman_task_mean", "mean over tasks"),
               ("spearman_within_group", "within groups")]
    fig, axes = plt.subplots(1, len(refs) + 1, figsize=(4.2 * len(refs) + 4.2, 3.6), squeeze=False)
    axes = axes[0]
    for ax, ref in zip(axes, refs):
        rows = [r for r in results if r["reference"] == ref]
        names = [r["encoder"].split(" ")[0] for r in rows] + ["oracle"]
        x = np.arange(len(names))
        for j, (key, label) in enumerate(metrics):
            vals = [r[key] or 0.0 for r in rows] + [bounds[ref][key] or 0.0]
            ax.bar(x + (j - 1) * 0.27, vals, width=0.27, label=label)
        ax.axhline(0.6, color="tab:red", ls="--", lw=0.8)
        ax.set_xticks(x, names, fontsize=8)
        ax.set_ylim(min(0.0, min(r["spearman_overall"] for r in rows) - 0.05), 1.0)
        ax.set_title(f"reference = {ref}: Spearman rho vs true progress", fontsize=9)
    axes[0].set_ylabel("Spearman rho (held-out failures)")
    axes[0].legend(fontsize=7, loc="upper left")
    chosen = max((r for r in results if r["encoder"].startswith("builtin")), key=lambda r: r["spearman_within_group"])
    xs = [p for _, _, p in chosen["points"]]
    ys = [r for _, r, _ in chosen["points"]]
    axes[-1].scatter(xs, ys, s=4, alpha=0.4)
    axes[-1].set_title(f"{chosen['encoder']}: every held-out failure", fontsize=9)
    axes[-1].set_xlabel("true final progress")
    axes[-1].set_ylabel("progress reward")
    axes[-1].set_ylim(0, 0.62)
    fig.tight_layout()
    fig.savefig(out / "reward_fidelity.png", dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
