"""``distributed.backend=ray`` on a real local Ray instance (``num_cpus=2``, ``RAY_AUTH_MODE=disabled``): the same
metrics as the local backend for the same seed, exact resume after the driver is killed, a rollout actor killed mid
step replaced without changing the step, and two learner ranks (gloo) updating in step with the local update."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from .test_rl import _tiny_run, _without_times, kill_at_checkpoint

ray = pytest.importorskip("ray", reason="the Ray backend needs ray (pip install 'srpo[ray]')")

RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
RAY = ("distributed.backend=ray", "distributed.rollout_workers=2", "distributed.local_cpus=2")
# two steps, one simulator process locally: each policy call batches one env, as each Ray actor's does (batched
# inference rounds differently at another batch size, so bit-identical metrics need the same batches)
TWO_STEPS = ("steps=2", "eval_every=2", "rollout.workers=1")


def _srpo(args, timeout=600):
    env = {**os.environ, "PYTHONPATH": os.getcwd(), **RAY_ENV}
    return subprocess.run([sys.executable, "-m", "srpo_cli", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def _rows(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_ray_rollouts_give_the_local_metrics_and_a_killed_driver_resumes(tmp_path, sft_start, demo_store):
    """The tiny run of the trainer test (srpo reward with a world model fitted on the first rollouts, KL penalty,
    success memory, refills) with 2 rollout actors: the metrics equal the local backend's for the same seed. Then
    the driver is killed (its whole process group) after step 1's checkpoint, and the re-run resumes to the same
    metrics."""
    local = _srpo(_tiny_run(tmp_path, sft_start, demo_store.root, "local", TWO_STEPS))
    assert local.returncode == 0, local.stderr
    base = _rows(tmp_path / "local")
    assert [r["step"] for r in base] == [0, 1, 2]
    assert any(r.get("update/optimizer_steps", 0) > 0 for r in base)  # the update had something to do

    on_ray = _srpo(_tiny_run(tmp_path, sft_start, demo_store.root, "ray", TWO_STEPS + RAY))
    assert on_ray.returncode == 0, on_ray.stderr
    assert _without_times(_rows(tmp_path / "ray")) == _without_times(base)
    assert "Started a local Ray instance" in on_ray.stderr + on_ray.stdout

    cut = tmp_path / "cut"
    env = {**os.environ, "PYTHONPATH": os.getcwd(), **RAY_ENV}
    kill_at_checkpoint(_tiny_run(tmp_path, sft_start, demo_store.root, "cut", TWO_STEPS + RAY), cut, "step_0000001",
                       env)
    resumed = _srpo(_tiny_run(tmp_path, sft_start, demo_store.root, "cut", TWO_STEPS + RAY))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    assert _without_times(_rows(cut)) == _without_times(base)


def test_a_rollout_actor_killed_mid_step_is_replaced_and_the_step_is_unchanged(sft_start):
    """SIGKILL one actor's process while the pool runs a job list: it is replaced, its jobs rerun with their seeds,
    and every episode equals the undisturbed run's (actions, outcome)."""
    from srpo_trainer.distributed.config import DistributedConfig
    from srpo_trainer.distributed.ray_backend import RayRolloutPool
    from srpo_trainer.policies import load_policy
    from srpo_trainer.rl.exploration import ExplorationConfig, ExplorationPolicy

    os.environ.update(RAY_ENV)
    policy = load_policy(sft_start)
    explore = ExplorationPolicy(policy, ExplorationConfig(std_mode="fixed", std=0.2))
    pool = RayRolloutPool(DistributedConfig(backend="ray", rollout_workers=2, local_cpus=2), policy,
                          explore.cfg, "tabletop", {})
    try:
        jobs = [(t, i) for t in ("reach_red_cube", "press_button") for i in range(4)]
        base, _, base_eps = pool.run_policy_episodes(explore, jobs, "train", None, 8, 1.0, 7, record=True)
        victim = pool.pids()[1]
        killed = threading.Event()

        def kill_once(_):  # the first finished episode: actor 1 is busy with its shard or about to get the next
            if not killed.is_set():
                killed.set()
                os.kill(victim, signal.SIGKILL)

        again, _, again_eps = pool.run_policy_episodes(explore, jobs, "train", None, 8, 1.0, 7, record=True,
                                                       on_episode=kill_once)
        assert killed.is_set() and pool.stats.restarts == 1
        assert victim not in pool.pids()
        assert again == base
        for a, b in zip(base_eps, again_eps):
            assert np.array_equal(a.actions, b.actions) and np.array_equal(a.chunk_log_probs, b.chunk_log_probs)
            assert a.meta.policy_version == b.meta.policy_version == policy.version
    finally:
        pool.close()
        ray.shutdown()


def test_two_learner_ranks_update_in_step_with_the_local_update(tmp_path, sft_start, demo_store):
    """distributed.learners=2: two Ray actors in one gloo group (DDP) run the update. Step 1 rolls out the same
    episodes as the local backend (the weights have not moved yet), so its update metrics agree to rounding, and
    the final weights are close (Adam steps of lr 3e-5)."""
    one = ("steps=1", "eval_every=1", "eval_episodes_per_task=1", "rollout.workers=1", "filter.kind=none")
    local = _srpo(_tiny_run(tmp_path, sft_start, demo_store.root, "local", one))
    assert local.returncode == 0, local.stderr
    ddp = _srpo(_tiny_run(tmp_path, sft_start, demo_store.root, "ddp",
                          one + RAY + ("distributed.learners=2", "distributed.local_cpus=4")))
    assert ddp.returncode == 0, ddp.stderr
    a, b = _rows(tmp_path / "local")[1], _rows(tmp_path / "ddp")[1]
    assert a["rollout/success"] == b["rollout/success"] and a["update/decisions"] == b["update/decisions"]
    assert b["update/optimizer_steps"] == a["update/optimizer_steps"] > 0
    for key in ("update/loss", "update/kl_final", "update/grad_norm", "update/clip_fraction", "update/kl_ref",
                "update/grad_cosine"):
        assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-6), key
    from safetensors.torch import load_file

    wa = load_file(str(tmp_path / "local" / "final" / "model.safetensors"))
    wb = load_file(str(tmp_path / "ddp" / "final" / "model.safetensors"))
    start = load_file(str(sft_start / "model.safetensors"))
    assert any(not torch.equal(wb[k], start[k]) for k in wb)  # the learners' update reached the driver's policy
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=1e-4)  # 3 Adam steps of lr 3e-5 at most
