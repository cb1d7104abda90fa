"""Initial states, splits, success and progress of the tabletop tasks (privileged, real MuJoCo)."""

import numpy as np
import pytest

from srpo.sim.rollout import expert_episode
from srpo.sim.tabletop.tasks import SPLIT_SIZES, TASKS, get_task


def _layout_vector(state) -> np.ndarray:
    vals = []
    for key in sorted(state.layout):
        vals.extend(np.atleast_1d(state.layout[key]).tolist())
    return np.array(vals)


def test_suite_size_families_and_multi_stage():
    assert len(TASKS) >= 8
    assert len({t.family for t in TASKS.values()}) >= 4
    assert sum(t.multi_stage for t in TASKS.values()) >= len(TASKS) / 2
    for t in TASKS.values():
        assert t.instruction and t.max_steps > 0


@pytest.mark.parametrize("task", sorted(TASKS))
def test_train_and_heldout_initial_states_are_disjoint(task):
    t = get_task(task)
    train = np.stack([_layout_vector(s) for s in t.initial_states("train")])
    held = np.stack([_layout_vector(s) for s in t.initial_states("heldout")])
    assert len(train) == SPLIT_SIZES["train"] and len(held) == SPLIT_SIZES["heldout"]
    gaps = np.abs(train[:, None, :] - held[None, :, :]).max(axis=2)
    assert gaps.min() > 1e-3  # no held-out layout equals (or nearly equals) a training layout


def test_initial_states_are_reproducible_and_differ_between_tasks():
    a = get_task("open_drawer").initial_state("train", 5)
    b = get_task("open_drawer").initial_state("train", 5)
    c = get_task("press_button").initial_state("train", 5)
    assert a == b and a.id == "open_drawer/train/5"
    assert not np.allclose(_layout_vector(a), _layout_vector(c))


def test_close_drawer_starts_open_and_others_closed():
    assert all(s.layout["drawer"] > 0.1 for s in get_task("close_drawer").initial_states("heldout"))
    assert all(s.layout["drawer"] == 0 for s in get_task("open_drawer").initial_states("heldout"))


def test_initial_state_index_errors():
    with pytest.raises(IndexError):
        get_task("open_drawer").initial_state("train", 100)
    with pytest.raises(ValueError, match="unknown split"):
        get_task("open_drawer").initial_state("test", 0)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_progress_is_one_exactly_at_success_and_monotone_along_the_expert(env, task):
    for init in (0, 1):
        ep = expert_episode(env, task, "heldout", init)
        p = ep.progress
        assert np.all((p >= 0) & (p <= 1))
        assert ep.meta.success, f"expert failed {task} heldout #{init}"
        assert p[-1] == 1.0 and np.all(p[:-1] < 1.0)  # terminated at the first success
        drops = np.maximum.accumulate(p) - p
        assert drops.max() <= 0.1, f"{task}: progress fell by {drops.max():.3f}"
        assert p[-2] > p[0]


def test_failed_attempts_have_partial_progress(env):
    """Truncated expert attempts of a multi-stage task stop at intermediate progress (what SRPO rewards)."""
    full = expert_episode(env, "place_red_cube_in_tray", "heldout", 2)
    partial = [expert_episode(env, "place_red_cube_in_tray", "heldout", 2, max_steps=n) for n in (8, 25, 45)]
    finals = [ep.meta.final_progress for ep in partial]
    assert not any(ep.meta.success for ep in partial)
    assert 0 < finals[0] < finals[1] < finals[2] < 0.95 < full.meta.final_progress == 1.0
