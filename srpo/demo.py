"""The end-to-end demo on the built-in ``tabletop`` suite: ``srpo demo`` / ``make demo``.

Stages (each caches its output under ``--out``, so a re-run resumes where it stopped):
  1. scripted-expert demonstrations for every task, written as MCAP episodes;
  2. read them back from the store, one GIF per task and a contact sheet of first/last frames;
  3. a summary table (success, episode length, final ground-truth progress).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np


def _contact_sheet(rows: list[tuple[str, np.ndarray, np.ndarray]], path: Path, columns: int = 5) -> None:
    """A grid with one panel per task: its first and last agent-view frame side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows = -(-len(rows) // columns)
    fig, axes = plt.subplots(n_rows, columns, figsize=(2.6 * columns, 1.55 * n_rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (task, first, last) in zip(axes.flat, rows):
        gap = np.full((first.shape[0], 2, 3), 255, np.uint8)
        ax.imshow(np.concatenate([first, gap, last], axis=1))
        ax.set_title(task, fontsize=7)
    fig.suptitle("tabletop tasks: first and last frame of a scripted demonstration", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def run(out: str, per_task: int = 5, workers: int = 2) -> int:
    import imageio.v2 as imageio
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from srpo.episodes.store import EpisodeStore
    from srpo.sim.demos import generate_demos, plan_demo_jobs
    from srpo.sim.tabletop.tasks import TASKS

    console = Console()
    root = Path(out)
    store = EpisodeStore(root / "demos")
    console.rule("[bold]1/3 scripted-expert demonstrations")
    jobs = plan_demo_jobs(store, list(TASKS), per_task, "train", 64)
    if jobs:
        with Progress(console=console) as progress:
            bar = progress.add_task("expert episodes", total=len(jobs))
            generate_demos(jobs, store.root, workers=workers, on_done=lambda _: progress.advance(bar))
    else:
        console.print(f"cached: {store.root} already holds {per_task} demos per task")

    console.rule("[bold]2/3 read back: GIFs and contact sheet")
    gif_dir = root / "gifs"
    gif_dir.mkdir(parents=True, exist_ok=True)
    records = store.list(split="train", source="sim")
    by_task = defaultdict(list)
    for r in records:
        by_task[r.meta.task].append(r)
    sheet = []
    for task in TASKS:
        first = store.load(by_task[task][0])
        frames = np.concatenate([first.images[k] for k in first.images], axis=2)
        gif = gif_dir / f"{task}.gif"
        if not gif.exists():
            imageio.mimsave(gif, list(frames), duration=50, loop=0)
        sheet.append((task, first.images["agentview"][0], first.images["agentview"][-1]))
    _contact_sheet(sheet, root / "tasks.png")
    console.print(f"GIFs in {gif_dir}/, contact sheet {root / 'tasks.png'}")

    console.rule("[bold]3/3 summary")
    table = Table(title=f"expert demonstrations in {store.root}")
    for col in ("task", "family", "episodes", "success", "mean length", "mean final progress"):
        table.add_column(col)
    for task, t in TASKS.items():
        rs = by_task[task]
        table.add_row(
            task, t.family, str(len(rs)), f"{np.mean([r.meta.success for r in rs]):.0%}",
            f"{np.mean([r.meta.length for r in rs]):.0f}", f"{np.mean([r.meta.final_progress for r in rs]):.2f}",
        )
    console.print(table)
    if store.problems:
        for path, problem in store.problems:
            console.print(f"[red]DAMAGED[/red] {problem}")
        return 1
    return 0
