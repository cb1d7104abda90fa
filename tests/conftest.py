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
