"""Offline SRPO's pure pieces: selection with reasons, grouping, behaviour log-probs and truncated importance weights
(hand-checked)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from srpo_trainer.rl.offline import (
    accepted_lineage,
    behaviour_log_probs,
    offline_groups,
    served_rows,
    select_offline,
    truncated_importance_weights,
)


def _with_decisions(ep, version="rl:a@1", distribution=True):
    ep = copy.deepcopy(ep)
    steps = np.arange(0, ep.length, 8)
    ep.chunk_steps = steps.astype(np.int64)
    ep.chunks = np.zeros((len(steps), 8, 7), np.float32)
    ep.chunk_log_probs = np.full(len(steps), -3.0, np.float32)
    if distribution:
        ep.chunk_means = np.zeros_like(ep.chunks)
        ep.chunk_log_stds = np.full_like(ep.chunks, -1.0)
        ep.meta.policy_distribution = {"family": "gaussian", "space": "normalised", "chunk_correlation": 0.0}
    ep.meta.policy_version = version
    ep.meta.episode_id = f"{version}-{distribution}-{ep.meta.success}"
    return ep.validate()


def test_selection_keeps_usable_episodes_and_names_every_exclusion(expert_ep):
    good = _with_decisions(expert_ep)
    unlabelled = _with_decisions(expert_ep, version="rl:a@1")
    unlabelled.meta.success, unlabelled.meta.episode_id = None, "unlabelled"
    no_decisions = copy.deepcopy(expert_ep)
    no_decisions.meta.episode_id = "expert"
    deterministic = _with_decisions(expert_ep, distribution=False)
    old = _with_decisions(expert_ep, version="rl:a@0")
    unknown = _with_decisions(expert_ep, version="unknown")
    sel = select_offline([good, unlabelled, no_decisions, deterministic, old, unknown], {"rl:a@1"})
    assert [e.meta.episode_id for e in sel.kept] == [good.meta.episode_id]
    assert sel.excluded == {
        "unlabelled": "unlabelled (success unknown)",
        "expert": "no policy decisions recorded",
        deterministic.meta.episode_id: "no behaviour distribution recorded (deterministic or old recorder)",
        old.meta.episode_id: "policy version too old or not in the accepted lineage",
        unknown.meta.episode_id: "unknown policy version",
    }
    assert sel.reasons["unlabelled (success unknown)"] == 1


def test_lineage_follows_parents_up_to_the_lag():
    parents = {"v3": "v2", "v2": "v1", "v1": "v0", "v0": None}
    assert accepted_lineage("v3", parents, 0) == ["v3"]
    assert accepted_lineage("v3", parents, 2) == ["v3", "v2", "v1"]
    assert accepted_lineage("v3", parents, 9) == ["v3", "v2", "v1", "v0"]
    assert accepted_lineage("v3", {"v3": "v3"}, 5) == ["v3"]  # a cycle cannot loop


def test_groups_by_initial_state_when_known_else_by_round(expert_ep):
    eps = []
    for task, init in (("a", 0), ("a", 0), ("a", 1), ("b", 0), ("a", None), ("a", None), ("a", None)):
        e = copy.deepcopy(expert_ep)
        e.meta.task, e.meta.init_state_id = task, init
        eps.append(e)
    ids = offline_groups(eps, rounds=[0, 0, 0, 0, 0, 0, 1])
    assert ids.tolist() == [0, 0, 1, 2, 3, 3, 4]
    with pytest.raises(ValueError, match="rounds"):
        offline_groups(eps, rounds=[0])


def test_behaviour_log_probs_by_hand():
    # one decision, K=2, A=1: x = [1, 3], mean = [0, 1], std = [1, 2]; only the first step executed
    x, mean = np.array([[[1.0], [3.0]]]), np.array([[[0.0], [1.0]]])
    log_std = np.log(np.array([[[1.0], [2.0]]]))
    first = -0.5 * 1.0 - 0.0 - 0.5 * math.log(2 * math.pi)
    second = -0.5 * 1.0 - math.log(2.0) - 0.5 * math.log(2 * math.pi)
    assert behaviour_log_probs(x, mean, log_std, np.array([[1.0, 0.0]]))[0] == pytest.approx(first)
    assert behaviour_log_probs(x, mean, log_std, np.array([[1.0, 1.0]]))[0] == pytest.approx(first + second)


def test_truncated_importance_weights_by_hand():
    w = truncated_importance_weights(np.array([-1.0, -2.0, 0.0, -5.0]), np.array([-1.0, -1.0, -3.0, 5.0]), cap=2.0)
    assert w == pytest.approx([1.0, math.exp(-1.0), 2.0, math.exp(-10.0)])  # equal, less likely, capped, tiny
    assert truncated_importance_weights(np.array([800.0]), np.array([0.0]), cap=5.0)[0] == 5.0  # no overflow
    with pytest.raises(ValueError, match="cap"):
        truncated_importance_weights(np.zeros(1), np.zeros(1), cap=0.0)


def test_served_rows_follow_the_asynchronous_chunker():
    """Decisions at steps 0, 3 and 6 (K=4); each chunk arrives one step late, so row 0 never runs; the last step is a
    hold that no row explains; values beyond the bounds are executed clipped."""
    K, A = 4, 2
    chunks = np.stack([np.full((K, A), 10.0 * j) + np.arange(K)[:, None] for j in range(3)]) / 100.0
    chunks[0, 1] = [5.0, -5.0]  # executed as (1, -1)
    steps = np.array([0, 3, 6])
    actions = np.array([[0.0, 0.0],  # t=0: a hold equal to chunk 0 row 0 (all zeros): indistinguishable, attributed
                        [1.0, -1.0], chunks[0, 2], chunks[0, 3],   # t=1..3: chunk 0 rows 1..3 (clipped at t=1)
                        chunks[1, 1], chunks[1, 2],                # t=4,5: chunk 1 rows 1,2
                        chunks[1, 3], chunks[2, 1], [0.5, 0.5]])   # t=6: still chunk 1; t=7: chunk 2; t=8: a hold
    mask = served_rows(steps, chunks, actions)
    assert mask.astype(int).tolist() == [[1, 1, 1, 1], [0, 1, 1, 1], [0, 1, 0, 0]]
    # the sync rollouts' layout: rows 0..n-1 of each chunk
    sync = served_rows(np.array([0, 2]), chunks[:2], np.concatenate([np.clip(chunks[0, :2], -1, 1), chunks[1, :2]]))
    assert sync.astype(int).tolist() == [[1, 1, 0, 0], [1, 1, 0, 0]]
