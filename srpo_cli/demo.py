"""The end-to-end demo on the built-in ``tabletop`` suite: ``srpo demo`` / ``make demo``.

Stages (each caches its output under ``--out``, so a re-run resumes where it stopped):
  1. perturbed scripted-expert demonstrations (DART) for every task, written as MCAP episodes, read back into one
     GIF per task and a contact sheet;
  2. few-demo SFT of the built-in VLA on 4 tasks, 3 demonstrations each (a deliberately weak start);
  3. SRPO in simulation on ``press_button`` with the recipe that learns (``configs/srpo_concentrated.yaml``: many
     rollouts on few train states, reward-weighted regression anchored on the SFT's demos): the trainer fits the
     built-in world model on the demos plus its first rollouts, runs 12 RL steps of 4 prompts x 16 rollouts, and
     evaluates on the same 200 held-out initial states before and after (paired);
  4. the closed loop through ROS 2 (``srpo loop``, needs the ``[ros]`` extra): the SRPO policy is exported to ONNX
     and published in a policy registry, the arm, policy and recorder nodes come up in simulation, a round of
     episodes is recorded through the recorder, offline SRPO updates the policy from those files alone, and the
     result is exported, published and pushed to the running policy node (validated before it is swapped in);
  5. a before/after table and plots (``before_after.png``, the SRPO run's ``learning.png``, ``loop/loop.png``).

Presets: the default fits 15 minutes on 2 CPU cores; ``--smoke`` runs every stage at toy size (CI); ``--full`` runs
the rollout-concentration benchmark's setting (4 tasks, 16 x 16 rollouts per step, 150 regression steps, 200
held-out states per task; its RL stage alone is about 13 minutes on 2 cores).
"""

from __future__ import annotations

from dataclasses import dataclass
from collections import defaultdict
from pathlib import Path

import numpy as np

DEMO_TASKS = ["reach_red_cube", "reach_green_cylinder", "press_button", "open_drawer"]


@dataclass(frozen=True)
class DemoSettings:
    """The size of every stage."""

    tasks: tuple[str, ...] = tuple(DEMO_TASKS)
    """The SFT's tasks (empty: every task of the suite)."""
    per_task: int = 10
    """Perturbed expert demonstrations generated per task."""
    sft_demos_per_task: int | None = 3
    """Of those, how many the SFT (and the regression anchor) learns from: few, so the start is weak (None: all)."""
    sft_steps: int = 1200
    rl_tasks: tuple[str, ...] = ("press_button",)
    """The tasks SRPO practises, is evaluated on and records in the loop (empty: the SFT's tasks)."""
    rl_steps: int = 12
    prompts_per_step: int = 4
    group_size: int = 16
    train_states: int = 10
    """Train states per task the RL prompts are drawn from (0: the config's)."""
    regression_steps: int = 40
    """Gradient steps of the reward-weighted regression per RL step (0: the config's)."""
    world_model_steps: int = 600
    eval_per_task: int = 200
    loop_episodes: int = 16
    loop_max_steps: int = 0
    loop_eval_per_task: int = 0
    rl_config: str = "srpo_concentrated.yaml"
    demos_for_every_task: bool = True
    """Demonstrations (and the contact sheet) for every task of the suite, not only the trained ones."""


PRESETS = {
    "default": DemoSettings(),
    "smoke": DemoSettings(tasks=("reach_red_cube", "press_button"), per_task=2, sft_demos_per_task=None,
                          sft_steps=40, rl_tasks=(), rl_steps=1, prompts_per_step=2, group_size=2, train_states=0,
                          regression_steps=5, world_model_steps=20, eval_per_task=1, loop_episodes=2,
                          loop_max_steps=20, demos_for_every_task=False),
    "full": DemoSettings(tasks=("reach_red_cube", "reach_green_cylinder", "press_button", "open_drawer"), per_task=10,
                         sft_demos_per_task=3, sft_steps=1200, rl_tasks=(), rl_steps=8, prompts_per_step=16,
                         group_size=16, train_states=10, regression_steps=0, world_model_steps=1500,
                         eval_per_task=200, loop_episodes=40, loop_eval_per_task=20),
}


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


def run(out: str, settings: DemoSettings | None = None, workers: int = 2) -> int:
    from rich.console import Console

    st = settings or PRESETS["default"]
    from srpo.sim.tabletop.tasks import TASKS

    tasks = list(st.tasks or TASKS)
    rl_tasks = list(st.rl_tasks or tasks)
    sft_demos = st.sft_demos_per_task or st.per_task
    console = Console()
    root = Path(out)
    console.rule("[bold]1/5 scripted-expert demonstrations")
    store, problems = _demos(root, st.per_task, workers, console, list(TASKS) if st.demos_for_every_task else tasks)
    if problems:
        return 1

    console.rule(f"[bold]2/5 few-demo SFT ({sft_demos} demos per task, {len(tasks)} tasks, {st.sft_steps} steps)")
    from srpo_trainer.sft import SFTConfig, train_sft

    sft = train_sft(SFTConfig(data=str(store.root), out=str(root / "sft"), tasks=tasks, demos_per_task=sft_demos,
                              steps=st.sft_steps, batch_size=32, checkpoint_every=min(250, st.sft_steps)))

    console.rule(f"[bold]3/5 SRPO in simulation on {', '.join(rl_tasks)}: world model + {st.rl_steps} RL steps, "
                 f"{st.eval_per_task} held-out states per task before and after")
    from srpo.config import load_config
    from srpo_trainer.rl.config import RLConfig
    from srpo_trainer.rl.trainer import print_summary, train_rl

    config = _rl_config(st)
    overrides = [
        f"init={sft}", f"out={root / 'srpo'}", f"steps={st.rl_steps}", f"eval_every={st.rl_steps}",
        f"eval_episodes_per_task={st.eval_per_task}", f"rollout.tasks={rl_tasks}",
        f"rollout.prompts_per_step={st.prompts_per_step}", f"rollout.group_size={st.group_size}",
        f"rollout.workers={max(workers, 4)}", f"reward.world_model.data={store.root}",
        f"reward.world_model.steps={st.world_model_steps}", "checkpoint_every=1", *_rl_extra(st, config, store.root)]
    run = train_rl(load_config(RLConfig, config if config.is_file() else None, overrides))

    import json

    summary = json.loads((run / "summary.json").read_text())
    loop_state = _closed_loop(root, run / "final", store.root, rl_tasks, st, workers, console)

    console.rule("[bold]5/5 before / after")
    _before_after(summary, root / "before_after.png")
    print_summary(summary)  # the per-task table and the paired interval's verdict
    console.print(f"{summary['steps']} SRPO steps, {summary['trajectories']} trajectories, {summary['env_steps']} env "
                  f"steps; plots: {root / 'before_after.png'}, {run / 'learning.png'}; TensorBoard: tensorboard "
                  f"--logdir {run / 'tb'}")
    if loop_state is not None:
        r = loop_state["rounds"][-1]
        console.print(f"closed loop: {r['episodes']} episodes recorded through ROS 2 with {r['acted']} "
                      f"({r['successes']}/{r['labelled']} successful); offline update -> "
                      f"{r.get('candidate') or 'no new version'}; push: "
                      f"{'accepted' if r['push'].get('accepted') else 'not pushed: ' + str(r['push'].get('reason'))}"
                      f"; {root / 'loop' / 'loop.png'}")
    return 0


def _rl_config(st: DemoSettings) -> Path:
    return Path(__file__).resolve().parent.parent / "configs" / st.rl_config


def _rl_extra(st: DemoSettings, config: Path, demos: Path, prefix: str = "", states: bool = True) -> list[str]:
    """The demo's own RL settings on top of ``config``: the regression anchor (the SFT's demos) when the update is
    reward-weighted regression, the regression steps and (``states``: the loop draws its own) the train states where
    the preset sets them."""
    from srpo.config import load_config
    from srpo_trainer.rl.config import RLConfig

    extra = []
    if load_config(RLConfig, config if config.is_file() else None, []).update.loss == "rwr":
        extra += [f"update.regression.demos={demos}",
                  f"update.regression.demos_per_task={st.sft_demos_per_task or st.per_task}"]
    if st.train_states and states:
        extra.append(f"rollout.train_states={st.train_states}")
    if st.regression_steps:
        extra.append(f"update.regression.steps={st.regression_steps}")
    return [prefix + e for e in extra]


def _closed_loop(root: Path, policy: Path, demos: Path, tasks: list[str], st: DemoSettings, workers: int, console):
    """Stage 4: one round of ``srpo loop`` through the ROS 2 nodes (skipped, saying why, without rclpy)."""
    console.rule("[bold]4/5 closed loop through ROS 2: export, bring-up, a recorded round, offline SRPO, push")
    try:
        import rclpy  # noqa: F401
    except ImportError:
        console.print("[yellow]skipped: rclpy is not installed (pip install 'srpo[ros]')[/yellow]")
        return None
    import os

    from srpo_cli.loop import loop_config, run_loop

    os.environ.setdefault("ROS_DOMAIN_ID", "42")  # the demo's nodes stay off the default domain
    extra = _rl_extra(st, _rl_config(st), demos, "train.", states=False)
    world_model = root / "srpo" / "world_model" / "final"  # fitted in stage 3: the loop's update reuses it
    if (world_model / "config.json").is_file():
        extra.append(f"train.reward.encoder_path={world_model}")
    cfg = loop_config([f"init={policy}", f"out={root / 'loop'}", "rounds=1", f"episodes_per_round={st.loop_episodes}",
                       f"tasks={tasks}", f"max_steps={st.loop_max_steps}", f"workers={workers}",
                       f"eval_episodes_per_task={st.loop_eval_per_task}",
                       f"train_config={_rl_config(st)}", f"train.reward.world_model.data={demos}",
                       f"train.reward.world_model.steps={st.world_model_steps}", "train.steps=1", *extra])
    import json

    return json.loads((run_loop(cfg) / "loop.json").read_text())


def _before_after(summary: dict, path: Path) -> None:
    """Per-task and overall held-out success before and after, with Wilson 95% intervals; the title carries the
    paired 95% interval of the overall change and says whether it excludes zero."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from srpo_trainer.evaluate import wilson_interval

    tasks = list(summary["per_task_before"])
    n = summary.get("eval_episodes", 0) // max(len(tasks), 1)
    overall = len(tasks) > 1  # one task: its bar is the overall figure
    labels = tasks + ["all tasks"] * overall
    before = [summary["per_task_before"][t] for t in tasks] + [summary["eval_before"]] * overall
    after = [summary["per_task_after"][t] for t in tasks] + [summary["eval_after"]] * overall
    counts = [n] * len(tasks) + [summary.get("eval_episodes", 0)] * overall

    def bars(rates):
        cis = [wilson_interval(round(r * c), c) if c else (r, r) for r, c in zip(rates, counts)]
        y = 100 * np.array(rates)
        return y, [y - 100 * np.array([lo for lo, _ in cis]), 100 * np.array([hi for _, hi in cis]) - y]

    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    for off, rates, label, colour in ((-0.2, before, "SFT (before)", "tab:gray"), (0.2, after, "after SRPO", "tab:blue")):
        y, err = bars(rates)
        ax.bar(x + off, y, 0.4, yerr=err, capsize=3, label=label, color=colour)
    ax.set_xticks(x, labels, rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("held-out success (%), Wilson 95% CI")
    ax.set_ylim(0, 105)
    if "eval_change" in summary:
        d, (lo, hi) = summary["eval_change"], summary["eval_change_ci95"]
        verdict = "excludes 0" if lo > 0 or hi < 0 else "includes 0: no claim"
        title = (f"{summary['steps']} SRPO steps: {100 * summary['eval_before']:.1f}% -> {100 * summary['eval_after']:.1f}%"
                 f", change {100 * d:+.1f} pts (paired 95% CI {100 * lo:+.1f}..{100 * hi:+.1f}, {verdict})")
    else:
        title = f"{summary['steps']} SRPO steps (held-out states)"
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _demos(root: Path, per_task: int, workers: int, console, tasks: list[str]):
    import imageio.v2 as imageio
    from rich.table import Table

    from srpo.episodes.store import EpisodeStore
    from srpo.sim.demos import generate_successful_demos
    from srpo.sim.tabletop.tasks import TASKS

    from rich.progress import Progress

    store = EpisodeStore(root / "demos")
    with Progress(console=console) as progress:
        bar = progress.add_task("expert episodes (perturbed, DART 0.3)", total=per_task * len(tasks))

        def done(_) -> None:
            progress.advance(bar)
            task = progress.tasks[0]
            if task.completed > task.total:  # failed perturbed demos are topped up with new states
                progress.update(bar, total=task.completed)

        generate_successful_demos(store, list(tasks), per_task, "train", 64, dart_noise=0.3, workers=workers,
                                  on_done=done)
    gif_dir = root / "gifs"
    gif_dir.mkdir(parents=True, exist_ok=True)
    records = store.list(split="train", source="sim")
    by_task = defaultdict(list)
    for r in records:
        by_task[r.meta.task].append(r)
    sheet = []
    for task in tasks:
        first = store.load(by_task[task][0])
        gif = gif_dir / f"{task}.gif"
        if not gif.exists():
            imageio.mimsave(gif, list(np.concatenate([first.images[k] for k in first.images], axis=2)), duration=50,
                            loop=0)
        sheet.append((task, first.images["agentview"][0], first.images["agentview"][-1]))
    _contact_sheet(sheet, root / "tasks.png")
    table = Table(title=f"perturbed expert demonstrations in {store.root} (GIFs in {gif_dir}/, {root / 'tasks.png'})")
    for col in ("task", "family", "episodes", "success", "mean length", "mean final progress"):
        table.add_column(col)
    for task in tasks:
        t, rs = TASKS[task], by_task[task]
        table.add_row(task, t.family, str(len(rs)), f"{np.mean([r.meta.success for r in rs]):.0%}",
                      f"{np.mean([r.meta.length for r in rs]):.0f}",
                      f"{np.mean([r.meta.final_progress for r in rs]):.2f}")
    console.print(table)
    for _, problem in store.problems:
        console.print(f"[red]DAMAGED[/red] {problem}")
    return store, store.problems
