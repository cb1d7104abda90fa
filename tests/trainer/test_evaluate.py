"""The evaluation harness: determinism, outputs on disk, and confidence intervals."""

import json

import numpy as np
import pytest

from srpo_trainer.evaluate import EvalConfig, evaluate, summarise, wilson_interval
from srpo_trainer.rollouts import run_policy_episodes


def test_wilson_interval_hand_values():
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and 0.25 < hi < 0.35
    assert wilson_interval(10, 10)[1] == 1.0


def test_summary_averages_tasks_equally():
    eps = [{"task": "a", "success": True, "progress": 1.0, "length": 5}] * 3 + [
        {"task": "b", "success": False, "progress": 0.5, "length": 9}]
    s = summarise(eps)
    assert s["success_rate"] == 0.5 and s["per_task"]["a"]["success_rate"] == 1.0 and s["episodes"] == 4


def test_eval_is_deterministic_and_writes_its_outputs(policy, tmp_path):
    cfg = EvalConfig(tasks=["press_button", "open_drawer"], episodes_per_task=2, workers=2, gifs=2,
                     temperature=1.0, seed=3)
    policy.version = "random-init"
    s1 = evaluate(policy, cfg, tmp_path / "e1", progress=False)
    s2 = evaluate(policy, cfg, tmp_path / "e2", progress=False)
    assert s1["episodes_detail"] == s2["episodes_detail"]
    assert [e["task"] for e in s1["episodes_detail"]] == ["press_button"] * 2 + ["open_drawer"] * 2
    on_disk = json.loads((tmp_path / "e1" / "eval.json").read_text())
    assert on_disk["per_task"]["open_drawer"]["episodes"] == 2 and on_disk["config"]["split"] == "heldout"
    assert (tmp_path / "e1" / "eval.png").stat().st_size > 0 and (tmp_path / "e1" / "episodes.gif").stat().st_size > 0


def test_first_state_offsets_the_states_and_keeps_each_episode(policy):
    """``first_state`` runs states k..k+N-1; a state's (deterministic) episode is the same however it is reached."""
    def run(**kw):
        cfg = EvalConfig(tasks=["press_button"], split="train", max_steps=16, workers=1, gifs=0, **kw)
        return evaluate(policy, cfg, progress=False)["episodes_detail"]

    offset, whole = run(episodes_per_task=2, first_state=10), run(episodes_per_task=12)
    assert [e["init_state_id"] for e in offset] == [10, 11]
    assert offset == whole[10:12]


def test_sampling_is_seeded(policy):
    def frames(seed):
        _, clips, _ = run_policy_episodes(policy, [("open_drawer", 0)], "heldout", 1, 8, 1.0, seed, gif_episodes=1)
        return clips[0]

    a, b, c = frames(3), frames(3), frames(4)
    assert a.shape == b.shape and (a == b).all()
    assert a.shape != c.shape or not (a == c).all()


@pytest.mark.parametrize("kw, message", [({"split": "test"}, "split"), ({"episodes_per_task": 201}, "1..200"),
                                         ({"tasks": ["fly"]}, "unknown task"), ({"suite": "libero"}, "unknown suite"),
                                         ({"suite": "libero_spatial_wet"}, "unknown LIBERO suite"),
                                         ({"fast_render": True}, "LIBERO option"),
                                         ({"split": "train", "first_state": 99, "episodes_per_task": 2}, "do not fit"),
                                         ({"first_state": -1}, "do not fit")])
def test_bad_eval_config(kw, message):
    with pytest.raises(ValueError, match=message):
        EvalConfig(**kw)


def test_recorded_rollouts_carry_decisions(policy):
    """RL's view of a rollout: a schema-valid episode whose chunks, steps and log-probs replay exactly."""
    import torch

    from srpo_trainer.policies.base import Observation
    from srpo_trainer.rollouts import decision_observation

    jobs = [("open_drawer", 0), ("press_button", 1), ("open_drawer", 2)]
    results, _, episodes = run_policy_episodes(policy, jobs, "train", 2, 8, 1.0, seed=5, record=True)
    assert [(e.meta.task, e.meta.init_state_id) for e in episodes] == jobs
    for res, ep in zip(results, episodes):
        assert ep.length == res["length"] and ep.meta.success == res["success"] and ep.meta.split == "train"
        assert ep.chunk_steps[0] == 0 and (np.diff(ep.chunk_steps) == 8).all()
        assert len(ep.chunk_steps) == -(-ep.length // 8)
        # the executed actions are the (clipped) sampled chunks
        np.testing.assert_allclose(ep.actions[:8], np.clip(ep.chunks[0], -1, 1)[: min(8, ep.length)], atol=1e-6)
        images, proprio, instruction = decision_observation(ep, int(ep.chunk_steps[-1]))
        obs = Observation({c: v[None] for c, v in images.items()}, proprio[None], [instruction])
        with torch.no_grad():
            lp = policy.log_prob(obs, torch.from_numpy(ep.chunks[-1:]), temperature=1.0)
        np.testing.assert_allclose(lp.numpy(), ep.chunk_log_probs[-1:], rtol=1e-4, atol=1e-3)
        assert ep.meta.policy_version == policy.version


def test_recorded_distribution_recomputes_old_log_probs_without_the_policy(policy, tmp_path):
    """What offline RL needs: from the episode file alone (stored mean and log-std, normalised units, and the
    normalisation statistics), the per-element log-densities of the sampled chunks sum to the recorded log-probs."""
    import math

    from srpo.episodes import read_episode, write_episode
    from srpo_trainer.rl.exploration import ExplorationConfig, ExplorationPolicy

    for actor in (policy, ExplorationPolicy(policy, ExplorationConfig(std_mode="fixed", std=0.3))):
        _, _, episodes = run_policy_episodes(actor, [("press_button", 2)], "train", 1, 8, 0.7, seed=11, record=True)
        ep = read_episode(write_episode(tmp_path / "ep.mcap", episodes[0]))
        assert ep.chunk_means.shape == ep.chunks.shape == ep.chunk_log_stds.shape
        assert ep.meta.policy_distribution == {"family": "gaussian", "space": "normalised", "chunk_correlation": 0.0}
        stats = policy.processor.stats
        x = (ep.chunks - stats.action_mean) / stats.action_std  # the chunk in the policy's normalised units
        z = (x - ep.chunk_means) * np.exp(-ep.chunk_log_stds)
        per_element = -0.5 * z**2 - ep.chunk_log_stds - 0.5 * math.log(2 * math.pi)
        np.testing.assert_allclose(per_element.sum(axis=(1, 2)), ep.chunk_log_probs, rtol=1e-5, atol=1e-3)


def test_decision_only_frames_change_nothing_but_the_frames_stored(policy):
    """Rendering only where the policy decides: the same rollouts, and every stored frame is the dense one."""
    jobs = [("press_button", 0), ("open_drawer", 3)]
    res_d, _, dense = run_policy_episodes(policy, jobs, "train", 2, 8, 1.0, seed=7, record=True,
                                          record_frames="every_step")
    res_s, _, sparse = run_policy_episodes(policy, jobs, "train", 2, 8, 1.0, seed=7, record=True)
    assert res_s == res_d
    for d, s in zip(dense, sparse):
        assert d.frame_steps is None
        expected = np.unique(np.r_[np.arange(0, d.length, 8), d.length])
        assert np.array_equal(s.frame_steps, expected)
        assert np.array_equal(s.chunk_steps, d.chunk_steps) and np.array_equal(s.chunks, d.chunks)
        assert np.array_equal(s.actions, d.actions) and np.array_equal(s.proprio, d.proprio)
        for cam in d.images:
            assert np.array_equal(s.images[cam], d.images[cam][s.frame_steps])
    with pytest.raises(ValueError, match="record_frames"):
        run_policy_episodes(policy, jobs, "train", 2, 8, 1.0, seed=7, record=True, record_frames="some")
