"""SRPO from recorded episodes (a robot cannot roll out a fresh group on demand): which episodes, in which groups,
and how the off-policy data is corrected. Small pure functions, each with its rule or formula.

Selection (``select_offline``): an episode is used only if it is labelled (success known), carries its decisions
with the acting distribution (``chunk_means``/``chunk_log_stds``: the behaviour policy), and was produced by an
accepted policy version (the current one or one of its last ``max_version_lag`` ancestors). Every other episode is
excluded with its reason, and the reasons are counted.

Groups (``offline_groups``): episodes of one task from one initial condition form a group when the condition is known
(``init_state_id``, sim and scripted resets), else the task's episodes of one collection round. The self-reference of
a failure is its group's successes (and the success memory), exactly as online.

Correction (decoupled PPO, Hilton et al. 2021): the update's clipped ratio is taken against the *proximal* policy
(the parameters at the start of the update, as online), and each decision's loss is weighted by the truncated
importance weight of the proximal policy against the *behaviour* policy that acted:

    w_j = min(exp(log pi_prox(a_j|s_j) - log pi_b(a_j|s_j)), c)        stop-gradient, c = ``is_cap``
    L   = -sum_j w_j min(r_j A_j, clip(r_j, 1 - eps, 1 + eps) A_j),   r_j = pi_theta(a_j|s_j) / pi_prox(a_j|s_j)

On-policy data has pi_prox = pi_b, so w = 1 and the update is the online one. log pi_b is recomputed from the
recorded Gaussian (``behaviour_log_probs``) over the same executed elements the update scores.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np

from srpo.episodes.schema import Episode
from srpo.robot.safety import filter_explains

_LOG_2PI = math.log(2 * math.pi)


@dataclass
class OfflineSelection:
    """The episodes kept, and why each other one was excluded (reason -> count, and per episode id)."""

    kept: list[Episode]
    excluded: dict[str, str] = field(default_factory=dict)

    @property
    def reasons(self) -> Counter:
        return Counter(self.excluded.values())


def select_offline(episodes: list[Episode], accepted_versions: list[str] | set[str]) -> OfflineSelection:
    """Keep the episodes an off-policy update can use (rules in the module docstring)."""
    accepted = set(accepted_versions)
    out = OfflineSelection([])
    for ep in episodes:
        m = ep.meta
        if not m.labelled:
            out.excluded[m.episode_id] = "unlabelled (success unknown)"
        elif ep.chunk_steps is None or len(ep.chunk_steps) == 0:
            out.excluded[m.episode_id] = "no policy decisions recorded"
        elif ep.chunk_means is None:
            out.excluded[m.episode_id] = "no behaviour distribution recorded (deterministic or old recorder)"
        elif (m.policy_distribution or {}).get("chunk_correlation", 0.0) != 0.0:
            out.excluded[m.episode_id] = "correlated behaviour noise (per-element densities undefined)"
        elif m.policy_version not in accepted:
            out.excluded[m.episode_id] = ("unknown policy version" if m.policy_version in ("", "unknown") else
                                          "policy version too old or not in the accepted lineage")
        else:
            out.kept.append(ep)
    return out


def accepted_lineage(current: str, parents: dict[str, str | None], max_version_lag: int) -> list[str]:
    """The current version and up to ``max_version_lag`` of its ancestors, following ``parents`` (version ->
    parent version, e.g. from the policy registry's manifests)."""
    out, version = [current], current
    for _ in range(max_version_lag):
        version = parents.get(version)
        if not version or version in out:
            break
        out.append(version)
    return out


def offline_groups(episodes: list[Episode], rounds: list[int] | None = None) -> np.ndarray:
    """Group id per episode: (task, init_state_id) when the initial condition is known, else (task, round)."""
    rounds = rounds if rounds is not None else [0] * len(episodes)
    if len(rounds) != len(episodes):
        raise ValueError(f"{len(rounds)} rounds for {len(episodes)} episodes")
    keys: dict[tuple, int] = {}
    ids = []
    for ep, rnd in zip(episodes, rounds):
        key = ((ep.meta.task, "state", ep.meta.init_state_id) if ep.meta.init_state_id is not None
               else (ep.meta.task, "round", rnd))
        ids.append(keys.setdefault(key, len(keys)))
    return np.asarray(ids, dtype=np.int64)


def served_rows(chunk_steps: np.ndarray, chunks: np.ndarray, actions: np.ndarray, low: float | np.ndarray = -1.0,
                high: float | np.ndarray = 1.0, atol: float = 1e-6, through_filter: bool = False) -> np.ndarray:
    """(M, K) bool: which rows of each decision's chunk the arm actually executed.

    Row k of the chunk decided from the observation of step s is the action for step s + k. The simulator's rollouts
    run rows 0..n-1; a robot's asynchronous chunker drops the rows whose steps passed during inference (row 0, often
    more) and hands over to the next chunk whenever it arrives. So each executed action is attributed to the latest
    decision whose row for that step equals it (after clipping to the action bounds); failing that, with
    ``through_filter`` (``srpo.robot.safety.filter_explains`` under the same bounds), to the latest decision whose row
    the safety filter could have turned into it (a workspace face zeroed an axis, a speed limit scaled the motion: the decision
    still ran, the filter is part of the environment). An action no row explains (a hold) is attributed to none and
    scored by none."""
    chunk_steps = np.asarray(chunk_steps)
    M, K = chunks.shape[:2]
    mask = np.zeros((M, K), dtype=bool)
    clipped = np.clip(chunks, low, high)
    for t, action in enumerate(np.asarray(actions)):
        candidates = np.flatnonzero((chunk_steps <= t) & (t - chunk_steps < K))[::-1]  # latest decision first
        match = next((j for j in candidates if np.allclose(clipped[j, t - chunk_steps[j]], action, atol=atol, rtol=0)),
                     None)
        if match is None and through_filter:
            match = next((j for j in candidates if filter_explains(clipped[j, t - chunk_steps[j]], action, low, high)),
                         None)
        if match is not None:
            mask[match, t - chunk_steps[match]] = True
    return mask


def decided_view(episode: Episode, low: float | np.ndarray = -1.0, high: float | np.ndarray = 1.0) -> Episode:
    """The episode as its policy decided it, for regression on recorded trajectories: frames only at the decision
    steps (the image each decision saw, plus the first and last step), and each step's action the (clipped) row of
    the decision that served it, before the safety filter changed it (``served_rows(..., through_filter=True)``).

    Why: reward-weighted regression fits pi(chunk | observation) to the chunks the policy *sampled* from that
    observation and that led somewhere good. The recorder keeps what the arm executed at every step; regressing on
    that teaches the filter's edits (a zeroed axis at the workspace floor becomes 'do not descend', which spreads to
    the states above it: measured on the closed loop's recordings, 55-60% of the reach tasks' steps) and samples
    mid-chunk observations whose targets no single decision produced. Simulator rollouts (frames at decisions,
    actions the clipped rows) come out unchanged. Steps no decision explains (holds) keep their recorded action."""
    if episode.chunk_steps is None or episode.chunks is None or len(episode.chunk_steps) == 0:
        raise ValueError(f"episode {episode.meta.episode_id} has no recorded decisions to view")
    T = episode.length
    steps = np.asarray(episode.chunk_steps, np.int64)
    mask = served_rows(steps, episode.chunks, episode.actions, low, high, through_filter=True)
    actions = np.array(episode.actions, np.float32, copy=True)
    clipped = np.clip(episode.chunks, low, high).astype(np.float32)
    for j, k in zip(*np.nonzero(mask)):
        actions[steps[j] + k] = clipped[j, k]
    frame_steps = np.unique(np.concatenate([[0], steps[steps < T], [T]])).astype(np.int64)
    frames = [episode.held_frame_index(int(s)) for s in frame_steps]
    return replace(episode, actions=actions, frame_steps=frame_steps,
                   images={c: v[frames] for c, v in episode.images.items()})


def behaviour_log_probs(x: np.ndarray, mean: np.ndarray, log_std: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """log pi_b(a_j|s_j) = sum over the masked (executed) elements of log N(x | mean, exp(log_std)^2), per decision.

    ``x``, ``mean``, ``log_std``: (M, K, A) in normalised action units; ``mask``: (M, K) executed rows
    (``served_rows``)."""
    z = (x - mean) * np.exp(-log_std)
    elements = -0.5 * z * z - log_std - 0.5 * _LOG_2PI
    return (elements.sum(axis=-1) * mask).sum(axis=-1)


def truncated_importance_weights(logp_proximal: np.ndarray, logp_behaviour: np.ndarray, cap: float) -> np.ndarray:
    """w_j = min(exp(log pi_prox - log pi_b), cap): how much more likely the proximal policy makes the recorded
    decision than the behaviour policy did, truncated so that one unlikely decision cannot dominate the update."""
    if not cap > 0:
        raise ValueError(f"the importance-weight cap must be > 0, got {cap}")
    log_w = np.asarray(logp_proximal, np.float64) - np.asarray(logp_behaviour, np.float64)
    return np.where(log_w >= math.log(cap), cap, np.exp(np.minimum(log_w, math.log(cap))))  # no overflow


__all__ = ["OfflineSelection", "accepted_lineage", "behaviour_log_probs", "decided_view", "offline_groups",
           "select_offline", "served_rows", "truncated_importance_weights"]
