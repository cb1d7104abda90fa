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
