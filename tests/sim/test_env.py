"""The gymnasium env on real MuJoCo: spaces, determinism, reset options and bad input."""

import gymnasium
import numpy as np
import pytest

import srpo.sim  # noqa: F401 - registers the env ids
from srpo.sim.tabletop.env import TabletopEnv
from srpo.sim.tabletop.tasks import TASKS
from srpo.spec import InvalidActionError


def _rollout(env, actions, options):
    obs, _ = env.reset(seed=0, options=options)
    out = [obs]
    for a in actions:
        obs, *_ = env.step(a)
        out.append(obs)
    return out


def test_same_seed_and_actions_give_identical_observations():
    actions = np.random.default_rng(1).uniform(-1, 1, (25, 7)).astype(np.float32)
    opts = {"task": "stack_red_cube_on_blue_cube", "split": "heldout", "init_state_id": 4}
    a = _rollout(TabletopEnv(image_size=32), actions, opts)
    b = _rollout(TabletopEnv(image_size=32), actions, opts)
    for oa, ob in zip(a, b):
        for k in oa:
            assert np.array_equal(oa[k], ob[k]), k


def test_seed_picks_the_initial_state_reproducibly(env):
    _, i1 = env.reset(seed=7, options={"task": "open_drawer"})
    _, i2 = env.reset(seed=7, options={"task": "open_drawer"})
    _, i3 = env.reset(seed=8, options={"task": "open_drawer"})
    assert i1["init_state_id"] == i2["init_state_id"]
    assert i1["split"] == "train"
    assert {i1["init_state_id"], i3["init_state_id"]} <= set(range(100))


def test_observation_matches_space_and_spec(env):
    obs, info = env.reset(options={"task": "press_button", "split": "heldout", "init_state_id": 0})
    assert env.observation_space.contains(obs)
    assert obs["agentview"].shape == (32, 32, 3) and obs["wrist"].dtype == np.uint8
    assert obs["proprio"].shape == (8,)
    assert info["instruction"] == "press the orange button" == env.unwrapped.instruction
    assert not info["success"] and 0.0 <= info["progress"] < 1.0


def test_actions_move_the_gripper_in_the_commanded_direction(env):
    obs, _ = env.reset(options={"task": "reach_red_cube", "split": "train", "init_state_id": 0})
    start = obs["proprio"][:3].copy()
    for _ in range(5):
        obs, *_ = env.step(np.array([1, 0, -0.5, 0, 0, 0, -1], np.float32))
    moved = obs["proprio"][:3] - start
    assert moved[0] > 0.05 and moved[2] < -0.02 and abs(moved[1]) < 0.01


def test_gripper_closes_and_opens(env):
    env.reset(options={"task": "reach_red_cube", "split": "train", "init_state_id": 0})
    opening = []
    for g in (1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0):
        obs, *_ = env.step(np.array([0, 0, 0, 0, 0, 0, g], np.float32))
        opening.append(obs["proprio"][7])
    assert opening[3] < 0.02 < 0.08 < opening[-1]


@pytest.mark.parametrize("bad", [np.zeros(6), np.full(7, np.nan), np.array([0, 0, np.inf, 0, 0, 0, 0])])
def test_bad_actions_raise_and_leave_the_sim_untouched(env, bad):
    obs, _ = env.reset(options={"task": "open_drawer", "split": "train", "init_state_id": 1})
    t = env.sim.time
    with pytest.raises(InvalidActionError):
        env.step(bad)
    assert env.sim.time == t and env.steps == 0
    obs2, *_ = env.step(np.zeros(7, np.float32))  # the env still works afterwards
    assert np.all(np.isfinite(obs2["proprio"]))


def test_out_of_range_actions_are_clipped_and_reported(env):
    env.reset(options={"task": "open_drawer", "split": "train", "init_state_id": 1})
    _, _, _, _, info = env.step(np.array([50, -50, 0, 0, 0, 0, 3], np.float32))
    assert info["action_clipped"] == 3


def test_reset_option_errors_are_clear(env):
    with pytest.raises(KeyError, match="unknown tabletop task 'fly'"):
        env.reset(options={"task": "fly"})
    with pytest.raises(ValueError, match="split must be one of"):
        env.reset(options={"split": "test"})
    with pytest.raises(IndexError, match="heldout has initial states 0..199"):
        env.reset(options={"task": "open_drawer", "split": "heldout", "init_state_id": 200})
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"init_state": 3})
    with pytest.raises(RuntimeError, match="reset"):
        TabletopEnv(image_size=16).step(np.zeros(7))


def test_truncation_at_the_task_step_limit():
    env = TabletopEnv(image_size=16, max_steps=3)
    env.reset(options={"task": "open_drawer", "split": "train", "init_state_id": 0})
    flags = [env.step(np.zeros(7, np.float32))[3] for _ in range(3)]
    assert flags == [False, False, True]


def test_every_task_is_registered_with_gymnasium():
    for name in TASKS:
        env = gymnasium.make(f"srpo/tabletop-{name}-v0", image_size=16)
        _, info = env.reset(seed=0)
        assert info["task"] == name
        env.close()


def test_vector_env_steps_workers_with_their_own_tasks():
    from srpo.sim.vector import make_vector_env

    venv = make_vector_env(2, image_size=16)
    try:
        opts = [{"task": "open_drawer", "split": "heldout", "init_state_id": 0},
                {"task": "press_button", "split": "heldout", "init_state_id": 0}]
        obs, info = venv.reset_envs(opts)
        assert list(info["task"]) == ["open_drawer", "press_button"]
        assert obs["agentview"].shape == (2, 16, 16, 3)
        obs, _, term, trunc, info = venv.step(np.zeros((2, 7), np.float32))
        assert obs["proprio"].shape == (2, 8) and not term.any()
        single = TabletopEnv(image_size=16)
        ref, _ = single.reset(options=opts[1])
        ref, *_ = single.step(np.zeros(7, np.float32))
        assert np.array_equal(ref["agentview"], obs["agentview"][1])  # workers are the same deterministic sim
        obs, info = venv.reset_envs([None, {"task": "reach_red_cube", "split": "train", "init_state_id": 2}])
        assert info["task"][1] == "reach_red_cube"
        with pytest.raises(ValueError, match="per_env has 1 entries"):
            venv.reset_envs([None])
    finally:
        venv.close()


def test_image_every_renders_only_decision_steps_and_the_last_step():
    """Sparse rendering: frames at steps 0, k, 2k, ... and the episode's end; the rest are black and flagged stale."""
    actions = np.random.default_rng(2).uniform(-1, 1, (11, 7)).astype(np.float32)
    opts = {"task": "press_button", "split": "train", "init_state_id": 1}
    dense = TabletopEnv(image_size=16, max_steps=11)
    sparse = TabletopEnv(image_size=16, max_steps=11)
    d_obs, _ = dense.reset(options=opts)
    s_obs, info = sparse.reset(options={**opts, "image_every": 4})
    assert info["image_fresh"] and np.array_equal(d_obs["agentview"], s_obs["agentview"])
    fresh_steps = []
    for t, a in enumerate(actions, start=1):
        d_obs, *_ = dense.step(a)
        s_obs, _, term, trunc, info = sparse.step(a)
        assert np.array_equal(d_obs["proprio"], s_obs["proprio"])  # the physics is untouched
        if info["image_fresh"]:
            fresh_steps.append(t)
            assert np.array_equal(d_obs["wrist"], s_obs["wrist"])
        else:
            assert not s_obs["agentview"].any() and not s_obs["wrist"].any()
        if term or trunc:
            break
    assert fresh_steps == [4, 8, 11]  # 11: truncation renders the final state
    with pytest.raises(ValueError, match="image_every"):
        sparse.reset(options={**opts, "image_every": 0})
    _, info = sparse.reset(options=opts)  # a reset without the option renders every step again
    assert sparse.step(actions[0])[4]["image_fresh"]


def test_chunk_step_env_runs_a_chunk_like_single_steps_and_stops_at_the_end():
    """One call = the same physics as stepping each action; NaN rows are not run; termination ends the chunk."""
    from srpo.sim.vector import ChunkStepEnv

    actions = np.random.default_rng(3).uniform(-1, 1, (6, 7)).astype(np.float32)
    opts = {"task": "press_button", "split": "train", "init_state_id": 2}
    single = TabletopEnv(image_size=16, max_steps=5)
    ref = _rollout(single, actions[:5], opts)
    chunked = ChunkStepEnv(TabletopEnv(image_size=16, max_steps=5), max_chunk=4)
    with pytest.raises(RuntimeError, match="reset"):
        chunked.step(actions[:4])
    assert chunked.step(np.full((4, 7), np.nan, np.float32))[4]["chunk_executed"] == 0  # an idle, never-reset worker
    chunked.reset(seed=0, options=opts)
    padded = np.full((4, 7), np.nan, np.float32)
    padded[:3] = actions[:3]
    obs, _, term, trunc, info = chunked.step(padded)
    assert info["chunk_executed"] == 3 and not (term or trunc)
    assert np.array_equal(obs["agentview"], ref[3]["agentview"])
    assert np.array_equal(info["chunk_proprio"][:3], np.stack([o["proprio"] for o in ref[1:4]]))
    assert [len(info["chunk_frames"][c]) for c in ("agentview", "wrist")] == [3, 3]  # every step rendered
    obs, _, term, trunc, info = chunked.step(np.concatenate([actions[3:], actions[:1]]))  # the limit (5) stops it at 2
    assert info["chunk_executed"] == 2 and trunc and np.array_equal(obs["wrist"], ref[5]["wrist"])
    bad = actions[:4].copy()
    bad[1, 2] = np.nan
    chunked.reset(options=opts)
    with pytest.raises(Exception, match="finite|NaN|nan"):
        chunked.step(bad)
