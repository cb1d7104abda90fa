"""The ``srpo`` command line.

Examples::

    srpo sim list                                              # tasks, families, instructions
    srpo sim demos --suite tabletop --per-task 5 --split train --out data/demos
    srpo sim render --task open_drawer --out open_drawer.gif   # a scripted rollout as a GIF
    srpo sim render --episode data/demos/open_drawer/<id>.mcap --out ep.gif
    srpo episodes list data/demos --task open_drawer --success true
    srpo episodes verify data/demos                            # full CRC check of every file
    srpo sft --data data/demos --out runs/sft5 demos_per_task=5 steps=3000
    srpo train --config configs/quick.yaml --init runs/sft5/final --out runs/srpo
    srpo eval --policy runs/sft5/final --suite tabletop --episodes-per-task 10 --split heldout --out runs/sft5/eval
    srpo export onnx runs/sft5/final --out exports/sft5           # ONNX graph + policy.json, verified vs PyTorch
    srpo export trt exports/sft5/model.onnx --out exports/sft5 --fp16 --check   # TensorRT engine (GPU only)
    srpo eval --policy exports/sft5 --backend onnxruntime --out runs/sft5/eval_ort
    srpo sim attempts --per-task 20 --split heldout --out data/attempts   # noisy, stopped-early expert attempts
    srpo worldmodel train --data data/demos,data/attempts_train --out runs/wm
    srpo reward fidelity --data data/attempts --encoder builtin,pixels --encoder-path runs/wm/final --out runs/fid
    srpo bringup robot:=sim policy:=exports/sft5                  # the ROS 2 nodes (needs the [ros] extra)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _console():
    from rich.console import Console

    return Console(width=120) if not sys.stdout.isatty() else Console()


def cmd_sim_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from srpo.sim import task_env_id
    from srpo.sim.tabletop.tasks import SPLIT_SIZES, TASKS

    table = Table(title=f"tabletop: {len(TASKS)} tasks (initial states: {SPLIT_SIZES})")
    for col in ("task", "family", "stages", "max steps", "instruction"):
        table.add_column(col, overflow="fold")
    for t in TASKS.values():
        table.add_row(t.name, t.family, str(len(t.stages)), str(t.max_steps), t.instruction)
    console = _console()
    console.print(table)
    console.print(f"gymnasium ids: srpo/Tabletop-v0 (any task) or {task_env_id('<task>')}")
    return 0


def _check_suite(suite: str) -> None:
    if suite != "tabletop":
        raise SystemExit(f"error: --suite {suite!r} is not available; this command supports: tabletop")


def _run_expert_jobs(jobs: list, out: str, workers: int, label: str) -> int:
    """Run scripted-expert jobs with a progress bar, then print the success count per task."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from srpo.sim.demos import generate_demos

    stats: dict[str, list] = defaultdict(list)
    cols = (TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*cols, console=_console()) as progress:
        bar = progress.add_task(label, total=len(jobs))

        def done(result):
            stats[result[0]].append(result[2])
            progress.advance(bar)

        generate_demos(jobs, out, workers=workers, on_done=done)
    for task, ok in sorted(stats.items()):
        print(f"  {task:32s} {sum(ok)}/{len(ok)} successful")
    print(f"wrote {len(jobs)} episodes to {out}")
    return 0


def cmd_sim_demos(args: argparse.Namespace) -> int:
    from srpo.episodes.store import EpisodeStore
    from srpo.sim.demos import plan_demo_jobs
    from srpo.sim.tabletop.tasks import TASKS

    _check_suite(args.suite)
    tasks = args.tasks.split(",") if args.tasks else list(TASKS)
    store = EpisodeStore(args.out)
    try:
        jobs = plan_demo_jobs(store, tasks, args.per_task, args.split, args.image_size, args.dart_noise)
    except (KeyError, ValueError) as exc:
        raise SystemExit(f"error: {exc.args[0]}") from exc
    skipped = len(tasks) * args.per_task - len(jobs)
    if skipped:
        print(f"{skipped} episodes already in {args.out}; generating the remaining {len(jobs)}")
    return _run_expert_jobs(jobs, args.out, args.workers, "expert demos")


def cmd_sim_attempts(args: argparse.Namespace) -> int:
    from srpo.episodes.store import EpisodeStore
    from srpo.sim.demos import plan_attempt_jobs
    from srpo.sim.tabletop.tasks import TASKS

    _check_suite(args.suite)
    tasks = args.tasks.split(",") if args.tasks else list(TASKS)
    store = EpisodeStore(args.out)
    if store.list():
        raise SystemExit(f"error: {args.out} already holds episodes; attempts go to a new folder")
    try:
        jobs = plan_attempt_jobs(tasks, args.per_task, args.split, args.image_size, seed=args.seed)
    except (KeyError, ValueError) as exc:
        raise SystemExit(f"error: {exc.args[0]}") from exc
    return _run_expert_jobs(jobs, args.out, args.workers, "expert attempts")


def cmd_worldmodel_train(args: argparse.Namespace) -> int:
    from srpo.config import ConfigError, load_config
    from srpo_trainer.world_model import WorldModelTrainConfig, train_world_model

    overrides = _with_flags(args, "data", "out")
    try:
        cfg = load_config(WorldModelTrainConfig, args.config, overrides)
        final = train_world_model(cfg)
    except (ConfigError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    print(f"world model: {final}")
    return 0


def cmd_reward_fidelity(args: argparse.Namespace) -> int:
    from srpo.episodes.store import EpisodeStore
    from srpo.config import ConfigError, load_config
    from srpo_trainer.encoders import EncoderError, load_encoder
    from srpo_trainer.reward_fidelity import FidelityConfig, load_task_videos, reward_fidelity, write_fidelity

    overrides = list(args.overrides) + [f"data={args.data}"]
    if args.split:
        overrides.append(f"split={args.split}")
    try:
        cfg = load_config(FidelityConfig, args.config, overrides)
        encoders = [load_encoder(name.strip(), args.encoder_path if name.strip() in ("builtin", "vjepa2", "image")
                                 else None) for name in args.encoder.split(",")]
        videos = load_task_videos(EpisodeStore(cfg.data), cfg)
        results = [reward_fidelity(enc, videos, cfg) for enc in encoders]
    except (ConfigError, EncoderError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    write_fidelity(results, args.out)
    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    for res in results:
        print(f"{res['encoder']:8s} Spearman rho: all failures {fmt(res['spearman_overall'])}, mean over tasks "
              f"{fmt(res['spearman_task_mean'])}, within groups {fmt(res['spearman_within_group'])}; "
              f"{res['failures']} failures, {res['trajectories_per_s']:.0f} trajectories/s")
        for task, r in res["per_task"].items():
            rho_t = "  n/a" if r["spearman"] is None else f"{r['spearman']:5.2f}"
            print(f"    {task:32s} rho {rho_t}  ({r['failures']} failures, {r['successes']} successes, "
                  f"{r['clusters']} clusters{', fallback ' + r['fallback'] if r['fallback'] else ''})")
    print(f"-> {args.out}/fidelity.json, fidelity.png")
    return 0


def _frames_side_by_side(images: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([images[k] for k in images], axis=2)


def cmd_sim_render(args: argparse.Namespace) -> int:
    import imageio.v2 as imageio

    if args.perturb and str(args.out).endswith(".png"):
        return _perturbation_sheet(args)
    if args.episode:
        from srpo.episodes.mcap_io import CorruptEpisodeError, read_episode

        try:
            ep = read_episode(args.episode)
        except CorruptEpisodeError as exc:
            raise SystemExit(f"error: {exc}") from exc
    else:
        from srpo.sim.rollout import expert_episode
        from srpo.sim.tabletop.env import TabletopEnv

        _check_suite(args.suite)
        try:
            env = TabletopEnv(task=args.task, image_size=args.size, perturb=args.perturb)
            ep = expert_episode(env, args.task, args.split, args.init_state, noise_std=args.noise)
        except (KeyError, ValueError) as exc:
            raise SystemExit(f"error: {exc.args[0]}") from exc
        env.close()
    frames = _frames_side_by_side(ep.images)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(out, list(frames), duration=1000 / args.fps, loop=0)
    m = ep.meta
    print(f"{m.task} ({m.instruction!r}) {m.split} #{m.init_state_id}: success={m.success}, {m.length} steps -> {out}")
    return 0


def _perturbation_sheet(args: argparse.Namespace) -> int:
    """A contact sheet: one row per named dimension, levels 0-3 across, both cameras of the first observation of
    (task, held-out state), the instruction under each cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from srpo.sim.tabletop.env import TabletopEnv
    from srpo.sim.tabletop.perturbations import DIMENSIONS, LEVELS, PerturbationError, parse_perturbations

    names = list(DIMENSIONS) if args.perturb == "all" else [p.split(":")[0].strip() for p in args.perturb.split(",")]
    try:
        for name in names:
            parse_perturbations({name: 1})
        if args.split != "heldout":
            raise PerturbationError("perturbations apply to held-out states only (--split heldout)")
    except PerturbationError as exc:
        raise SystemExit(f"error: {exc}") from exc
    fig, axes = plt.subplots(len(names), len(LEVELS), figsize=(3.2 * len(LEVELS), 1.95 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        for c, level in enumerate(LEVELS):
            env = TabletopEnv(task=args.task, image_size=args.size, perturb={name: level})
            obs, info = env.reset(options={"split": "heldout", "init_state_id": args.init_state})
            env.close()
            ax = axes[r, c]
            ax.imshow(np.concatenate([obs["agentview"], obs["wrist"]], axis=1))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f'"{info["instruction"]}"', fontsize=6)
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
            if r == 0:
                ax.set_title(f"level {level}", fontsize=9)
    fig.suptitle(f"{args.task}, held-out state {args.init_state}: agentview | wrist at reset", fontsize=10)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"{len(names)} dimensions x {len(LEVELS)} levels -> {out}")
    return 0


def cmd_episodes_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from srpo.episodes.store import EpisodeStore

    store = EpisodeStore(args.root)
    records = store.list(task=args.task, split=args.split, success=args.success, source=args.source,
                         labelled=False if args.unlabelled else None)
    counts = Counter((r.meta.task, r.meta.source, r.meta.split, r.meta.success) for r in records)
    table = Table(title=f"{len(records)} episodes in {args.root}")
    for col in ("task", "source", "split", "success", "episodes"):
        table.add_column(col)
    for (task, source, split, success), n in sorted(counts.items()):
        table.add_row(task, source, split, "unlabelled" if success is None else str(success), str(n))
    _console().print(table)
    for path, problem in store.problems:
        print(f"DAMAGED: {problem}", file=sys.stderr)
    return 1 if store.problems else 0


def cmd_episodes_verify(args: argparse.Namespace) -> int:
    from srpo.episodes.store import EpisodeStore

    store = EpisodeStore(args.root)
    bad = store.verify()
    for _, problem in bad:
        print(f"DAMAGED: {problem}", file=sys.stderr)
    print(f"{len(store.files()) - len(bad)} intact, {len(bad)} damaged")
    return 1 if bad else 0


def cmd_episodes_label(args: argparse.Namespace) -> int:
    from srpo.episodes.mcap_io import CorruptEpisodeError, label_episode

    failed = 0
    for path in args.paths:
        try:
            meta = label_episode(path, args.success)
        except CorruptEpisodeError as exc:
            print(f"not labelled: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{path}: {meta.task} #{meta.init_state_id} success={meta.success}")
    return 1 if failed else 0


def cmd_episodes_recover(args: argparse.Namespace) -> int:
    from srpo.episodes.mcap_io import write_episode
    from srpo.episodes.schema import EpisodeSchemaError
    from srpo.robot.recorder import JOURNAL_SUFFIX, recover_journal

    failed = 0
    for journal in args.journals:
        path = Path(journal)
        if not path.name.endswith(JOURNAL_SUFFIX):
            print(f"not recovered: {path} is not a recorder journal (*{JOURNAL_SUFFIX})", file=sys.stderr)
            failed += 1
            continue
        try:
            episode = recover_journal(path)
        except (EpisodeSchemaError, OSError, ValueError) as exc:
            print(f"not recovered: {path}: {exc}", file=sys.stderr)
            failed += 1
            continue
        out = write_episode(path.with_name(path.name[: -len(JOURNAL_SUFFIX)] + ".mcap"), episode)
        if not args.keep_journal:
            path.unlink()
        print(f"{path} -> {out}: {episode.length} steps, {0 if episode.chunk_steps is None else len(episode.chunk_steps)}"
              " decisions, success unknown (label it with `srpo episodes label`)")
    return 1 if failed else 0


def cmd_data_import_libero(args: argparse.Namespace) -> int:
    from srpo.sim.libero.hdf5_import import import_libero_file, read_file_info

    try:  # every file is checked before anything is written
        for path in args.files:
            read_file_info(path, args.suite)
    except (ImportError, OSError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    total = skipped = 0
    for path in args.files:
        try:
            result = import_libero_file(path, args.out, image_size=args.image_size, suite=args.suite,
                                        progress=sys.stderr.isatty())
        except (OSError, ValueError) as exc:
            raise SystemExit(f"error: {exc}") from exc
        total, skipped = total + len(result.written), skipped + len(result.skipped)
        info = result.info
        reasons = "; ".join(f"{demo}: {why}" for demo, why in result.skipped)
        print(f"{path}: {len(result.written)} demos imported as {info.suite}/{info.task}"
              + (f", {len(result.skipped)} skipped ({reasons})" if result.skipped else ""))
    print(f"imported {total} episodes from {len(args.files)} files into {args.out}"
          + (f" ({skipped} demos skipped)" if skipped else ""))
    return 0 if total else 1


def cmd_registry_publish(args: argparse.Namespace) -> int:
    import json as _json

    from srpo.runtime.policy import ModelIntegrityError
    from srpo.runtime.registry import PolicyRegistry

    try:
        metrics = _json.loads(args.metrics) if args.metrics else {}
        entry = PolicyRegistry(args.registry).publish(args.export, args.checkpoint, args.parent, metrics)
    except (ModelIntegrityError, FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"not published: {exc}", file=sys.stderr)
        return 1
    print(f"published {entry.version} -> {entry.path} ({len(entry.files)} files, parent {entry.parent})")
    return 0


def cmd_registry_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from srpo.runtime.policy import ModelIntegrityError
    from srpo.runtime.registry import PolicyRegistry

    table = Table(title=f"policy registry {args.registry}")
    for col in ("version", "parent", "created", "verified", "metrics"):
        table.add_column(col)
    bad = 0
    for e in PolicyRegistry(args.registry).entries():
        try:
            e.verify()
            ok = "yes"
        except ModelIntegrityError as exc:
            ok, bad = f"NO: {exc}", bad + 1
        table.add_row(e.version, str(e.parent), time.strftime("%Y-%m-%d %H:%M", time.localtime(e.created_unix)), ok,
                      ", ".join(f"{k}={v}" for k, v in e.metrics.items()))
    _console().print(table)
    return 1 if bad else 0


def _with_flags(args: argparse.Namespace, *names: str) -> list[str]:
    """``key=value`` overrides from the command's own flags (``--out X`` is ``out=X``), after the free overrides."""
    return list(args.overrides) + [f"{n}={getattr(args, n)}" for n in names if getattr(args, n)]


def cmd_sft(args: argparse.Namespace) -> int:
    from srpo.config import ConfigError, load_config
    from srpo_trainer.sft import SFTConfig, train_sft

    overrides = _with_flags(args, "data", "out")
    try:
        cfg = load_config(SFTConfig, args.config, overrides)
        final = train_sft(cfg)
    except (ConfigError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    print(f"final policy: {final}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from srpo.config import ConfigError, load_config
    from srpo_trainer.policies import CheckpointError
    from srpo_trainer.rl.config import RLConfig
    from srpo_trainer.rl.trainer import RunConfigError, train_rl

    overrides = _with_flags(args, "init", "out") + ([f"offline.episodes={args.episodes}"] if args.episodes else [])
    try:
        cfg = load_config(RLConfig, args.config, overrides)
        if cfg.offline.episodes:
            from srpo_trainer.rl.offline_trainer import train_offline

            run = train_offline(cfg)
        else:
            run = train_rl(cfg)
    except (ConfigError, RunConfigError, CheckpointError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    print(f"run: {run} (final policy in {run / 'final'}, metrics in {run / 'metrics.jsonl'})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from srpo_cli.demo import PRESETS, run

    settings = PRESETS["smoke" if args.smoke else "full" if args.full else "default"]
    given = {k: getattr(args, k) for k in ("per_task", "sft_steps", "rl_steps", "eval_per_task", "loop_episodes")
             if getattr(args, k) is not None}
    return run(args.out, replace(settings, **given), args.workers)


def cmd_loop(args: argparse.Namespace) -> int:
    from srpo.config import ConfigError
    from srpo_cli.loop import loop_config, run_loop
    from srpo_trainer.policies import CheckpointError

    flags = {"robot": args.robot, "rounds": args.rounds, "init": args.init, "out": args.out,
             "episodes_per_round": args.episodes_per_round}
    overrides = [f"{k}={v}" for k, v in flags.items() if v is not None] + list(args.overrides)
    try:
        cfg = loop_config(overrides, args.config)
    except (ConfigError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    try:
        import rclpy  # noqa: F401
    except ImportError:
        raise SystemExit("error: srpo loop drives the ROS 2 nodes: install the ROS 2 extra (pip install 'srpo[ros]')")
    try:
        run_loop(cfg)
    except (ConfigError, CheckpointError, TimeoutError, RuntimeError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    except KeyboardInterrupt:
        # run_loop stopped the nodes on the way out; a resumed loop discards the unfinished round's recordings
        print(f"interrupted: the nodes are stopped; the same command resumes from the last finished round in {cfg.out}",
              file=sys.stderr)
        return 130
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from srpo.config import ConfigError, load_config
    from srpo_trainer.evaluate import EvalConfig, evaluate
    from srpo.runtime import BackendUnavailable, ModelIntegrityError, load_inference_policy
    from srpo_trainer.policies import CheckpointError

    # flags override the YAML only when given; key=value overrides come last and win over both
    flags = {"suite": args.suite, "split": args.split, "episodes_per_task": args.episodes_per_task,
             "workers": args.workers, "tasks": "[" + ",".join(f"'{t.strip()}'" for t in args.tasks.split(",")) + "]" if args.tasks else None,
             "max_steps": args.max_steps, "fast_render": "true" if args.fast_render else None,
             "perturb": f"'{args.perturb}'" if args.perturb else None}
    overrides = [f"{k}={v}" for k, v in flags.items() if v is not None] + list(args.overrides)
    try:
        cfg = load_config(EvalConfig, args.config, overrides)
        from srpo.spec import TABLETOP_SPEC

        policy = load_inference_policy(args.policy, backend=args.backend)
        size = policy.spec.observation.cameras[0].height
        mismatch = policy.spec.mismatch(TABLETOP_SPEC.with_image_size(size, size))
        if mismatch:
            raise CheckpointError(f"{args.policy} was trained for another robot spec: {mismatch}")
        if args.perturbations:
            from srpo_trainer.evaluate import evaluate_robustness

            report = evaluate_robustness(policy, cfg, [p for p in args.perturbations.split(",") if p], args.out)
        elif args.probe:
            from srpo_trainer.evaluate import instruction_probe

            report = instruction_probe(policy, cfg, args.out, pairs=args.probe)
        else:
            summary = evaluate(policy, cfg, args.out)
    except (ConfigError, CheckpointError, BackendUnavailable, ModelIntegrityError, ValueError, ImportError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    if args.probe:
        o = report["overall"]
        print(f"{policy.version}: given another task's instruction on {o['episodes']} held-out starts, did the "
              f"instructed task {o['instructed']:.1%}, the layout's own task {o['original']:.1%}, neither "
              f"{o['neither']:.1%} -> {args.out}/probe.json")
        for pair, r in report["pairs"].items():
            print(f"  {pair:52s} instructed {r['instructed']:6.1%}  original {r['original']:6.1%}")
        return 0
    if args.perturbations:
        b = report["base"]
        print(f"{policy.version} on {cfg.suite} ({cfg.split}): {b['success_rate']:.1%} (95% CI {b['ci95'][0]:.1%}-"
              f"{b['ci95'][1]:.1%}) -> {args.out}/robustness.json")
        for p, r in report["perturbed"].items():
            lo, hi = r["ci95"]
            drop = (f"relative drop {r['relative_drop']:.1%} (95% CI {lo:.1%}-{hi:.1%})" if b["success_rate"] > 0
                    else "relative drop undefined: the unperturbed suite had no success")
            print(f"  {r['suite']:28s} {r['success_rate']:6.1%}  {drop}")
        return 0
    lo, hi = summary["ci95"]
    print(f"{policy.version} [{policy.backend} on {policy.device}]: success {summary['success_rate']:.1%} (95% CI {lo:.1%}-{hi:.1%}), "
          f"mean progress {summary['mean_progress']:.2f}, {summary['episodes']} episodes -> {args.out}/eval.json")
    for task, r in summary["per_task"].items():
        print(f"  {task:32s} {r['success_rate']:6.1%}  progress {r['mean_progress']:.2f}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if args.export_command == "onnx":
        from srpo_export.to_onnx import main as export_main
    else:
        from srpo_export.to_trt import main as export_main
    return export_main(args.args)


EXPORT_COMMANDS = ("onnx", "trt")


def cmd_bringup(argv: list[str]) -> int:
    """``srpo bringup robot:=sim policy:=PATH ...``: the ROS 2 nodes as ``ros2 launch srpo bringup.launch.py`` starts
    them (``key:=value`` arguments, which argparse cannot take, so ``main`` dispatches here first)."""
    from srpo_ros.bringup import USAGE, parse_launch_args, run_bringup

    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    try:
        parse_launch_args(argv)
    except ValueError as exc:
        print(f"srpo bringup: error: {exc}", file=sys.stderr)
        return 2
    try:
        import rclpy  # noqa: F401
    except ImportError:
        print("srpo bringup: error: rclpy is not importable: install the ROS 2 extra (pip install 'srpo[ros]') or "
              "source a ROS 2 Jazzy install", file=sys.stderr)
        return 2
    return run_bringup(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="srpo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("sim", help="the built-in tabletop simulation suite").add_subparsers(dest="sim_command", required=True)
    p = sim.add_parser("list", help="tasks with their families and instructions")
    p.set_defaults(func=cmd_sim_list)
    p = sim.add_parser("demos", help="scripted-expert demonstrations into an episode store")
    p.add_argument("--suite", default="tabletop")
    p.add_argument("--per-task", type=int, required=True, help="episodes per task (initial states 0..N-1)")
    p.add_argument("--split", default="train", choices=("train", "heldout"))
    p.add_argument("--out", required=True, help="episode store folder")
    p.add_argument("--tasks", default="", help="comma-separated task names (default: all)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--dart-noise", type=float, default=0.0,
                   help="perturb the expert's motion with this noise std (DART-style demos that show recoveries)")
    p.add_argument("--workers", type=int, default=2)
    p.set_defaults(func=cmd_sim_demos)
    p = sim.add_parser("attempts", help="imperfect expert attempts (noise, early stops) for reward-fidelity studies")
    p.add_argument("--suite", default="tabletop")
    p.add_argument("--per-task", type=int, required=True, help="initial states per task (each gets 9 episodes)")
    p.add_argument("--split", default="heldout", choices=("train", "heldout"))
    p.add_argument("--out", required=True, help="a new episode store folder")
    p.add_argument("--tasks", default="", help="comma-separated task names (default: all)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_sim_attempts)
    p = sim.add_parser("render", help="an expert rollout, or a stored episode, as an animated GIF")
    p.add_argument("--task", default="place_red_cube_in_tray")
    p.add_argument("--suite", default="tabletop")
    p.add_argument("--episode", help="render this episode file instead of running the expert")
    p.add_argument("--split", default="heldout", choices=("train", "heldout"))
    p.add_argument("--init-state", type=int, default=0)
    p.add_argument("--size", type=int, default=128, help="camera resolution for a new rollout")
    p.add_argument("--noise", type=float, default=0.0, help="expert action noise std")
    p.add_argument("--perturb", help="held-out states: DIM:LEVEL[,...] perturbs the rollout; with --out X.png, a "
                   "contact sheet of the named dimensions (or 'all') at levels 0-3")
    p.add_argument("--fps", type=float, default=20.0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_sim_render)

    p = sub.add_parser("demo", help="the end-to-end demo: demos, few-demo SFT, world model, SRPO in sim, export, "
                                    "ROS 2 bring-up, a recorded round, offline SRPO, push (cached stages; re-runs "
                                    "resume)")
    p.add_argument("--out", default="outputs/demo")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--smoke", action="store_true", help="every stage at toy size (CI)")
    size.add_argument("--full", action="store_true", help="the learning benchmark's settings (hours)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--per-task", type=int, help="perturbed expert demos per task")
    p.add_argument("--sft-steps", type=int)
    p.add_argument("--rl-steps", type=int)
    p.add_argument("--eval-per-task", type=int, help="held-out states per task, before and after")
    p.add_argument("--loop-episodes", type=int, help="episodes recorded through ROS 2 in the closed-loop round")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("sft", help="supervised fine-tuning of the VLA policy on an episode store")
    p.add_argument("--config", help="YAML file with SFTConfig fields")
    p.add_argument("--data", help="episode store (same as data=...)")
    p.add_argument("--out", help="run folder (same as out=...)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. demos_per_task=5 policy.d_model=96")
    p.set_defaults(func=cmd_sft)
    p = sub.add_parser("train", help="SRPO / GRPO reinforcement learning from an SFT checkpoint")
    p.add_argument("--config", help="YAML file with RLConfig fields (see configs/)")
    p.add_argument("--init", help="initial policy checkpoint (same as init=...)")
    p.add_argument("--out", help="run folder (same as out=...); re-running resumes")
    p.add_argument("--episodes", help="train offline from these recorded episode stores, comma-separated (same as "
                                      "offline.episodes=...): no simulator rollouts")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. reward.mode=binary rollout.group_size=8")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("loop", help="the closed loop through ROS 2: record a round, offline SRPO, export, push; repeat")
    p.add_argument("--robot", choices=("sim", "real"))
    p.add_argument("--rounds", type=int)
    p.add_argument("--init", help="the checkpoint the first round acts with")
    p.add_argument("--out", help="loop folder (registry, episodes, rounds, loop.json, loop.png); re-running resumes")
    p.add_argument("--episodes-per-round", type=int)
    p.add_argument("--config", help="YAML with LoopConfig fields")
    p.add_argument("overrides", nargs="*", help="key=value (LoopConfig) and train.key=value (the offline update), "
                                                 "e.g. tasks=[press_button] train.update.lr=3e-5")
    p.set_defaults(func=cmd_loop)

    p = sub.add_parser("eval", help="evaluate a policy checkpoint on the simulation suite")
    p.add_argument("--policy", required=True, help="checkpoint folder (config.json + model.safetensors) or an export "
                   "folder (model.onnx + policy.json, optionally a TensorRT engine)")
    p.add_argument("--backend", default="auto", choices=("auto", "tensorrt", "onnxruntime", "torch"),
                   help="inference backend (auto: TensorRT, then ONNX Runtime, then torch; the choice is printed)")
    p.add_argument("--suite", help="simulation suite: tabletop (default), libero_spatial, libero_object, libero_goal, "
                   "libero_10, libero_90 or a LIBERO-PRO suite such as libero_spatial_swap (needs srpo[libero])")
    p.add_argument("--episodes-per-task", type=int, help="held-out states per task (default: 10)")
    p.add_argument("--split", choices=("train", "heldout", "standard"),
                   help="initial-state split (default: heldout; standard: LIBERO's published 50 states, which overlap "
                   "the training states)")
    p.add_argument("--max-steps", type=int, help="cut episodes at this many steps (not the benchmark's protocol)")
    p.add_argument("--fast-render", action="store_true", help="LIBERO: no shadows/MSAA/reflections (~3x faster on "
                   "a CPU, other pixels; recorded in the results)")
    p.add_argument("--perturbations", help="LIBERO-PRO: comma-separated lan,object,swap,task: evaluate the suite and "
                   "each perturbed version, report the relative drop (robustness.json, robustness.png)")
    p.add_argument("--perturb", help="tabletop, held-out states: DIM:LEVEL[,DIM:LEVEL...] with DIM in camera, "
                   "lighting, table, noise, robot_init, layout, language and LEVEL 0-3 (0: unperturbed)")
    p.add_argument("--probe", nargs="?", const="next", choices=("next", "all"),
                   help="tabletop instruction-following probe: each task's held-out starts with another task's "
                   "instruction (next: the next task's; all: every pair); writes probe.json and probe.png")
    p.add_argument("--tasks", default="", help="comma-separated tasks (default: all)")
    p.add_argument("--workers", type=int, help="simulator processes (default: 2)")
    p.add_argument("--config", help="YAML file with EvalConfig fields (flags and key=value overrides win over it)")
    p.add_argument("--out", required=True)
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. execute_steps=4 temperature=1.0")
    p.set_defaults(func=cmd_eval)

    exp = sub.add_parser("export", help="checkpoint -> ONNX -> TensorRT engine, each verified").add_subparsers(
        dest="export_command", required=True)
    p = exp.add_parser("onnx", help="CKPT --out DIR [--data EPISODES] [--atol X]: the ONNX graph + policy.json, "
                       "verified against PyTorch", add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_export)
    p = exp.add_parser("trt", help="model.onnx --out DIR [--fp16] [--min/opt/max-batch N] [--check]: a TensorRT "
                       "engine (needs tensorrt and an NVIDIA GPU)", add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bringup", help="[robot:=sim|real] [policy:=PATH] [backend:=B] [config:=YAML]: start the ROS 2 "
                       "nodes (the [ros] extra), as `ros2 launch srpo bringup.launch.py` does", add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=lambda a: cmd_bringup(a.args))

    wm = sub.add_parser("worldmodel", help="the built-in latent world model").add_subparsers(dest="wm_command", required=True)
    p = wm.add_parser("train", help="train the world model on episodes (frames and actions; no labels)")
    p.add_argument("--config", help="YAML file with WorldModelTrainConfig fields")
    p.add_argument("--data", help="episode store(s), comma-separated (same as data=...)")
    p.add_argument("--out", help="run folder (same as out=...)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. steps=2000 model.latent_dim=32")
    p.set_defaults(func=cmd_worldmodel_train)

    rw = sub.add_parser("reward", help="the progress reward").add_subparsers(dest="reward_command", required=True)
    p = rw.add_parser("fidelity", help="Spearman correlation of the progress reward with ground-truth progress")
    p.add_argument("--data", required=True, help="episode store with successes and failures (srpo sim attempts)")
    p.add_argument("--encoder", default="builtin", help="comma-separated: builtin, vjepa2, image, pixels, random")
    p.add_argument("--encoder-path", help="world-model folder (builtin) or Hugging Face model dir (vjepa2, image)")
    p.add_argument("--split", help="initial-state split of the episodes to score (default heldout)")
    p.add_argument("--config", help="YAML file with FidelityConfig fields (reward constants under reward:)")
    p.add_argument("--out", required=True)
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. reward.dbscan_eps=1.0")
    p.set_defaults(func=cmd_reward_fidelity)

    reg = sub.add_parser("registry", help="the policy registry: versions the nodes can be pushed").add_subparsers(
        dest="registry_command", required=True)
    p = reg.add_parser("publish", help="copy an ONNX export (and its checkpoint) in as a new, immutable version")
    p.add_argument("export", help="an export folder (srpo export onnx)")
    p.add_argument("--registry", required=True)
    p.add_argument("--checkpoint", help="the source checkpoint folder, kept beside the export")
    p.add_argument("--parent", help="the version this one was trained from")
    p.add_argument("--metrics", help='JSON, e.g. \'{"success": 0.42}\'')
    p.set_defaults(func=cmd_registry_publish)
    p = reg.add_parser("list", help="every version with its parent, metrics and a full checksum verification")
    p.add_argument("registry")
    p.set_defaults(func=cmd_registry_list)

    eps = sub.add_parser("episodes", help="inspect and label an episode store").add_subparsers(dest="episodes_command", required=True)
    p = eps.add_parser("list", help="count episodes by task, source, split and success")
    p.add_argument("root")
    p.add_argument("--task")
    p.add_argument("--split")
    p.add_argument("--source", choices=("sim", "robot"))
    p.add_argument("--success", type=_bool)
    p.add_argument("--unlabelled", action="store_true", help="only episodes whose success is not known yet")
    p.set_defaults(func=cmd_episodes_list)
    p = eps.add_parser("label", help="set the success label of episodes (e.g. robot episodes recorded unlabelled)")
    p.add_argument("paths", nargs="+", help="episode files")
    p.add_argument("--success", type=_bool, required=True, help="true or false")
    p.set_defaults(func=cmd_episodes_label)
    p = eps.add_parser("recover", help="rebuild the episodes a killed recorder left as *.mcap.partial journals")
    p.add_argument("journals", nargs="+", help="journal files")
    p.add_argument("--keep-journal", action="store_true", help="keep the journal after writing the episode")
    p.set_defaults(func=cmd_episodes_recover)
    p = eps.add_parser("verify", help="fully read every episode and report damaged files")
    p.add_argument("root")
    p.set_defaults(func=cmd_episodes_verify)

    data = sub.add_parser("data", help="import demonstrations from other formats").add_subparsers(
        dest="data_command", required=True)
    p = data.add_parser("import-libero", help="official LIBERO HDF5 demos (FILE_demo.hdf5...) -> episodes in an "
                                              "episode store; bad demos are reported and skipped")
    p.add_argument("files", nargs="+", help="LIBERO/robomimic HDF5 files, one task each")
    p.add_argument("--out", required=True, help="episode store to write into (DIR/<task>/<id>.mcap)")
    p.add_argument("--image-size", type=int, metavar="N", help="resize frames to N x N (area interpolation) to "
                                                              "match a policy's spec (default: the file's resolution)")
    p.add_argument("--suite", help="suite name for the episodes (default: from the BDDL path, e.g. libero_spatial)")
    p.set_defaults(func=cmd_data_import_libero)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) >= 2 and argv[0] == "export" and argv[1] in EXPORT_COMMANDS:
        # the exporters own their flags (they also run as export/*.py); argparse cannot forward a leading --flag
        return cmd_export(argparse.Namespace(export_command=argv[1], args=argv[2:]))
    if argv and argv[0] == "bringup":
        return cmd_bringup(argv[1:])  # ros2-launch style key:=value arguments
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
