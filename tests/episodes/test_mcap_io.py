"""The MCAP episode format: exact round trips, atomic writes and detection of damaged files (real files)."""

import copy
import os

import numpy as np
import pytest

from srpo.episodes import CorruptEpisodeError, EpisodeSchemaError, EpisodeWriter, read_episode, read_meta, write_episode
from srpo.episodes.schema import EpisodeMeta


def _assert_same(a, b):
    assert a.meta == b.meta
    for k in a.images:
        assert np.array_equal(a.images[k], b.images[k])
    assert np.array_equal(a.actions, b.actions)
    assert np.array_equal(a.proprio, b.proprio)
    assert np.allclose(a.timestamps, b.timestamps, atol=1e-9, rtol=0)
    assert np.array_equal(a.progress, b.progress)


def test_round_trip_is_exact(tmp_path, expert_ep):
    path = write_episode(tmp_path / "ep.mcap", expert_ep)
    back = read_episode(path)
    _assert_same(expert_ep, back)
    assert back.chunks is None
    assert read_meta(path) == expert_ep.meta


def test_round_trip_with_policy_chunks_and_log_probs(tmp_path, policy_ep):
    back = read_episode(write_episode(tmp_path / "ep.mcap", policy_ep))
    _assert_same(policy_ep, back)
    assert np.array_equal(back.chunk_steps, policy_ep.chunk_steps)
    assert np.array_equal(back.chunks, policy_ep.chunks)
    assert np.array_equal(back.chunk_log_probs, policy_ep.chunk_log_probs)


def test_file_is_a_ros2_mcap_with_standard_message_types(tmp_path, expert_ep):
    from mcap.reader import make_reader

    path = write_episode(tmp_path / "ep.mcap", expert_ep)
    with open(path, "rb") as f:
        reader = make_reader(f)
        assert reader.get_header().profile == "ros2"
        summary = reader.get_summary()
    topics = {c.topic: summary.schemas[c.schema_id].name for c in summary.channels.values()}
    assert topics["/srpo/camera/agentview/image_raw"] == "sensor_msgs/msg/Image"
    assert topics["/srpo/proprio"] == "sensor_msgs/msg/JointState"
    assert topics["/srpo/action"] == "std_msgs/msg/Float32MultiArray"
    assert all(c.message_encoding == "cdr" for c in summary.channels.values())


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_truncated_file_is_detected_with_its_path(tmp_path, expert_ep, keep):
    path = write_episode(tmp_path / "ep.mcap", expert_ep)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(CorruptEpisodeError, match=str(path)):
        read_episode(path)


def test_any_flipped_byte_is_detected(tmp_path, expert_ep):
    path = write_episode(tmp_path / "ep.mcap", expert_ep)
    raw = path.read_bytes()
    rng = np.random.default_rng(0)
    # Header, footer and summary regions exhaustively, the (large) chunk region by sampling.
    positions = set(range(0, 80)) | set(range(len(raw) - 400, len(raw))) | set(rng.integers(0, len(raw), 200).tolist())
    bad = tmp_path / "bad.mcap"
    undetected = []
    for pos in sorted(positions):
        flipped = bytearray(raw)
        flipped[pos] ^= 0x01
        bad.write_bytes(bytes(flipped))
        try:
            read_episode(bad)
            undetected.append(pos)
        except CorruptEpisodeError as exc:
            assert str(bad) in str(exc)
    assert undetected == []


def test_failed_write_leaves_nothing_behind(tmp_path, expert_ep):
    target = tmp_path / "ep.mcap"
    with pytest.raises(RuntimeError):
        with EpisodeWriter(target, expert_ep.meta.spec) as w:
            w.write_observation(0.0, {k: v[0] for k, v in expert_ep.images.items()}, expert_ep.proprio[0])
            raise RuntimeError("robot disconnected")
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_inconsistent_episodes_and_discards_the_file(tmp_path, expert_ep):
    target = tmp_path / "ep.mcap"
    w = EpisodeWriter(target, expert_ep.meta.spec)
    w.write_observation(0.0, {k: v[0] for k, v in expert_ep.images.items()}, expert_ep.proprio[0])
    w.write_action(0.0, expert_ep.actions[0])  # one action but only one observation: the final one is missing
    with pytest.raises(EpisodeSchemaError, match="observations"):
        w.close(copy.replace(expert_ep.meta, length=1) if hasattr(copy, "replace") else _with_length(expert_ep.meta, 1))
    assert list(tmp_path.iterdir()) == []


def _with_length(meta, n):
    d = meta.to_dict()
    d["length"] = n
    return EpisodeMeta.from_dict(d)


def test_writer_rejects_bad_observations(tmp_path, expert_ep):
    with EpisodeWriter(tmp_path / "ep.mcap", expert_ep.meta.spec) as w:
        images = {k: v[0] for k, v in expert_ep.images.items()}
        with pytest.raises(EpisodeSchemaError, match="lacks camera 'wrist'"):
            w.write_observation(0.0, {"agentview": images["agentview"]}, expert_ep.proprio[0])
        with pytest.raises(EpisodeSchemaError, match="expected uint8"):
            w.write_observation(0.0, {**images, "wrist": np.zeros((8, 8, 3), np.uint8)}, expert_ep.proprio[0])
        with pytest.raises(EpisodeSchemaError, match="not a finite vector"):
            w.write_action(0.0, np.array([np.nan] * 7))
    assert not (tmp_path / "ep.mcap").exists()


def test_schema_validation_names_the_problem(expert_ep):
    ep = copy.deepcopy(expert_ep)
    ep.actions = ep.actions[:-1]
    with pytest.raises(EpisodeSchemaError, match="actions"):
        ep.validate()
    ep = copy.deepcopy(expert_ep)
    ep.images["wrist"] = ep.images["wrist"][:, :16]
    with pytest.raises(EpisodeSchemaError, match="camera 'wrist'"):
        ep.validate()
    with pytest.raises(EpisodeSchemaError, match="source"):
        _meta = expert_ep.meta.to_dict()
        _meta["source"] = "dream"
        EpisodeMeta.from_dict(_meta)
    with pytest.raises(EpisodeSchemaError, match="lacks"):
        EpisodeMeta.from_dict({"task": "x"})


def test_a_newer_schema_version_is_refused(tmp_path, expert_ep):
    d = expert_ep.meta.to_dict()
    d["schema_version"] = 99
    with pytest.raises(EpisodeSchemaError, match="newer"):
        EpisodeMeta.from_dict(d)


def test_unreadable_path_is_reported(tmp_path):
    with pytest.raises(CorruptEpisodeError, match="missing.mcap"):
        read_episode(tmp_path / "missing.mcap")
    os.makedirs(tmp_path / "d.mcap")
    with pytest.raises(CorruptEpisodeError):
        read_meta(tmp_path / "d.mcap")


def _sparse(ep, every: int = 5):
    """``ep`` keeping frames only at every ``every``-th step and the last one (as a chunked rollout records)."""
    ep = copy.deepcopy(ep)
    steps = np.unique(np.r_[np.arange(0, ep.length + 1, every), ep.length]).astype(np.int64)
    ep.images = {k: v[steps] for k, v in ep.images.items()}
    ep.frame_steps = steps
    return ep.validate()


def test_sparse_frames_round_trip_and_index_by_step(tmp_path, policy_ep):
    sparse = _sparse(policy_ep, every=4)
    back = read_episode(write_episode(tmp_path / "sparse.mcap", sparse))
    _assert_same(sparse, back)
    assert np.array_equal(back.frame_steps, sparse.frame_steps)
    step = int(sparse.frame_steps[3])
    assert np.array_equal(back.images["agentview"][back.frame_index(step)], policy_ep.images["agentview"][step])
    with pytest.raises(IndexError, match="no frame at step 1"):
        back.frame_index(1)
    # the frame a policy held at a step without its own: the latest one before it (frames at 0, 4, 8, ...)
    assert [back.held_frame_index(t) for t in (0, 1, 3, 4, 7, 8)] == [0, 0, 0, 1, 1, 2]
    assert back.held_frame_index(back.length) == len(back.frame_steps) - 1
    with pytest.raises(IndexError, match="outside"):
        back.held_frame_index(back.length + 1)
    dense = read_episode(write_episode(tmp_path / "dense.mcap", policy_ep))
    assert dense.frame_steps is None and dense.frame_index(1) == 1 and dense.held_frame_index(1) == 1
    # a decision at a step without a frame (a slow camera, a frame lost in transport) is replayed on the held frame
    from srpo_trainer.rollouts import decision_observation

    images, proprio, _ = decision_observation(back, 6)
    assert np.array_equal(images["agentview"], policy_ep.images["agentview"][4])
    assert np.array_equal(proprio, policy_ep.proprio[6])


@pytest.mark.parametrize("steps, message", [
    (lambda T: np.array([1, T]), "from 0 to the last step"),
    (lambda T: np.array([0, T - 1]), "from 0 to the last step"),
    (lambda T: np.array([0, 3, 3, T]), "increase strictly"),
    (lambda T: np.array([0.0, T]), "integer"),
])
def test_bad_frame_steps_are_named(expert_ep, steps, message):
    ep = copy.deepcopy(expert_ep)
    ep.frame_steps = steps(ep.length)
    ep.images = {k: v[: len(ep.frame_steps)] for k, v in ep.images.items()}
    with pytest.raises(EpisodeSchemaError, match=message):
        ep.validate()
    ep = _sparse(expert_ep)
    ep.images["wrist"] = ep.images["wrist"][:-1]  # one frame short of frame_steps
    with pytest.raises(EpisodeSchemaError, match="camera 'wrist'"):
        ep.validate()


def test_held_frames_give_the_latest_frame_at_every_step(expert_ep):
    sparse = _sparse(expert_ep, every=4)
    held = sparse.held_frames("agentview")
    assert len(held) == expert_ep.length + 1
    for t in (0, 3, 4, 7, expert_ep.length):
        assert np.array_equal(held[t], expert_ep.images["agentview"][t - t % 4 if t < expert_ep.length else t])
    assert expert_ep.held_frames("wrist") is expert_ep.images["wrist"]
