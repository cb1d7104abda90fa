"""The ``distributed.*`` section, per-episode sampling noise (what lets a job list be split anywhere), and the
checkpoint transfer the Ray backend uses; none of these start Ray."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from srpo.config import ConfigError, load_config
from srpo_trainer.policies.base import episode_seed, standard_normal
from srpo_trainer.rl.config import RLConfig
from srpo_trainer.run_checkpoints import open_run


@pytest.mark.parametrize("override, message", [
    ("distributed.backend=slurm", "distributed.backend must be one of"),
    ("distributed.rollout_workers=0", "distributed.rollout_workers must be >= 1"),
    ("distributed.learners=0", "distributed.learners must be >= 1"),
    ("distributed.gpus_per_learner=-1", "distributed.gpus_per_learner must be >= 0"),
    ("distributed.collective=mpi", "distributed.collective must be one of"),
    ("distributed.learners=2", "need distributed.backend=ray"),
    ("distributed.address=auto", "need distributed.backend=ray"),
])
def test_bad_distributed_values_fail_when_the_config_is_built(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(RLConfig, "configs/quick.yaml", [override])


def test_distributed_combinations_that_cannot_run_are_refused():
    with pytest.raises(ConfigError, match="nccl needs distributed.gpus_per_learner"):
        load_config(RLConfig, "configs/quick.yaml", ["distributed.backend=ray", "distributed.collective=nccl"])
    with pytest.raises(ConfigError, match="rwr runs on one learner"):
        load_config(RLConfig, "configs/srpo_rwr.yaml", ["distributed.backend=ray", "distributed.learners=2"])
    with pytest.raises(ConfigError, match="offline training"):
        load_config(RLConfig, "configs/quick.yaml", ["distributed.backend=ray", "offline.episodes=x"])
    cfg = load_config(RLConfig, "configs/srpo_paper_scale.yaml", [])
    assert cfg.distributed.collective_backend() == "nccl" and cfg.rollout.prompts_per_step * cfg.rollout.group_size == 512
    assert load_config(RLConfig, "configs/quick.yaml", ["distributed.backend=ray"]).distributed.collective_backend() == "gloo"


def test_a_run_resumes_under_another_placement_but_not_another_config(tmp_path):
    local = load_config(RLConfig, "configs/quick.yaml", [f"out={tmp_path}"])
    open_run(tmp_path, local)
    on_ray = load_config(RLConfig, "configs/quick.yaml", [f"out={tmp_path}", "distributed.backend=ray",
                                                          "distributed.rollout_workers=8"])
    open_run(tmp_path, on_ray)  # where it runs may change
    assert "rollout_workers: 8" in (tmp_path / "config.yaml").read_text()
    other = load_config(RLConfig, "configs/quick.yaml", [f"out={tmp_path}", "update.lr=0.0001"])
    with pytest.raises(ValueError, match="another config"):
        open_run(tmp_path, other)


def test_each_row_draws_its_noise_from_its_own_generator_whatever_shares_its_batch():
    seeds = [episode_seed(7, i) for i in range(4)]
    assert len(set(seeds)) == 4 and seeds == [episode_seed(7, i) for i in range(4)] and seeds != [
        episode_seed(8, i) for i in range(4)]
    whole = standard_normal((4, 3, 2), [torch.Generator().manual_seed(s) for s in seeds])
    alone = [standard_normal((1, 3, 2), [torch.Generator().manual_seed(s)]) for s in seeds]
    assert torch.equal(whole, torch.cat(alone))
    with pytest.raises(ValueError, match="3 generators for a batch of 4"):
        standard_normal((4, 3), [torch.Generator() for _ in range(3)])


def test_a_sampled_rollout_is_the_same_per_episode_with_one_or_two_simulators(policy):
    """Each episode's noise is its own: the first sampled chunk of every episode is the same whether the job list
    runs on one simulator or two (up to the rounding of batched inference, ~1e-7)."""
    from srpo_trainer.rl.exploration import ExplorationConfig, ExplorationPolicy
    from srpo_trainer.rollouts import run_policy_episodes

    explore = ExplorationPolicy(policy, ExplorationConfig(std_mode="fixed", std=0.2))
    jobs = [("reach_red_cube", 0), ("press_button", 1), ("open_drawer", 2)]
    one = run_policy_episodes(explore, jobs, "train", 1, 8, 1.0, 5, record=True, threads=1)[2]
    two = run_policy_episodes(explore, jobs, "train", 2, 8, 1.0, 5, record=True, threads=1)[2]
    for a, b in zip(one, two):
        np.testing.assert_allclose(a.chunks[0], b.chunks[0], atol=1e-5)
    assert not np.allclose(one[0].chunks[0], one[1].chunks[0])  # different episodes, different noise


def test_checkpoint_files_round_trip_and_cannot_escape_their_folder(policy, tmp_path):
    from srpo_trainer.distributed.ray_backend import (load_packed_policy, load_weights_bytes, pack_checkpoint,
                                                       unpack_checkpoint, weights_bytes)
    from srpo_trainer.policies.base import weights_fingerprint

    version = policy.version
    files = pack_checkpoint(policy)
    assert policy.version == version  # packing does not restamp the caller's policy
    copy = load_packed_policy(files)
    assert weights_fingerprint(copy) == weights_fingerprint(policy)
    with torch.no_grad():
        next(policy.parameters()).add_(0.5)
    load_weights_bytes(copy, weights_bytes(policy))
    assert weights_fingerprint(copy) == weights_fingerprint(policy)
    with pytest.raises(ValueError, match="escapes the checkpoint folder"):
        unpack_checkpoint({"../evil.json": b"{}"}, tmp_path / "ckpt")
    assert not (tmp_path / "evil.json").exists()
