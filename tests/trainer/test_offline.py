"""Offline SRPO's pure pieces: selection with reasons, grouping, behaviour log-probs and truncated importance weights
(hand-checked)."""

from __future__ import annotations

import copy
import json
import math
import shutil

import numpy as np
import pytest
import torch

from srpo_trainer.rl.offline import (
    accepted_lineage,
    behaviour_log_probs,
    decided_view,
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


def test_the_decided_view_regresses_on_decisions_not_on_the_filters_edits(expert_ep):
    """A recorded episode (every frame, the executed actions): the view keeps the frames each decision saw and puts
    back the row the policy decided where the safety filter zeroed an axis or scaled the motion; a hold keeps its
    recorded action; a simulator rollout (frames at decisions, actions the clipped rows) comes out unchanged."""
    from srpo.robot.safety import hold_action

    rng = np.random.default_rng(0)
    ep = copy.deepcopy(expert_ep)
    T, K = ep.length, 8
    steps = np.arange(0, T, K)
    ep.chunk_steps, ep.chunks = steps.astype(np.int64), rng.uniform(-1.2, 1.2, (len(steps), K, 7)).astype(np.float32)
    ep.chunk_log_probs = np.zeros(len(steps), np.float32)
    decided = np.clip(ep.chunks, -1, 1).reshape(-1, 7)[:T]
    executed = decided.copy()
    executed[3, 2] = 0.0                                    # the workspace's z- face zeroed a descent
    executed[5, :3] *= 0.5                                  # the linear speed limit halved a step
    executed[9] = hold_action(float(decided[8, 6]))        # a stale observation: hold
    ep.actions = executed
    assert served_rows(steps, ep.chunks, executed).sum() == T - 3  # exact matches only
    mask = served_rows(steps, ep.chunks, executed, through_filter=True)
    assert mask.sum() == T - 1 and not mask[1, 1] and mask[0, 3] and mask[0, 5]
    view = decided_view(ep.validate())
    view.validate()
    expected = decided.copy()
    expected[9] = executed[9]
    np.testing.assert_array_equal(view.actions, expected)
    assert view.frame_steps.tolist() == sorted({*steps.tolist(), T})
    for cam in ep.images:
        np.testing.assert_array_equal(view.images[cam], ep.images[cam][view.frame_steps])
    again = decided_view(view)  # already decisions: nothing changes
    np.testing.assert_array_equal(again.actions, view.actions)
    assert again.frame_steps.tolist() == view.frame_steps.tolist()
    for cam in ep.images:
        np.testing.assert_array_equal(again.images[cam], view.images[cam])
    ep.chunk_steps = None
    with pytest.raises(ValueError, match="no recorded decisions"):
        decided_view(ep)


def test_a_row_mask_scores_exactly_the_rows_it_marks():
    """The update scores a robot's decision over the rows its arm executed (not necessarily a prefix): the density
    over a row mask equals the sum of the per-element densities of those rows, and the prefix mask agrees with the
    step count."""
    from srpo_trainer.rl.exploration import chunk_log_prob, decision_kl, element_log_prob

    g = torch.Generator().manual_seed(0)
    x, mean = torch.randn(2, 4, 3, generator=g), torch.randn(2, 4, 3, generator=g)
    log_std = 0.3 * torch.randn(2, 4, 3, generator=g)
    rows = torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    by_hand = (element_log_prob(x, mean, log_std).sum(dim=2) * rows).sum(dim=1)
    assert torch.allclose(chunk_log_prob(x, mean, log_std, rows), by_hand, atol=1e-5)
    prefix = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
    assert torch.allclose(chunk_log_prob(x, mean, log_std, prefix), chunk_log_prob(x, mean, log_std,
                                                                                   torch.tensor([2, 3])))
    assert torch.allclose(decision_kl(mean, log_std, x, log_std, prefix), decision_kl(mean, log_std, x, log_std,
                                                                                       torch.tensor([2, 3])))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A tiny SFT policy and 12 episodes it recorded with sampled actions (fixed std 0.2), plus its demos."""
    from srpo.episodes.store import EpisodeStore
    from srpo.sim.rollout import expert_episode
    from srpo.sim.tabletop.env import TabletopEnv
    from srpo_trainer.policies import load_policy
    from srpo_trainer.policies.tiny_vla import TinyVLAConfig
    from srpo_trainer.rl.exploration import ExplorationConfig, ExplorationPolicy
    from srpo_trainer.rollouts import run_policy_episodes
    from srpo_trainer.sft import SFTConfig, train_sft

    from .conftest import SMALL

    root = tmp_path_factory.mktemp("offline")
    demos = EpisodeStore(root / "demos")
    env = TabletopEnv(image_size=32)
    for task in ("reach_red_cube", "press_button"):
        for i in range(3):
            demos.write(expert_episode(env, task, "train", i))
    env.close()
    sft = train_sft(SFTConfig(data=str(demos.root), out=str(root / "sft"), steps=300, batch_size=16,
                              checkpoint_every=300, policy=TinyVLAConfig(**SMALL)), progress=False)
    policy = load_policy(sft)
    jobs = [(t, s) for t in ("reach_red_cube", "press_button") for s in range(2) for _ in range(3)]
    _, _, episodes = run_policy_episodes(ExplorationPolicy(policy, ExplorationConfig(std=0.2)), jobs, "train", 2, 8,
                                         1.0, 0, record=True, record_frames="every_step")
    store = EpisodeStore(root / "episodes" / "round_000")
    for e in episodes:
        store.write(e)
    assert 0 < sum(e.meta.success for e in episodes) < len(episodes), "the fixture needs mixed outcomes"
    return root, sft, policy.version, episodes


def _offline_overrides(root, sft, out, *extra):
    return [f"init={sft}", f"out={out}", f"offline.episodes={root / 'episodes'}", "steps=1", "threads=1",
            "eval_episodes_per_task=0", "exploration.std_mode=fixed", "exploration.std=0.2", "rollout.temperature=1.0",
            "rollout.tasks=[reach_red_cube, press_button]", f"reward.world_model.data={root / 'demos'}",
            "reward.world_model.steps=20", "reward.world_model.batch_size=8", "filter.kind=none", *extra]


def test_offline_update_from_recorded_episodes(recorded, tmp_path):
    """``srpo train --episodes``: the recorded episodes are used (with one unlabelled and one of an unknown version
    excluded, each with its reason), the importance weights of on-policy data are 1, the policy changes, and the
    result names its parent."""
    from safetensors.torch import load_file

    from srpo.episodes.store import EpisodeStore
    from srpo.config import load_config
    from srpo_trainer.rl.config import RLConfig
    from srpo_trainer.rl.offline_trainer import train_offline

    root, sft, version, episodes = recorded
    extra = EpisodeStore(root / "episodes" / "round_001")
    unlabelled, stranger = copy.deepcopy(episodes[0]), copy.deepcopy(episodes[1])
    unlabelled.meta.success, unlabelled.meta.episode_id = None, "unlabelled-one"
    stranger.meta.policy_version, stranger.meta.episode_id = "rl:elsewhere@000000000000", "stranger"
    extra.write(unlabelled)
    extra.write(stranger)
    try:
        run = train_offline(load_config(RLConfig, None, _offline_overrides(root, sft, tmp_path / "run")),
                            progress=False)
    finally:
        for p in extra.files():
            p.unlink()
    selection = json.loads((run / "selection.json").read_text())
    assert selection["used"] == len(episodes) and selection["accepted_versions"] == [version]
    assert selection["excluded"] == {"unlabelled-one": "unlabelled (success unknown)",
                                     "stranger": "policy version too old or not in the accepted lineage"}
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    # the data was recorded by the very policy being updated: pi_prox = pi_b on every executed row
    assert row["offline/is_weight_mean"] == pytest.approx(1.0, abs=1e-3)
    assert row["offline/is_truncated_fraction"] == 0.0 and row["offline/decisions_unserved"] == 0
    assert row["update/optimizer_steps"] > 0
    before, after = load_file(str(sft / "model.safetensors")), load_file(str(run / "final" / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["parent_version"] == version and summary["version"].startswith("offline:run@")
    assert summary["version"] == json.loads((run / "final" / "config.json").read_text())["version"]


def test_offline_update_refuses_when_nothing_is_usable(recorded, tmp_path):
    """Every episode from another version: the run stops before any update and names the reason."""
    from srpo.config import load_config
    from srpo_trainer.rl.config import RLConfig
    from srpo_trainer.rl.offline_trainer import train_offline
    from srpo_trainer.rl.trainer import RunConfigError

    root, sft, _, episodes = recorded
    cfg = load_config(RLConfig, None, _offline_overrides(root, sft, tmp_path / "run", "offline.max_version_lag=0"))
    cfg.init = str(tmp_path / "other")
    shutil.copytree(sft, cfg.init)
    meta = json.loads((tmp_path / "other" / "config.json").read_text())
    meta["version"] = "sft:other@111111111111"
    (tmp_path / "other" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(RunConfigError, match=f"{len(episodes)} policy version too old"):
        train_offline(cfg, progress=False)
