"""The SRPO / GRPO trainer: reward modes, a policy-gradient sanity case, config errors, and a tiny real run that
resumes to the same metrics."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from srpo.config import ConfigError, load_config
from srpo_trainer.progress_reward import ProgressRewardConfig
from srpo_trainer.rl.config import RLConfig
from srpo_trainer.rl.objectives import group_advantages, ppo_clip_loss
from srpo_trainer.rl.rewards import trajectory_rewards
from srpo_trainer.rl.trainer import RunConfigError, check_run, plan_prompts, train_rl

from .conftest import make_obs


def test_reward_modes():
    success = np.array([True, False, False, True])
    progress = np.array([1.0, 0.5, 0.1, 1.0])
    binary, _ = trajectory_rewards("binary", success, 5.0)
    np.testing.assert_allclose(binary, [5, 0, 0, 5])
    oracle, _ = trajectory_rewards("oracle", success, 5.0, progress=progress)
    np.testing.assert_allclose(oracle, [5, 5 * 0.6 * 0.5, 5 * 0.6 * 0.1, 5])
    emb = np.array([[0.0, 0.0], [0.5, 0.0], [3.0, 0.0], [0.1, 0.0]])
    srpo, diags = trajectory_rewards("srpo", success, 5.0, embeddings=emb, tasks=["t"] * 4,
                                     progress_cfg=ProgressRewardConfig())
    assert srpo[0] == srpo[3] == 5.0 and 5.0 * 0.6 > srpo[1] > srpo[2] > 0  # closer to the successes scores more
    assert diags["t"].successes == 2
    with pytest.raises(ValueError, match="reward mode"):
        trajectory_rewards("dense", success, 1.0)
    with pytest.raises(ValueError, match="ground-truth progress"):
        trajectory_rewards("oracle", success, 1.0)


def test_policy_gradient_raises_the_probability_of_the_rewarded_action(policy):
    """A one-step task: reward 1 when the first action element exceeds its mean at the start. A few PPO updates
    from group-normalised advantages move the policy towards it."""
    torch.manual_seed(0)
    obs = make_obs(batch=1)
    batch = type(obs)({c: np.repeat(v, 32, axis=0) for c, v in obs.images.items()}, np.repeat(obs.proprio, 32, 0),
                      obs.instructions * 32)
    with torch.no_grad():
        start = policy.predict_action_chunk(obs)[0, 0, 0]
    optimizer = torch.optim.Adam(policy.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    policy.eval()
    for _ in range(8):
        with torch.no_grad():
            out = policy.sample(batch, 1.0, gen)
            old = policy.log_prob(batch, out.chunks, per_element=True)
        reward = (out.chunks[:, 0, 0] > start).double().numpy()
        adv = torch.tensor(group_advantages(reward, np.zeros(32)), dtype=torch.float32)[:, None, None]
        for _ in range(2):
            loss, _ = ppo_clip_loss(policy.log_prob(batch, out.chunks, per_element=True), old, adv)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        after = policy.predict_action_chunk(obs)[0, 0, 0]
        mean, log_std = policy.distribution(obs)
    sigma = float(np.exp(log_std[0, 0].item()) * policy.processor.stats.action_std[0])
    assert after - start > 0.5 * sigma, (start, after, sigma)


@pytest.mark.parametrize("override, message", [
    ("rollout.group_size=-2", "group_size must be >= 2"),
    ("reward.mode=dense", "reward.mode must be one of"),
    ("filter.low=0.8", "filter.low <= filter.high"),
    ("rollout.tasks=[fly]", "unknown task"),
    ("update.lr=0", "update.lr"),
    ("update.ratio=token", "update.ratio must be one of"),
    ("update.target_kl=0", "target_kl must be > 0"),
    ("update.advantage=progress_gae", "needs a per-step progress signal"),  # quick.yaml is srpo: no per-step signal
    ("exploration.chunk_correlation=0.5", "needs update.ratio=chunk"),
    ("filter.kind=spread", "filter.kind must be one of"),
    ("update.loss=dpo", "update.loss must be one of"),
    ("update.regression.beta=0", "update.regression.beta must be > 0"),
    ("update.regression.steps=0", "update.regression.steps"),
    ("update.regression.weighting=rank", "update.regression.weighting must be reward or advantage"),
    ("update.regression.max_weight=0.5", "update.regression.max_weight must be >= 1"),
])
def test_bad_config_values_fail_when_the_config_is_built(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(RLConfig, "configs/quick.yaml", [override, "filter.high=0.5"] if "low" in override else [override])


def test_missing_inputs_fail_before_any_rollout(tmp_path, policy):
    policy.save_pretrained(tmp_path / "init")
    cfg = load_config(RLConfig, "configs/quick.yaml", [f"init={tmp_path / 'init'}", f"out={tmp_path / 'run'}"])
    with pytest.raises(RunConfigError, match="needs a world model"):
        train_rl(cfg, progress=False)
    assert not (tmp_path / "run").exists()  # nothing ran, nothing written
    for override, message in [("init=nowhere", "not a policy checkpoint"),
                              ("reward.encoder_path=nowhere", "does not exist"),
                              ("reward.world_model.data=nowhere", "not a directory"),
                              ("reward.encoder=vjepa2", "needs reward.encoder_path"),
                              ("update.regression.demos=nowhere", "update.regression.demos: nowhere is not a dir")]:
        bad = load_config(RLConfig, "configs/quick.yaml", [f"init={tmp_path / 'init'}", override, "update.loss=rwr"])
        with pytest.raises(RunConfigError, match=message):
            check_run(bad)


def test_prompts_cycle_tasks_and_use_train_states_only():
    cfg = load_config(RLConfig, "configs/quick.yaml", ["rollout.prompts_per_step=8", "rollout.train_states=5"])
    prompts = plan_prompts(cfg, step=3, refill=0)
    tasks = [t for t, _ in prompts]
    assert all(tasks.count(t) == 2 for t in cfg.rollout.tasks)
    assert all(0 <= i < 5 for _, i in prompts)
    assert prompts == plan_prompts(cfg, 3, 0) and prompts != plan_prompts(cfg, 4, 0)


def _tiny_run(tmp_path, init, demos, name, extra=()):
    """Every optional path on: the KL penalty to the initial policy, the success memory, the success-rate filter
    with its refill loop (2 of 2 prompts must be mixed, else one more round of prompts)."""
    return ["train", "--config", "configs/quick.yaml", "--init", str(init), "--out", str(tmp_path / name),
            "rollout.tasks=[reach_red_cube, press_button]", "rollout.prompts_per_step=2", "rollout.group_size=4",
            "rollout.train_states=3", "steps=3", "eval_every=3", "eval_episodes_per_task=1", "checkpoint_every=1",
            "filter.kind=success_rate", "filter.min_kept_prompts=2", "filter.max_refills=1",
            "update.kl_coef=0.05", "reward.progress.memory_size=8", "record_rollouts=true",
            f"reward.world_model.data={demos}", "reward.world_model.steps=20", "reward.world_model.batch_size=8",
            *extra]


def kill_at_checkpoint(args: list[str], run, checkpoint: str, env: dict) -> None:
    """Start ``srpo args`` and SIGKILL its whole process group (simulators, Ray included) as soon as ``run``'s
    ``latest`` checkpoint pointer names ``checkpoint``."""
    proc = subprocess.Popen([sys.executable, "-m", "srpo_cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    pointer = run / "checkpoints" / "latest"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if pointer.is_file() and pointer.read_text().strip() == checkpoint:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be interrupted"


def _without_times(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def test_tiny_end_to_end_run_and_exact_resume(tmp_path, sft_start, demo_store):
    """Every stage runs for real (rollouts in simulator processes, world-model fit, srpo reward, PPO update,
    held-out eval, checkpoints), the update has something to do (non-zero advantages, moved weights), and an
    interrupted run resumes to the uninterrupted run's metrics, success memory included."""
    init = sft_start
    env = {**os.environ, "PYTHONPATH": os.getcwd()}

    def srpo(*args, **kw):
        return subprocess.run([sys.executable, "-m", "srpo_cli", *args], capture_output=True, text=True,
                              timeout=600, env={**env, **kw})

    r = srpo(*_tiny_run(tmp_path, init, demo_store.root, "full"))
    assert r.returncode == 0, r.stderr
    full = tmp_path / "full"
    rows = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in rows] == [0, 1, 2, 3]
    assert "eval/success" in rows[0] and "eval/success" in rows[-1]
    steps = rows[1:]
    assert all(x["rollout/trajectories"] in (8, 16) for x in steps)  # 2 prompts x 4, plus a refill round
    assert any(x["rollout/refills"] > 0 for x in steps)  # the refill loop ran
    updated = [x for x in steps if "update/loss" in x]
    assert updated and all(x["update/old_logp_drift"] < 1e-3 for x in updated)  # scores exactly what was sampled
    assert any(x["advantage/abs_max"] > 0 for x in updated) and any(x["update/optimizer_steps"] > 0 for x in updated)
    assert all("update/kl_ref" in x for x in updated if x["update/optimizer_steps"] > 0)  # the KL path ran
    assert any(x["rollout/success"] > 0 for x in steps)
    assert all(0 <= x["rollout/prompts_mixed"] <= x["rollout/prompts_solved"] <= 1 for x in steps)
    assert any(x["rollout/prompts_solved"] > 0 for x in steps)  # a success means its prompt was solved
    from safetensors.torch import load_file

    before, after = load_file(str(init / "model.safetensors")), load_file(str(full / "final" / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the update moved the policy
    assert (full / "world_model" / "final" / "model.safetensors").exists()
    assert (full / "checkpoints" / "step_0000003" / "model.safetensors").exists()
    assert (full / "final" / "config.json").exists() and (full / "learning.png").stat().st_size > 0
    summary = json.loads((full / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["env_steps"] == rows[-1]["env_steps"] > 0
    # every set of weights that acted, and every saved checkpoint, has its own version (lineage @ fingerprint)
    from srpo.episodes import EpisodeStore

    acted = [{r.meta.policy_version for r in EpisodeStore(full / "rollouts" / f"step_{s:05d}").list()}
             for s in (1, 2, 3)]
    assert all(len(v) == 1 and next(iter(v)).startswith("rl:full@") for v in acted)
    ckpts = [full / "checkpoints" / f"step_{s:07d}" for s in (1, 2, 3)]
    saved = [json.loads((c / "config.json").read_text())["version"] for c in ckpts]
    assert saved[:2] == [next(iter(acted[1])), next(iter(acted[2]))]  # step s+1 acted with checkpoint s
    weights = [load_file(str(c / "model.safetensors")) for c in ckpts]
    distinct = {tuple(w[k].numpy().tobytes() for k in sorted(w)) for w in weights}
    assert len(set(saved)) == len(distinct) > 1  # a version per set of weights, and the update moved them
    memory = np.load(full / "checkpoints" / "step_0000003" / "success_memory.npz")
    assert sum(len(memory[k]) for k in memory.files) > 0  # successes were remembered (and resume must restore them)

    # killed (the whole process group, simulator workers included) once step 2's checkpoint is in place
    cut = tmp_path / "cut"
    kill_at_checkpoint(_tiny_run(tmp_path, init, demo_store.root, "cut"), cut, "step_0000002", env)
    r = srpo(*_tiny_run(tmp_path, init, demo_store.root, "cut"))
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stdout
    resumed = [json.loads(x) for x in (cut / "metrics.jsonl").read_text().splitlines()]
    assert _without_times(resumed) == _without_times(rows)


def test_executed_steps_count_only_steps_that_ran():
    from types import SimpleNamespace

    from srpo_trainer.rl.exploration import decision_log_probs
    from srpo_trainer.rl.trainer import executed_steps

    eps = [SimpleNamespace(length=10, chunk_steps=np.array([0, 8])), SimpleNamespace(length=3, chunk_steps=[0])]
    steps = executed_steps(eps, [(0, 0), (0, 1), (1, 0)], execute_steps=8)
    assert steps.tolist() == [8, 2, 3]
    _, mask = decision_log_probs(torch.zeros(3, 8, 7), torch.zeros(3, 8, 7), torch.zeros(8, 7), steps, "step")
    assert mask.shape == (3, 8) and mask.sum(dim=1).tolist() == [8, 2, 3]
    four = executed_steps(eps, [(0, 0)], execute_steps=4)
    assert decision_log_probs(torch.zeros(1, 8, 7), torch.zeros(1, 8, 7), torch.zeros(8, 7), four, "step")[1][0].tolist() \
        == [1] * 4 + [0] * 4



def test_privileged_progress_reaches_only_the_oracle_reward():
    """srpo and binary rewards are identical whatever the simulator's progress says (shuffled or NaN); only oracle
    reads it."""
    from types import SimpleNamespace

    from srpo_trainer.rl.trainer import step_rewards

    rng = np.random.default_rng(0)
    success = np.array([True, False, False, True, False, False])
    progress = np.array([1.0, 0.3, 0.7, 1.0, 0.1, 0.5])
    emb = rng.normal(size=(6, 4))
    groups = np.array([0, 0, 0, 1, 1, 1])

    def episodes(p):
        return [SimpleNamespace(meta=SimpleNamespace(success=bool(s), final_progress=float(x), task="t"))
                for s, x in zip(success, p)]

    variants = [progress, rng.permutation(progress), np.full(6, np.nan)]
    for mode in ("srpo", "binary"):
        cfg = load_config(RLConfig, "configs/srpo.yaml", [f"reward.mode={mode}"])
        rewards = [step_rewards(cfg, episodes(p), groups, emb if mode == "srpo" else None)[0] for p in variants]
        for r in rewards[1:]:
            np.testing.assert_array_equal(r, rewards[0])
        assert np.all(np.isfinite(rewards[0]))
    oracle = load_config(RLConfig, "configs/srpo.yaml", ["reward.mode=oracle"])
    a = step_rewards(oracle, episodes(variants[0]), groups, None)[0]
    b = step_rewards(oracle, episodes(variants[1]), groups, None)[0]
    assert not np.array_equal(a, b)  # the oracle does read it
    with pytest.raises(ValueError, match="non-finite progress"):
        step_rewards(oracle, episodes(variants[2]), groups, None)


def test_reward_weighted_regression_run_and_exact_resume(tmp_path, sft_start, demo_store):
    """update.loss=rwr for real: rollouts weighted by their reward, the demonstrations mixed in, the policy moved,
    and a run interrupted after step 2 rebuilds its regression buffer from disk and resumes to the same metrics."""
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    args = ["reward.mode=oracle", "update.loss=rwr", "update.lr=1e-4", "update.target_kl=null",
            "update.regression.steps=4", "update.regression.batch_size=8", "update.regression.min_weight=0.01",
            f"update.regression.demos={demo_store.root}", "update.regression.demos_per_task=1",
            "filter.kind=none", "filter.max_refills=0", "update.kl_coef=0"]

    def run(name):
        return subprocess.run([sys.executable, "-m", "srpo_cli", *_tiny_run(tmp_path, sft_start, demo_store.root, name,
                                                                          args)],
                              capture_output=True, text=True, timeout=600, env=env)

    r = run("full")
    assert r.returncode == 0, r.stderr
    full = tmp_path / "full"
    rows = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()][1:]
    assert all(x["update/optimizer_steps"] == 4 for x in rows)
    assert all(x["regression/samples"] > 0 and 0 <= x["regression/failure_weight_share"] <= 1 for x in rows)
    assert rows[-1]["regression/trajectories"] >= rows[0]["regression/trajectories"]  # the buffer accumulates
    weights = json.loads((full / "rollouts" / "step_00001" / "rwr_weights.json").read_text())
    assert weights and all(0.01 <= w <= 1 for w in weights.values())
    from safetensors.torch import load_file

    before = load_file(str(sft_start / "model.safetensors"))
    after = load_file(str(full / "final" / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)

    # resume from step 2's checkpoint: the buffer (steps 1-2) comes back from the recorded rollouts and weights
    cut = tmp_path / "cut"
    assert run("cut").returncode == 0
    shutil.rmtree(cut / "checkpoints" / "step_0000003")
    (cut / "checkpoints" / "latest").write_text("step_0000002")
    shutil.rmtree(cut / "final")
    r = run("cut")
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stdout
    resumed = [json.loads(x) for x in (cut / "metrics.jsonl").read_text().splitlines()][1:]
    assert _without_times(resumed) == _without_times(rows)
