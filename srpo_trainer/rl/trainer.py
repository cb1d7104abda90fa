"""The SRPO / GRPO training loop: roll out groups, score them, normalise per group, apply a PPO-clip update.

    srpo train --config configs/quick.yaml --init runs/sft/final --out runs/srpo

One RL step:

1. **rollout**: ``prompts_per_step`` prompts (a task and a TRAIN initial state), ``group_size`` sampled rollouts
   each, on parallel simulator processes with batched inference (``srpo_trainer/rollouts.py``);
2. **filter** (dynamic sampling): groups whose success rate is outside [low, high] carry no signal and are dropped;
   while too few survive, more prompts are rolled out (refills);
3. **reward** (``reward.mode``): binary, the progress reward in an encoder's latent space (srpo), or the simulator's
   progress (oracle). Rewards are computed over every trajectory of the step, so successes of dropped all-success
   groups still serve as references;
4. **advantage**: (R - mean) / (std + eps) within each prompt's group;
5. **update**: ``epochs`` passes of PPO-clip over mini-batches of decisions (sampled chunks), with the log-probs
   recorded at rollout time as the old policy.

The run folder holds ``config.yaml``, ``metrics.jsonl`` (one line per step), TensorBoard logs in ``tb/``,
checkpoints (policy + optimizer, every ``checkpoint_every`` steps), ``world_model/`` when one was fitted,
``final/``, ``summary.json`` and ``learning.png``. Every step draws its prompts and sampling noise from seeds derived
from (seed, step), so re-running an interrupted command resumes from the last checkpoint and reproduces the
uninterrupted run's metrics.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from srpo.episodes.schema import Episode
from srpo.episodes.store import EpisodeStore
from srpo.sim.tabletop.tasks import TASKS
from srpo_trainer.evaluate import EvalConfig, evaluate
from srpo_trainer.policies import load_policy
from srpo_trainer.policies.base import Observation, Policy
from srpo_trainer.progress_reward import SuccessMemory
from srpo_trainer.rl.config import RLConfig
from srpo_trainer.rl.objectives import dynamic_sampling_mask, group_advantages, kl_penalty, ppo_clip_loss
from srpo_trainer.rl.rewards import trajectory_rewards
from srpo_trainer.rollouts import decision_observation, run_policy_episodes
from srpo_trainer.run_checkpoints import latest_checkpoint, open_run, restore_trainer_state, save_run_checkpoint

METRICS_FILE = "metrics.jsonl"


class RunConfigError(ValueError):
    """A run that cannot start: a missing checkpoint, world model or data; raised before any rollout."""


# ------------------------------------------------------------------------------------------------ preparation
def check_run(cfg: RLConfig) -> None:
    """Everything that can be checked before the first rollout: files exist and fit together."""
    if not cfg.init:
        raise RunConfigError("no initial policy: pass --init CKPT (an SFT checkpoint)")
    if not (Path(cfg.init) / "config.json").is_file():
        raise RunConfigError(f"--init {cfg.init}: not a policy checkpoint (no config.json)")
    r = cfg.reward
    if r.mode != "srpo":
        return
    if r.encoder in ("builtin", "vjepa2", "image") and r.encoder_path and not Path(r.encoder_path).exists():
        raise RunConfigError(f"reward.encoder_path {r.encoder_path} does not exist")
    if r.encoder in ("vjepa2", "image") and not r.encoder_path:
        raise RunConfigError(f"reward.encoder={r.encoder} needs reward.encoder_path (a local checkpoint)")
    if r.encoder == "builtin" and not r.encoder_path:
        if not r.world_model.data:
            raise RunConfigError("reward.mode=srpo with the builtin encoder needs a world model: set "
                                 "reward.encoder_path to one, or reward.world_model.data to episodes to fit one on")
        for root in r.world_model.data.split(","):
            if root.strip() and not Path(root.strip()).is_dir():
                raise RunConfigError(f"reward.world_model.data: {root.strip()} is not a directory")


def plan_prompts(cfg: RLConfig, step: int, refill: int) -> list[tuple[str, int]]:
    """The step's prompts: every task in turn (a fresh random order each step), each with a random train state."""
    rng = np.random.default_rng([cfg.seed, step, refill, 17])
    tasks = list(cfg.rollout.tasks or TASKS)
    order: list[str] = []
    while len(order) < cfg.rollout.prompts_per_step:
        order += [tasks[i] for i in rng.permutation(len(tasks))]
    order = order[: cfg.rollout.prompts_per_step]
    return [(t, int(rng.integers(cfg.rollout.train_states))) for t in order]


def _step_seed(cfg: RLConfig, step: int, refill: int) -> int:
    return int(np.random.default_rng([cfg.seed, step, refill, 29]).integers(2**31 - 1))


# ---------------------------------------------------------------------------------------------------- rollout
def collect(policy: Policy, cfg: RLConfig, step: int) -> tuple[list[Episode], np.ndarray, int]:
    """Roll out the step's groups, refilling while too few pass the filter. Returns episodes, group ids, refills."""
    episodes: list[Episode] = []
    groups: list[int] = []
    n, P = cfg.rollout.group_size, cfg.rollout.prompts_per_step
    refills = 0
    for refill in range(cfg.filter.max_refills + 1):
        prompts = plan_prompts(cfg, step, refill)
        jobs = [p for p in prompts for _ in range(n)]
        _, _, eps = run_policy_episodes(policy, jobs, "train", cfg.rollout.workers, cfg.rollout.execute_steps,
                                        cfg.rollout.temperature, _step_seed(cfg, step, refill), record=True)
        episodes += eps
        groups += [refill * P + k for k in range(P) for _ in range(n)]
        refills = refill
        if cfg.filter.kind == "none":
            break
        keep = _keep_mask(cfg, episodes, np.asarray(groups))
        if len(set(np.asarray(groups)[keep].tolist())) >= cfg.filter.min_kept_prompts:
            break
    return episodes, np.asarray(groups), refills


def _keep_mask(cfg: RLConfig, episodes: list[Episode], groups: np.ndarray) -> np.ndarray:
    if cfg.filter.kind == "none":
        return np.ones(len(episodes), dtype=bool)
    success = np.array([e.meta.success for e in episodes])
    return dynamic_sampling_mask(success, groups, cfg.filter.low, cfg.filter.high)


# ----------------------------------------------------------------------------------------------------- update
def _decision_batch(episodes: list[Episode], items: list[tuple[int, int]]) -> tuple[Observation, torch.Tensor]:
    views = [decision_observation(episodes[e], int(episodes[e].chunk_steps[j])) for e, j in items]
    images = {c: np.stack([v[0][c] for v in views]) for c in views[0][0]}
    proprio = np.stack([v[1] for v in views])
    instructions = [v[2] for v in views]
    chunks = torch.from_numpy(np.stack([episodes[e].chunks[j] for e, j in items]))
    return Observation(images, proprio, instructions), chunks


def executed_mask(episodes: list[Episode], items: list[tuple[int, int]], chunk_size: int,
                  execute_steps: int) -> torch.Tensor:
    """(N, K, 1): 1 for the chunk steps that were executed (at most ``execute_steps``, and not past the episode's
    end); the loss ignores the rest, which never touched the environment."""
    steps = [min(execute_steps, episodes[e].length - int(episodes[e].chunk_steps[j])) for e, j in items]
    return (torch.arange(chunk_size)[None, :] < torch.tensor(steps)[:, None]).float()[..., None]


def _old_log_probs(policy: Policy, episodes: list[Episode], items: list[tuple[int, int]], temperature: float,
                   batch: int = 128) -> tuple[torch.Tensor, float]:
    """Per-element log-probs under the policy before the update (the acting policy: RL here is on-policy), and how
    far their sums drift from the log-probs recorded at rollout time (should be ~0: a check of the pipeline)."""
    parts = []
    with torch.no_grad():
        for start in range(0, len(items), batch):
            obs, chunks = _decision_batch(episodes, items[start : start + batch])
            parts.append(policy.log_prob(obs, chunks, temperature, per_element=True))
    old = torch.cat(parts)
    recorded = torch.tensor([float(episodes[e].chunk_log_probs[j]) for e, j in items])
    return old, float((old.sum(dim=(1, 2)) - recorded).abs().mean())


def ppo_update(policy: Policy, optimizer: torch.optim.Optimizer, episodes: list[Episode], advantages: np.ndarray,
               cfg: RLConfig, rng: np.random.Generator, reference: Policy | None = None) -> dict[str, float]:
    """PPO-clip over every decision of ``episodes`` (each trajectory's advantage on each element of its chunks)."""
    u = cfg.update
    policy.eval()  # no dropout: the ratio must be exactly 1 before the first step
    items = [(e, j) for e, ep in enumerate(episodes) for j in range(len(ep.chunk_steps))]
    old, drift = _old_log_probs(policy, episodes, items, cfg.rollout.temperature)
    mask = executed_mask(episodes, items, old.shape[1], cfg.rollout.execute_steps)
    if u.loss_aggregation == "trajectory_mean":  # weight 1 / (executed steps of the trajectory) per element
        executed = np.zeros(len(episodes))
        np.add.at(executed, [e for e, _ in items], mask.sum(dim=(1, 2)).numpy())
        mask = mask / torch.tensor(executed[[e for e, _ in items]], dtype=torch.float32)[:, None, None]
    adv_of = torch.tensor([advantages[e] for e, _ in items], dtype=torch.float32)[:, None, None]
    stats: dict[str, list[float]] = {k: [] for k in ("loss", "clip_fraction", "approx_kl", "kl_ref", "grad_norm",
                                                      "ratio_mean")}
    for _ in range(u.epochs):
        perm = rng.permutation(len(items))
        for start in range(0, len(perm), u.minibatch_size):
            idx = perm[start : start + u.minibatch_size]
            obs, chunks = _decision_batch(episodes, [items[i] for i in idx])
            logp = policy.log_prob(obs, chunks, cfg.rollout.temperature, per_element=True)
            loss, info = ppo_clip_loss(logp, old[idx], adv_of[idx], u.clip_low, u.clip_high, u.log_ratio_clamp,
                                       mask[idx])
            if reference is not None and u.kl_coef > 0:
                with torch.no_grad():
                    logp_ref = reference.log_prob(obs, chunks, cfg.rollout.temperature, per_element=True)
                kl = kl_penalty(logp, logp_ref, mask[idx])
                loss = loss + u.kl_coef * kl
                stats["kl_ref"].append(kl.item())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), u.grad_clip)
            optimizer.step()
            stats["loss"].append(loss.item())
            stats["grad_norm"].append(grad_norm.item())
            for k in ("clip_fraction", "approx_kl", "ratio_mean"):
                stats[k].append(info[k])
    out = {f"update/{k}": float(np.mean(v)) for k, v in stats.items() if v}
    with torch.no_grad():
        obs, _ = _decision_batch(episodes, items[:1])
        ent = policy.entropy(obs, cfg.rollout.temperature)
    if ent is not None:
        out["policy/entropy"] = float(ent.mean())
    out["update/decisions"] = len(items)
    out["update/old_logp_drift"] = drift
    return out


# ------------------------------------------------------------------------------------------------ world model
def _fit_world_model(cfg: RLConfig, run: Path, first_rollouts: Path) -> Path:
    from srpo_trainer.world_model import WorldModelConfig, WorldModelTrainConfig, train_world_model

    final = run / "world_model" / "final"
    if (final / "config.json").is_file():
        return final
    wm = cfg.reward.world_model
    data = ",".join([p.strip() for p in (wm.data or "").split(",") if p.strip()] + [str(first_rollouts)])
    print(f"fitting the built-in world model on {data} ({wm.steps} steps; it never sees success or progress)")
    return train_world_model(WorldModelTrainConfig(data=data, out=str(run / "world_model"), steps=wm.steps,
                                                   batch_size=wm.batch_size, seed=cfg.seed, split=None,
                                                   threads=cfg.threads, model=WorldModelConfig(camera=cfg.reward.camera)))


def _load_encoder(cfg: RLConfig, path: str | None):
    from srpo_trainer.encoders import load_encoder

    options = {"seed": cfg.seed} if cfg.reward.encoder == "random" else {}
    return load_encoder(cfg.reward.encoder, path, **options)


# ------------------------------------------------------------------------------------------------------- loop
def _evaluate(policy: Policy, cfg: RLConfig) -> dict:
    ecfg = EvalConfig(tasks=cfg.rollout.tasks, episodes_per_task=cfg.eval_episodes_per_task, split="heldout",
                      workers=cfg.rollout.workers, execute_steps=cfg.rollout.execute_steps, seed=cfg.seed, gifs=0)
    summary = evaluate(policy, ecfg, progress=False)
    return {"eval/success": summary["success_rate"], "eval/progress": summary["mean_progress"],
            **{f"eval_task/{t}": v["success_rate"] for t, v in summary["per_task"].items()}}


def _read_metrics(path: Path, upto: int) -> list[dict]:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["step"] <= upto]


def train_rl(cfg: RLConfig, progress: bool = True) -> Path:
    """Run (or resume) RL; returns the run folder. Raises ``RunConfigError`` before any rollout on bad input."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    check_run(cfg)
    torch.set_num_threads(cfg.threads)
    try:
        run = open_run(cfg.out, cfg)
    except ValueError as exc:
        raise RunConfigError(str(exc)) from exc

    policy = load_policy(cfg.init)
    reference = copy.deepcopy(policy).eval() if cfg.update.kl_coef > 0 else None
    rng = np.random.default_rng(cfg.seed)
    memory = SuccessMemory(cfg.reward.progress.memory_size) if cfg.reward.progress.memory_size > 0 else None
    resume = latest_checkpoint(run)
    start = 0
    if resume is not None:
        policy = load_policy(resume)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.update.lr, weight_decay=cfg.update.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    if resume is not None:
        start = restore_trainer_state(resume, optimizer, scheduler, rng)
        if memory is not None and (resume / "success_memory.npz").is_file():
            memory.load(resume / "success_memory.npz")
        print(f"resuming {run} from {resume.name} (step {start}/{cfg.steps})")
    policy.version = f"rl:{run.name}"
    metrics_path = run / METRICS_FILE
    history = _read_metrics(metrics_path, start)
    metrics_path.write_text("".join(json.dumps(r) + "\n" for r in history))
    env_steps = history[-1]["env_steps"] if history else 0

    encoder = None
    if cfg.reward.mode == "srpo" and (cfg.reward.encoder != "builtin" or cfg.reward.encoder_path):
        encoder = _load_encoder(cfg, cfg.reward.encoder_path)
    elif cfg.reward.mode == "srpo" and (run / "world_model" / "final" / "config.json").is_file():
        encoder = _load_encoder(cfg, str(run / "world_model" / "final"))

    writer = SummaryWriter(str(run / "tb"))
    if start == 0 and cfg.eval_episodes_per_task:
        t0 = time.perf_counter()
        row = {"step": 0, "env_steps": 0, **_evaluate(policy, cfg), "time/eval_s": time.perf_counter() - t0}
        _log(row, writer, metrics_path)
        history.append(row)
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=f"rl[{cfg.reward.mode}]", unit="step",
               disable=not progress)
    for step in bar:
        done = step + 1
        t0 = time.perf_counter()
        episodes, groups, refills = collect(policy, cfg, step)
        t_rollout = time.perf_counter() - t0
        success = np.array([e.meta.success for e in episodes])
        env_steps += sum(e.length for e in episodes)
        if cfg.record_rollouts or (encoder is None and cfg.reward.mode == "srpo"):
            step_dir = run / "rollouts" / f"step_{done:05d}"
            shutil.rmtree(step_dir, ignore_errors=True)  # a step re-run after an interruption replaces its episodes
            store = EpisodeStore(step_dir)
            for e in episodes:
                store.write(e)
        t0 = time.perf_counter()
        embeddings, t_world_model = None, None
        if cfg.reward.mode == "srpo":
            if encoder is None:
                encoder = _load_encoder(cfg, str(_fit_world_model(cfg, run, run / "rollouts" / f"step_{done:05d}")))
                t_world_model = time.perf_counter() - t0
                t0 = time.perf_counter()
            embeddings = encoder.encode([e.images[cfg.reward.camera] for e in episodes])
        rewards, diags = trajectory_rewards(
            cfg.reward.mode, success, cfg.reward.coef, progress=np.array([e.meta.final_progress for e in episodes]),
            embeddings=embeddings, tasks=[e.meta.task for e in episodes], prompts=groups.tolist(),
            progress_cfg=cfg.reward.progress, memory=memory)
        t_reward = time.perf_counter() - t0
        keep = _keep_mask(cfg, episodes, groups)
        advantages = group_advantages(rewards, groups, cfg.update.adv_eps)
        t0 = time.perf_counter()
        kept = [e for e, k in zip(episodes, keep) if k]
        update = {}
        if kept:
            update = ppo_update(policy, optimizer, kept, advantages[keep], cfg, rng, reference)
        t_update = time.perf_counter() - t0
        fallbacks = Counter(d.fallback for d in diags.values() if d.fallback)
        row = {
            "step": done, "env_steps": env_steps, "rollout/trajectories": len(episodes),
            "rollout/success": float(success.mean()), "rollout/refills": refills,
            "rollout/mean_length": float(np.mean([e.length for e in episodes])),
            "rollout/progress": float(np.mean([e.meta.final_progress for e in episodes])),
            "filter/kept_prompts": len(set(groups[keep].tolist())), "filter/prompts": len(set(groups.tolist())),
            "reward/mean": float(rewards.mean()), "reward/failure_mean": float(rewards[~success].mean())
            if (~success).any() else 0.0,
            "advantage/mean": float(advantages[keep].mean()) if keep.any() else 0.0,
            "advantage/std": float(advantages[keep].std()) if keep.any() else 0.0,
            "advantage/abs_max": float(np.abs(advantages[keep]).max()) if keep.any() else 0.0,
            "reward/clusters": int(sum(d.clusters for d in diags.values())),
            **{f"reward/fallback_{k}": v for k, v in fallbacks.items()},
            **update,
            "time/rollout_s": t_rollout, "time/reward_s": t_reward, "time/update_s": t_update,
        }
        if t_world_model is not None:
            row["time/world_model_fit_s"] = t_world_model
        if cfg.eval_episodes_per_task and (done % cfg.eval_every == 0 or done == cfg.steps):
            t0 = time.perf_counter()
            row.update(_evaluate(policy, cfg))
            row["time/eval_s"] = time.perf_counter() - t0
        _log(row, writer, metrics_path)
        history.append(row)
        bar.set_postfix(succ=f"{row['rollout/success']:.2f}", kept=row["filter/kept_prompts"],
                        eval=f"{row['eval/success']:.2f}" if "eval/success" in row else "-")
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            ckpt = save_run_checkpoint(run, done, policy.save_pretrained, optimizer, scheduler, rng)
            if memory is not None:
                memory.save(ckpt / "success_memory.npz")
    writer.close()
    policy.save_pretrained(run / "final")
    summary = summarise_run(history, cfg)
    (run / "summary.json").write_text(json.dumps(summary, indent=2))
    plot_run(history, run / "learning.png", f"{cfg.reward.mode}: {run.name}")
    print_summary(summary)
    return run


def _log(row: dict, writer, path: Path) -> None:
    for k, v in row.items():
        if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
            writer.add_scalar(k, v, row["step"])
    writer.flush()
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def summarise_run(history: list[dict], cfg: RLConfig) -> dict:
    evals = [r for r in history if "eval/success" in r]
    steps = [r for r in history if r["step"] > 0]
    timing = {k: float(np.mean([r[k] for r in steps if k in r])) for k in
              ("time/rollout_s", "time/reward_s", "time/update_s") if any(k in r for r in steps)}
    return {
        "mode": cfg.reward.mode, "steps": len(steps), "env_steps": steps[-1]["env_steps"] if steps else 0,
        "eval_before": evals[0]["eval/success"] if evals else None,
        "eval_after": evals[-1]["eval/success"] if evals else None,
        "eval_curve": [[r["step"], r["eval/success"]] for r in evals],
        "per_task_before": {k[len("eval_task/"):]: v for k, v in evals[0].items() if k.startswith("eval_task/")}
        if evals else {},
        "per_task_after": {k[len("eval_task/"):]: v for k, v in evals[-1].items() if k.startswith("eval_task/")}
        if evals else {},
        "mean_step_time_s": timing,
        "config": json.loads(json.dumps(asdict(cfg))),
    }


def print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{summary['mode']}: {summary['steps']} RL steps, {summary['env_steps']} env steps")
    table.add_column("task")
    table.add_column("held-out success before", justify="right")
    table.add_column("after", justify="right")
    for task, before in summary["per_task_before"].items():
        after = summary["per_task_after"].get(task)
        table.add_row(task, f"{100 * before:.0f}%", "-" if after is None else f"{100 * after:.0f}%")
    if summary["eval_before"] is not None:
        table.add_row("[b]mean[/b]", f"{100 * summary['eval_before']:.1f}%", f"{100 * summary['eval_after']:.1f}%")
    Console().print(table)
    t = summary["mean_step_time_s"]
    if t:
        print("mean time per RL step: " + ", ".join(f"{k.split('/')[1][:-2]} {v:.1f} s" for k, v in t.items()))


def plot_run(history: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    steps = [r for r in history if "rollout/success" in r]
    evals = [r for r in history if "eval/success" in r]
    if steps:
        ax.plot([r["step"] for r in steps], [100 * r["rollout/success"] for r in steps], color="tab:gray", lw=1,
                label="rollout success (train states, sampled)")
    if evals:
        ax.plot([r["step"] for r in evals], [100 * r["eval/success"] for r in evals], "o-", color="tab:blue",
                label="held-out success (deterministic)")
    ax.set_xlabel("RL step")
    ax.set_ylabel("success (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["RunConfigError", "check_run", "collect", "plan_prompts", "ppo_update", "summarise_run", "train_rl"]
