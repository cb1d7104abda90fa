"""EpisodeBuilder (the one recorder) and schema 2: explicit decision steps, the acting distribution, unlabelled
episodes, and schema-1 files that still load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from srpo.episodes import (
    SCHEMA_VERSION,
    EpisodeBuilder,
    EpisodeSchemaError,
    EpisodeStore,
    EpisodeWriter,
    label_episode,
    read_episode,
    read_meta,
    write_episode,
)

SCHEMA1_FILE = Path(__file__).resolve().parents[1] / "data" / "episode_schema1.mcap"


def _builder(expert_ep, **kw) -> EpisodeBuilder:
    m = expert_ep.meta
    return EpisodeBuilder(m.spec, task=m.task, instruction=m.instruction, source=kw.pop("source", "robot"),
                          policy_version="test@abc", **kw)


def _frame(expert_ep, step):
    return {c: v[step] for c, v in expert_ep.images.items()}


def _record(expert_ep, steps: int, frames_every: int = 1, decide_every: int = 0, distribution: bool = False):
    b = _builder(expert_ep)
    rng = np.random.default_rng(0)
    for t in range(steps + 1):
        img = _frame(expert_ep, t) if t % frames_every == 0 or t == steps else None
        b.observe(0.05 * t, expert_ep.proprio[t], img)
        if t == steps:
            break
        if decide_every and t % decide_every == 0:
            chunk = rng.normal(size=(4, 7))
            b.decide(chunk, -3.0 - t, rng.normal(size=(4, 7)) if distribution else None,
                     np.full((4, 7), -1.0) if distribution else None)
        b.act(expert_ep.actions[t])
    return b


def test_builder_reproduces_a_recorded_episode(expert_ep, tmp_path):
    """Fed the expert episode step by step, the builder gives back the same arrays; they survive the file."""
    b = EpisodeBuilder(expert_ep.meta.spec, task=expert_ep.meta.task, instruction=expert_ep.meta.instruction,
                       source="sim", init_state_id=expert_ep.meta.init_state_id, split=expert_ep.meta.split)
    for t in range(expert_ep.length + 1):
        b.observe(expert_ep.timestamps[t], expert_ep.proprio[t], _frame(expert_ep, t), expert_ep.progress[t])
        if t < expert_ep.length:
            b.act(expert_ep.actions[t])
    ep = b.finish(success=True)
    for name in ("timestamps", "proprio", "actions", "progress"):
        assert np.array_equal(getattr(ep, name), getattr(expert_ep, name)), name
    assert all(np.array_equal(ep.images[c], expert_ep.images[c]) for c in ep.images)
    assert ep.frame_steps is None and ep.meta.success and ep.meta.final_progress == pytest.approx(1.0, abs=0.05)
    back = read_episode(write_episode(tmp_path / "e.mcap", ep))
    assert back.meta.schema_version == SCHEMA_VERSION and np.array_equal(back.actions, expert_ep.actions)


def test_sparse_frames_and_decisions_with_their_distribution(expert_ep, tmp_path):
    ep = _record(expert_ep, 10, frames_every=4, decide_every=4, distribution=True).finish(success=False)
    assert np.array_equal(ep.frame_steps, [0, 4, 8, 10]) and np.array_equal(ep.chunk_steps, [0, 4, 8])
    assert ep.chunk_means.shape == ep.chunk_log_stds.shape == ep.chunks.shape == (3, 4, 7)
    back = read_episode(write_episode(tmp_path / "e.mcap", ep))
    for name in ("chunk_steps", "chunks", "chunk_log_probs", "chunk_means", "chunk_log_stds", "frame_steps"):
        assert np.array_equal(getattr(back, name), getattr(ep, name)), name


def test_a_decision_is_matched_to_its_step_not_its_timestamp(expert_ep, tmp_path):
    """On a robot the chunk arrives after inference, logged later than the observation it came from."""
    spec = expert_ep.meta.spec
    b = _builder(expert_ep)
    with EpisodeWriter(tmp_path / "robot.mcap", spec) as w:
        for t in range(4):
            w.write_observation(0.1 * t, _frame(expert_ep, t) if t in (0, 3) else None, expert_ep.proprio[t])
            b.observe(0.1 * t, expert_ep.proprio[t], _frame(expert_ep, t) if t in (0, 3) else None)
            if t == 1:  # the chunk computed from o_0 arrives at 0.13 s, after o_1
                w.write_decision(0.13, 0, np.zeros((4, 7)), -1.5)
                b.decide(np.zeros((4, 7)), -1.5, step=0)
            if t < 3:
                w.write_action(0.1 * t, expert_ep.actions[t])
                b.act(expert_ep.actions[t])
        w.close(b.finish(success=None).meta)
    ep = read_episode(tmp_path / "robot.mcap")
    assert np.array_equal(ep.chunk_steps, [0]) and ep.chunk_log_probs[0] == pytest.approx(-1.5)


def test_decisions_whose_actions_never_ran_are_dropped(expert_ep):
    b = _record(expert_ep, 3, decide_every=1)
    b.decide(np.zeros((4, 7)), -1.0)  # made at the last observation: the episode ends before it acts
    ep = b.finish(success=True)
    assert np.array_equal(ep.chunk_steps, [0, 1, 2])


@pytest.mark.parametrize("bad_call, message", [
    (lambda b, e: b.observe(0.2, e.proprio[1], None), "without the action"),
    (lambda b, e: b.act(np.full(7, np.nan)) or b.act(np.zeros(7)), "finite"),
    (lambda b, e: b.decide(np.zeros((4, 7)), -1.0, step=3), "latest observation is step 1"),
    (lambda b, e: b.decide(np.zeros((4, 7)), -1.0, step=0), "after one at step 0"),
    (lambda b, e: b.decide(np.zeros((4, 7)), -1.0, mean=np.zeros((4, 7))), "come together"),
    (lambda b, e: b.decide(np.zeros((5, 7)), -1.0), r"expected \(K, 7\) like the others"),
    (lambda b, e: b.decide(np.zeros((4, 7)), float("nan")), "finite"),
])
def test_bad_calls_are_refused_by_name_and_change_nothing(expert_ep, bad_call, message):
    b = _builder(expert_ep)
    b.observe(0.0, expert_ep.proprio[0], _frame(expert_ep, 0))
    b.decide(np.zeros((4, 7)), -1.0)
    b.act(expert_ep.actions[0])
    b.observe(0.05, expert_ep.proprio[1], _frame(expert_ep, 1))
    before = (len(b.times), len(b.actions), list(b.decision_steps))
    with pytest.raises(EpisodeSchemaError, match=message):
        bad_call(b, expert_ep)
    assert (len(b.times), len(b.actions), b.decision_steps) == before
    b.act(expert_ep.actions[1])  # the recorder goes on after a refused call
    b.observe(0.1, expert_ep.proprio[2], _frame(expert_ep, 2))
    assert b.finish(success=True).length == 2


@pytest.mark.parametrize("bad_call, message", [
    (lambda b, e: b.act(e.actions[0]), "needs an observation"),
    (lambda b, e: b.observe(0.0, e.proprio[0], None), "first observation needs images"),
    (lambda b, e: b.observe(0.0, e.proprio[0][:3], _frame(e, 0)), "proprio"),
    (lambda b, e: b.observe(float("nan"), e.proprio[0], _frame(e, 0)), "finite"),
    (lambda b, e: b.observe(0.0, e.proprio[0], dict(list(_frame(e, 0).items())[:1])), "the spec has"),
    (lambda b, e: b.observe(0.0, e.proprio[0], {c: v[:8] for c, v in _frame(e, 0).items()}), "expected uint8"),
    (lambda b, e: b.finish(success=True), "at least one observation"),
])
def test_bad_first_calls_are_refused(expert_ep, bad_call, message):
    with pytest.raises(EpisodeSchemaError, match=message):
        bad_call(_builder(expert_ep), expert_ep)


def test_finish_needs_a_last_frame_and_a_closing_observation(expert_ep):
    b = _builder(expert_ep)
    b.observe(0.0, expert_ep.proprio[0], _frame(expert_ep, 0))
    b.act(expert_ep.actions[0])
    with pytest.raises(EpisodeSchemaError, match="ends with action 0"):
        b.finish(success=True)
    b.observe(0.05, expert_ep.proprio[1], None)
    with pytest.raises(EpisodeSchemaError, match="last observation .step 1. has no frame"):
        b.finish(success=True)
    with pytest.raises(EpisodeSchemaError, match="source"):
        EpisodeBuilder(expert_ep.meta.spec, task="t", instruction="i", source="phone")
    with pytest.raises(EpisodeSchemaError, match="progress"):
        b2 = _builder(expert_ep)
        b2.observe(0.0, expert_ep.proprio[0], _frame(expert_ep, 0))
        b2.act(expert_ep.actions[0])
        b2.observe(0.05, expert_ep.proprio[1], _frame(expert_ep, 1), progress=0.5)


def test_unlabelled_episodes_round_trip_are_refused_by_learners_and_can_be_labelled(expert_ep, tmp_path):
    from srpo.spec import RobotSpec
    from srpo_trainer.datasets import ChunkDataset

    ep = _record(expert_ep, 12).finish(success=None)
    path = write_episode(tmp_path / "store" / "robot_0.mcap", ep)
    assert read_meta(path).success is None and not read_episode(path).meta.labelled
    store = EpisodeStore(tmp_path / "store")
    assert [r.path for r in store.list(labelled=False)] == [path] and store.list(success=False) == []
    with pytest.raises(EpisodeSchemaError, match="no success label"):
        ChunkDataset([read_episode(path)], RobotSpec.from_dict(ep.meta.spec), chunk_size=4)
    r = subprocess.run([sys.executable, "-m", "srpo_cli", "episodes", "label", str(path), "--success", "false"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    labelled = read_episode(path)
    assert labelled.meta.success is False and "labelled_unix" in labelled.meta.extra
    assert np.array_equal(labelled.actions, ep.actions) and labelled.meta.episode_id == ep.meta.episode_id
    assert store.list(labelled=False) == [] and len(store.list(success=False)) == 1
    assert label_episode(path, True).success is True
    assert not list((tmp_path / "store").glob(".*tmp*"))  # the rewrite left no temp file


def test_metadata_rejects_a_success_that_is_not_a_label(expert_ep):
    from srpo.episodes import EpisodeMeta

    d = expert_ep.meta.to_dict()
    with pytest.raises(EpisodeSchemaError, match="success must be"):
        EpisodeMeta.from_dict({**d, "success": "yes"})


def test_a_schema1_file_still_loads():
    """``tests/data/episode_schema1.mcap`` was written by srpo's schema-1 writer (decisions matched by timestamp,
    no distribution, success always a bool) before the schema moved to 2."""
    ep = read_episode(SCHEMA1_FILE)
    assert ep.meta.schema_version == 1 and ep.meta.policy_version == "fixture_v1"
    assert ep.length == 12 and ep.meta.success is False and ep.meta.labelled
    assert np.array_equal(ep.chunk_steps, [0, 4, 8]) and ep.chunks.shape == (3, 8, 7)
    assert np.array_equal(ep.frame_steps, [0, 4, 8, 12])
    assert ep.chunk_means is None and ep.chunk_log_stds is None and ep.meta.policy_distribution is None
    raw = json.loads(json.dumps(read_meta(SCHEMA1_FILE).to_dict()))
    assert raw["schema_version"] == 1


def test_a_schema1_episode_rewritten_is_schema2_and_identical(tmp_path):
    old = read_episode(SCHEMA1_FILE)
    new = read_episode(write_episode(tmp_path / "e.mcap", old))
    assert new.meta.schema_version == SCHEMA_VERSION
    for name in ("timestamps", "proprio", "actions", "chunk_steps", "chunks", "chunk_log_probs", "frame_steps"):
        assert np.array_equal(getattr(new, name), getattr(old, name)), name
