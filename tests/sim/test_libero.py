"""The LIBERO adapter on the real benchmark (``srpo[libero]``): every standard suite resets and steps behind the
tabletop interface, the protocol's pieces (no-op settling, flipped images, splits, step limits) hold, runs are
reproducible, and evaluation (plus the LIBERO-PRO robustness report) runs end to end with a real policy.

Marked ``libero``; skipped, with the install command as the reason, where the extra is not installed. The tests
that need no simulator (splits, the robustness measure, the missing-extra error) always run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from srpo.sim.libero.env import HELDOUT_EVERY, SUITES, base_suite, split_indices

try:
    import libero.libero  # noqa: F401

    HAVE_LIBERO = True
except ImportError:
    HAVE_LIBERO = False

REPO = Path(__file__).resolve().parents[2]
needs_libero = [pytest.mark.libero,
                pytest.mark.skipif(not HAVE_LIBERO, reason="LIBERO extra not installed: pip install 'srpo[libero]'")]


def _libero(fn):
    for mark in needs_libero:
        fn = mark(fn)
    return fn


# ---------------------------------------------------------------------------------------------------- no simulator
def test_splits_are_disjoint_and_cover_the_benchmark_states():
    train, held, standard = (split_indices(s, 50) for s in ("train", "heldout", "standard"))
    assert len(train) == 40 and len(held) == 10 and standard == list(range(50))
    assert not set(train) & set(held) and sorted(train + held) == standard
    assert held == list(range(HELDOUT_EVERY - 1, 50, HELDOUT_EVERY))
    with pytest.raises(ValueError, match="split must be one of"):
        split_indices("test", 50)


def test_suite_names_resolve_to_their_base_and_bad_ones_name_the_choices():
    assert base_suite("libero_spatial_swap") == "libero_spatial" and base_suite("libero_10_lan") == "libero_10"
    with pytest.raises(ValueError, match="libero_spatial_swap"):
        base_suite("libero_spatial_swapped")
    with pytest.raises(ValueError, match="unknown suite"):
        from srpo.sim.suites import check_suite

        check_suite("metaworld")


def test_one_suite_interface_serves_tabletop_and_refuses_bad_settings():
    from srpo.sim.suites import resolve_task, splits, suite_tasks
    from srpo.sim.tabletop.tasks import SPLIT_SIZES, TASKS
    from srpo_trainer.rl.config import RolloutConfig

    assert suite_tasks("tabletop") == tuple(TASKS) and splits("tabletop") == dict(SPLIT_SIZES)
    assert resolve_task("tabletop", "open_drawer") == "open_drawer"
    with pytest.raises(ValueError, match="unknown task 'fly' in tabletop"):
        resolve_task("tabletop", "fly")
    with pytest.raises(ValueError, match="unknown suite"):
        RolloutConfig(suite="robocasa")
    with pytest.raises(ValueError, match="LIBERO option"):
        RolloutConfig(fast_render=True)
    with pytest.raises(ValueError, match="max_steps must be >= 1"):
        RolloutConfig(max_steps=0)


def test_relative_drop_and_its_interval():
    from srpo_trainer.evaluate import relative_drop

    base, pert = np.array([1.0] * 80 + [0.0] * 20), np.array([1.0] * 40 + [0.0] * 60)
    r = relative_drop(base, pert)
    assert r["relative_drop"] == pytest.approx(0.5)
    lo, hi = r["ci95"]
    assert lo < 0.5 < hi and hi - lo < 0.4


def test_missing_extra_is_one_clear_error_naming_the_install_command(tmp_path):
    """Without LIBERO (hidden from the import system), the env, the vector env and ``srpo eval`` all say what to
    install instead of a traceback."""
    code = (
        "import sys; sys.modules['libero'] = None\n"
        "from srpo.sim.libero.env import LiberoEnv, LiberoNotInstalled\n"
        "from srpo.sim.vector import make_vector_env\n"
        "for make in (lambda: LiberoEnv('libero_spatial'), lambda: make_vector_env(1, suite='libero_goal')):\n"
        "    try:\n"
        "        make()\n"
        "    except LiberoNotInstalled as exc:\n"
        "        print('REFUSED', exc)\n"
        "from srpo_cli.cli import main\n"
        "main(['eval', '--policy', 'x', '--suite', 'libero_spatial', '--out', %r])\n" % str(tmp_path)
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.count("REFUSED") == 2 and r.stdout.count("pip install 'srpo[libero]'") == 2, r.stdout + r.stderr
    assert r.returncode != 0 and "pip install 'srpo[libero]'" in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------------------- real LIBERO
@_libero
@pytest.mark.parametrize("suite", sorted(SUITES))
def test_every_suite_resets_and_steps_behind_the_tabletop_interface(suite):
    from srpo.sim.libero.env import LiberoEnv

    env = LiberoEnv(suite, image_size=32, fast_render=True)
    try:
        obs, info = env.reset(options={"task": 0, "split": "heldout", "init_state_id": 0})
        assert set(obs) == {"agentview", "wrist", "proprio"}
        assert obs["agentview"].shape == obs["wrist"].shape == (32, 32, 3) and obs["agentview"].dtype == np.uint8
        assert obs["proprio"].shape == (8,) and np.isfinite(obs["proprio"]).all()
        assert abs(np.linalg.norm(obs["proprio"][3:7]) - 1) < 1e-4  # a unit quaternion
        assert obs["agentview"].std() > 5  # a rendered scene, not a blank
        assert info["benchmark_state"] == HELDOUT_EVERY - 1 and info["split"] == "heldout"
        assert info["instruction"] == env.tasks[0].instruction and info["suite"] == suite
        assert info["sim_time"] > 0  # the settling no-op steps ran
        assert env.max_steps == SUITES[suite]
        assert obs in env.observation_space
        for _ in range(3):
            obs, reward, terminated, truncated, info = env.step(np.array([0.3, 0, 0, 0, 0, 0, -1], np.float32))
        assert info["success"] == env._env.env._check_success()  # the same goal test as LIBERO's
        assert 0 <= info["progress"] <= 1 and not terminated and not truncated
    finally:
        env.close()


@_libero
def test_same_initial_state_and_actions_reproduce_the_trajectory():
    from srpo.sim.libero.env import LiberoEnv

    env = LiberoEnv("libero_object", image_size=32, fast_render=True)
    actions = np.random.default_rng(0).uniform(-1, 1, (8, 7)).astype(np.float32)
    runs = []
    try:
        for _ in range(2):  # the second run follows the first in the same worker (soft reset)
            obs, _ = env.reset(options={"split": "train", "init_state_id": 7})
            traj = [obs["proprio"]]
            for a in actions:
                obs, *_ = env.step(a)
                traj.append(obs["proprio"])
            runs.append((np.array(traj), env._env.env.sim.data.qpos.copy()))
        env.reset(options={"split": "train", "init_state_id": 8})
        other = env._env.env.sim.data.qpos.copy()
        env.reset(options={"split": "train", "init_state_id": 7})
        again = env._env.env.sim.data.qpos.copy()
    finally:
        env.close()
    assert np.array_equal(runs[0][0], runs[1][0]) and np.array_equal(runs[0][1], runs[1][1])
    assert not np.allclose(other, again)  # another initial state places the objects elsewhere
    assert not np.array_equal(runs[0][0][0], runs[0][0][-1])  # the actions moved the arm


@_libero
def test_images_are_upright_and_image_every_skips_renders():
    """The agentview camera looks down at the table from the front: upright, the robot is at the top of the
    image and the table's lighter wood fills the bottom (LIBERO's raw render is the other way round)."""
    from srpo.sim.libero.env import LiberoEnv

    env = LiberoEnv("libero_spatial", image_size=64, fast_render=True)
    try:
        obs, _ = env.reset(options={"split": "heldout", "init_state_id": 0, "image_every": 4})
        raw = env._env.env.sim.render(camera_name="agentview", width=64, height=64)
        assert np.array_equal(obs["agentview"], raw[::-1, ::-1])
        top, bottom = obs["agentview"][:16].mean(), obs["agentview"][-16:].mean()
        assert bottom > top  # wood below, robot and background above
        fresh = []
        for _ in range(8):
            obs, _, _, _, info = env.step(np.zeros(7, np.float32))
            fresh.append(info["image_fresh"])
            assert (obs["agentview"].any()) == info["image_fresh"]
        assert fresh == [False, False, False, True] * 2
        with pytest.raises(ValueError, match="outside 0..9 of the heldout split"):
            env.reset(options={"split": "heldout", "init_state_id": 10})
        with pytest.raises(ValueError, match="unknown task"):
            env.reset(options={"task": "fly"})
    finally:
        env.close()


@_libero
def test_srpo_eval_on_a_libero_suite_writes_json_png_and_gif(tiny_checkpoint, tmp_path):
    out = tmp_path / "eval"
    r = subprocess.run([sys.executable, "-m", "srpo_cli", "eval", "--policy", str(tiny_checkpoint), "--suite",
                        "libero_goal", "--tasks", "0,1", "--episodes-per-task", "1", "--max-steps", "12",
                        "--fast-render", "--workers", "2", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "eval.json").read_text())
    assert summary["config"]["suite"] == "libero_goal" and summary["config"]["fast_render"] is True
    assert summary["episodes"] == 2 and len(summary["per_task"]) == 2
    assert all(e["length"] <= 12 for e in summary["episodes_detail"])
    assert (out / "eval.png").stat().st_size > 0 and (out / "episodes.gif").stat().st_size > 0


@_libero
def test_robustness_report_against_a_libero_pro_suite(tiny_checkpoint, tmp_path):
    from srpo.runtime import load_inference_policy
    from srpo_trainer.evaluate import EvalConfig, evaluate_robustness

    policy = load_inference_policy(tiny_checkpoint, backend="torch")
    cfg = EvalConfig(suite="libero_spatial", tasks=["0"], episodes_per_task=1, max_steps=6, fast_render=True,
                     workers=1, gifs=0)
    report = evaluate_robustness(policy, cfg, ["lan"], tmp_path, progress=False)
    assert report["perturbed"]["lan"]["suite"] == "libero_spatial_lan"
    assert json.loads((tmp_path / "robustness.json").read_text())["base_suite"] == "libero_spatial"
    assert (tmp_path / "robustness.png").stat().st_size > 0
    assert (tmp_path / "libero_spatial_lan" / "eval.json").is_file()
    with pytest.raises(ValueError, match="unknown perturbations"):
        evaluate_robustness(policy, cfg, ["weather"], tmp_path)


@_libero
def test_srpo_train_on_libero_runs_every_stage(tiny_checkpoint, tmp_path):
    """``configs/libero_spatial_quick.yaml`` at an even smaller budget: LIBERO rollouts in worker processes, the
    world model fitted on them, progress rewards, a PPO update, held-out evaluations before and after."""
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "srpo_cli", "train", "--config", "configs/libero_spatial_quick.yaml",
                        "--init", str(tiny_checkpoint), "--out", str(out), "rollout.max_steps=10",
                        "reward.world_model.steps=5", "reward.world_model.batch_size=4"],
                       capture_output=True, text=True, timeout=900, cwd=REPO)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval_before"] is not None and summary["eval_after"] is not None
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    step = next(row for row in rows if row.get("step") == 1 and "rollout/success" in row)
    assert step["trajectories"] == 4  # 2 prompts x groups of 2
    assert (out / "world_model" / "final" / "config.json").is_file() and (out / "final" / "config.json").is_file()
    from srpo.episodes import EpisodeStore

    metas = [rec.meta for rec in EpisodeStore(out / "rollouts").list()]
    assert metas and all(m.suite == "libero_spatial" and m.split == "train" and m.length <= 10 for m in metas)
