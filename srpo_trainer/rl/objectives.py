"""The RL update of SRPO / GRPO as small pure functions, each with its formula.

    A_i      = (R_i - mean_{j in g(i)} R_j) / max(std_{j in g(i)} R_j, f c)        group-normalised advantage (GRPO)
    A_i      = (R_i - mean_{j in g(i), j != i} R_j) / c                             leave-one-out baseline (RLOO)
    keep(g)  = low <= mean_{i in g} success_i <= high                              dynamic sampling filter
    keep(g)  = max_{i in g} R_i - min_{i in g} R_i >= s c                          reward-spread filter
    rho_i    = exp(clamp(log pi(a_i|s_i) - log pi_old(a_i|s_i), -c, c))            importance ratio
    L_clip   = -mean_i min(rho_i A_i, clip(rho_i, 1 - eps_low, 1 + eps_high) A_i)   asymmetric PPO clip (DAPO)
    KL_k3    = mean_i (exp(log pi_ref - log pi) - (log pi_ref - log pi) - 1)        optional penalty to the reference
    w_i      = exp((R_i / c - 1) / beta)                                           reward-weighted regression (RWR)

``c`` is the reward coefficient. The std floor ``f c`` (``f = 0`` and ``+ eps``: the reference) stops a group whose
rewards are nearly equal from having its tiny differences blown up into unit advantages.

A group g is the n rollouts of one prompt (a task and an initial state). Rewards and advantages are per trajectory
(gamma = lambda = 1, the advantage is broadcast to every action chunk of the trajectory). The ratio is taken per
element of an action chunk (per action token in the reference's VLAs), and the loss averages over elements.
"""

from __future__ import annotations

import numpy as np
import torch


def group_advantages(rewards: np.ndarray, groups: np.ndarray, eps: float = 1e-6, std_floor: float = 0.0) -> np.ndarray:
    """A_i = (R_i - mean_g R) / max(std_g R + eps, std_floor) within each group (population std, as GRPO); a
    zero-variance group gets A = 0 everywhere. ``std_floor`` is in reward units."""
    rewards = np.asarray(rewards, dtype=np.float64)
    groups = np.asarray(groups)
    if rewards.shape != groups.shape:
        raise ValueError(f"rewards {rewards.shape} and groups {groups.shape} differ in shape")
    adv = np.zeros_like(rewards)
    for g in np.unique(groups):
        idx = groups == g
        r = rewards[idx]
        adv[idx] = (r - r.mean()) / max(r.std() + eps, std_floor)
    return adv


def rloo_advantages(rewards: np.ndarray, groups: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """A_i = (R_i - mean_{j in g(i), j != i} R_j) / scale: the leave-one-out baseline (RLOO, as RIPT-VLA), no std
    normalisation, so a group's advantages are as large as its reward differences. A group of one gets 0."""
    rewards = np.asarray(rewards, dtype=np.float64)
    groups = np.asarray(groups)
    if rewards.shape != groups.shape:
        raise ValueError(f"rewards {rewards.shape} and groups {groups.shape} differ in shape")
    adv = np.zeros_like(rewards)
    for g in np.unique(groups):
        idx = groups == g
        n = int(idx.sum())
        if n > 1:
            r = rewards[idx]
            adv[idx] = (r - (r.sum() - r) / (n - 1)) / scale
    return adv


def progress_gae_advantages(phi: list[np.ndarray], final_rewards: np.ndarray, tasks: list[str],
                            lam: float = 0.9) -> list[np.ndarray]:
    """Per-decision advantages from a dense progress signal: GAE with a value baseline fitted on progress.

        V(s)   = a_task + b_task * phi(s)        least squares of the trajectory's return R on the progress phi at
                                                 each of its decisions, per task over the step's batch
        delta_j = V(s_{j+1}) - V(s_j)             (j < M - 1),   delta_{M-1} = R - V(s_{M-1})
        A_j     = sum_{k >= j} lam^(k - j) delta_k

    With lam = 1 this is R - V(s_j), the trajectory return with a state-dependent baseline; lam < 1 credits each
    decision mostly with what happened soon after it, so one decision's advantage no longer carries the noise of every
    later decision of the trajectory (the variance that a trajectory-level advantage suffers). gamma = 1.

    ``phi[i]`` holds the progress at each decision of trajectory i, ``final_rewards[i]`` its return."""
    final_rewards = np.asarray(final_rewards, dtype=np.float64)
    if len(phi) != len(final_rewards) or len(tasks) != len(final_rewards):
        raise ValueError("phi, final_rewards and tasks must have one entry per trajectory")
    value = [np.zeros(len(p)) for p in phi]
    for task in set(tasks):
        idx = [i for i, t in enumerate(tasks) if t == task]
        x = np.concatenate([np.asarray(phi[i], np.float64) for i in idx])
        y = np.concatenate([np.full(len(phi[i]), final_rewards[i]) for i in idx])
        if len(x) == 0:
            continue
        if np.ptp(x) < 1e-9:
            a, b = float(y.mean()), 0.0
        else:
            b, a = np.polyfit(x, y, 1)
        for i in idx:
            value[i] = a + b * np.asarray(phi[i], np.float64)
    out = []
    for v, r in zip(value, final_rewards):
        nxt = np.append(v[1:], 0.0)
        delta = nxt - v
        if len(v):
            delta[-1] = r - v[-1]
        adv = np.zeros(len(v))
        running = 0.0
        for j in range(len(v) - 1, -1, -1):
            running = delta[j] + lam * running
            adv[j] = running
        out.append(adv)
    return out


def reward_spread_mask(rewards: np.ndarray, groups: np.ndarray, min_spread: float) -> np.ndarray:
    """True for rollouts whose group's rewards span at least ``min_spread`` (max - min): the groups that carry a
    signal under a dense reward, all-fail groups included whenever their failures were scored against a reference."""
    rewards = np.asarray(rewards, dtype=np.float64)
    groups = np.asarray(groups)
    keep = np.zeros(len(rewards), dtype=bool)
    for g in np.unique(groups):
        idx = groups == g
        keep[idx] = np.ptp(rewards[idx]) >= max(min_spread, 1e-12)
    return keep


def dynamic_sampling_mask(successes: np.ndarray, groups: np.ndarray, low: float = 0.1,
                          high: float = 0.9) -> np.ndarray:
    """True for rollouts whose group success rate lies in [low, high]: all-fail and all-success groups are dropped
    (under group normalisation they carry no signal)."""
    successes = np.asarray(successes, dtype=np.float64)
    groups = np.asarray(groups)
    keep = np.zeros(len(successes), dtype=bool)
    for g in np.unique(groups):
        idx = groups == g
        rate = successes[idx].mean()
        keep[idx] = low <= rate <= high
    return keep


def reward_weights(rewards: np.ndarray, coef: float, beta: float) -> np.ndarray:
    """w_i = exp((R_i / c - 1) / beta): the weight of trajectory i in reward-weighted regression (Peters & Schaal).

    A success (R = c) weighs 1 and a failure exp(-(1 - R/c) / beta) < 1, so ``beta`` sets how much a failure's dense
    reward counts: as beta -> 0 only successes remain (success-filtered behaviour cloning, which is what the binary
    reward gives at any beta, its failures being exp(-1/beta)). Unlike a group-normalised advantage the weight is
    absolute: all-success groups are imitated too."""
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    r = np.asarray(rewards, dtype=np.float64) / coef
    if not np.all(np.isfinite(r)):
        raise ValueError("reward-weighted regression got a non-finite reward")
    return np.exp((np.minimum(r, 1.0) - 1.0) / beta)


def advantage_weights(advantages: np.ndarray, beta: float, max_weight: float) -> np.ndarray:
    """w_i = min(exp(A_i / beta), w_max): the weight of trajectory i in advantage-weighted regression (AWR, Peng et
    al. 2019), with A_i its group-normalised advantage.

    Unlike ``reward_weights``, the weight is relative to the trajectory's own group: a success among failures of the
    same prompt (A > 0) weighs up to w_max, a success in an all-success group weighs exp(0) = 1 like a demonstration,
    and a failure below its group's mean less than 1. The regression therefore spends its steps on the prompts where
    the policy's own behaviour still fails, instead of re-learning the ones it already solves. With SRPO's reward the
    failures of an all-fail group are ranked by their progress, so the nearest misses weigh more than 1."""
    if beta <= 0 or max_weight < 1:
        raise ValueError(f"beta must be > 0 and max_weight >= 1, got {beta} and {max_weight}")
    a = np.asarray(advantages, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError("advantage-weighted regression got a non-finite advantage")
    return np.minimum(np.exp(a / beta), max_weight)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """mean over the elements where ``mask`` is 1 (all elements without a mask); ``mask`` broadcasts to ``x``."""
    if mask is None:
        return x.mean()
    m = torch.broadcast_to(mask.to(x.dtype), x.shape)
    return (x * m).sum() / m.sum().clamp_min(1.0)


def ppo_clip_loss(logp: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor, clip_low: float = 0.2,
                  clip_high: float = 0.28, log_ratio_clamp: float = 20.0, mask: torch.Tensor | None = None,
                  ) -> tuple[torch.Tensor, dict[str, float]]:
    """L = -mean min(rho A, clip(rho, 1 - clip_low, 1 + clip_high) A), rho = exp(clamp(logp - logp_old, +-c)).

    The mean runs over every element of ``logp`` (one per action token / chunk element: token-level PPO) where
    ``mask`` is 1; ``advantages`` broadcast to ``logp`` (one per trajectory, shaped e.g. (N, 1, 1))."""
    log_ratio = torch.clamp(logp - logp_old, -log_ratio_clamp, log_ratio_clamp)
    ratio = torch.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * advantages
    loss = -masked_mean(torch.minimum(unclipped, clipped), mask)
    with torch.no_grad():
        clip_frac = masked_mean((clipped < unclipped).float(), mask).item()  # where the clip is active (no gradient)
        approx_kl = masked_mean((ratio - 1) - log_ratio, mask).item()  # k3 estimate of KL(old || new) per element
        ratio_mean = masked_mean(ratio, mask).item()
    return loss, {"clip_fraction": clip_frac, "approx_kl": approx_kl, "ratio_mean": ratio_mean}


def kl_penalty(logp: torch.Tensor, logp_ref: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """k3 estimator of KL(pi || pi_ref) from samples of pi: mean(exp(d) - d - 1), d = log pi_ref - log pi (>= 0)."""
    d = logp_ref - logp
    return masked_mean(torch.exp(d) - d - 1.0, mask)


__all__ = ["dynamic_sampling_mask", "group_advantages", "kl_penalty", "masked_mean", "ppo_clip_loss",
           "progress_gae_advantages", "reward_spread_mask", "reward_weights", "rloo_advantages",
           "advantage_weights"]
