"""The recorder core: stamped messages in any cross-topic order -> the episode; journals survive a SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from srpo.episodes import EpisodeStore, read_episode
from srpo.robot.recorder import JOURNAL_SUFFIX, EpisodeRecorder, RecorderConfig, recover_journal
from srpo.spec import RobotSpec


def _spec(ep) -> RobotSpec:
    return RobotSpec.from_dict(ep.meta.spec)


def _messages(ep, stamp_jitter: float = 0.0, frame_every: int = 1, decide_every: int = 4):
    """The expert episode as the topics would deliver it: (kind, args) tuples."""
    rng = np.random.default_rng(1)
    out = []
    for t in range(ep.length + 1):
        stamp = 100.0 + float(ep.timestamps[t])
        out.append(("state", (stamp, ep.proprio[t], float(ep.progress[t]))))
        if t % frame_every == 0 or t == ep.length:
            for cam, frames in ep.images.items():
                out.append(("frame", (cam, stamp + rng.uniform(-stamp_jitter, stamp_jitter), frames[t])))
        if t < ep.length:
            out.append(("action", (stamp, ep.actions[t])))
            if t % decide_every == 0:
                out.append(("decision", (stamp, np.full((4, 7), t / 100, np.float32), -float(t),
                                         np.zeros((4, 7), np.float32), np.full((4, 7), -1.0, np.float32))))
    return out


def _feed(rec: EpisodeRecorder, messages) -> None:
    for kind, args in messages:
        {"state": rec.add_state, "frame": rec.add_frame, "action": rec.add_action, "decision": rec.add_decision}[kind](*args)


def test_messages_in_any_cross_topic_order_give_the_recorded_episode(expert_ep, tmp_path):
    rec = EpisodeRecorder(_spec(expert_ep), RecorderConfig(out_dir=str(tmp_path), source="sim"))
    rec.start(expert_ep.meta.task, expert_ep.meta.instruction, policy_version="p@1")
    messages = _messages(expert_ep, stamp_jitter=0.004)
    order = np.random.default_rng(0).permutation(len(messages))  # topics interleave arbitrarily
    _feed(rec, [messages[i] for i in order])
    path = rec.stop(success=True)
    ep = read_episode(path)
    assert ep.meta.success and ep.meta.source == "sim" and ep.meta.policy_version == "p@1"
    assert np.array_equal(ep.actions, expert_ep.actions) and np.array_equal(ep.proprio, expert_ep.proprio)
    assert all(np.array_equal(ep.images[c], expert_ep.images[c]) for c in ep.images)
    assert np.array_equal(ep.chunk_steps, np.arange(0, expert_ep.length, 4))
    assert np.allclose(ep.chunk_log_probs, -ep.chunk_steps) and ep.chunk_means.shape == ep.chunks.shape
    assert not list(tmp_path.rglob(f"*{JOURNAL_SUFFIX}"))  # the journal goes once the episode is safe


def test_a_state_without_an_action_is_superseded_and_counted(expert_ep, tmp_path):
    """A paused simulator re-publishes its state with fresh stamps (no action in between); on a real arm a lost
    action message looks the same. Only the state the next action followed is kept."""
    rec = EpisodeRecorder(_spec(expert_ep), RecorderConfig(out_dir=str(tmp_path)))
    rec.start("t", "do it")
    missing = 100.0 + float(expert_ep.timestamps[10])
    messages = [m for m in _messages(expert_ep) if not (m[0] == "action" and m[1][0] == missing)]
    paused = [("state", (99.0 + k * 0.01, expert_ep.proprio[0])) for k in range(3)]  # before the first command
    paused += [("frame", (cam, 99.0 + k * 0.01, f[0])) for k in range(3) for cam, f in expert_ep.images.items()]
    _feed(rec, paused + messages)
    ep = read_episode(rec.stop(success=None))
    assert ep.length == expert_ep.length - 1 and ep.meta.success is None
    assert ep.meta.extra["dropped_states"] == 3 + 1
    assert np.array_equal(ep.actions[:10], expert_ep.actions[:10])
    assert np.array_equal(ep.proprio[10], expert_ep.proprio[11]) and ep.timestamps[0] == 100.0


def test_a_decision_on_a_leading_state_dropped_for_want_of_frames_is_dropped_not_moved(expert_ep, tmp_path):
    """The first step ran a chunk's first row, but its frames never arrived: the episode starts at step 1, whose
    action is the chunk's second row. Filing the step-0 decision under step 1 would pair row 0 with that action."""
    rec = EpisodeRecorder(_spec(expert_ep), RecorderConfig(out_dir=str(tmp_path)))
    rec.start("t", "do it")
    first = 100.0 + float(expert_ep.timestamps[0])
    _feed(rec, [m for m in _messages(expert_ep) if not (m[0] == "frame" and m[1][1] == first)])
    ep = read_episode(rec.stop(success=True))
    assert ep.length == expert_ep.length - 1 and np.array_equal(ep.actions, expert_ep.actions[1:])
    assert np.array_equal(ep.chunk_steps, np.arange(4, expert_ep.length, 4) - 1)  # step 0's decision is gone
    assert np.allclose(ep.chunks[:, 0, 0], np.arange(4, expert_ep.length, 4) / 100)
    assert ep.meta.extra == {"dropped_states": 1, "dropped_decisions": 1}


def test_sparse_frames_are_filed_under_their_nearest_state(expert_ep, tmp_path):
    rec = EpisodeRecorder(_spec(expert_ep), RecorderConfig(out_dir=str(tmp_path)))
    rec.start("t", "do it")
    _feed(rec, _messages(expert_ep, stamp_jitter=0.01, frame_every=5))
    ep = read_episode(rec.stop(success=True))
    assert np.array_equal(ep.frame_steps, np.r_[np.arange(0, expert_ep.length, 5), expert_ep.length])


def test_nothing_recorded_writes_nothing_and_no_instruction_is_refused(expert_ep, tmp_path):
    from srpo.episodes import EpisodeSchemaError

    rec = EpisodeRecorder(_spec(expert_ep), RecorderConfig(out_dir=str(tmp_path)))
    rec.start("t", "do it")
    assert len(list(tmp_path.rglob(f"*{JOURNAL_SUFFIX}"))) == 1
    assert rec.stop(success=True) is None and not list(tmp_path.rglob("*.mcap*"))
    with pytest.raises(EpisodeSchemaError, match="instruction"):
        rec.start("t", "  ")
    rec.add_state(1.0, expert_ep.proprio[0])  # not recording: ignored, nothing written
    assert not rec.recording and not list(tmp_path.rglob("*.mcap*"))


RECORDER_SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    from srpo.sim.rollout import expert_episode
    from srpo.sim.tabletop.env import TabletopEnv
    from srpo.robot.recorder import EpisodeRecorder, RecorderConfig
    from srpo.spec import RobotSpec
    sys.path.insert(0, sys.argv[2])
    from test_recorder import _messages, _feed
    ep = expert_episode(TabletopEnv(image_size=32), "press_button", "train", 0)
    rec = EpisodeRecorder(RobotSpec.from_dict(ep.meta.spec), RecorderConfig(out_dir=sys.argv[1]))
    rec.start("press_button", ep.meta.instruction)
    _feed(rec, _messages(ep))
    rec.stop(success=True)
    rec.start("press_button", ep.meta.instruction, policy_version="second")
    messages = _messages(ep)
    _feed(rec, messages[: len(messages) // 2])
    print("HALF", flush=True)
    time.sleep(60)
""")


def test_sigkill_mid_episode_keeps_closed_episodes_and_the_open_one_is_recoverable(tmp_path):
    script = tmp_path / "record.py"
    script.write_text(RECORDER_SCRIPT)
    out = tmp_path / "episodes"
    proc = subprocess.Popen([sys.executable, str(script), str(out), str(__import__("pathlib").Path(__file__).parent)],
                            stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        line = ""
        while time.time() < deadline and "HALF" not in line:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
        assert "HALF" in line, f"recorder process ended early ({proc.poll()})"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    closed = EpisodeStore(out).list()
    assert len(closed) == 1 and read_episode(closed[0].path).meta.success  # intact, fully verified
    journals = list(out.rglob(f"*{JOURNAL_SUFFIX}"))
    assert len(journals) == 1  # the open episode is clearly marked, and not listed as an episode
    recovered = recover_journal(journals[0])
    full = read_episode(closed[0].path)
    assert recovered.meta.success is None and recovered.meta.policy_version == "second"
    assert recovered.meta.extra["recovered_from"] == journals[0].name
    assert 5 < recovered.length < full.length
    assert np.array_equal(recovered.actions, full.actions[: recovered.length])


def test_messages_heard_just_before_start_open_the_episode_but_not_the_previous_ones(expert_ep, tmp_path):
    """The recorder can hear an instruction after the arm and the policy have started on it: the preroll keeps what
    it heard since the previous episode (and within ``preroll_s``) for the next one."""
    rec = EpisodeRecorder(_spec(expert_ep), RecorderConfig(out_dir=str(tmp_path), preroll_s=5.0))
    messages = _messages(expert_ep)
    half = next(i for i, m in enumerate(messages) if m[0] == "state" and m[1][0] >= 100.0 + expert_ep.timestamps[20])
    rec.start("t", "first")
    _feed(rec, messages[:half])
    first = read_episode(rec.stop(success=None))
    _feed(rec, messages[half - 30 : half + 10])  # stragglers of the first episode, then the second begins unheard
    rec.start("t", "second")
    _feed(rec, messages[half + 10 :])
    second = read_episode(rec.stop(success=True))
    # the first ends at state 19 (it never heard state 20); the second opens at state 20, heard before its start(),
    # and none of the first episode's stragglers leaked into it
    assert first.timestamps[-1] == pytest.approx(100.0 + expert_ep.timestamps[19])
    assert second.timestamps[0] == pytest.approx(100.0 + expert_ep.timestamps[20])
    assert first.length + 1 + second.length == expert_ep.length
    off = EpisodeRecorder(_spec(expert_ep), RecorderConfig(out_dir=str(tmp_path / "off"), preroll_s=0.0))
    _feed(off, messages[:half])
    off.start("t", "no preroll")
    _feed(off, messages[half:])
    assert read_episode(off.stop(success=True)).length == expert_ep.length - 20


def test_an_episode_heard_whole_before_its_start_still_says_which_policy_sampled_it(expert_ep, tmp_path):
    """On a loaded machine a recorder can hear a whole short episode before its instruction (and before the
    policy's latched info): the decisions carry the version and distribution, and the preroll replays them."""
    rec = EpisodeRecorder(_spec(expert_ep), RecorderConfig(out_dir=str(tmp_path), preroll_s=5.0))
    sampled = {"family": "gaussian", "space": "normalised", "chunk_correlation": 0.0, "temperature": 1.0, "std": 0.2}
    for kind, args in _messages(expert_ep):  # nothing is recording yet: all of it goes to the preroll
        if kind == "decision":
            rec.add_decision(*args, policy_version="v@1", distribution=sampled)
        else:
            {"state": rec.add_state, "frame": rec.add_frame, "action": rec.add_action}[kind](*args)
    rec.start("t", "do it")  # no version, no distribution: the node had not heard the policy's info
    ep = read_episode(rec.stop(success=True))
    assert ep.length == expert_ep.length and ep.meta.policy_version == "v@1"
    assert ep.meta.policy_distribution == sampled
