"""Trajectory rewards for the three reward modes of ``srpo train`` (one config key, ``reward.mode``).

    binary:  R_i = c * s_i                                           (GRPO: success only)
    srpo:    R_i = c * (1 if s_i else progress_reward_i)             (SRPO: failures scored in a latent space)
    oracle:  R_i = c * (1 if s_i else m * p_i)                        (the simulator's true progress p_i; upper bound)

``c`` is the reward coefficient (5.0 in the reference) and ``m`` the largest failure reward (0.6), so a failure never
outranks a success in any mode. The reward sits on the trajectory's last step; with gamma = lambda = 1 and one
advantage per trajectory this equals a trajectory-level reward. ``c`` only matters through the ``eps`` of the group
normalisation, and is kept for parity with the reference.
"""

from __future__ import annotations

import numpy as np

from srpo_trainer.progress_reward import ProgressRewardConfig, SuccessMemory, TaskRewardDiagnostics, progress_rewards

REWARD_MODES = ("srpo", "binary", "oracle")


def binary_rewards(successes: np.ndarray, coef: float = 1.0) -> np.ndarray:
    """R_i = c * s_i."""
    return coef * np.asarray(successes, dtype=np.float64)


def oracle_rewards(successes: np.ndarray, progress: np.ndarray, max_failure_reward: float = 0.6,
                   coef: float = 1.0) -> np.ndarray:
    """R_i = c * (1 if s_i else m * p_i), p_i the simulator's ground-truth final progress in [0, 1]."""
    s = np.asarray(successes, dtype=bool)
    raw = np.asarray(progress, dtype=np.float64)
    if not np.all(np.isfinite(raw[~s])):
        raise ValueError("the oracle reward got non-finite progress for a failed trajectory")
    p = np.clip(raw, 0.0, 1.0)
    return coef * np.where(s, 1.0, max_failure_reward * np.nan_to_num(p))


def trajectory_rewards(mode: str, successes: np.ndarray, coef: float, *, progress: np.ndarray | None = None,
                       embeddings: np.ndarray | None = None, tasks: list[str] | None = None,
                       prompts: list | None = None, progress_cfg: ProgressRewardConfig | None = None,
                       memory: SuccessMemory | None = None,
                       ) -> tuple[np.ndarray, dict[str, TaskRewardDiagnostics]]:
    """Rewards of a batch of trajectories under ``mode`` (see the module docstring), plus the progress reward's
    per-group diagnostics (empty for ``binary`` and ``oracle``)."""
    if mode not in REWARD_MODES:
        raise ValueError(f"reward mode must be one of {REWARD_MODES}, got {mode!r}")
    s = np.asarray(successes, dtype=bool)
    if mode == "binary":
        return binary_rewards(s, coef), {}
    cfg = progress_cfg or ProgressRewardConfig()
    if mode == "oracle":
        if progress is None:
            raise ValueError("the oracle reward needs the ground-truth progress of every trajectory")
        return oracle_rewards(s, progress, cfg.max_failure_reward, coef), {}
    if embeddings is None or tasks is None:
        raise ValueError("the srpo reward needs trajectory embeddings and their tasks")
    rewards, diagnostics = progress_rewards(embeddings, s, tasks, cfg, memory=memory, prompts=prompts)
    return coef * rewards, diagnostics


__all__ = ["REWARD_MODES", "binary_rewards", "oracle_rewards", "trajectory_rewards"]
