"""``srpo loop`` end to end through real ROS 2 nodes: the arm records episodes from requested train states, offline
SRPO updates the policy, the result is exported, published and pushed, and the next round acts with it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.ros.conftest import ros_env


def test_two_rounds_record_train_export_publish_and_push(ros, checkpoint, episode_store, tmp_path):
    from srpo.episodes.store import EpisodeStore
    from srpo.runtime.registry import PolicyRegistry
    from srpo_cli.loop import LoopConfig, episode_schedule

    domain, nodes, probe = ros
    out = tmp_path / "loop"
    own = ["tasks=[reach_red_cube]", "max_steps=25", "train_states=5"]
    train = ["train.update.loss=rwr", f"train.update.regression.demos={episode_store.root}",
             "train.update.regression.steps=5", "train.update.regression.batch_size=8",
             f"train.reward.world_model.data={episode_store.root}", "train.reward.world_model.steps=10",
             "train.reward.world_model.batch_size=8", "train.steps=1", "train.threads=1"]
    r = subprocess.run([sys.executable, "-m", "srpo_cli", "loop", "--robot", "sim", "--rounds", "2", "--init",
                        str(checkpoint), "--out", str(out), "--episodes-per-round", "3", *own, *train],
                       env=ros_env(domain), capture_output=True, text=True, timeout=900, cwd=tmp_path)
    log = (out / "logs" / "bringup.log").read_text() if (out / "logs" / "bringup.log").exists() else ""
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:] + log[-3000:]
    state = json.loads((out / "loop.json").read_text())
    first, second = state["rounds"]
    registry = PolicyRegistry(out / "registry")
    start = registry.entries()[0].version
    log = (out / "logs" / "bringup.log").read_text()
    assert first["acted"] == start and first["episodes"] == 3 and first["labelled"] == 3, (first, log[-3000:])
    assert first["push"]["accepted"], first["push"]
    assert first["candidate"].startswith("offline:round_000@")
    assert second["acted"] == first["candidate"]  # the pushed version drove the second round
    assert second["push"]["accepted"], second["push"]
    # the registry chains the versions through their parents, and every file still matches its manifest
    chain = {e.version: e.parent for e in registry.entries()}
    assert chain == {start: None, first["candidate"]: start, second["candidate"]: first["candidate"]}
    for entry in registry.entries():
        entry.verify()
    # every recorded episode says which weights acted, how they explored, and which train state it started from
    schedule = episode_schedule(LoopConfig(tasks=["reach_red_cube"], train_states=5, episodes_per_round=3), 0)
    metas = [rec.meta for rec in EpisodeStore(out / "episodes" / "round_000").list()]
    assert sorted(m.init_state_id for m in metas) == sorted(s["init_state_id"] for s in schedule)
    assert all(m.policy_version == start and m.split == "train" and m.source == "sim" for m in metas)
    assert all(m.policy_distribution["std"] == 0.2 and m.policy_distribution["temperature"] == 1.0 for m in metas)
    assert {rec.meta.policy_version for rec in EpisodeStore(out / "episodes" / "round_001").list()} == {
        first["candidate"]}
    assert (out / "loop.png").stat().st_size > 0
    # the world model is fitted in the first round only; the second round scores with it
    import yaml

    assert (out / "rounds" / "round_000" / "world_model" / "final" / "config.json").is_file()
    assert not (out / "rounds" / "round_001" / "world_model").exists()
    second_cfg = yaml.safe_load((out / "rounds" / "round_001" / "config.yaml").read_text())
    assert second_cfg["reward"]["encoder_path"] == str(out / "rounds" / "round_000" / "world_model" / "final")
    # PPO from the same robot-recorded files: the importance weights of the version that recorded them are 1, over
    # the rows the arm actually ran (ONNX Runtime acted, PyTorch recomputes)
    ppo = subprocess.run([sys.executable, "-m", "srpo_cli", "train", "--init",
                          str(registry.get(start).path / "checkpoint"), "--episodes", str(out / "episodes" / "round_000"),
                          "--out", str(tmp_path / "ppo"), "reward.mode=binary", "filter.kind=none", "steps=1",
                          "eval_episodes_per_task=0", "exploration.std_mode=fixed", "exploration.std=0.2",
                          "rollout.temperature=1.0", "threads=1"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert ppo.returncode == 0, ppo.stderr[-3000:]
    row = json.loads((tmp_path / "ppo" / "metrics.jsonl").read_text().splitlines()[-1])
    assert abs(row["offline/is_weight_mean"] - 1.0) < 1e-2 and row["offline/log_ratio_abs_mean"] < 1e-2, row
    assert row["offline/served_rows_mean"] >= 1.0
    # re-running the finished loop does nothing new
    again = subprocess.run([sys.executable, "-m", "srpo_cli", "loop", "--robot", "sim", "--rounds", "2", "--init",
                            str(checkpoint), "--out", str(out), "--episodes-per-round", "3", *own, *train],
                           env=ros_env(domain), capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "loop.json").read_text())["rounds"] == state["rounds"]


def _processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains ``text`` (Linux /proc)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(proc.name))
        except OSError:  # the process ended while we looked
            continue
    return pids


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "sigterm"])
def test_a_stopped_loop_stops_its_nodes_and_keeps_no_half_round(ros, checkpoint, tmp_path, stop):
    """Ctrl-C or SIGTERM while a round records: the loop exits 130 with a line that says how to resume, its node
    processes (in their own session, out of reach of the signal) are gone, and no half-recorded round is kept."""
    domain, _, _ = ros
    out = tmp_path / "loop"
    loop = subprocess.Popen([sys.executable, "-m", "srpo_cli", "loop", "--robot", "sim", "--rounds", "1", "--init",
                             str(checkpoint), "--out", str(out), "--episodes-per-round", "200",
                             "tasks=[reach_red_cube]", "max_steps=25"],
                            env=ros_env(domain), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, cwd=tmp_path,
                            # as in a terminal's foreground job: a runner started in the background (``cmd &``
                            # from a non-interactive shell) has SIGINT ignored, and children inherit that
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 300
        while not list((out / "episodes" / "incoming").rglob("*.mcap")) and time.monotonic() < deadline:
            assert loop.poll() is None, loop.communicate()
            time.sleep(0.2)
        assert list((out / "episodes" / "incoming").rglob("*.mcap")), "no episode was recorded in 300 s"
        assert _processes_mentioning(str(out / "bringup.yaml")), "the loop's nodes are not running"
        loop.send_signal(stop)
        stdout, stderr = loop.communicate(timeout=60)
    finally:
        if loop.poll() is None:
            os.killpg(loop.pid, signal.SIGKILL)
            loop.wait(timeout=10)
        for pid in _processes_mentioning(str(out / "bringup.yaml")):  # never leave nodes loading the other tests
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert loop.returncode == 130, (loop.returncode, stdout[-2000:], stderr[-3000:])
    assert "interrupted" in stderr and "resumes" in stderr, stderr[-2000:]
    assert not _processes_mentioning(str(out / "bringup.yaml"))  # the bring-up and its nodes stopped with the loop
    assert not (out / "episodes" / "round_000").exists() and not (out / "loop.json").exists()


def test_a_lost_episode_request_is_sent_again_and_the_episode_followed_by_its_number(ros):
    """The loop's side against a scripted arm on a real graph: the first request is lost (a publisher still matching
    its subscriber drops it), so the loop sends it again; the episode counts once its number is announced ended (an
    older, latched announcement does not)."""
    from std_msgs.msg import String

    from srpo_cli.loop import LoopLink
    from srpo_ros import topics
    from srpo_ros.common import latched_qos

    domain, _, probe = ros
    announce = probe.node.create_publisher(String, topics.EPISODE_INFO, latched_qos())
    announce.publish(String(data=json.dumps({"episode": 7, "ended": True, "success": False})))  # an earlier episode
    heard: list[dict] = []

    def arm(msg) -> None:
        heard.append(json.loads(msg.data))
        if len(heard) == 2:  # the first request never reached the simulator
            for info in ({"episode": 8}, {"episode": 8, "ended": True, "success": True}):
                announce.publish(String(data=json.dumps(info)))

    probe.node.create_subscription(String, topics.EPISODE_REQUEST, arm, 10)
    link = LoopLink(domain)
    try:
        assert link.client.wait_until(lambda: link.request_pub.get_subscription_count() >= 1 and link.announcements,
                                      20.0)
        request = {"task": "press_button", "split": "train", "init_state_id": 3}
        assert link.run_episode(request, timeout=20.0, start_timeout=2.0) is True
        assert heard == [request, request]
        # an arm that never starts the episode: None after the request and its one repetition
        assert link.run_episode(request, timeout=20.0, start_timeout=1.0) is None and len(heard) == 4
    finally:
        link.close()


def test_episode_requests_are_checked_before_the_simulator_resets():
    import pytest

    from srpo_ros.arm_node import parse_episode_request

    assert parse_episode_request('{"task": "press_button", "init_state_id": 7}') == {
        "task": "press_button", "split": "train", "init_state_id": 7}
    for bad, why in (('{"task": "fly"}', "unknown task"), ("[1]", "JSON object"), ("{", "not JSON"),
                     ('{"init_state_id": -1}', "init_state_id"), ('{"init_state_id": true}', "init_state_id"),
                     ('{"split": "test"}', "split"), ('{"seed": 1}', "unknown keys")):
        with pytest.raises(ValueError, match=why):
            parse_episode_request(bad)


def test_loop_refuses_bad_settings_with_one_line(tmp_path):
    for args, why in ((["--init", str(tmp_path / "nothing")], "is not a policy checkpoint"),
                      (["gate_margin=0.1"], "gate_margin needs eval_episodes_per_task"),
                      (["temperature=0"], "offline RL needs sampled decisions"),
                      (["tasks=[fly]"], "unknown task 'fly'")):
        r = subprocess.run([sys.executable, "-m", "srpo_cli", "loop", "--out", str(tmp_path / "loop"), *args],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert r.returncode != 0 and why in r.stderr, (args, r.stderr[-2000:])
        assert not (tmp_path / "loop" / "registry").exists()  # nothing started, nothing written


def test_loop_evaluates_on_held_out_or_on_validation_states_it_never_rolls_out():
    from srpo_cli.loop import LoopConfig, eval_config

    held = eval_config(LoopConfig(train_states=10, eval_episodes_per_task=20), seed=0)
    assert (held.split, held.first_state, held.episodes_per_task) == ("heldout", 0, 20)
    val = eval_config(LoopConfig(train_states=10, eval_episodes_per_task=20, eval_states="validation"), seed=0)
    assert (val.split, val.first_state, val.episodes_per_task) == ("train", 10, 20)  # states 10..29: never rolled out
    with pytest.raises(ValueError, match="do not fit in the 100 train states"):
        LoopConfig(train_states=90, eval_episodes_per_task=20, eval_states="validation")
    with pytest.raises(ValueError, match="eval_states must be heldout or validation"):
        LoopConfig(eval_states="test")


def test_a_round_runs_each_prompt_as_a_group():
    from srpo_cli.loop import LoopConfig, episode_schedule

    schedule = episode_schedule(LoopConfig(tasks=["press_button", "open_drawer"], episodes_per_round=10,
                                           group_size=4), 0)
    prompts = [(e["task"], e["init_state_id"]) for e in schedule]
    assert len(schedule) == 10 and prompts[:4] == [prompts[0]] * 4 and prompts[4:8] == [prompts[4]] * 4
    assert prompts[0][0] == "press_button" and prompts[4][0] == "open_drawer" and prompts[8][0] == "press_button"
    assert all(e["split"] == "train" for e in schedule)
