"""The built-in latent world model: it learns on real episodes, round-trips, resumes and never reads labels."""

import json

import numpy as np
import pytest
import torch

import srpo_trainer.world_model as wm
from srpo_trainer.encoders import EncoderError, load_encoder
from srpo_trainer.world_model import (
    BuiltinEncoder,
    LatentWorldModel,
    WorldModelConfig,
    WorldModelDataset,
    WorldModelTrainConfig,
    load_world_model,
    train_world_model,
    vicreg_terms,
)

TINY = dict(image_size=32, latent_dim=16, channels=(16, 16, 16), horizon=2, predictor_hidden=32, frames=6)


def _cfg(store, out, **kw):
    base = dict(data=str(store.root), out=str(out), steps=60, batch_size=32, lr=2e-3, checkpoint_every=30,
                log_every=10, augment_shift=0, model=WorldModelConfig(**TINY))
    base.update(kw)
    return WorldModelTrainConfig(**base)


def test_sparse_frames_give_only_triples_a_horizon_apart(demo_store):
    """With frames every 2 steps and horizon 2, the triples are exactly the dense ones that start on a frame."""
    import copy

    ep = copy.deepcopy(demo_store.load(demo_store.list()[0]))
    cfg = WorldModelConfig(**TINY)
    dense = WorldModelDataset([ep], cfg)
    T = ep.length
    steps = np.unique(np.r_[np.arange(0, T + 1, 2), T]).astype(np.int64)
    ep.images, ep.frame_steps = {k: v[steps] for k, v in ep.images.items()}, steps
    sparse = WorldModelDataset([ep.validate()], cfg)
    starts = steps[np.isin(steps + 2, steps)]
    assert len(sparse) == len(starts)
    for got, want in zip(sparse.batch(np.arange(len(sparse))), dense.batch(starts)):
        assert torch.equal(got, want)
    with pytest.raises(ValueError, match="two frames 3 steps"):
        WorldModelDataset([ep], WorldModelConfig(**{**TINY, "horizon": 3, "image_size": 32}))


def test_vicreg_terms_penalise_collapse_and_correlation():
    collapsed = torch.zeros(64, 8)
    spread = torch.randn(64, 8, generator=torch.Generator().manual_seed(0)) * 3
    assert vicreg_terms(collapsed)[0] > 0.9 and vicreg_terms(spread)[0] < 0.05
    correlated = spread[:, :1].repeat(1, 8)
    assert vicreg_terms(correlated)[1] > 10 * vicreg_terms(spread)[1]


def test_training_lowers_the_prediction_loss_and_the_model_round_trips(demo_store, tmp_path):
    cfg = _cfg(demo_store, tmp_path / "run")
    episodes = [demo_store.load(r) for r in demo_store.list()]
    data = WorldModelDataset(episodes, cfg.model)
    idx = np.arange(len(data))
    torch.manual_seed(0)

    def loss_of(model):
        with torch.no_grad():
            return wm.world_model_loss(model, *data.batch(idx), cfg.var_weight, cfg.cov_weight)[0].item()

    before = loss_of(LatentWorldModel(cfg.model))
    final = train_world_model(cfg, progress=False)
    model = load_world_model(final)
    assert loss_of(model) < 0.7 * before
    enc = load_encoder("builtin", str(final))
    videos = [ep.images["agentview"] for ep in episodes]
    emb = enc.encode(videos)
    assert emb.shape == (len(videos), cfg.model.embedding_dim)
    np.testing.assert_array_equal(emb, BuiltinEncoder(load_world_model(final)).encode(videos))
    meta = json.loads((final / "config.json").read_text())
    assert meta["format"] == wm.FORMAT and meta["steps"] == 60


def test_an_interrupted_run_resumes_to_the_same_weights(demo_store, tmp_path, monkeypatch):
    ref = load_world_model(train_world_model(_cfg(demo_store, tmp_path / "ref"), progress=False))
    calls = {"n": 0}
    real = wm.world_model_loss

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 45:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(wm, "world_model_loss", crashing)
    with pytest.raises(KeyboardInterrupt):
        train_world_model(_cfg(demo_store, tmp_path / "run"), progress=False)
    monkeypatch.setattr(wm, "world_model_loss", real)
    resumed = load_world_model(train_world_model(_cfg(demo_store, tmp_path / "run"), progress=False))
    for (k, a), (_, b) in zip(ref.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k


def test_the_dataset_reads_frames_and_actions_only(demo_store):
    episodes = [demo_store.load(r) for r in demo_store.list()]
    for ep in episodes:  # poison every label: training data must not change
        ep.meta.success = not ep.meta.success
        ep.progress[:] = np.nan
    data = WorldModelDataset(episodes, WorldModelConfig(**TINY))
    now, acts, nxt = data.batch(np.arange(5))
    assert now.shape == (5, 3, 32, 32) and acts.shape == (5, 2, 7) and torch.isfinite(now).all()
    assert len(data) == sum(ep.length - 1 for ep in episodes)  # horizon 2: T - h + 1 starts per episode


def test_a_damaged_world_model_is_refused(demo_store, tmp_path):
    final = train_world_model(_cfg(demo_store, tmp_path / "run", steps=2, checkpoint_every=2), progress=False)
    (final / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(EncoderError, match="cannot load world model"):
        load_world_model(final)
    with pytest.raises(ValueError, match="pooling"):
        WorldModelConfig(pooling="max")
