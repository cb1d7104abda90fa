"""Robustness of tabletop policies along LIBERO-Plus's dimensions: every perturbation dimension x level for a set
of checkpoints, success with intervals, the relative drop against the unperturbed held-out states, and a heat map.

    python benchmarks/robustness.py --sft-demos 50 --out benchmarks/results   # + a 50-demo SFT (trained, cached)
    python benchmarks/robustness.py --checkpoint sft=runs/sft/final --checkpoint rl=runs/srpo/final \\
        --states 10 --out /tmp/robustness

Each checkpoint is evaluated on the same held-out states (``--states`` per task, the learning benchmark's 4 tasks by
default) unperturbed, under every dimension at levels 1-3 (``srpo/sim/tabletop/perturbations.py``), and with the
instruction-following probe (each task's starts given the next task's instruction). Every evaluation is cached as a
JSON file under ``--work``, so an interrupted run resumes. With 40 episodes per cell (4 tasks x 10 states), one
checkpoint costs 22 evaluations + the probe, about 6-10 minutes on 2 cores; the default 3 checkpoints fit in 45.

The relative drop is 1 - success(perturbed) / success(base) with a paired bootstrap 95% interval (the perturbed
episodes start from the same states as the base ones). The heat map shows the drop at level 2 per checkpoint x
dimension; robustness.json holds every level.

Default checkpoints (those the learning benchmark left in ``outputs/``, when present): ``sft_10demos`` (10 DART demos
per task, 4000 SFT steps: the RL start), and after 6 RL steps of reward-weighted regression from it with the srpo and
the binary reward (seed 0). ``--sft-demos 50`` adds a 50-demo SFT (DART demos and ``--sft-steps`` of SFT, built and
cached under ``--work``). Without them, pass ``--checkpoint NAME=PATH``.
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

TASKS = ["place_red_cube_in_tray", "push_red_cube", "stack_red_cube_on_blue_cube", "press_button"]
DEFAULT_CHECKPOINTS = {
    "sft_10demos": "outputs/bench_learning/sft_10demos_4000steps/final",
    "rl_srpo": "outputs/bench_s4000/srpo_seed0/final",
    "rl_binary": "outputs/bench_s4000/binary_seed0/final",
}


def _evaluate(path: str, perturb: str | None, states: int, workers: int, cache: Path) -> dict:
    """One cached evaluation: per-episode successes in task x state order (a cache made with another meaning of the
    dimension, ``perturbations.DIMENSION_VERSIONS``, is evaluated again)."""
    from srpo.sim.tabletop.perturbations import parse_perturbations, perturbation_version

    levels = parse_perturbations(perturb)
    version = perturbation_version(levels)
    if cache.is_file():
        row = json.loads(cache.read_text())
        if row.get("version", ",".join(f"{d}@1" for d in levels)) == version:  # caches before versions: @1
            return row
    from srpo_trainer.evaluate import EvalConfig, evaluate
    from srpo_trainer.policies import load_policy

    cfg = EvalConfig(tasks=TASKS, episodes_per_task=states, workers=workers, gifs=0, perturb=perturb)
    t0 = time.perf_counter()
    summary = evaluate(load_policy(path), cfg, progress=False, threads=1)
    row = {"perturb": perturb, "version": version, "success_rate": summary["success_rate"], "ci95": summary["ci95"],
           "per_task": {t: v["success_rate"] for t, v in summary["per_task"].items()},
           "episodes": [int(e["success"]) for e in summary["episodes_detail"]], "wall_s": time.perf_counter() - t0}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(row))
    return row


def _probe(path: str, states: int, workers: int, cache: Path) -> dict:
    if cache.is_file():
        return json.loads(cache.read_text())
    from srpo_trainer.evaluate import EvalConfig, instruction_probe
    from srpo_trainer.policies import load_policy

    cfg = EvalConfig(tasks=TASKS, episodes_per_task=states, workers=workers, gifs=0)
    report = instruction_probe(load_policy(path), cfg, progress=False, threads=1)
    row = {"overall": report["overall"], "pairs": report["pairs"]}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(row))
    return row


def build_sft(demos: int, steps: int, work: Path) -> str:
    """A ``demos``-demo SFT checkpoint on the benchmark's tasks (DART demos, the learning benchmark's recipe; cached)."""
    from srpo.episodes.store import EpisodeStore
    from srpo.sim.demos import generate_successful_demos
    from srpo_trainer.sft import SFTConfig, train_sft

    store = EpisodeStore(work / "demos")
    generate_successful_demos(store, TASKS, demos, "train", 64, dart_noise=0.3, workers=2)
    run = work / f"sft_{demos}demos_{steps}steps"
    return str(train_sft(SFTConfig(data=str(store.root), out=str(run), tasks=TASKS, demos_per_task=demos,
                                   steps=steps, seed=0)))


def main() -> None:
    from srpo.sim.tabletop.perturbations import DIMENSIONS
    from srpo_trainer.evaluate import relative_drop

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", action="append", default=[], help="NAME=PATH (repeatable; default: the "
                    "learning benchmark's SFT start and its RL results, where present)")
    ap.add_argument("--sft-demos", type=int, help="also train (cached) and evaluate an SFT checkpoint on this many "
                    "DART demos per task (the issue's 50-demo SFT)")
    ap.add_argument("--sft-steps", type=int, default=3000)
    ap.add_argument("--states", type=int, default=10, help="held-out states per task")
    ap.add_argument("--levels", default="1,2,3")
    ap.add_argument("--dims", default=",".join(DIMENSIONS))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", default="outputs/robustness")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()

    checkpoints = dict(c.split("=", 1) for c in args.checkpoint) or {
        k: v for k, v in DEFAULT_CHECKPOINTS.items() if (Path(v) / "config.json").is_file()}
    if not checkpoints:
        raise SystemExit("no checkpoints: pass --checkpoint NAME=PATH (or run benchmarks/learning.py first)")
    if args.sft_demos:
        checkpoints[f"sft_{args.sft_demos}demos"] = build_sft(args.sft_demos, args.sft_steps, Path(args.work))
    missing = [p for p in checkpoints.values() if not (Path(p) / "config.json").is_file()]
    if missing:
        raise SystemExit(f"not a checkpoint: {missing}")
    dims, levels = args.dims.split(","), [int(x) for x in args.levels.split(",")]
    work = Path(args.work)
    from tqdm import tqdm

    cells = [(name, dim, level) for name in checkpoints for dim in [None] + dims
             for level in ([0] if dim is None else levels)]
    results: dict = {name: {"path": path, "perturbed": {}} for name, path in checkpoints.items()}
    t0 = time.perf_counter()
    for name, dim, level in tqdm(cells, desc="robustness", unit="eval"):
        spec = None if dim is None else f"{dim}:{level}"
        row = _evaluate(checkpoints[name], spec, args.states, args.workers,
                        work / name / f"{'base' if spec is None else spec.replace(':', '_')}.json")
        if spec is None:
            results[name]["base"] = row
        else:
            results[name]["perturbed"][spec] = row
    for name in tqdm(checkpoints, desc="probe", unit="ckpt"):
        results[name]["probe"] = _probe(checkpoints[name], args.states, args.workers, work / name / "probe.json")
    for name, r in results.items():
        base = np.array(r["base"]["episodes"])
        for spec, row in r["perturbed"].items():
            row.update(relative_drop(base, np.array(row["episodes"]), paired=True))
    payload = {"machine": machine(), "tasks": TASKS, "states_per_task": args.states, "dims": dims, "levels": levels,
               "wall_s": time.perf_counter() - t0, "checkpoints": results}
    out = Path(args.out)
    write_json(out / "robustness.json", payload)
    plot(results, dims, levels, args.states, out / "robustness.png")
    print_table(results, dims, levels)
    print(f"wrote {out / 'robustness.json'} and {out / 'robustness.png'}")


def print_table(results: dict, dims: list[str], levels: list[int]) -> None:
    for name, r in results.items():
        b = r["base"]
        print(f"{name}: unperturbed {100 * b['success_rate']:.1f}% (95% CI {100 * b['ci95'][0]:.0f}-"
              f"{100 * b['ci95'][1]:.0f}); probe: instructed {100 * r['probe']['overall']['instructed']:.0f}%, "
              f"original {100 * r['probe']['overall']['original']:.0f}%")
        for dim in dims:
            cells = []
            for level in levels:
                row = r["perturbed"][f"{dim}:{level}"]
                cells.append(f"L{level} {100 * row['success_rate']:5.1f}% (drop {100 * row['relative_drop']:+.0f}%)"
                             if np.isfinite(row["relative_drop"]) else f"L{level} {100 * row['success_rate']:5.1f}%")
            print(f"  {dim:11s} " + "  ".join(cells))


def plot(results: dict, dims: list[str], levels: list[int], states: int, path: Path) -> None:
    plt = pyplot()
    names = list(results)
    mid = levels[len(levels) // 2]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 0.6 * len(names) + 3.4), gridspec_kw={"width_ratios": [1.1, 1]})
    drop = np.array([[results[n]["perturbed"][f"{d}:{mid}"]["relative_drop"] for d in dims] for n in names])
    im = ax.imshow(100 * drop, cmap="Reds", vmin=0, vmax=100, aspect="auto")
    for i in range(len(names)):
        for j in range(len(dims)):
            row = results[names[i]]["perturbed"][f"{dims[j]}:{mid}"]
            text = f"{100 * row['relative_drop']:.0f}%\n[{100 * row['ci95'][0]:.0f}, {100 * row['ci95'][1]:.0f}]" \
                if np.isfinite(row["relative_drop"]) else "n/a"
            ax.text(j, i, text, ha="center", va="center", fontsize=6)
    ax.set_xticks(range(len(dims)), dims, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), [f"{n}\n(base {100 * results[n]['base']['success_rate']:.0f}%)" for n in names],
                  fontsize=8)
    ax.set_title(f"relative success drop at level {mid} (paired 95% CI)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04, label="drop (%)")
    colours = pyplot().get_cmap("tab10")
    for k, dim in enumerate(dims):
        for i, n in enumerate(names):
            ys = [100 * results[n]["base"]["success_rate"]] + \
                 [100 * results[n]["perturbed"][f"{dim}:{lv}"]["success_rate"] for lv in levels]
            bx.plot([0] + levels, ys, color=colours(k), ls=["-", "--", ":", "-."][i % 4], lw=1,
                    label=dim if i == 0 else None)
    bx.set_xticks([0] + levels)
    bx.set_ylim(0, 100)
    bx.set_xlabel("level (0: unperturbed)")
    bx.set_ylabel("held-out success (%)")
    bx.set_title(f"success by level ({' / '.join(f'{s} {n}' for s, n in zip(['-', '--', ':', '-.'], names))}); "
                 f"{4 * states} episodes per point", fontsize=8)
    bx.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
