"""Shared fixtures: small real environments and episodes (real MuJoCo, real files on disk)."""

from __future__ import annotations

import numpy as np
import pytest

from srpo.sim.rollout import expert_episode
from srpo.sim.tabletop.env import TabletopEnv


@pytest.fixture(scope="session")
def env() -> TabletopEnv:
    e = TabletopEnv(image_size=32)
    yield e
    e.close()


@pytest.fixture(scope="session")
def expert_ep(env):
    """A successful scripted pick-and-place episode at 32x32."""
    ep = expert_episode(env, "place_red_cube_in_tray", "train", 0)
    assert ep.meta.success
    return ep


@pytest.fixture
def policy_ep(expert_ep):
    """The expert episode with policy outputs attached (chunks every 4 steps), as RL rollouts will store them."""
    import copy

    ep = copy.deepcopy(expert_ep)
    steps = np.arange(0, ep.length, 4)
    rng = np.random.default_rng(0)
    ep.chunk_steps = steps.astype(np.int64)
    ep.chunks = rng.uniform(-1, 1, (len(steps), 8, 7)).astype(np.float32)
    ep.chunk_log_probs = rng.normal(-20, 3, len(steps)).astype(np.float32)
    return ep


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A small random-weight TinyVLA checkpoint at 32x32 (evaluation plumbing, not skill)."""
    import torch

    from srpo.runtime.processing import NormStats
    from srpo.spec import TABLETOP_SPEC
    from srpo_trainer.policies.tiny_vla import TinyVLAConfig, TinyVLAPolicy

    torch.manual_seed(0)
    stats = NormStats(np.zeros(7), np.ones(7) * 0.5, np.zeros(8), np.ones(8))
    policy = TinyVLAPolicy(TinyVLAConfig(d_model=32, n_heads=2, n_layers=1, cnn_channels=(8, 16, 16)),
                           TABLETOP_SPEC.with_image_size(32, 32), stats, version="test:libero")
    return policy.save_pretrained(tmp_path_factory.mktemp("ckpt") / "final")
