"""Fixtures for export and runtime-backend tests: a tiny real checkpoint, its verified ONNX export and recorded
observations from real simulator episodes."""

from __future__ import annotations

import numpy as np
import pytest

from srpo.episodes.store import EpisodeStore
from srpo.runtime.observation import Observation
from srpo.runtime.processing import NormStats
from srpo.sim.rollout import expert_episode
from srpo.sim.tabletop.env import TabletopEnv
from srpo.spec import TABLETOP_SPEC

SMALL = dict(d_model=64, n_heads=4, n_layers=2, cnn_channels=(16, 32, 32))


@pytest.fixture(scope="session")
def episode_store(tmp_path_factory) -> EpisodeStore:
    """Two real scripted episodes per task at 32x32 (the observations the export is verified on)."""
    store = EpisodeStore(tmp_path_factory.mktemp("episodes"))
    env = TabletopEnv(image_size=32)
    for task in ("reach_red_cube", "press_button"):
        for i in range(2):
            store.write(expert_episode(env, task, "train", i))
    env.close()
    return store


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory, episode_store):
    import torch

    from srpo_trainer.policies.tiny_vla import TinyVLAConfig, TinyVLAPolicy

    torch.manual_seed(0)
    stats = NormStats.from_episodes(episode_store.iter_episodes())
    policy = TinyVLAPolicy(TinyVLAConfig(**SMALL), TABLETOP_SPEC.with_image_size(32, 32), stats, version="test:ckpt")
    with torch.no_grad():  # a policy whose log-std is not one constant, so the scale output is checked too
        policy.model.log_std.copy_(torch.linspace(-2, 0, policy.model.log_std.numel()).reshape_as(policy.model.log_std))
    return policy.save_pretrained(tmp_path_factory.mktemp("ckpt") / "final")


@pytest.fixture(scope="session")
def exported(tmp_path_factory, checkpoint, episode_store):
    from srpo_export.to_onnx import export_onnx

    return export_onnx(checkpoint, tmp_path_factory.mktemp("export") / "onnx", data=episode_store.root)


def recorded(store: EpisodeStore, batch: int, seed: int = 0) -> Observation:
    from srpo_export.to_onnx import recorded_observations

    return recorded_observations(TABLETOP_SPEC.with_image_size(32, 32), store.root, batch, seed)


@pytest.fixture
def obs16(episode_store) -> Observation:
    return recorded(episode_store, 16)


def random_obs(batch: int, size: int = 32, seed: int = 0) -> Observation:
    rng = np.random.default_rng(seed)
    return Observation({c: rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8) for c in ("agentview", "wrist")},
                       rng.normal(0, 0.1, (batch, 8)).astype(np.float32),
                       [["open the drawer", "press the orange button"][i % 2] for i in range(batch)])
