"""Fixtures for trainer tests: a tiny policy config and small real demonstration stores."""

from __future__ import annotations

import numpy as np
import pytest

from srpo.episodes.store import EpisodeStore
from srpo.sim.rollout import expert_episode
from srpo.sim.tabletop.env import TabletopEnv
from srpo.spec import TABLETOP_SPEC
from srpo_trainer.policies.base import Observation
from srpo_trainer.policies.tiny_vla import TinyVLAConfig, TinyVLAPolicy
from srpo_trainer.processor import NormStats

SMALL = dict(d_model=64, n_heads=4, n_layers=2, cnn_channels=(16, 32, 32))


@pytest.fixture
def stats() -> NormStats:
    rng = np.random.default_rng(0)
    return NormStats(rng.normal(0, 0.1, 7).astype(np.float32), rng.uniform(0.2, 1, 7).astype(np.float32),
                     rng.normal(0, 0.1, 8).astype(np.float32), rng.uniform(0.2, 1, 8).astype(np.float32))


@pytest.fixture
def policy(stats) -> TinyVLAPolicy:
    torch_seed = 0
    import torch

    torch.manual_seed(torch_seed)
    return TinyVLAPolicy(TinyVLAConfig(**SMALL), TABLETOP_SPEC.with_image_size(32, 32), stats)


def make_obs(batch: int = 3, size: int = 32, seed: int = 0) -> Observation:
    rng = np.random.default_rng(seed)
    return Observation(
        images={c: rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8) for c in ("agentview", "wrist")},
        proprio=rng.normal(0, 0.1, (batch, 8)).astype(np.float32),
        instructions=[["open the drawer", "press the orange button", "touch the red cube"][i % 3] for i in range(batch)],
    )


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory) -> EpisodeStore:
    """3 scripted demos for each of two short tasks, at 32x32."""
    root = tmp_path_factory.mktemp("demos")
    store = EpisodeStore(root)
    env = TabletopEnv(image_size=32)
    for task in ("reach_red_cube", "press_button"):
        for i in range(3):
            store.write(expert_episode(env, task, "train", i))
    env.close()
    return store


@pytest.fixture(scope="session")
def sft_start(demo_store, tmp_path_factory):
    """A policy fitted for a few hundred steps on the demo states: it solves them sometimes, so RL groups are mixed
    and advantages are non-zero (an untrained policy fails every rollout and the update would have nothing to do)."""
    from srpo_trainer.policies.tiny_vla import TinyVLAConfig
    from srpo_trainer.sft import SFTConfig, train_sft

    out = tmp_path_factory.mktemp("sft_start")
    return train_sft(SFTConfig(data=str(demo_store.root), out=str(out), steps=300, batch_size=16, checkpoint_every=300,
                               policy=TinyVLAConfig(**SMALL)), progress=False)
