"""The evaluation harness: determinism, outputs on disk, and confidence intervals."""

import json

import pytest

from srpo_trainer.evaluate import EvalConfig, evaluate, run_policy_episodes, summarise, wilson_interval


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


def test_sampling_is_seeded(policy):
    def frames(seed):
        _, clips = run_policy_episodes(policy, [("open_drawer", 0)], "heldout", 1, 8, 1.0, seed, record=1)
        return clips[0]

    a, b, c = frames(3), frames(3), frames(4)
    assert a.shape == b.shape and (a == b).all()
    assert a.shape != c.shape or not (a == c).all()


@pytest.mark.parametrize("kw, message", [({"split": "test"}, "split"), ({"episodes_per_task": 51}, "1..50"),
                                         ({"tasks": ["fly"]}, "unknown task"), ({"suite": "libero"}, "not available")])
def test_bad_eval_config(kw, message):
    with pytest.raises(ValueError, match=message):
        EvalConfig(**kw)
