"""GRPO/SRPO update objectives on hand-computed cases."""

import numpy as np
import pytest
import torch

from srpo_trainer.rl.objectives import (dynamic_sampling_mask, group_advantages, kl_penalty, ppo_clip_loss,
                                        reward_spread_mask, rloo_advantages)


def test_group_advantages_normalise_within_each_group():
    rewards = np.array([1.0, 0.0, 0.5, 0.5, 2.0, 2.0])
    groups = np.array([0, 0, 1, 1, 2, 2])
    adv = group_advantages(rewards, groups, eps=0.0 + 1e-12)
    # group 0: mean 0.5, std 0.5 -> +-1; groups 1 and 2 have zero variance -> 0
    np.testing.assert_allclose(adv, [1.0, -1.0, 0.0, 0.0, 0.0, 0.0], atol=1e-9)
    adv3 = group_advantages(np.array([0.0, 1.0, 0.6]), np.zeros(3))
    mean, std = 1.6 / 3, np.std([0.0, 1.0, 0.6])
    np.testing.assert_allclose(adv3, (np.array([0.0, 1.0, 0.6]) - mean) / (std + 1e-6))
    with pytest.raises(ValueError, match="shape"):
        group_advantages(np.zeros(3), np.zeros(4))


def test_dynamic_sampling_drops_all_fail_and_all_success_groups():
    success = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0])
    groups = np.repeat([0, 1, 2], 4)
    keep = dynamic_sampling_mask(success, groups, 0.1, 0.9)
    assert keep.tolist() == [False] * 4 + [False] * 4 + [True] * 4
    assert dynamic_sampling_mask(success, groups, 0.0, 1.0).all()


def test_ppo_clip_is_asymmetric():
    logp_old = torch.zeros(4)
    # ratios 1.5 and 0.5 with positive and negative advantages
    logp = torch.log(torch.tensor([1.5, 1.5, 0.5, 0.5]))
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    loss, info = ppo_clip_loss(logp, logp_old, adv, clip_low=0.2, clip_high=0.28)
    # A>0, r=1.5: min(1.5, 1.28) = 1.28;  A<0, r=1.5: min(-1.5, -1.28) = -1.5
    # A>0, r=0.5: min(0.5, 0.8) = 0.5;    A<0, r=0.5: min(-0.5, -0.8) = -0.8
    assert loss.item() == pytest.approx(-(1.28 - 1.5 + 0.5 - 0.8) / 4)
    assert info["clip_fraction"] == pytest.approx(0.5)


def test_log_ratio_is_clamped_and_gradient_flows_only_inside_the_clip():
    logp = torch.tensor([100.0, 0.1], requires_grad=True)
    loss, info = ppo_clip_loss(logp, torch.zeros(2), torch.tensor([-1.0, 1.0]), log_ratio_clamp=20.0)
    assert torch.isfinite(loss) and info["ratio_mean"] < float(np.exp(20.0))
    loss.backward()
    assert logp.grad[1] != 0  # ratio e^0.1 = 1.105 inside (0.8, 1.28): gradient
    assert logp.grad[0] == 0  # clamped log-ratio: no gradient through the clamp


def test_kl_penalty_is_zero_at_the_reference_and_positive_elsewhere():
    logp = torch.tensor([-1.0, -2.0])
    assert kl_penalty(logp, logp).item() == 0.0
    assert kl_penalty(logp, logp + 0.5).item() > 0


def test_masked_per_element_loss_ignores_unexecuted_steps():
    # two chunks of K=2 steps x A=1; the second step of chunk 1 never ran (episode ended): its huge ratio is ignored
    logp_old = torch.zeros(2, 2, 1)
    logp = torch.log(torch.tensor([[[1.1], [1.1]], [[1.1], [50.0]]]))
    adv = torch.tensor([1.0, 1.0])[:, None, None]
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])[..., None]
    loss, info = ppo_clip_loss(logp, logp_old, adv, mask=mask)
    assert loss.item() == pytest.approx(-1.1)
    assert info["clip_fraction"] == 0.0 and info["ratio_mean"] == pytest.approx(1.1)
    assert kl_penalty(logp, logp_old, mask).item() == pytest.approx(kl_penalty(torch.log(torch.full((3,), 1.1)),
                                                                                torch.zeros(3)).item())


def test_dynamic_sampling_then_advantages_only_see_informative_groups():
    """The filter's effect on the update: dropped groups contribute no advantage at all."""
    success = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0], dtype=float)
    rewards = success * 5.0 + np.array([0, 0, 0, 0, 1, 2, 3, 4, 0, 1, 2, 3.0]) * (1 - success)
    groups = np.repeat([0, 1, 2], 4)
    keep = dynamic_sampling_mask(success, groups, 0.1, 0.9)
    adv = group_advantages(rewards, groups)
    assert keep.tolist() == [False] * 8 + [True] * 4
    kept = adv[keep]
    assert kept[0] == kept.max() and np.argsort(kept[1:]).tolist() == [0, 1, 2]  # success first, then progress
    assert abs(kept.mean()) < 1e-9 and kept.std() == pytest.approx(1.0, abs=1e-5)


def test_std_floor_keeps_nearly_equal_rewards_from_becoming_unit_advantages():
    rewards = np.array([1.00, 1.01, 1.00, 1.01, 0.0, 5.0, 0.0, 0.0])
    groups = np.repeat([0, 1], 4)
    plain = group_advantages(rewards, groups)
    floored = group_advantages(rewards, groups, std_floor=0.5)
    assert np.abs(plain[:4]).max() == pytest.approx(1.0, abs=1e-3)  # 0.01 of difference, blown up to +-1
    np.testing.assert_allclose(floored[:4], [-0.01, 0.01, -0.01, 0.01], atol=1e-6)  # (R - mean) / 0.5
    np.testing.assert_allclose(floored[4:], plain[4:], rtol=1e-6)  # a real spread is untouched by the floor


def test_rloo_subtracts_the_mean_of_the_others():
    rewards = np.array([5.0, 0.0, 0.0, 0.0, 3.0, 3.0])
    adv = rloo_advantages(rewards, np.array([0, 0, 0, 0, 1, 1]), scale=5.0)
    np.testing.assert_allclose(adv, [1.0, -1 / 3, -1 / 3, -1 / 3, 0.0, 0.0])
    assert rloo_advantages(np.array([2.0]), np.array([0]))[0] == 0.0  # no others: no baseline, no signal


def test_reward_spread_filter_keeps_dense_all_fail_groups_and_drops_flat_ones():
    success = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0], dtype=float)
    rewards = np.array([0.5, 2.0, 1.0, 0.3, 5, 5, 5, 5, 0, 0, 0, 0, 5, 0, 0, 0.0])
    groups = np.repeat([0, 1, 2, 3], 4)
    keep = reward_spread_mask(rewards, groups, min_spread=0.05)
    # all-fail group 0 carries a dense signal and is kept; the success-rate filter would have dropped it
    assert keep.tolist() == [True] * 4 + [False] * 8 + [True] * 4
    assert dynamic_sampling_mask(success, groups, 0.1, 0.9).tolist() == [False] * 12 + [True] * 4
    # under a binary reward the two filters agree
    np.testing.assert_array_equal(reward_spread_mask(5 * success, groups, 0.05),
                                  dynamic_sampling_mask(success, groups, 0.1, 0.9))


def test_progress_gae_credits_each_decision_with_what_followed_it():
    from srpo_trainer.rl.objectives import progress_gae_advantages

    # task t: a success whose progress rose to 0.5 at its second decision, a failure that never moved
    phi, returns, tasks = [np.array([0.0, 0.5]), np.array([0.0, 0.0])], np.array([5.0, 0.0]), ["t", "t"]
    # V = a + b phi fitted on (phi, R) pairs: b = 20/3, a = 5/3, so V = [5/3, 5] and [5/3, 5/3]
    mc = progress_gae_advantages(phi, returns, tasks, lam=1.0)  # R - V(s_j)
    np.testing.assert_allclose(mc[0], [10 / 3, 0.0], atol=1e-9)
    np.testing.assert_allclose(mc[1], [-5 / 3, -5 / 3], atol=1e-9)
    td = progress_gae_advantages(phi, returns, tasks, lam=0.0)  # V(s_{j+1}) - V(s_j), R - V at the end
    np.testing.assert_allclose(td[0], [10 / 3, 0.0], atol=1e-9)  # the decision that made the progress gets it
    np.testing.assert_allclose(td[1], [0.0, -5 / 3], atol=1e-9)  # the failure is blamed where it ended


def test_reward_weights_rank_like_rewards_and_reduce_to_success_filtering():
    from srpo_trainer.rl.objectives import reward_weights

    c = 5.0
    rewards = np.array([c, 0.6 * c, 0.3 * c, 0.0])
    w = reward_weights(rewards, c, beta=0.25)
    np.testing.assert_allclose(w, np.exp((rewards / c - 1) / 0.25))
    assert w[0] == 1.0 and np.all(np.diff(w) < 0)  # a success weighs 1, failures less, in the order of their reward
    # as beta -> 0 only successes keep weight: success-filtered behaviour cloning
    assert reward_weights(rewards, c, beta=0.01)[1:].max() < 1e-15
    with pytest.raises(ValueError, match="non-finite"):
        reward_weights(np.array([1.0, np.nan]), c, 0.25)
    with pytest.raises(ValueError, match="beta"):
        reward_weights(rewards, c, 0.0)


def test_advantage_weights_favour_a_success_among_failures_over_a_solved_prompt():
    from srpo_trainer.rl.config import RLConfig
    from srpo_trainer.rl.objectives import advantage_weights, group_advantages, reward_weights
    from srpo_trainer.rl.trainer import regression_weights

    c = 5.0
    # prompt 0: one success among three failures; prompt 1: solved every time
    rewards = np.array([c, 1.0, 1.0, 1.0, c, c, c, c])
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    adv = group_advantages(rewards, groups, 1e-6, 0.1 * c)
    w = advantage_weights(adv, beta=1.0, max_weight=20.0)
    # hand-computed: group 0 mean 2, std sqrt(3) -> the success has A = 3/sqrt(3) = sqrt(3), each failure -1/sqrt(3)
    np.testing.assert_allclose(w[:4], np.exp([np.sqrt(3), -1 / np.sqrt(3), -1 / np.sqrt(3), -1 / np.sqrt(3)]),
                               rtol=1e-5)
    np.testing.assert_allclose(w[4:], 1.0)  # an all-success group weighs like a demonstration
    assert w[0] > 5 * w[4]  # the new success outweighs the re-learnt ones
    assert advantage_weights(np.array([10.0]), 1.0, 20.0)[0] == 20.0  # clipped
    with pytest.raises(ValueError, match="non-finite"):
        advantage_weights(np.array([np.inf]), 1.0, 20.0)
    with pytest.raises(ValueError, match="max_weight"):
        advantage_weights(adv, 1.0, 0.5)
    # the trainer picks the weighting from the config; the reward weighting is unchanged
    cfg = RLConfig()
    cfg.update.regression.weighting, cfg.update.regression.beta = "advantage", 1.0
    per_decision = [np.full(3, a) for a in adv]
    np.testing.assert_allclose(regression_weights(cfg, rewards, per_decision), w)
    cfg.update.regression.weighting, cfg.update.regression.beta = "reward", 0.25
    np.testing.assert_allclose(regression_weights(cfg, rewards, per_decision), reward_weights(rewards, c, 0.25))


def test_prompt_outcomes_count_solved_and_mixed_prompts():
    from srpo_trainer.rl.trainer import prompt_outcomes

    success = np.array([1, 1, 0, 0, 1, 0, 1, 1], dtype=bool)
    groups = np.array([0, 0, 1, 1, 2, 2, 3, 3])  # solved, failed, mixed, solved
    assert prompt_outcomes(success, groups) == {"rollout/prompts_solved": 0.75, "rollout/prompts_mixed": 0.25}
