"""Offline SRPO: one update of a policy from the episodes the recorder wrote (``srpo train --episodes DIR``).

    srpo train --config configs/srpo.yaml --init REGISTRY/VERSION/checkpoint --episodes runs/loop/episodes \\
        offline.registry=REGISTRY --out runs/offline

A robot cannot roll out a fresh group on demand, so the groups come from what was recorded:

1. **select** (``offline.select_offline``): labelled episodes with their decisions and acting distribution, from the
   current version or one of its last ``offline.max_version_lag`` ancestors (the registry's parent links). Every
   other episode is excluded with its reason, printed and written to ``selection.json``;
2. **group** (``offline.offline_groups``): per task and initial state where known (sim), else per task within a
   collection round (each ``--episodes`` folder, or ``round_*`` sub-folder, is a round);
3. **reward**: exactly as online (``trainer.step_rewards``): successes 1 x coef, failures the progress reward against
   their group's successes (and the success memory) in the world model's latent space, fitted first on
   ``reward.world_model.data`` plus the recorded episodes when no ``reward.encoder_path`` is given;
4. **advantage and update**: as online, with the off-policy correction of ``trainer._prepare``: PPO-clip against
   the proximal policy (the parameters before the update), each decision weighed by its truncated importance
   weight against the recorded behaviour policy, over the rows the arm actually executed (``update.loss=ppo_clip``);
   or reward-weighted regression on the recorded trajectories (``update.loss=rwr``: each decision's observation ->
   the chunk rows it sampled and the arm ran, before the safety filter's edits: ``offline.decided_view``; no ratio,
   the version filter still applies). ``steps`` such updates are run on the
   same data.

The run folder holds ``config.yaml``, ``selection.json``, ``metrics.jsonl``, ``world_model/`` when one was fitted,
``final/`` (stamped ``offline:<run>@<weights>``) and ``summary.json``; with ``eval_episodes_per_task`` > 0 (sim)
the held-out success before and after, with intervals, exactly as online.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from srpo.episodes.schema import Episode
from srpo.episodes.store import EpisodeStore
from srpo_trainer.rl.config import RLConfig
from srpo_trainer.rl.offline import (OfflineSelection, accepted_lineage, decided_view, offline_groups,
                                     select_offline)
from srpo_trainer.rl.trainer import (METRICS_FILE, RegressionBuffer, RunConfigError, advantages_of,
                                     evaluate_heldout, fit_world_model, keep_mask, load_reward_encoder, log_metrics,
                                     plot_run, ppo_update, print_summary, regression_update, regression_weights,
                                     step_rewards, summarise_run)

SELECTION_FILE = "selection.json"


def episode_rounds(spec: str) -> list[Path]:
    """The collection rounds of ``offline.episodes``: each comma-separated folder, or its ``round_*`` sub-folders
    (in name order) when it has any."""
    rounds = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        root = Path(part)
        if not root.is_dir():
            raise RunConfigError(f"offline.episodes: {root} is not a directory")
        subs = sorted(d for d in root.iterdir() if d.is_dir() and d.name.startswith("round_"))
        rounds += subs or [root]
    if not rounds:
        raise RunConfigError("offline.episodes names no folder")
    return rounds


def load_rounds(rounds: list[Path]) -> tuple[list[Episode], list[int], list[tuple[Path, str]]]:
    """Every readable episode with the index of its round; damaged files are reported, not fatal."""
    episodes, index, problems = [], [], []
    for r, root in enumerate(rounds):
        store = EpisodeStore(root)
        for path in store.files():
            try:
                episodes.append(store.load(path))
            except Exception as exc:  # noqa: BLE001 - one damaged file must not stop the run; it is reported
                problems.append((path, f"unreadable: {exc}"))
                continue
            index.append(r)
    return episodes, index, problems


def registry_parents(registry: str | None) -> dict[str, str | None]:
    if not registry:
        return {}
    from srpo.runtime.registry import PolicyRegistry

    return {e.version: e.parent for e in PolicyRegistry(registry).entries()}


def select_for(cfg: RLConfig, current_version: str, episodes: list[Episode]) -> tuple[OfflineSelection, list[str]]:
    """The accepted versions (the lineage of ``current_version`` plus ``offline.accept_versions``) and the
    selection of ``episodes`` against them."""
    o = cfg.offline
    accepted = accepted_lineage(current_version, registry_parents(o.registry), o.max_version_lag)
    accepted += [v for v in o.accept_versions if v not in accepted]
    return select_offline(episodes, accepted), accepted


def _print_selection(selection: OfflineSelection, accepted: list[str], total: int, problems: list) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"offline episodes: {len(selection.kept)} of {total} used (accepted versions: "
                        f"{', '.join(accepted)})")
    table.add_column("excluded because")
    table.add_column("episodes", justify="right")
    for reason, n in selection.reasons.most_common():
        table.add_row(reason, str(n))
    for path, why in problems:
        table.add_row(f"{path.name}: {why}", "1")
    Console().print(table)


def train_offline(cfg: RLConfig, progress: bool = True) -> Path:
    """Update ``cfg.init`` from the episodes in ``cfg.offline.episodes``; returns the run folder. Raises
    ``RunConfigError`` naming the problem (and every exclusion reason) when nothing usable was recorded."""
    from torch.utils.tensorboard import SummaryWriter

    from srpo_trainer.policies import load_policy
    from srpo_trainer.policies.base import stamp_version
    from srpo_trainer.progress_reward import SuccessMemory
    from srpo_trainer.rl.exploration import ExplorationPolicy
    from srpo_trainer.rl.trainer import check_run
    from srpo_trainer.run_checkpoints import open_run

    if not cfg.offline.episodes:
        raise RunConfigError("offline training needs offline.episodes (srpo train --episodes DIR)")
    check_run(cfg)
    rounds = episode_rounds(cfg.offline.episodes)
    torch.set_num_threads(cfg.threads)
    try:
        run = open_run(cfg.out, cfg)
    except ValueError as exc:
        raise RunConfigError(str(exc)) from exc
    if (run / "final" / "config.json").is_file() and (run / "summary.json").is_file():
        print(f"{run} is complete (final/ and summary.json exist); nothing to do")
        return run

    policy = load_policy(cfg.init)
    current = policy.version
    episodes, round_index, problems = load_rounds(rounds)
    selection, accepted = select_for(cfg, current, episodes)
    _print_selection(selection, accepted, len(episodes) + len(problems), problems)
    kept = selection.kept
    kept_ids = {id(e) for e in kept}
    kept_rounds = [r for e, r in zip(episodes, round_index) if id(e) in kept_ids]
    record = {"accepted_versions": accepted, "rounds": [str(r) for r in rounds], "used": len(kept),
              "excluded": selection.excluded, "reasons": dict(selection.reasons),
              "unreadable": {str(p): why for p, why in problems}}
    (run / SELECTION_FILE).write_text(json.dumps(record, indent=2))
    if not kept:
        raise RunConfigError(f"no usable episode in {cfg.offline.episodes}: "
                             + "; ".join(f"{n} {why}" for why, n in selection.reasons.most_common())
                             + (f"; {len(problems)} unreadable" if problems else ""))

    groups = offline_groups(kept, kept_rounds)
    success = np.array([bool(e.meta.success) for e in kept])
    explore = ExplorationPolicy(policy, cfg.exploration)
    optimizer = torch.optim.AdamW(explore.parameters(), lr=cfg.update.lr, weight_decay=cfg.update.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    memory = SuccessMemory(cfg.reward.progress.memory_size) if cfg.reward.progress.memory_size > 0 else None

    t0 = time.perf_counter()
    embeddings = None
    if cfg.reward.mode == "srpo":
        encoder_path = cfg.reward.encoder_path
        if cfg.reward.encoder == "builtin" and not encoder_path:
            encoder_path = str(fit_world_model(cfg, run, rounds[0]))
        encoder = load_reward_encoder(cfg, encoder_path)
        embeddings = encoder.encode([e.held_frames(cfg.reward.camera) for e in kept])
    elif cfg.reward.mode == "oracle" and any(e.meta.final_progress is None for e in kept):
        raise RunConfigError("reward.mode=oracle needs the simulator's progress, which these episodes lack")
    rewards, diags = step_rewards(cfg, kept, groups, embeddings, memory)
    t_reward = time.perf_counter() - t0
    keep = keep_mask(cfg, rewards, success, groups)
    advantages = advantages_of(cfg, rewards, groups, kept)

    envs = None
    if cfg.eval_episodes_per_task:
        from srpo.sim.vector import make_vector_env

        envs = make_vector_env(cfg.rollout.workers, image_size=policy.spec.observation.cameras[0].height,
                               max_chunk=policy.chunk_size, suite=cfg.rollout.suite,
                               env_options=cfg.rollout.env_options())
    writer = SummaryWriter(str(run / "tb"))
    metrics_path = run / METRICS_FILE
    metrics_path.write_text("")
    history: list[dict] = []
    try:
        if cfg.eval_episodes_per_task and cfg.eval_start:
            row = {"step": 0, "env_steps": 0, "trajectories": 0, **evaluate_heldout(policy, explore, cfg, envs)}
            log_metrics(row, writer, metrics_path)
            history.append(row)
        buffer = None
        if cfg.update.loss == "rwr":
            from srpo_trainer.datasets import select_episodes

            r = cfg.update.regression
            demos = select_episodes(EpisodeStore(r.demos), cfg.rollout.tasks, r.demos_per_task) if r.demos else []
            buffer = RegressionBuffer(cfg, demos)
            low, high = policy.spec.action.low, policy.spec.action.high
            buffer.add(1, [decided_view(e, low, high) for e in kept], regression_weights(cfg, rewards, advantages),
                       None)
        base = {"rollout/trajectories": len(kept), "rollout/success": float(success.mean()),
                "offline/episodes_excluded": len(selection.excluded), "offline/rounds": len(rounds),
                "filter/kept_prompts": len(set(groups[keep].tolist())), "filter/prompts": len(set(groups.tolist())),
                "reward/mean": float(rewards.mean()),
                "reward/failure_mean": float(rewards[~success].mean()) if (~success).any() else 0.0,
                "time/reward_s": t_reward}
        from tqdm import tqdm

        for step in tqdm(range(cfg.steps), desc=f"offline[{cfg.reward.mode}]", unit="update", disable=not progress):
            t0 = time.perf_counter()
            if buffer is not None:
                update = regression_update(policy, explore, optimizer, buffer, kept, cfg, rng)
            elif keep.any():
                update = ppo_update(explore, optimizer, [e for e, k in zip(kept, keep) if k],
                                    [a for a, k in zip(advantages, keep) if k], cfg, rng, is_cap=cfg.offline.is_cap)
            else:
                update = {}
            row = {"step": step + 1, "env_steps": int(sum(e.length for e in kept)), "trajectories": len(kept),
                   **base, **update, "time/update_s": time.perf_counter() - t0}
            if cfg.eval_episodes_per_task and step + 1 == cfg.steps:
                row.update(evaluate_heldout(policy, explore, cfg, envs))
            log_metrics(row, writer, metrics_path)
            history.append(row)
    finally:
        if envs is not None:
            envs.close()
        writer.close()
    stamp_version(policy, f"offline:{run.name}")
    policy.save_pretrained(run / "final")
    summary = summarise_run(history, cfg)
    summary.update({"offline": True, "parent_version": current, "version": policy.version,
                    "episodes_used": len(kept), "episodes_excluded": dict(selection.reasons),
                    "recorded_success": float(success.mean()),
                    "mean_progress_reward": float(rewards[~success].mean()) if (~success).any() else None,
                    "update": {k: v for k, v in history[-1].items() if k.startswith(("update/", "offline/"))}})
    (run / "summary.json").write_text(json.dumps(summary, indent=2))
    if any("eval/success" in r for r in history):
        plot_run(history, run / "learning.png", f"offline {cfg.reward.mode}: {run.name}")
        print_summary(summary)
    print(f"{len(kept)} recorded episodes ({success.mean():.0%} successful) -> {policy.version} "
          f"(parent {current})")
    return run


__all__ = ["SELECTION_FILE", "episode_rounds", "load_rounds", "registry_parents", "select_for", "train_offline"]
