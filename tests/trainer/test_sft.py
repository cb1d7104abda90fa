"""Supervised fine-tuning on real scripted demos: it overfits, resumes exactly, and refuses bad setups."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import srpo_trainer.sft as sft_mod
from srpo.spec import RobotSpec
from srpo_trainer.datasets import ChunkDataset, random_shift, select_episodes
from srpo_trainer.evaluate import EvalConfig, evaluate
from srpo_trainer.policies.tiny_vla import TinyVLAConfig, TinyVLAPolicy
from srpo_trainer.sft import SFTConfig, train_sft
from tests.trainer.conftest import SMALL


def _cfg(store, out, **kw):
    base = dict(data=str(store.root), out=str(out), steps=30, batch_size=16, checkpoint_every=10, log_every=5,
                warmup_steps=5, augment_shift=0, policy=TinyVLAConfig(**SMALL))
    base.update(kw)
    return SFTConfig(**base)


def test_chunks_past_the_end_repeat_the_last_action_and_count_only_after_a_success(demo_store):
    eps = select_episodes(demo_store, ["press_button"], 1)
    assert eps[0].meta.success
    spec, T = RobotSpec.from_dict(eps[0].meta.spec), eps[0].length
    ds = ChunkDataset(eps, spec, 8)
    assert len(ds) == T
    last = ds.batch(np.array([T - 1]))
    assert last.mask[0].tolist() == [1] * 8  # the successful final action is the label for what comes after
    assert all(torch.equal(last.chunks[0, k], torch.from_numpy(eps[0].actions[-1])) for k in range(8))
    first = ds.batch(np.array([0]))
    assert torch.equal(first.chunks[0], torch.from_numpy(eps[0].actions[:8]))

    eps[0].meta.success = False  # a failed or truncated ending says nothing about what should follow
    failed = ChunkDataset(eps, spec, 8).batch(np.array([T - 3, T - 1]))
    assert failed.mask[0].tolist() == [1, 1, 1] + [0] * 5
    assert failed.mask[1].tolist() == [1] + [0] * 7


def test_sparse_frame_episodes_give_one_sample_per_framed_step(demo_store):
    """A rollout recorded with decision-only frames trains on the steps that have images, with their own labels."""
    import copy

    ep = copy.deepcopy(select_episodes(demo_store, ["press_button"], 1)[0])
    dense = ChunkDataset([ep], RobotSpec.from_dict(ep.meta.spec), 8)
    T = ep.length
    steps = np.unique(np.r_[np.arange(0, T + 1, 8), T]).astype(np.int64)
    ep.images, ep.frame_steps = {k: v[steps] for k, v in ep.images.items()}, steps
    sparse = ChunkDataset([ep.validate()], RobotSpec.from_dict(ep.meta.spec), 8)
    framed = steps[steps < T]
    assert len(sparse) == len(framed)
    got, want = sparse.batch(np.arange(len(framed))), dense.batch(framed)
    assert torch.equal(got.chunks, want.chunks) and torch.equal(got.mask, want.mask)
    assert np.array_equal(got.obs.proprio, want.obs.proprio)
    assert all(np.array_equal(got.obs.images[c], want.obs.images[c]) for c in got.obs.images)


def test_episode_selection_errors(demo_store):
    with pytest.raises(ValueError, match="asked for 5 demos"):
        select_episodes(demo_store, ["press_button"], 5)
    with pytest.raises(ValueError, match="open_drawer"):
        select_episodes(demo_store, ["open_drawer"], 1)


def test_random_shift_keeps_shape_and_moves_content():
    x = torch.arange(2 * 2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 2, 3, 8, 8)
    y = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and not torch.equal(x, y)
    assert torch.equal(random_shift(x, 0), x)


def test_tiny_sft_overfits_and_succeeds_where_the_demos_did(demo_store, tmp_path):
    cfg = _cfg(demo_store, tmp_path / "run", steps=400, batch_size=32, lr=1e-3, checkpoint_every=400, log_every=50)
    final = train_sft(cfg, progress=False)
    policy = TinyVLAPolicy.from_pretrained(final)
    ds = ChunkDataset(select_episodes(demo_store), policy.spec, 8)
    b = ds.batch(np.arange(len(ds)))
    with torch.no_grad():
        loss, info = sft_mod.sft_loss(policy, policy.encode(b.obs), b.chunks, b.mask)
    assert info["loss/l1"] < 0.25, info
    summary = evaluate(policy, EvalConfig(tasks=["reach_red_cube", "press_button"], episodes_per_task=3,
                                          split="train", workers=2, gifs=0), progress=False)
    assert summary["success_rate"] >= 5 / 6, summary["per_task"]


def test_interrupted_run_resumes_to_the_same_weights(demo_store, tmp_path, monkeypatch):
    straight = train_sft(_cfg(demo_store, tmp_path / "a"), progress=False)

    real_loss, calls = sft_mod.sft_loss, {"n": 0}

    def crashing_loss(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 16:
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(sft_mod, "sft_loss", crashing_loss)
    with pytest.raises(KeyboardInterrupt):
        train_sft(_cfg(demo_store, tmp_path / "b"), progress=False)
    assert (tmp_path / "b" / "checkpoints" / "latest").read_text() == "step_0000010"
    monkeypatch.setattr(sft_mod, "sft_loss", real_loss)
    resumed = train_sft(_cfg(demo_store, tmp_path / "b"), progress=False)
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_folder_with_another_config_is_refused(demo_store, tmp_path):
    train_sft(_cfg(demo_store, tmp_path / "run", steps=10), progress=False)
    with pytest.raises(ValueError, match="another config"):
        train_sft(_cfg(demo_store, tmp_path / "run", steps=20), progress=False)
