"""Properties of the self-referential progress reward (pure functions, no simulator)."""

import numpy as np
import pytest

from srpo_trainer.progress_reward import (
    ProgressRewardConfig,
    SuccessMemory,
    failure_reward,
    normalise_distances,
    progress_rewards,
    success_centres,
    task_progress_rewards,
)

CFG = ProgressRewardConfig()


def _batch(seed=0, n_success=4, n_fail=6, dim=5):
    rng = np.random.default_rng(seed)
    succ = rng.normal(0.0, 0.05, (n_success, dim)) + 3.0
    fail = rng.normal(0.0, 1.0, (n_fail, dim))
    e = np.concatenate([succ, fail])
    s = np.array([True] * n_success + [False] * n_fail)
    return e, s


def test_successes_get_exactly_one_and_failures_lie_strictly_inside_0_06():
    e, s = _batch()
    r, diag = task_progress_rewards(e, s, CFG)
    assert np.all(r[s] == 1.0)
    assert np.all((r[~s] > 0.0) & (r[~s] < 0.6))
    assert diag.successes == 4 and diag.failures == 6 and len(diag.distances) == 6
    # the extremes of the normalised range map to 0.6*sigmoid(+-5)
    assert r[~s].max() == pytest.approx(0.6 / (1 + np.exp(-5)))
    assert r[~s].min() == pytest.approx(0.6 / (1 + np.exp(5)))


def test_a_failure_closer_to_the_successes_never_scores_lower():
    rng = np.random.default_rng(1)
    succ = np.zeros((3, 4)) + rng.normal(0, 0.01, (3, 4))
    distances = np.array([0.3, 1.0, 2.0, 2.5, 4.0])
    direction = rng.normal(size=4)
    direction /= np.linalg.norm(direction)
    fails = distances[:, None] * direction[None, :]
    e = np.concatenate([succ, fails[::-1]])  # farthest first: order in the batch must not matter
    s = np.array([True] * 3 + [False] * 5)
    r, _ = task_progress_rewards(e, s, CFG)
    by_distance = r[3:][::-1]
    assert np.all(np.diff(by_distance) < 0), by_distance


def test_no_success_in_the_task_leaves_failures_at_zero():
    e, _ = _batch()
    r, diag = task_progress_rewards(e, np.zeros(len(e), bool), CFG)
    assert np.all(r == 0.0) and diag.fallback == "no_success"


def test_a_degenerate_distance_range_gives_the_midpoint_value():
    succ = np.array([[1.0, 0.0], [1.0, 0.01]])
    fails = np.array([[0.0, 0.0], [0.0, 0.0]])
    r, _ = task_progress_rewards(np.concatenate([succ, fails]), np.array([1, 1, 0, 0], bool), CFG)
    assert r[2:] == pytest.approx([0.3, 0.3])  # 0.6 * sigmoid(0)
    assert normalise_distances(np.array([2.0])) == pytest.approx([0.5])


def test_results_do_not_depend_on_the_order_of_the_batch():
    e, s = _batch(seed=3, n_success=7, n_fail=9)
    tasks = ["a", "b"] * 8
    r, _ = progress_rewards(e, s, tasks, CFG)
    perm = np.random.default_rng(0).permutation(len(e))
    r_perm, _ = progress_rewards(e[perm], s[perm], [tasks[i] for i in perm], CFG)
    np.testing.assert_allclose(r_perm, r[perm])


def test_two_success_modes_form_two_clusters():
    rng = np.random.default_rng(2)
    # two ways to succeed, e.g. approaching from the left or from the right
    mode_a = rng.normal(0.0, 0.02, (5, 3)) + 5.0
    mode_b = rng.normal(0.0, 0.02, (5, 3)) - 5.0
    centres, n = success_centres(np.concatenate([mode_a, mode_b]), CFG)
    assert n == 2
    np.testing.assert_allclose(np.sort(centres[:, 0]), [-5.0, 5.0], atol=0.05)
    # a failure next to mode B is close to a centre, although it is far from the overall success mean (0, 0, 0)
    near_b, midway = np.full(3, -4.8), np.array([0.0, 1.0, 0.0])
    e = np.concatenate([mode_a, mode_b, [near_b, midway]])
    r, diag = task_progress_rewards(e, np.array([True] * 10 + [False, False]), CFG)
    assert diag.clusters == 2 and diag.fallback is None
    assert r[-2] > r[-1]


def test_scattered_successes_fall_back_to_the_mean():
    succ = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    r, diag = task_progress_rewards(np.concatenate([succ, [[3.0, 3.0], [20.0, 20.0]]]),
                                    np.array([1, 1, 1, 0, 0], bool), ProgressRewardConfig(dbscan_eps=0.1))
    assert diag.clusters == 0 and diag.fallback == "mean"
    assert r[3] > r[4]


def test_tasks_are_scored_against_their_own_successes_only():
    e = np.array([[0.0], [1.0], [100.0], [101.0], [50.0], [50.0]])
    s = np.array([True, False, True, False, False, False])
    r, diags = progress_rewards(e, s, ["a", "a", "b", "b", "c", "c"], CFG)
    assert r[0] == r[2] == 1.0
    assert r[1] == pytest.approx(0.3) and r[3] == pytest.approx(0.3)  # one failure each: degenerate range
    assert np.all(r[4:] == 0.0) and diags["c"].fallback == "no_success"


def test_memory_gives_shaping_to_a_task_without_success_in_this_batch():
    cfg = ProgressRewardConfig(memory_size=4)
    memory = SuccessMemory(cfg.memory_size)
    e1, s1 = _batch(seed=4)
    progress_rewards(e1, s1, ["t"] * len(e1), cfg, memory)
    assert len(memory) == 4
    e2 = np.array([[3.0] * 5, [0.0] * 5, [-3.0] * 5])
    r, diags = progress_rewards(e2, np.zeros(3, bool), ["t"] * 3, cfg, memory)
    assert diags["t"].fallback == "external" and diags["t"].reference_size == 4
    assert r[0] > r[1] > r[2] > 0
    # memory off (the paper): the same batch gets nothing
    r_off, _ = progress_rewards(e2, np.zeros(3, bool), ["t"] * 3, ProgressRewardConfig(), SuccessMemory(0))
    assert np.all(r_off == 0)
    # the memory is bounded
    memory.add("t", np.ones((10, 5)))
    assert len(memory) == 4


def test_bad_inputs_and_config_are_rejected():
    with pytest.raises(ValueError, match="NaN"):
        task_progress_rewards(np.array([[np.nan], [0.0]]), np.array([True, False]), CFG)
    with pytest.raises(ValueError, match="embeddings"):
        task_progress_rewards(np.zeros((3, 2)), np.array([True, False]), CFG)
    with pytest.raises(ValueError, match="metric"):
        ProgressRewardConfig(metric="hamming")
    with pytest.raises(ValueError, match="max_failure_reward"):
        ProgressRewardConfig(max_failure_reward=1.5)
    assert failure_reward(np.array([0.5]), CFG) == pytest.approx([0.3])


@pytest.mark.parametrize("metric", ["cosine", "manhattan"])
def test_other_metrics_keep_the_ordering(metric):
    e, s = _batch(seed=5)
    r, _ = task_progress_rewards(e, s, ProgressRewardConfig(metric=metric))
    assert np.all((r[~s] > 0) & (r[~s] < 0.6)) and np.all(r[s] == 1)


def test_per_prompt_references_compare_failures_with_their_own_initial_state():
    # two initial states whose layouts differ by far more than progress does
    layout = {0: np.array([0.0, 0.0]), 1: np.array([10.0, 0.0])}
    progress_dir = np.array([0.0, 1.0])
    rows = []  # (prompt, success, progress)
    for prompt in (0, 1):
        rows += [(prompt, True, 1.0), (prompt, True, 1.0), (prompt, False, 0.8), (prompt, False, 0.2)]
    e = np.stack([layout[p] + prog * progress_dir for p, _, prog in rows])
    e[0] += 0.01  # distinct successes
    s = np.array([r[1] for r in rows])
    prompts = [r[0] for r in rows]
    r_prompt, diags = progress_rewards(e, s, ["t"] * len(rows), ProgressRewardConfig(reference="prompt"), prompts=prompts)
    assert set(diags) == {"t/0", "t/1"}
    assert r_prompt[2] > r_prompt[3] and r_prompt[6] > r_prompt[7]
    # a prompt without any success: nothing under "prompt", the task's successes under "prompt_or_task"
    s2 = s.copy()
    s2[4:6] = False
    r_strict, _ = progress_rewards(e, s2, ["t"] * 8, ProgressRewardConfig(reference="prompt"), prompts=prompts)
    assert np.all(r_strict[4:] == 0)
    r_fb, d_fb = progress_rewards(e, s2, ["t"] * 8, ProgressRewardConfig(reference="prompt_or_task"), prompts=prompts)
    assert d_fb["t/1"].fallback == "external" and np.all(r_fb[4:] > 0)
    with pytest.raises(ValueError, match="prompt id"):
        progress_rewards(e, s, ["t"] * 8, ProgressRewardConfig(reference="prompt"))
    with pytest.raises(ValueError, match="reference"):
        ProgressRewardConfig(reference="batch")
