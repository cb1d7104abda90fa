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
5. **update** (``update.loss``): ``ppo_clip``: epochs of PPO-clip over mini-batches of decisions (sampled chunks),
   with the log-probs recorded at rollout time as the old policy, stopped by a KL guard; or ``rwr``:
   reward-weighted regression, the SFT loss on the rollouts of the recent steps (each weighted
   exp((R/c - 1) / beta): successes 1, failures by their dense reward; no group filter) plus the demonstrations.

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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from srpo.episodes.schema import Episode
from srpo.episodes.store import EpisodeStore
from srpo.sim.suites import suite_tasks
from srpo_trainer.datasets import select_episodes
from srpo_trainer.distributed.update_group import LOCAL, UpdateGroup
from srpo_trainer.evaluate import EvalConfig, evaluate, paired_difference, wilson_interval
from srpo_trainer.policies import load_policy
from srpo_trainer.policies.base import Observation, Policy, stamp_version
from srpo_trainer.progress_reward import SuccessMemory
from srpo_trainer.rl.config import RLConfig
from srpo_trainer.rl.exploration import ExplorationPolicy, chunk_log_prob, decision_kl, decision_log_probs
from srpo_trainer.rl.objectives import (dynamic_sampling_mask, group_advantages, kl_penalty, ppo_clip_loss,
                                        progress_gae_advantages, reward_spread_mask, reward_weights, rloo_advantages,
                                        advantage_weights)
from srpo_trainer.rl.rewards import trajectory_rewards
from srpo_trainer.rollouts import decision_observation, run_policy_episodes
from srpo_trainer.run_checkpoints import latest_checkpoint, open_run, restore_trainer_state, save_run_checkpoint

METRICS_FILE = "metrics.jsonl"
EVAL_SEED = 20251120


class RunConfigError(ValueError):
    """A run that cannot start: a missing checkpoint, world model or data; raised before any rollout."""


# ------------------------------------------------------------------------------------------------ preparation
def check_run(cfg: RLConfig) -> None:
    """Everything that can be checked before the first rollout: files exist and fit together."""
    if not cfg.init:
        raise RunConfigError("no initial policy: pass --init CKPT (an SFT checkpoint)")
    if not (Path(cfg.init) / "config.json").is_file():
        raise RunConfigError(f"--init {cfg.init}: not a policy checkpoint (no config.json)")
    demos = cfg.update.regression.demos
    if cfg.update.loss == "rwr" and demos and not Path(demos).is_dir():
        raise RunConfigError(f"update.regression.demos: {demos} is not a directory")
    r = cfg.reward
    if r.mode != "srpo":
        return
    if r.encoder in ("builtin", "vjepa2", "image") and r.encoder_path and not Path(r.encoder_path).exists():
        raise RunConfigError(f"reward.encoder_path {r.encoder_path} does not exist")
    if r.encoder in ("vjepa2", "image") and not r.encoder_path:
        raise RunConfigError(f"reward.encoder={r.encoder} needs reward.encoder_path (a local checkpoint)")
    if r.encoder == "builtin" and not r.encoder_path:
        if not r.world_model.data and not r.world_model.rollouts_only:
            raise RunConfigError("reward.mode=srpo with the builtin encoder needs a world model: set "
                                 "reward.encoder_path to one, or reward.world_model.data to episodes to fit one on "
                                 "(or reward.world_model.rollouts_only=true to fit it on the first rollouts alone)")
        for root in (r.world_model.data or "").split(","):
            if root.strip() and not Path(root.strip()).is_dir():
                raise RunConfigError(f"reward.world_model.data: {root.strip()} is not a directory")


def plan_prompts(cfg: RLConfig, step: int, refill: int) -> list[tuple[str, int]]:
    """The step's prompts: every task in turn (a fresh random order each step), each with a random train state."""
    rng = np.random.default_rng([cfg.seed, step, refill, 17])
    tasks = list(cfg.rollout.tasks or suite_tasks(cfg.rollout.suite))
    order: list[str] = []
    while len(order) < cfg.rollout.prompts_per_step:
        order += [tasks[i] for i in rng.permutation(len(tasks))]
    order = order[: cfg.rollout.prompts_per_step]
    return [(t, int(rng.integers(cfg.rollout.train_states))) for t in order]


def _step_seed(cfg: RLConfig, step: int, refill: int) -> int:
    return int(np.random.default_rng([cfg.seed, step, refill, 29]).integers(2**31 - 1))


# ---------------------------------------------------------------------------------------------------- rollout
def collect(policy: Policy, cfg: RLConfig, step: int, envs=None, record_frames: str | None = None,
            runner=None) -> tuple[list[Episode], np.ndarray, int]:
    """Roll out the step's groups, refilling while too few pass the filter. Returns episodes, group ids, refills.
    ``record_frames`` overrides ``cfg.rollout.record_frames``; ``runner`` runs the episodes (default
    ``run_policy_episodes`` on ``envs``; the Ray backend's pool spreads them over its actors)."""
    episodes: list[Episode] = []
    groups: list[int] = []
    n, P = cfg.rollout.group_size, cfg.rollout.prompts_per_step
    refills = 0
    for refill in range(cfg.filter.max_refills + 1):
        prompts = plan_prompts(cfg, step, refill)
        jobs = [p for p in prompts for _ in range(n)]
        _, _, eps = (runner or run_policy_episodes)(
            policy, jobs, "train", cfg.rollout.workers, cfg.rollout.execute_steps, cfg.rollout.temperature,
            _step_seed(cfg, step, refill), record=True, envs=envs, threads=cfg.rollout.inference_threads,
            record_frames=record_frames or cfg.rollout.record_frames, suite=cfg.rollout.suite)
        episodes += eps
        groups += [refill * P + k for k in range(P) for _ in range(n)]
        refills = refill
        if cfg.filter.kind == "none":
            break
        if len(set(np.asarray(groups)[_likely_kept(cfg, episodes, np.asarray(groups))].tolist())) \
                >= cfg.filter.min_kept_prompts:
            break
    return episodes, np.asarray(groups), refills


def _likely_kept(cfg: RLConfig, episodes: list[Episode], groups: np.ndarray) -> np.ndarray:
    """Before rewards exist (they need the whole step), which groups will probably pass the filter: mixed-success
    groups always; under a dense reward with the reward-spread filter also all-fail groups whose task succeeded
    somewhere in the step (they will have a success reference)."""
    success = np.array([e.meta.success for e in episodes])
    if cfg.filter.kind == "success_rate":
        return dynamic_sampling_mask(success, groups, cfg.filter.low, cfg.filter.high)
    mixed = dynamic_sampling_mask(success, groups, 1e-9, 1 - 1e-9)
    if cfg.reward.mode == "binary":
        return mixed
    tasks = np.array([e.meta.task for e in episodes])
    solved = {t for t, s in zip(tasks, success) if s}
    all_fail = ~dynamic_sampling_mask(success, groups, 1e-9, 1.0)
    return mixed | (all_fail & np.isin(tasks, list(solved)))


def step_rewards(cfg: RLConfig, episodes: list[Episode], groups: np.ndarray, embeddings: np.ndarray | None,
                 memory: SuccessMemory | None = None) -> tuple[np.ndarray, dict]:
    """The step's trajectory rewards under ``reward.mode``. The simulator's privileged progress is read only in
    ``oracle`` mode: ``srpo`` and ``binary`` never see it."""
    success = np.array([e.meta.success for e in episodes])
    progress = np.array([e.meta.final_progress for e in episodes]) if cfg.reward.mode == "oracle" else None
    return trajectory_rewards(cfg.reward.mode, success, cfg.reward.coef, progress=progress, embeddings=embeddings,
                              tasks=[e.meta.task for e in episodes], prompts=np.asarray(groups).tolist(),
                              progress_cfg=cfg.reward.progress, memory=memory)


def keep_mask(cfg: RLConfig, rewards: np.ndarray, successes: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """The filter (``filter.kind``): which trajectories the update sees."""
    if cfg.filter.kind == "none":
        return np.ones(len(rewards), dtype=bool)
    if cfg.filter.kind == "success_rate":
        return dynamic_sampling_mask(successes, groups, cfg.filter.low, cfg.filter.high)
    return reward_spread_mask(rewards, groups, cfg.filter.min_spread * cfg.reward.coef)


def advantages_of(cfg: RLConfig, rewards: np.ndarray, groups: np.ndarray,
                  episodes: list[Episode] | None = None) -> list[np.ndarray]:
    """Advantages (``update.advantage``), one array per trajectory with one value per decision: grpo and rloo give
    every decision its trajectory's advantage; progress_gae credits each decision separately from the per-step
    progress (read only in oracle mode, which the config enforces), scaled by its batch std (floored)."""
    u = cfg.update
    if u.advantage == "progress_gae":
        if episodes is None:
            raise ValueError("progress_gae advantages need the episodes (their per-step progress)")
        phi = [np.asarray(e.progress, np.float64)[np.asarray(e.chunk_steps)] for e in episodes]
        adv = progress_gae_advantages(phi, rewards, [e.meta.task for e in episodes], u.gae_lambda)
        flat = np.concatenate(adv) if adv else np.zeros(0)
        scale = max(float(flat.std()) if len(flat) else 0.0, u.adv_std_floor * cfg.reward.coef, u.adv_eps)
        return [(a - flat.mean()) / scale for a in adv]
    if u.advantage == "rloo":
        per_traj = rloo_advantages(rewards, groups, cfg.reward.coef)
    else:
        per_traj = group_advantages(rewards, groups, u.adv_eps, u.adv_std_floor * cfg.reward.coef)
    sizes = [len(e.chunk_steps) for e in episodes] if episodes is not None else [1] * len(per_traj)
    return [np.full(n, a) for n, a in zip(sizes, per_traj)]


def prompt_outcomes(success: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """How the step's prompts ended: the fraction solved by at least one of their rollouts, and the fraction whose
    rollouts both succeeded and failed. Only mixed prompts (and, with a dense reward, ranked all-fail ones) carry a
    learning signal; a policy whose prompts are all solved or all failed, whatever the noise, gives RL nothing to
    compare (the diagnosis in the README)."""
    if len(groups) == 0:
        return {"rollout/prompts_solved": 0.0, "rollout/prompts_mixed": 0.0}
    rates = np.array([success[groups == g].mean() for g in sorted(set(groups.tolist()))])
    return {"rollout/prompts_solved": float((rates > 0).mean()),
            "rollout/prompts_mixed": float(((rates > 0) & (rates < 1)).mean())}


# ----------------------------------------------------------------------------------------------------- update
def _decision_batch(episodes: list[Episode], items: list[tuple[int, int]]) -> tuple[Observation, torch.Tensor]:
    views = [decision_observation(episodes[e], int(episodes[e].chunk_steps[j])) for e, j in items]
    images = {c: np.stack([v[0][c] for v in views]) for c in views[0][0]}
    proprio = np.stack([v[1] for v in views])
    instructions = [v[2] for v in views]
    chunks = torch.from_numpy(np.stack([episodes[e].chunks[j] for e, j in items]))
    return Observation(images, proprio, instructions), chunks


def executed_steps(episodes: list[Episode], items: list[tuple[int, int]], execute_steps: int) -> torch.Tensor:
    """(N,): how many steps of each decision's chunk ran (at most ``execute_steps``, and not past the episode's
    end); the update scores only those, the rest never touched the environment."""
    return torch.tensor([min(execute_steps, episodes[e].length - int(episodes[e].chunk_steps[j])) for e, j in items])


@dataclass
class _Decisions:
    """The step's decisions as the update sees them: which (episode, decision) pairs, how many of each chunk's
    steps ran, each trajectory's advantage, and the acting distribution (mean, log-std) they were sampled from."""

    items: list[tuple[int, int]]
    steps: torch.Tensor
    advantages: torch.Tensor
    old_mean: torch.Tensor
    old_log_std: torch.Tensor
    old_logp: torch.Tensor
    weights: torch.Tensor
    """(N, G) loss weight of every ratio unit (0 where the step did not run), summing to 1 over the batch."""

    def to(self, device: torch.device) -> "_Decisions":
        """The tensors on the policy's device (a GPU learner); ``_prepare`` builds them on the CPU."""
        if device.type == "cpu":
            return self
        move = {k: v.to(device) for k, v in vars(self).items() if isinstance(v, torch.Tensor)}
        return _Decisions(**{**vars(self), **move})


def _prepare(explore: ExplorationPolicy, episodes: list[Episode], advantages: list[np.ndarray], cfg: RLConfig,
             batch: int = 128, is_cap: float | None = None) -> tuple[_Decisions, dict[str, float]]:
    """The proximal policy's distribution at every decision (the current parameters, before the update), and
    diagnostics of how it relates to the policy that acted.

    Online (``is_cap`` None) the acting policy *is* the current one: each chunk is scored over the steps that ran and
    the diagnostic is how far the recomputed chunk log-probs drift from those recorded at rollout time (~0).
    Offline (``is_cap``: the truncation c of the importance weights) the episodes were recorded by an earlier
    version: each chunk is scored over the rows the arm actually executed, the safety filter's edits included
    (``offline.served_rows``) and each
    decision's loss weight is multiplied by w = min(pi_prox / pi_b, c) (``offline.truncated_importance_weights``),
    pi_b recomputed from the distribution recorded with it. The weights are then normalised to sum to 1 over the
    batch (self-normalised importance sampling), so the step size does not depend on how off-policy the batch is."""
    from srpo_trainer.rl.offline import behaviour_log_probs, served_rows, truncated_importance_weights

    u, T = cfg.update, cfg.rollout.temperature
    items = [(e, j) for e, ep in enumerate(episodes) for j in range(len(ep.chunk_steps))]
    if is_cap is None:
        steps = executed_steps(episodes, items, cfg.rollout.execute_steps)
    else:
        action = explore.spec.action
        rows = [served_rows(ep.chunk_steps, ep.chunks, ep.actions, action.low, action.high, through_filter=True)
                for ep in episodes]
        steps = torch.from_numpy(np.stack([rows[e][j] for e, j in items])).to(torch.float32)
    means, log_stds, logps, masks, full, behaviour = [], [], [], [], [], []
    with torch.no_grad():
        for start in range(0, len(items), batch):
            part = items[start : start + batch]
            obs, chunks = _decision_batch(episodes, part)
            mean, log_std = explore.distribution(obs, T)
            x = explore.normalise(chunks, mean)
            log_std = torch.broadcast_to(log_std, mean.shape)
            rows_b = steps[start : start + batch].to(mean.device)
            lp, m = decision_log_probs(x, mean, log_std, rows_b, u.ratio, cfg.exploration.chunk_correlation)
            if is_cap is None:
                full.append(chunk_log_prob(x, mean, log_std, torch.full((len(x),), x.shape[1], device=x.device),
                                           cfg.exploration.chunk_correlation).cpu())
            else:
                full.append(chunk_log_prob(x, mean, log_std, rows_b).cpu())
                behaviour.append(torch.from_numpy(behaviour_log_probs(
                    x.cpu().numpy(), np.stack([episodes[e].chunk_means[j] for e, j in part]),
                    np.stack([episodes[e].chunk_log_stds[j] for e, j in part]), rows_b.cpu().numpy())))
            means.append(mean.cpu())
            log_stds.append(log_std.cpu())
            logps.append(lp.cpu())
            masks.append(m.cpu())
    mask = torch.cat(masks)
    if u.loss_aggregation == "trajectory_mean":  # every trajectory weighs the same, however many units it has
        per_traj = np.zeros(len(episodes))
        np.add.at(per_traj, [e for e, _ in items], mask.sum(dim=1).numpy())
        mask = mask / torch.tensor(np.maximum(per_traj[[e for e, _ in items]], 1e-12), dtype=torch.float32)[:, None]
    if is_cap is None:
        recorded = torch.tensor([float(episodes[e].chunk_log_probs[j]) for e, j in items])
        diag = {"update/old_logp_drift": float((torch.cat(full) - recorded).abs().mean())}
    else:
        log_w = (torch.cat(full) - torch.cat(behaviour).float()).numpy()
        w = truncated_importance_weights(torch.cat(full).numpy(), torch.cat(behaviour).numpy(), is_cap)
        served = steps.sum(dim=1).numpy() > 0
        mask = mask * torch.from_numpy(w).to(torch.float32)[:, None]
        ws = w[served] if served.any() else np.ones(1)
        diag = {"offline/is_weight_mean": float(ws.mean()), "offline/is_weight_min": float(ws.min()),
                "offline/is_truncated_fraction": float(np.mean(log_w[served] >= math.log(is_cap)))
                if served.any() else 0.0,
                "offline/is_ess_fraction": float(ws.sum() ** 2 / (len(ws) * (ws ** 2).sum())),
                "offline/log_ratio_abs_mean": float(np.abs(log_w[served]).mean()) if served.any() else 0.0,
                "offline/served_rows_mean": float(steps.sum(dim=1).mean()),
                "offline/decisions_unserved": int((~served).sum())}
    adv = torch.tensor([advantages[e][j] for e, j in items], dtype=torch.float32)[:, None]
    total = mask.sum().clamp_min(1e-12)
    return _Decisions(items, steps, adv, torch.cat(means), torch.cat(log_stds), torch.cat(logps),
                      mask / total), diag


def _minibatch_loss(explore: ExplorationPolicy, episodes: list[Episode], d: _Decisions, idx: np.ndarray,
                    cfg: RLConfig, reference: Policy | None, group: UpdateGroup = LOCAL,
                    ) -> tuple[torch.Tensor, dict[str, float], tuple[float, int]]:
    """PPO-clip loss of the decisions ``idx`` (their share of the batch's weights), its statistics, and the exact
    KL(old || current) per decision as (sum, count) over all of ``idx``. The loss is a weighted sum over decisions,

        L = (N / |idx|) sum_{i in idx} w_i l_i  +  kl_coef * sum_{i in idx} w_i k_i / sum_{i in idx} w_i,

    (ppo_clip_loss takes the weighted mean over the mini-batch; scaled by the mini-batch's share of the batch's
    weight, the mini-batch losses are unbiased estimates of the whole batch's weighted loss). In a distributed update
    (``group``) this rank holds the decisions ``mine`` of ``idx`` and returns ``world`` times their terms, so DDP's
    average of the ranks' gradients is the gradient of the whole ``idx``; statistics and KL are summed over ranks."""
    u, T, rho = cfg.update, cfg.rollout.temperature, cfg.exploration.chunk_correlation
    penalised = reference is not None and u.kl_coef > 0
    keys = ["clip_fraction", "approx_kl", "ratio_mean"] + (["kl_ref"] if penalised else [])
    mine = group.shard(idx)
    if not len(mine):  # fewer decisions than ranks: this rank still joins every all-reduce, with zeros
        share_all, = group.all_sum(0.0)
        sums = group.all_sum(0.0, 0, *[0.0] * len(keys))
        zero = sum(p.sum() for p in explore.parameters()) * 0.0
        return zero, {k: v / max(share_all, 1e-12) for k, v in zip(keys, sums[2:])}, (sums[0], int(sums[1]))
    obs, chunks = _decision_batch(episodes, [d.items[i] for i in mine])
    mean, log_std = explore.distribution(obs, T)
    x = explore.normalise(chunks, mean)
    logp, _ = decision_log_probs(x, mean, log_std, d.steps[mine], u.ratio, rho)
    w = d.weights[mine]
    share = w.sum().clamp_min(1e-12)
    share_all, = group.all_sum(float(share))
    loss, info = ppo_clip_loss(logp, d.old_logp[mine], d.advantages[mine], u.clip_low, u.clip_high,
                               u.log_ratio_clamp, w / share)
    loss = loss * share * len(d.items) / len(idx)
    if penalised:
        with torch.no_grad():
            ref_mean, ref_log_std = reference.distribution(obs, T)
            logp_ref, _ = decision_log_probs(x, ref_mean, ref_log_std, d.steps[mine], u.ratio, rho)
        kl_ref = kl_penalty(logp, logp_ref, w / share)
        loss = loss + u.kl_coef * kl_ref * (share / share_all)  # the factor is exactly 1 in one process
        info["kl_ref"] = kl_ref.item()
    with torch.no_grad():
        kl = decision_kl(d.old_mean[mine], d.old_log_std[mine], mean, log_std, d.steps[mine], rho)
    if not group.distributed:
        return loss, info, (float(kl.sum()), len(kl))
    sums = group.all_sum(float(kl.sum()), len(kl), *[info[k] * float(share) for k in keys])
    return loss * group.world, {k: v / share_all for k, v in zip(keys, sums[2:])}, (sums[0], int(sums[1]))


def _optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, params, grad_clip: float) -> float:
    """One clipped gradient step on ``loss``; returns the gradient norm before clipping."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(list(params), grad_clip)
    optimizer.step()
    return grad_norm.item()


def _batch_kl(explore: ExplorationPolicy, episodes: list[Episode], d: _Decisions, cfg: RLConfig,
              group: UpdateGroup = LOCAL) -> float:
    """Mean exact KL(old || current) per decision over all of ``d`` under the current parameters."""
    with torch.no_grad():
        kls = [_minibatch_loss(explore, episodes, d, np.arange(s, min(s + 256, len(d.items))), cfg, None, group)[2]
               for s in range(0, len(d.items), 256)]
    return sum(k for k, _ in kls) / max(sum(n for _, n in kls), 1)


def gradient_cosine(explore: ExplorationPolicy, episodes: list[Episode], d: _Decisions, cfg: RLConfig,
                    rng: np.random.Generator, cap: int = 256, group: UpdateGroup = LOCAL) -> float:
    """Cosine between the policy gradients of two disjoint random halves of the step's decisions (at most ``cap``
    each), at the current parameters: ~1 when the batch agrees on a direction, ~0 when the gradient is noise."""
    perm = rng.permutation(len(d.items))
    half = min(len(perm) // 2, cap)
    if half < 2:
        return float("nan")
    grads = []
    for idx in (perm[:half], perm[half : 2 * half]):
        explore.zero_grad(set_to_none=True)
        loss = group.loss(lambda: _minibatch_loss(explore, episodes, d, idx, cfg, None, group)[0])
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in explore.parameters() if p.grad is not None]))
    explore.zero_grad(set_to_none=True)
    if len(grads[0]) == 0:
        return float("nan")
    return float(torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0))


def ppo_update(explore: ExplorationPolicy, optimizer: torch.optim.Optimizer, episodes: list[Episode],
               advantages: list[np.ndarray], cfg: RLConfig, rng: np.random.Generator, reference: Policy | None = None,
               measure_snr: bool = False, is_cap: float | None = None, group: UpdateGroup = LOCAL) -> dict[str, float]:
    """PPO-clip over every decision of ``episodes`` (each trajectory's advantage on each of its ratio units), for up
    to ``update.epochs`` passes, stopped by the KL guard once a mini-batch's mean KL(old || new) per decision
    exceeds ``update.target_kl``. With ``is_cap`` the episodes are off-policy (recorded by earlier versions): the
    ratio is taken against the current (proximal) policy and each decision weighed by its truncated importance
    weight against the recorded behaviour policy (``_prepare``; decoupled PPO).

    ``group``: this process's rank of a data-parallel update (``srpo_trainer/distributed``). Every rank runs this
    function on the same batch with the same ``rng`` state; each mini-batch's decisions are split between them."""
    u = cfg.update
    explore.eval()  # no dropout: the ratio must be exactly 1 before the first step
    d, diag = _prepare(explore, episodes, advantages, cfg, is_cap=is_cap)
    d = d.to(next(explore.parameters()).device)
    stats: dict[str, list[float]] = {k: [] for k in ("loss", "clip_fraction", "approx_kl", "kl_ref", "grad_norm",
                                                      "ratio_mean", "kl_chunk")}
    out: dict[str, float] = {}
    if measure_snr:
        out["update/grad_cosine"] = gradient_cosine(explore, episodes, d, cfg, rng, group=group)
    stopped, n_steps, epochs_done = False, 0, 0
    for _ in range(u.epochs):
        perm = rng.permutation(len(d.items))
        for start in range(0, len(perm), u.minibatch_size):
            idx = perm[start : start + u.minibatch_size]
            loss, info, (kl_sum, kl_n) = group.loss(_minibatch_loss, explore, episodes, d, idx, cfg, reference,
                                                    group)
            kl = kl_sum / max(kl_n, 1)
            stats["kl_chunk"].append(kl)
            if u.target_kl is not None and kl > u.target_kl:
                stopped = True  # the policy has moved as far as is safe on this batch
                if group.distributed:  # every rank stops here (the KL is all-reduced); DDP still expects a backward
                    (loss * 0.0).backward()
                    explore.zero_grad(set_to_none=True)
                break
            stats["grad_norm"].append(_optimizer_step(optimizer, loss, explore.parameters(), u.grad_clip))
            n_steps += 1
            stats["loss"].append(group.all_sum(loss.item() / group.world)[0])  # the whole mini-batch's loss
            for k in ("clip_fraction", "approx_kl", "ratio_mean", "kl_ref"):
                if k in info:
                    stats[k].append(info[k])
        if stopped:
            break
        epochs_done += 1
    out.update({f"update/{k}": float(np.mean(v)) for k, v in stats.items() if v})
    out["update/kl_final"] = kl_final = _batch_kl(explore, episodes, d, cfg, group)  # the KL actually reached
    if u.adaptive_lr and u.target_kl is not None:  # the next RL step starts from a step size that fits the guard
        factor = 1.5 if (kl_final < u.target_kl / 2 and not stopped) else 1 / 1.5 if kl_final > u.target_kl else 1.0
        for params in optimizer.param_groups:
            params["lr"] = float(np.clip(params["lr"] * factor, *u.lr_range))
    out["update/lr"] = float(optimizer.param_groups[0]["lr"])
    with torch.no_grad():
        obs, _ = _decision_batch(episodes, d.items[:1])
        out["policy/entropy"] = float(explore.entropy(obs, cfg.rollout.temperature).mean())
        out["policy/explore_std"] = float(explore.distribution(obs, cfg.rollout.temperature)[1].exp().mean())
    out.update(diag)
    out.update({"update/decisions": len(d.items), "update/optimizer_steps": n_steps,
                "update/epochs_done": epochs_done, "update/kl_stopped": float(stopped)})
    return out


# ------------------------------------------------------------------------------------ reward-weighted regression
WEIGHTS_FILE = "rwr_weights.json"


class RegressionBuffer:
    """What reward-weighted regression learns from: the demonstrations (weight 1) and, per RL step of the replay
    window, the rollouts that weigh at least ``min_weight``. Each step's weights are written next to its recorded
    rollouts, so a resumed run rebuilds the same buffer."""

    def __init__(self, cfg: RLConfig, demos: list[Episode]) -> None:
        self.cfg, self.demos = cfg.update.regression, demos
        self.steps: dict[int, list[tuple[Episode, float]]] = {}

    def add(self, step: int, episodes: list[Episode], weights: np.ndarray, step_dir: Path | None) -> None:
        keep = [(e, float(w)) for e, w in zip(episodes, weights) if w >= self.cfg.min_weight and self.cfg.use_rollouts]
        self.steps[step] = keep
        if self.cfg.replay_steps:
            for old in [s for s in self.steps if s <= step - self.cfg.replay_steps]:
                del self.steps[old]
        if step_dir is not None:
            tmp = step_dir / f".{WEIGHTS_FILE}.tmp"
            tmp.write_text(json.dumps({e.meta.episode_id: w for e, w in keep}))
            tmp.replace(step_dir / WEIGHTS_FILE)

    def restore(self, run: Path, upto: int) -> None:
        """Reload the replay window's rollouts and weights of a run resumed after step ``upto``."""
        first = max(1, upto - self.cfg.replay_steps + 1) if self.cfg.replay_steps else 1
        for step in range(first, upto + 1):
            step_dir = run / "rollouts" / f"step_{step:05d}"
            weights = json.loads((step_dir / WEIGHTS_FILE).read_text())
            store = EpisodeStore(step_dir)
            episodes = {e.meta.episode_id: e for e in store.iter_episodes()}
            self.steps[step] = [(episodes[i], w) for i, w in weights.items()]

    def episodes(self) -> tuple[list[Episode], np.ndarray]:
        items = [(e, 1.0) for e in self.demos] + [x for s in sorted(self.steps) for x in self.steps[s]]
        return [e for e, _ in items], np.array([w for _, w in items])


def regression_weights(cfg: RLConfig, rewards: np.ndarray, advantages: list[np.ndarray]) -> np.ndarray:
    """Each trajectory's weight in the regression (``update.regression.weighting``): from its reward, or from its
    group-normalised advantage (one value per trajectory: the mean of its per-decision advantages, which grpo and
    rloo make constant)."""
    r = cfg.update.regression
    if r.weighting == "advantage":
        per_traj = np.array([float(np.mean(a)) if len(a) else 0.0 for a in advantages])
        return advantage_weights(per_traj, r.beta, r.max_weight)
    return reward_weights(rewards, cfg.reward.coef, r.beta)


def regression_update(policy: Policy, explore: ExplorationPolicy, optimizer: torch.optim.Optimizer,
                      buffer: RegressionBuffer, episodes: list[Episode], cfg: RLConfig,
                      rng: np.random.Generator) -> dict[str, float]:
    """``regression.steps`` gradient steps of the SFT loss on samples drawn from ``buffer`` with probability
    proportional to their trajectory's weight; the exact KL(old || new) per decision is measured on this step's
    rollouts ``episodes`` and, with ``update.target_kl``, stops the update (checked every 25 steps)."""
    from srpo_trainer.datasets import ChunkDataset, random_shift
    from srpo_trainer.sft import sft_loss

    u, r = cfg.update, cfg.update.regression
    trajectories, weights = buffer.episodes()
    data = ChunkDataset(trajectories, policy.spec, policy.chunk_size)
    p = weights[data.sample_episode]
    p = p / p.sum()
    d, _ = _prepare(explore, episodes, [np.zeros(len(e.chunk_steps)) for e in episodes], cfg)
    probe = rng.choice(len(d.items), size=min(64, len(d.items)), replace=False)
    shift = torch.Generator().manual_seed(int(rng.integers(2**31)))
    stats: dict[str, list[float]] = {"loss": [], "l1": [], "grad_norm": []}
    stopped, n_steps = False, 0
    for step in range(r.steps):
        if u.target_kl is not None and step and step % 25 == 0:
            with torch.no_grad():
                kl_sum, kl_n = _minibatch_loss(explore, episodes, d, probe, cfg, None)[2]
                kl = kl_sum / max(kl_n, 1)
            if kl > u.target_kl:
                stopped = True
                break
        policy.train()
        batch = data.batch(rng.choice(len(data), size=r.batch_size, p=p))
        images, proprio, ids, text_mask = policy.encode(batch.obs)
        loss, info = sft_loss(policy, (random_shift(images, r.augment_shift, shift), proprio, ids, text_mask),
                              batch.chunks, batch.mask)
        stats["grad_norm"].append(_optimizer_step(optimizer, loss, policy.parameters(), u.grad_clip))
        n_steps += 1
        stats["loss"].append(loss.item())
        stats["l1"].append(info["loss/l1"])
    policy.eval()
    demos = len(buffer.demos)
    rollout_w = weights[demos:]
    succ = np.array([e.meta.success for e in trajectories[demos:]], dtype=bool)
    out = {f"update/{k}": float(np.mean(v)) for k, v in stats.items() if v}
    out.update({"update/kl_final": _batch_kl(explore, episodes, d, cfg), "update/optimizer_steps": n_steps,
                "update/kl_stopped": float(stopped), "update/lr": float(optimizer.param_groups[0]["lr"]),
                "update/decisions": len(d.items), "regression/trajectories": len(rollout_w),
                "regression/successes": int(succ.sum()),
                "regression/failure_weight_share": float(rollout_w[~succ].sum() / max(weights.sum(), 1e-12))
                if len(succ) else 0.0,
                "regression/demo_weight_share": float(weights[:demos].sum() / max(weights.sum(), 1e-12)),
                "regression/samples": len(data)})
    return out


# ------------------------------------------------------------------------------------------------ world model
def fit_world_model(cfg: RLConfig, run: Path, first_rollouts: Path) -> Path:
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


def load_reward_encoder(cfg: RLConfig, path: str | None):
    from srpo_trainer.encoders import load_encoder

    options = {"seed": cfg.seed} if cfg.reward.encoder == "random" else {}
    return load_encoder(cfg.reward.encoder, path, **options)


# ------------------------------------------------------------------------------------------------------- loop
def evaluate_heldout(policy: Policy, explore: ExplorationPolicy, cfg: RLConfig, envs=None, runner=None) -> dict:
    """Held-out success with deterministic (mean) actions and, with ``eval_sampled``, with sampled actions. The
    per-episode outcomes (``eval_episodes/...``, in a fixed order of tasks x states) let runs be compared pairwise;
    the sampling seed is fixed (``EVAL_SEED``), not the run's, so every run sees the same noise."""
    row = {}
    variants = [("eval", policy, None)]
    if cfg.eval_sampled:
        variants.append(("eval_sampled", explore, cfg.rollout.temperature))
    for name, actor, temperature in variants:
        ecfg = EvalConfig(suite=cfg.rollout.suite, tasks=cfg.rollout.tasks, max_steps=cfg.rollout.max_steps,
                          fast_render=cfg.rollout.fast_render,
                          episodes_per_task=cfg.eval_episodes_per_task, split="heldout",
                          workers=cfg.rollout.workers, execute_steps=cfg.rollout.execute_steps, seed=EVAL_SEED,
                          gifs=0, temperature=temperature)
        summary = evaluate(actor, ecfg, progress=False, envs=envs, threads=cfg.rollout.inference_threads,
                           runner=runner)
        row.update({f"{name}/success": summary["success_rate"], f"{name}/progress": summary["mean_progress"],
                    f"{name}/episodes": len(summary["episodes_detail"]),
                    **{f"{name}_task/{t}": v["success_rate"] for t, v in summary["per_task"].items()},
                    f"{name}_episodes/success": [int(e["success"]) for e in summary["episodes_detail"]]})
    return row


def _read_metrics(path: Path, upto: int) -> list[dict]:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["step"] <= upto]


def train_rl(cfg: RLConfig, progress: bool = True) -> Path:
    """Run (or resume) RL; returns the run folder. Raises ``RunConfigError`` before any rollout on bad input."""
    from torch.utils.tensorboard import SummaryWriter

    check_run(cfg)
    torch.set_num_threads(cfg.threads)
    try:
        run = open_run(cfg.out, cfg)
    except ValueError as exc:
        raise RunConfigError(str(exc)) from exc

    policy = load_policy(cfg.init)
    reference = ExplorationPolicy(copy.deepcopy(policy), cfg.exploration).eval() if cfg.update.kl_coef > 0 else None
    rng = np.random.default_rng(cfg.seed)
    memory = SuccessMemory(cfg.reward.progress.memory_size) if cfg.reward.progress.memory_size > 0 else None
    resume = latest_checkpoint(run)
    start = 0
    if resume is not None:
        policy = load_policy(resume)
    explore = ExplorationPolicy(policy, cfg.exploration)  # rollouts sample from it, the update trains through it
    optimizer = torch.optim.AdamW(explore.parameters(), lr=cfg.update.lr, weight_decay=cfg.update.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    if resume is not None:
        start = restore_trainer_state(resume, optimizer, scheduler, rng)
        if memory is not None and (resume / SuccessMemory.FILE).is_file():
            memory.load(resume / SuccessMemory.FILE)
        print(f"resuming {run} from {resume.name} (step {start}/{cfg.steps})")
    policy.version = f"rl:{run.name}"
    buffer = None
    if cfg.update.loss == "rwr":
        r = cfg.update.regression
        demos = select_episodes(EpisodeStore(r.demos), cfg.rollout.tasks, r.demos_per_task) if r.demos else []
        buffer = RegressionBuffer(cfg, demos)
        if start:
            buffer.restore(run, start)
    metrics_path = run / METRICS_FILE
    history = _read_metrics(metrics_path, start)
    metrics_path.write_text("".join(json.dumps(r) + "\n" for r in history))
    env_steps = history[-1]["env_steps"] if history else 0

    encoder = None
    if cfg.reward.mode == "srpo" and (cfg.reward.encoder != "builtin" or cfg.reward.encoder_path):
        encoder = load_reward_encoder(cfg, cfg.reward.encoder_path)
    elif cfg.reward.mode == "srpo" and (run / "world_model" / "final" / "config.json").is_file():
        encoder = load_reward_encoder(cfg, str(run / "world_model" / "final"))

    writer = SummaryWriter(str(run / "tb"))
    placement = Placement.start(cfg, policy, optimizer)
    try:
        history = _train_loop(cfg, run, policy, explore, optimizer, scheduler, rng, reference, memory, encoder,
                              placement, writer, history, metrics_path, env_steps, start, progress, buffer)
    finally:
        placement.close()
        writer.close()
    policy.save_pretrained(run / "final")
    summary = summarise_run(history, cfg)
    (run / "summary.json").write_text(json.dumps(summary, indent=2))
    plot_run(history, run / "learning.png", f"{cfg.reward.mode}: {run.name}")
    print_summary(summary)
    return run


class Placement:
    """Where the run's rollouts and update execute (``distributed.backend``): one set of local simulator processes
    for the whole run (rollouts and evaluations reuse them), or a Ray rollout pool and, with several learners, a
    ``torch.distributed`` learner group (``srpo_trainer/distributed/ray_backend.py``)."""

    def __init__(self, envs=None, pool=None, learners=None, started_ray: bool = False) -> None:
        self.envs, self.pool, self.learners, self.started_ray = envs, pool, learners, started_ray
        self.runner = pool.run_policy_episodes if pool is not None else None

    @classmethod
    def start(cls, cfg: RLConfig, policy: Policy, optimizer: torch.optim.Optimizer) -> "Placement":
        d = cfg.distributed
        if d.backend == "local":
            from srpo.sim.vector import make_vector_env

            return cls(envs=make_vector_env(cfg.rollout.workers, image_size=policy.spec.observation.cameras[0].height,
                                            max_chunk=policy.chunk_size, suite=cfg.rollout.suite,
                                            env_options=cfg.rollout.env_options()))
        import ray

        from srpo_trainer.distributed.ray_backend import LearnerGroup, RayRolloutPool, pack_checkpoint

        started = not ray.is_initialized() and not d.address
        placement = cls(started_ray=started)
        try:
            placement.pool = RayRolloutPool(d, policy, cfg.exploration, cfg.rollout.suite, cfg.rollout.env_options(),
                                            threads=cfg.rollout.inference_threads)
            placement.runner = placement.pool.run_policy_episodes
            if d.learners > 1:
                placement.learners = LearnerGroup(d, cfg, pack_checkpoint(load_policy(cfg.init)), policy, optimizer)
        except BaseException:
            placement.close()
            raise
        return placement

    def update(self, explore: ExplorationPolicy, optimizer, episodes: list[Episode], advantages: list[np.ndarray],
               cfg: RLConfig, rng: np.random.Generator, reference, measure_snr: bool) -> dict[str, float]:
        if self.learners is None:
            return ppo_update(explore, optimizer, episodes, advantages, cfg, rng, reference, measure_snr=measure_snr)
        return self.learners.update(explore.policy, optimizer, episodes, advantages, rng, measure_snr)

    def before_checkpoint(self, optimizer) -> None:
        if self.learners is not None:
            self.learners.sync_optimizer(optimizer)

    def close(self) -> None:
        for part in (self.envs, self.pool, self.learners):
            if part is not None:
                part.close()
        if self.started_ray:
            import ray

            ray.shutdown()


def _train_loop(cfg: RLConfig, run: Path, policy: Policy, explore: ExplorationPolicy, optimizer, scheduler,
                rng: np.random.Generator, reference, memory, encoder, placement: Placement, writer,
                history: list[dict], metrics_path: Path, env_steps: int, start: int, progress: bool,
                buffer: RegressionBuffer | None = None) -> list[dict]:
    from tqdm import tqdm

    envs, runner = placement.envs, placement.runner

    if start == 0 and cfg.eval_episodes_per_task and cfg.eval_start:
        t0 = time.perf_counter()
        row = {"step": 0, "env_steps": 0, "trajectories": 0, **evaluate_heldout(policy, explore, cfg, envs, runner),
               "time/eval_s": time.perf_counter() - t0}
        log_metrics(row, writer, metrics_path)
        history.append(row)
    trajectories = history[-1].get("trajectories", 0) if history else 0
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=f"rl[{cfg.reward.mode}]", unit="step",
               disable=not progress)
    for step in bar:
        done = step + 1
        t0 = time.perf_counter()
        needs_world_model = cfg.reward.mode == "srpo" and encoder is None
        # the world model learns from frames h steps apart: the rollouts it is fitted on render every step
        stamp_version(policy, f"rl:{run.name}")  # the rollouts' episodes name exactly the weights that acted
        episodes, groups, refills = collect(explore, cfg, step, envs, "every_step" if needs_world_model else None,
                                            runner)
        t_rollout = time.perf_counter() - t0
        success = np.array([e.meta.success for e in episodes])
        env_steps += sum(e.length for e in episodes)
        trajectories += len(episodes)
        step_dir = None
        if cfg.record_rollouts or buffer is not None or (encoder is None and cfg.reward.mode == "srpo"):
            step_dir = run / "rollouts" / f"step_{done:05d}"
            shutil.rmtree(step_dir, ignore_errors=True)  # a step re-run after an interruption replaces its episodes
            store = EpisodeStore(step_dir)
            for e in episodes:
                store.write(e)
        t0 = time.perf_counter()
        embeddings, t_world_model = None, None
        if cfg.reward.mode == "srpo":
            if needs_world_model:
                encoder = load_reward_encoder(
                    cfg, str(fit_world_model(cfg, run, run / "rollouts" / f"step_{done:05d}")))
                t_world_model = time.perf_counter() - t0
                t0 = time.perf_counter()
            embeddings = encoder.encode([e.held_frames(cfg.reward.camera) for e in episodes])
        rewards, diags = step_rewards(cfg, episodes, groups, embeddings, memory)
        t_reward = time.perf_counter() - t0
        keep = keep_mask(cfg, rewards, success, groups)
        advantages = advantages_of(cfg, rewards, groups, episodes)
        kept_adv = np.concatenate([a for a, k in zip(advantages, keep) if k]) if keep.any() else np.zeros(1)
        all_fail_kept = sum(1 for g in set(groups[keep].tolist()) if not success[groups == g].any())
        t0 = time.perf_counter()
        kept = [e for e, k in zip(episodes, keep) if k]
        update = {}
        if buffer is not None:  # regression weighs every rollout (reward or advantage); the group filter does not apply
            buffer.add(done, episodes, regression_weights(cfg, rewards, advantages), step_dir)
            update = regression_update(policy, explore, optimizer, buffer, episodes, cfg, rng)
        elif kept:
            snr = cfg.update.grad_snr_every > 0 and done % cfg.update.grad_snr_every == 0
            update = placement.update(explore, optimizer, kept, [a for a, k in zip(advantages, keep) if k], cfg,
                                      rng, reference, snr)
        t_update = time.perf_counter() - t0
        fallbacks = Counter(d.fallback for d in diags.values() if d.fallback)
        row = {
            "step": done, "env_steps": env_steps, "trajectories": trajectories, "rollout/trajectories": len(episodes),
            "rollout/success": float(success.mean()), "rollout/refills": refills,
            "rollout/mean_length": float(np.mean([e.length for e in episodes])),
            "rollout/progress": float(np.mean([e.meta.final_progress for e in episodes])),
            "filter/kept_prompts": len(set(groups[keep].tolist())), "filter/prompts": len(set(groups.tolist())),
            "filter/kept_all_fail_prompts": all_fail_kept,
            **prompt_outcomes(success, groups),
            "reward/mean": float(rewards.mean()), "reward/failure_mean": float(rewards[~success].mean())
            if (~success).any() else 0.0,
            "advantage/mean": float(kept_adv.mean()), "advantage/std": float(kept_adv.std()),
            "advantage/abs_max": float(np.abs(kept_adv).max()),
            "reward/clusters": int(sum(d.clusters for d in diags.values())),
            **{f"reward/fallback_{k}": v for k, v in fallbacks.items()},
            **update,
            "time/rollout_s": t_rollout, "time/reward_s": t_reward, "time/update_s": t_update,
        }
        if t_world_model is not None:
            row["time/world_model_fit_s"] = t_world_model
        if cfg.eval_episodes_per_task and (done % cfg.eval_every == 0 or done == cfg.steps):
            t0 = time.perf_counter()
            row.update(evaluate_heldout(policy, explore, cfg, envs, runner))
            row["time/eval_s"] = time.perf_counter() - t0
        log_metrics(row, writer, metrics_path)
        history.append(row)
        bar.set_postfix(succ=f"{row['rollout/success']:.2f}", kept=row["filter/kept_prompts"],
                        eval=f"{row['eval/success']:.2f}" if "eval/success" in row else "-")
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            # the success memory is part of the checkpoint: written before ``latest`` names it, so a resume never
            # finds a checkpoint without the memory it was taken with
            placement.before_checkpoint(optimizer)
            save_run_checkpoint(run, done, policy.save_pretrained, optimizer, scheduler, rng,
                                save_extra=memory.save_into if memory is not None else None)
    return history


def log_metrics(row: dict, writer, path: Path) -> None:
    """One metrics row into TensorBoard (finite numbers) and a line of ``metrics.jsonl``."""
    for k, v in row.items():
        if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
            writer.add_scalar(k, v, row["step"])
    writer.flush()
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def summarise_run(history: list[dict], cfg: RLConfig) -> dict:
    """The run's before/after numbers with their uncertainty: Wilson 95% intervals on each held-out success rate and
    a paired 95% interval on the change (the same held-out states before and after)."""
    evals = [r for r in history if "eval/success" in r]
    start = evals[0] if evals and evals[0]["step"] == 0 else None  # None: the start was not evaluated in this run
    steps = [r for r in history if r["step"] > 0]
    timing = {k: float(np.mean([r[k] for r in steps if k in r])) for k in
              ("time/rollout_s", "time/reward_s", "time/update_s") if any(k in r for r in steps)}
    summary = {
        "mode": cfg.reward.mode, "steps": len(steps), "env_steps": steps[-1]["env_steps"] if steps else 0,
        "trajectories": steps[-1].get("trajectories", 0) if steps else 0,
        "eval_before": start["eval/success"] if start else None,
        "eval_after": evals[-1]["eval/success"] if evals else None,
        "eval_curve": [[r["step"], r.get("trajectories", 0), r["eval/success"]] for r in evals],
        "per_task_before": {k[len("eval_task/"):]: v for k, v in start.items() if k.startswith("eval_task/")}
        if start else {},
        "per_task_after": {k[len("eval_task/"):]: v for k, v in evals[-1].items() if k.startswith("eval_task/")}
        if evals else {},
        "mean_step_time_s": timing,
        "config": json.loads(json.dumps(asdict(cfg))),
    }
    for name in ("eval", "eval_sampled"):
        key = f"{name}_episodes/success"
        if not evals or key not in evals[-1]:
            continue
        after = np.array(evals[-1][key])
        summary[f"{name}_after_ci95"] = list(wilson_interval(int(after.sum()), len(after)))
        summary[f"{name}_episodes"] = len(after)
        summary[f"{name}_after"] = float(evals[-1][f"{name}/success"])
        if start is not None and key in start and len(evals) >= 2:
            before = np.array(start[key])
            summary[f"{name}_before_ci95"] = list(wilson_interval(int(before.sum()), len(before)))
            summary[f"{name}_before"] = float(start[f"{name}/success"])
            if len(before) == len(after):
                diff, lo, hi = paired_difference(before, after)
                summary[f"{name}_change"], summary[f"{name}_change_ci95"] = diff, [lo, hi]
    return summary


def print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{summary['mode']}: {summary['steps']} RL steps, {summary['trajectories']} trajectories, "
                        f"{summary['env_steps']} env steps")
    table.add_column("task")
    table.add_column("held-out success before", justify="right")
    table.add_column("after", justify="right")
    for task in summary["per_task_before"] or summary["per_task_after"]:
        before, after = summary["per_task_before"].get(task), summary["per_task_after"].get(task)
        table.add_row(task, "-" if before is None else f"{100 * before:.0f}%",
                      "-" if after is None else f"{100 * after:.0f}%")
    if summary["eval_before"] is not None and summary["eval_after"] is not None:
        table.add_row("[b]mean[/b]", f"{100 * summary['eval_before']:.1f}%", f"{100 * summary['eval_after']:.1f}%")
    console = Console()
    console.print(table)
    console.print(describe_change(summary, "eval"))
    if "eval_sampled_change" in summary:
        console.print(describe_change(summary, "eval_sampled"))
    t = summary["mean_step_time_s"]
    if t:
        print("mean time per RL step: " + ", ".join(f"{k.split('/')[1][:-2]} {v:.1f} s" for k, v in t.items()))


def describe_change(summary: dict, name: str = "eval") -> str:
    """One honest sentence on the before/after change: its paired 95% interval, and whether that excludes zero."""
    if f"{name}_change" not in summary:
        return f"{name}: no before/after pair of evaluations to compare"
    d, (lo, hi) = summary[f"{name}_change"], summary[f"{name}_change_ci95"]
    kind = "deterministic" if name == "eval" else "sampled"
    verdict = ("an improvement: the interval excludes zero" if lo > 0 else
               "a decline: the interval excludes zero" if hi < 0 else
               "not distinguishable from no change at this many episodes")
    return (f"held-out success ({kind} actions, {summary[f'{name}_episodes']} episodes on the same states): "
            f"change {100 * d:+.1f} points (paired 95% CI {100 * lo:+.1f} to {100 * hi:+.1f}): {verdict}")


def plot_run(history: list[dict], path: Path, title: str) -> None:
    """Success against trajectories used: rollout success on train states, held-out success with Wilson 95% bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    steps = [r for r in history if "rollout/success" in r]
    if steps:
        ax.plot([r.get("trajectories", 0) for r in steps], [100 * r["rollout/success"] for r in steps],
                color="tab:gray", lw=1, label="rollout success (train states, sampled)")
    for name, colour, label in (("eval", "tab:blue", "held-out, deterministic"),
                                ("eval_sampled", "tab:cyan", "held-out, sampled")):
        evals = [r for r in history if f"{name}/success" in r]
        if not evals:
            continue
        x = [r.get("trajectories", 0) for r in evals]
        y = np.array([100 * r[f"{name}/success"] for r in evals])
        ci = [wilson_interval(int(sum(r[f"{name}_episodes/success"])), len(r[f"{name}_episodes/success"]))
              if f"{name}_episodes/success" in r else (r[f"{name}/success"],) * 2 for r in evals]
        err = np.abs(np.array([[y_ - 100 * lo, 100 * hi - y_] for y_, (lo, hi) in zip(y, ci)]).T)
        ax.errorbar(x, y, yerr=err, fmt="o-", color=colour, capsize=3, label=f"{label} (95% CI)")
    ax.set_xlabel("trajectories (RL rollouts)")
    ax.set_ylabel("success (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["RunConfigError", "advantages_of", "check_run", "collect", "describe_change", "evaluate_heldout",
           "fit_world_model", "gradient_cosine", "keep_mask", "load_reward_encoder", "log_metrics",
           "plan_prompts", "ppo_update", "step_rewards", "summarise_run", "train_rl"]
