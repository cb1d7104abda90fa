"""The nodes for real: separate processes, real rclpy/DDS, real MuJoCo, real ONNX Runtime, real files; each test on
its own ROS domain. The fuzz tests count every refused input they sent and check that nothing moved."""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import yaml

from srpo.episodes import EpisodeStore, read_episode
from srpo.runtime.policy import ExportMeta
from srpo.spec import ACTION_NAMES, PROPRIO_NAMES
from srpo_ros import topics
from srpo_ros.common import named_values, seconds_to_stamp, stamp_to_seconds
from tests.ros.conftest import REPO, latched_qos, ros_env

PERIOD = 1 / 20


def _sim_params(size: int = 32, max_steps: int = 400, task: str = "press_button") -> list[str]:
    return [f"image_size:={size}", f"max_steps:={max_steps}", f"task:={task}"]


def _executed(box) -> list:
    return [(t, np.asarray(m.position)) for t, m in list(box)]


def test_sim_bringup_runs_an_episode_driven_by_the_policy_and_records_it(ros, exported, tmp_path):
    """``srpo bringup robot:=sim`` (the command a user runs): arm, policy and recorder drive and record one episode."""
    domain, nodes, probe = ros
    config = yaml.safe_load((REPO / "configs" / "ros" / "bringup.yaml").read_text())
    arm, rec, pol = (config[n]["ros__parameters"] for n in ("arm_node", "recorder_node", "policy_node"))
    arm.update(image_size=32, max_steps=30, task="press_button", init_state_id=2)
    rec.update(image_size=32, out_dir=str(tmp_path / "episodes"))
    pol.update(temperature=0.5)  # sampled: the recorder stores each decision's distribution
    (tmp_path / "bringup.yaml").write_text(yaml.safe_dump(config))
    proc = nodes.start("bringup", "-m", "srpo_cli", "bringup", "robot:=sim", f"policy:={exported}",
                       "backend:=onnxruntime", f"config:={tmp_path / 'bringup.yaml'}")
    store = EpisodeStore(tmp_path / "episodes")
    deadline = time.time() + 120
    while time.time() < deadline and not store.files() and proc.poll() is None:
        time.sleep(0.2)
    assert store.files(), f"no episode recorded\n{nodes.log('bringup')[-4000:]}"
    ep = read_episode(store.files()[0])
    assert ep.meta.source == "sim" and ep.meta.task == "press_button" and ep.meta.labelled
    # truncated at max_steps (unless the tiny policy got lucky); under heavy load DDS discovery can outlast the
    # arm's start delay, and the recorder then hears the episode a few steps in
    assert 20 <= ep.length <= 30 or ep.meta.success
    assert ep.meta.policy_version == ExportMeta.read(exported).version
    assert ep.chunk_steps is not None and ep.chunk_steps[0] == 0 and len(ep.chunk_steps) >= ep.length // 8
    assert ep.chunk_means.shape == ep.chunks.shape and ep.meta.policy_distribution["family"] == "gaussian"
    # the executed actions are the decisions' chunks, clipped, served one per tick
    first = ep.chunk_steps[0]
    np.testing.assert_allclose(ep.actions[first], np.clip(ep.chunks[0][0], -1, 1), atol=1e-6)
    assert proc.poll() is None  # the nodes keep running after the episode


def test_sim_clock_steps_in_lockstep_with_the_policy_faster_than_real_time(ros, exported, tmp_path):
    """``sim_clock:=true``: the arm owns /clock and steps when the policy answers; the policy infers in its tick, so
    every state gets an action (a decision exactly every ``execute_steps`` steps, no row dropped, no hold) and the
    episode takes less wall time than the simulated time it covers."""
    domain, nodes, probe = ros
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import JointState

    config = yaml.safe_load((REPO / "configs" / "ros" / "bringup.yaml").read_text())
    arm, rec, pol = (config[n]["ros__parameters"] for n in ("arm_node", "recorder_node", "policy_node"))
    arm.update(image_size=32, max_steps=80, task="open_drawer", init_state_id=1)
    rec.update(image_size=32, out_dir=str(tmp_path / "episodes"))
    pol.update(temperature=0.5)
    (tmp_path / "bringup.yaml").write_text(yaml.safe_dump(config))
    clock = probe.listen(Clock, topics.CLOCK, 10)
    executed = probe.listen(JointState, topics.EXECUTED_ACTION, 500)
    proc = nodes.start("bringup", "-m", "srpo_cli", "bringup", "robot:=sim", f"policy:={exported}",
                       "backend:=onnxruntime", f"config:={tmp_path / 'bringup.yaml'}", "sim_clock:=true")
    store = EpisodeStore(tmp_path / "episodes")
    probe.wait_for(lambda: bool(store.files()) or proc.poll() is not None, 120, "a recorded episode", nodes)
    assert store.files(), nodes.log("bringup")[-4000:]
    ep = read_episode(store.files()[0])
    assert ep.meta.labelled and ep.meta.task == "open_drawer"
    # under load the recorder's subscriptions can match the arm some steps into the first episode (lockstep runs
    # those steps in a fraction of a second)
    assert ep.length >= 40 or ep.meta.success
    # lockstep: one state per control period of simulated time, each answered, chunks served whole from row 0
    np.testing.assert_allclose(np.diff(ep.timestamps), PERIOD, atol=1e-6)
    first = ep.chunk_steps[0]
    assert first < 8
    np.testing.assert_array_equal(ep.chunk_steps, np.arange(first, ep.length, 8))
    rows = np.concatenate([np.clip(c[:8], -1, 1) for c in ep.chunks])[:ep.length - first]
    same = np.isclose(ep.actions[first:], rows, atol=1e-6)
    # every executed action is its row, except components the safety filter stopped at the workspace's edge
    assert np.all(same | (ep.actions[first:] == 0)) and same.mean() > 0.75
    # faster than real time: the executed actions' stamps (simulated) span more than their arrival (wall) times
    stamps = np.array([stamp_to_seconds(m.header.stamp) for _, m in list(executed)])
    arrived = np.array([t for t, _ in list(executed)])
    assert len(stamps) >= 40 and stamps[-1] - stamps[0] > 1.5 * (arrived[-1] - arrived[0]), (
        f"{len(stamps)} steps: {stamps[-1] - stamps[0]:.2f} s simulated in {arrived[-1] - arrived[0]:.2f} s")
    # the clock keeps going between episodes (timers and watchdogs elsewhere run on it)
    n = len(clock)
    probe.wait_for(lambda: len(clock) > n + 5, 10, "/clock to advance while the arm is idle", nodes)
    assert stamp_to_seconds(clock[-1][1].clock) > stamps[-1]


def test_killing_the_policy_node_holds_the_arm_within_two_control_periods(ros, exported):
    domain, nodes, probe = ros
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String

    executed = probe.listen(JointState, topics.EXECUTED_ACTION, 50)
    states = probe.listen(JointState, topics.JOINT_STATES, 50)
    status = probe.listen(String, topics.ARM_STATUS, latched_qos())
    nodes.node("arm_node", *_sim_params(max_steps=2000, task="open_drawer"))
    nodes.node("policy_node", f"policy:={exported}", "backend:=onnxruntime")
    probe.wait_for(lambda: len(executed) >= 20, 90, "the arm to move under the policy", nodes)
    t_kill = time.time()  # the system clock: the nodes stamp their messages with it
    nodes.kill("policy_node")
    time.sleep(1.5)
    # when the arm last moved, by the stamps of its own states (delivery delays to this probe do not count)
    stamped = [(stamp_to_seconds(m.header.stamp), np.asarray(m.position[:3])) for _, m in list(states)]
    moved = [t for (t, p), (_, q) in zip(stamped[1:], stamped[:-1]) if not np.array_equal(p, q)]
    assert moved and moved[-1] - t_kill <= 2 * PERIOD + 0.02, f"the arm moved {moved[-1] - t_kill:.3f} s after the kill"
    still = [p for t, p in stamped if t > moved[-1]]
    assert len(still) > 10 and np.ptp(np.stack(still), axis=0).max() == 0.0  # still: not a micron of motion
    assert status[-1][1].data.startswith("holding") and nodes.alive("arm_node")


def test_e_stop_latches_until_released(ros):
    """A stand-in policy publishes a valid command every tick; the e-stop stops the arm and keeps it stopped."""
    domain, nodes, probe = ros
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String
    from std_srvs.srv import SetBool

    executed = probe.listen(JointState, topics.EXECUTED_ACTION, 50)
    status = probe.listen(String, topics.ARM_STATUS, latched_qos())
    states = probe.listen(JointState, topics.JOINT_STATES, 50)
    command = probe.node.create_publisher(JointState, topics.ACTION, 10)

    def send():
        if states:  # a fresh command computed from the latest state, as a policy would
            command.publish(_command([0.0, 0.0, 0.2, 0.0, 0.0, 0.0, -1.0], states[-1][1].header.stamp))

    timer = probe.node.create_timer(PERIOD, send)
    nodes.node("arm_node", *_sim_params(max_steps=5000))
    probe.wait_for(lambda: len(executed) >= 10, 60, "the arm to follow the commands", nodes)
    assert probe.call(SetBool, topics.ESTOP, SetBool.Request(data=True)).success
    t_stop = time.time()  # the system clock, which stamps the arm's messages
    time.sleep(1.5)  # commands keep coming all along
    moved = [m for _, m in list(executed) if stamp_to_seconds(m.header.stamp) > t_stop + 2 * PERIOD]
    assert moved == [] and status[-1][1].data == "holding: e-stop"
    n = len(executed)
    time.sleep(0.5)
    assert len(executed) == n  # latched: still holding
    assert probe.call(SetBool, topics.ESTOP, SetBool.Request(data=False)).success
    probe.wait_for(lambda: len(executed) >= n + 5, 10, "the arm to move again after the release", nodes)
    probe.node.destroy_timer(timer)


def test_the_first_requested_episode_waits_until_a_policy_and_a_recorder_are_matched(ros):
    """A request can reach the arm before its publishers reach the policy and the recorder (matching lags discovery
    on a loaded machine, and states sent before then are lost to the recorder): the arm holds the request until a
    command publisher and a subscriber of executed actions are matched, then starts it."""
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String

    domain, nodes, probe = ros
    infos = probe.listen(String, topics.EPISODE_INFO, latched_qos())
    status = probe.listen(String, topics.ARM_STATUS, latched_qos())
    request = probe.node.create_publisher(String, topics.EPISODE_REQUEST, 10)
    nodes.node("arm_node", *_sim_params(max_steps=50), "start_episode:=false", "start_wait_s:=60.0")
    probe.wait_for(lambda: request.get_subscription_count() > 0, 60, "the arm", nodes)
    request.publish(String(data=json.dumps({"task": "press_button", "init_state_id": 4})))
    probe.wait_for(lambda: any(m.data == "waiting for a policy and a recorder before the requested episode"
                               for _, m in status), 30, "the arm to hold the request", nodes)
    assert not infos  # nothing started
    probe.listen(JointState, topics.EXECUTED_ACTION, 50)  # a recorder ...
    probe.node.create_publisher(JointState, topics.ACTION, 10)  # ... and a policy appear
    probe.wait_for(lambda: any(json.loads(m.data).get("init_state_id") == 4 for _, m in infos), 30,
                   "the requested episode to start", nodes)


def test_an_e_stop_is_the_status_even_when_a_command_is_also_late():
    from srpo.robot.safety import SafetyDecision
    from srpo_ros.arm_node import holding_status

    hold = np.zeros(len(ACTION_NAMES), np.float32)
    assert holding_status(SafetyDecision(hold, True, ["e-stop"]), "no new command") == "holding: e-stop"
    assert holding_status(SafetyDecision(hold, False, []), "no new command") == "holding: no new command"


def test_sim_clock_is_refused_for_a_real_arm_and_needs_a_positive_answer_wait():
    import pytest

    from srpo_ros.arm_node import ArmNodeConfig

    assert ArmNodeConfig(sim_clock=True).sim_clock
    with pytest.raises(ValueError, match="sim_clock needs robot: sim"):
        ArmNodeConfig(robot="real", sim_clock=True)
    with pytest.raises(ValueError, match="sim_answer_wait_s must be > 0"):
        ArmNodeConfig(sim_clock=True, sim_answer_wait_s=0.0)


def _command(values, stamp) -> object:
    from sensor_msgs.msg import JointState

    msg = JointState(name=list(ACTION_NAMES), position=[float(v) for v in values])
    msg.header.stamp = stamp
    return msg


def test_fuzzed_commands_never_move_the_arm(ros):
    """NaN, inf, wrong names, wrong length and stale commands: no motion, no crash; a valid out-of-limit command is
    clamped, and only then does the arm move."""
    domain, nodes, probe = ros
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String

    executed = probe.listen(JointState, topics.EXECUTED_ACTION, 50)
    states = probe.listen(JointState, topics.JOINT_STATES, 50)
    status = probe.listen(String, topics.ARM_STATUS, latched_qos())
    command = probe.node.create_publisher(JointState, topics.ACTION, 10)
    nodes.node("arm_node", *_sim_params(max_steps=5000))
    probe.wait_for(lambda: len(states) >= 5 and command.get_subscription_count() > 0, 60, "the arm", nodes)
    start = np.asarray(states[-1][1].position[:3])
    bad = []
    for k in range(60):
        stamp = states[-1][1].header.stamp
        old = seconds_to_stamp(states[-1][1].header.stamp.sec - 5.0)
        bad += [_command([math.nan, 0, 0, 0, 0, 0, 0], stamp), _command([0, math.inf, 0, 0, 0, 0, 0], stamp),
                _command([0.5] * 7, old)]  # computed from a 5 s old observation
        wrong = JointState(name=["a", "b"], position=[0.1, 0.2])
        short = JointState(name=list(ACTION_NAMES[:6]), position=[0.1] * 6)
        bad += [wrong, short]
        for msg in bad[-5:]:
            command.publish(msg)
        time.sleep(PERIOD / 2)
    time.sleep(0.5)
    assert executed == [] and nodes.alive("arm_node")
    assert np.array_equal(np.asarray(states[-1][1].position[:3]), start)
    assert any(s.data.startswith("holding") for _, s in status)
    print(f"fuzzed commands refused: {len(bad)}")
    command.publish(_command([0, 0, 5.0, 0, 0, 0, -1.0], states[-1][1].header.stamp))  # out of limits: clamped
    probe.wait_for(lambda: len(executed) >= 1, 10, "the valid command to run", nodes)
    assert executed[0][1].position[2] == 1.0 and len(executed) == 1


def test_fuzzed_sensor_inputs_never_produce_an_action(ros, exported):
    """The policy node alone, fed by the probe: wrong encodings and sizes, truncated images, NaN and misnamed states,
    empty instructions, stale stamps. It publishes no action and says why; valid inputs then make it act."""
    domain, nodes, probe = ros
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String

    actions = probe.listen(JointState, topics.ACTION, 50)
    status = probe.listen(String, topics.POLICY_STATUS, latched_qos())
    diags = probe.listen(DiagnosticArray, topics.DIAGNOSTICS, 10)
    pub_img = {c: probe.node.create_publisher(Image, topics.CAMERA_IMAGE.format(c), 10) for c in ("agentview", "wrist")}
    pub_state = probe.node.create_publisher(JointState, topics.JOINT_STATES, 10)
    pub_text = probe.node.create_publisher(String, topics.INSTRUCTION, latched_qos())
    nodes.node("policy_node", f"policy:={exported}", "backend:=onnxruntime")
    probe.wait_for(lambda: diags, 60, "the policy node's diagnostics", nodes)
    clock = probe.node.get_clock()

    def now() -> float:
        return clock.now().nanoseconds * 1e-9

    def image(cam, h=32, w=32, enc="rgb8", data=None, t=None):
        msg = Image(height=h, width=w, encoding=enc, step=w * (1 if enc == "mono8" else 3))
        msg.data = data if data is not None else bytes(h * msg.step)
        msg.header.stamp = seconds_to_stamp(now() if t is None else t)
        return msg

    sent = {"image": 0, "state": 0, "instruction": 0}
    for _ in range(20):
        for cam, pub in pub_img.items():
            for msg in (image(cam, enc="mono8"), image(cam, 48, 48), image(cam, enc="yuv422"),
                        image(cam, data=bytes(100))):
                pub.publish(msg)
                sent["image"] += 1
        pub_state.publish(named_values(PROPRIO_NAMES, [math.nan] * 8, now()))
        pub_state.publish(named_values(["x"] * 8, [0.0] * 8, now()))
        sent["state"] += 2
        pub_text.publish(String(data="   "))
        sent["instruction"] += 1
        time.sleep(2 * PERIOD)  # 4 images per camera a period: a node stalled for two periods would drop some
    # valid but stale: images and state 2 s old
    pub_text.publish(String(data="press the orange button"))
    for _ in range(10):
        for cam, pub in pub_img.items():
            pub.publish(image(cam, t=now() - 2.0))
        pub_state.publish(named_values(PROPRIO_NAMES, [0.0] * 8, now() - 2.0))
        time.sleep(PERIOD)
    time.sleep(1.2)  # one more diagnostics period
    assert actions == [] and nodes.alive("policy_node")
    assert status[-1][1].data.startswith("waiting: ") and "old" in status[-1][1].data
    values = {kv.key: kv.value for kv in diags[-1][1].status[0].values}
    refused = {k: int(v) for k, v in values.items() if k.startswith("refused_")}
    assert refused["refused_image_encoding"] + refused["refused_image_size"] == sent["image"]
    assert refused["refused_state_non_finite"] + refused["refused_state_names"] == sent["state"]
    assert refused["refused_instruction_empty"] >= 1 and refused["refused_stale_state"] > 0
    print(f"fuzzed sensor inputs refused: {sent}, ticks waiting on stale data: {refused['refused_stale_state']}")
    for _ in range(40):  # now fresh, valid inputs: it acts
        for cam, pub in pub_img.items():
            pub.publish(image(cam))
        pub_state.publish(named_values(PROPRIO_NAMES, [0.0, 0.0, 0.2, 1.0, 0.0, 0.0, 0.0, 0.04], now()))
        time.sleep(PERIOD)
        if actions:
            break
    assert actions, "valid inputs produced no action"
    assert all(np.isfinite(m.position).all() for _, m in actions)


def test_bad_parameters_fail_the_node_at_start_with_one_clear_line(ros, tmp_path):
    domain, nodes, probe = ros
    for node, param, word in (("policy_node", f"policy:={tmp_path / 'missing'}", "missing"),
                              ("arm_node", "robot:=moon", "moon"), ("arm_node", "max_linear_speed:=-1.0", "max_linear_speed")):
        r = subprocess.run([sys.executable, "-m", f"srpo_ros.{node}", "--ros-args", "-p", param], env=ros_env(domain),
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 1, (node, param, r.stderr[-2000:])
        assert "Traceback" not in r.stderr and word in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_kill_9_of_the_recorder_keeps_closed_episodes_and_the_open_one_is_recovered(ros, exported, tmp_path):
    """Back-to-back simulated episodes (auto_reset) under the real policy; the recorder is SIGKILLed mid-episode."""
    domain, nodes, probe = ros
    out = tmp_path / "episodes"
    from sensor_msgs.msg import JointState

    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    executed = probe.listen(JointState, topics.EXECUTED_ACTION, 50)
    info = probe.listen(String, topics.POLICY_INFO, latched_qos())
    nodes.node("recorder_node", "image_size:=32", f"out_dir:={out}", "source:=sim")
    nodes.node("policy_node", f"policy:={exported}", "backend:=onnxruntime", "temperature:=1.0")
    probe.wait_for(lambda: info, 60, "the policy node", nodes)  # both up before the arm starts its episodes
    assert probe.node.create_client(Trigger, topics.RECORDER_START).wait_for_service(timeout_sec=30)
    nodes.node("arm_node", *_sim_params(max_steps=40), "auto_reset:=true")
    store = EpisodeStore(out)
    probe.wait_for(lambda: len(store.files()) >= 1, 120, "a first closed episode", nodes)
    n = len(executed)
    probe.wait_for(lambda: len(executed) >= n + 10, 30, "the next episode to be under way", nodes)
    nodes.kill("recorder_node", signal.SIGKILL)
    closed = store.files()
    assert closed and all(30 <= read_episode(p).length <= 40 for p in closed)  # intact, fully verified
    journals = list(out.rglob("*.mcap.partial"))
    assert len(journals) == 1 and not any(str(j).endswith(".mcap") for j in journals)
    r = subprocess.run([sys.executable, "-m", "srpo_cli", "episodes", "recover", str(journals[0])],
                       capture_output=True, text=True, timeout=120, env=ros_env(domain))
    assert r.returncode == 0, r.stderr
    recovered = read_episode(journals[0].with_name(journals[0].name.replace(".mcap.partial", ".mcap")))
    assert recovered.meta.success is None and 0 < recovered.length <= 40 and not journals[0].exists()
    assert recovered.chunk_means is not None and recovered.meta.extra["recovered_from"] == journals[0].name


def test_camera_node_streams_a_video_file_and_survives_a_missing_source(ros, tmp_path):
    import cv2
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from sensor_msgs.msg import CameraInfo, Image

    domain, nodes, probe = ros
    video = tmp_path / "scene.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30, (80, 60))
    for k in range(10):  # a red scene brightening in green; BGR on disk (blue 0, green 10k, red 255), rgb8 on the topic
        writer.write(np.full((60, 80, 3), (0, 10 * k, 255), np.uint8))
    writer.release()
    images = probe.listen(Image, topics.CAMERA_IMAGE.format("agentview"))
    infos = probe.listen(CameraInfo, topics.CAMERA_INFO.format("agentview"))
    diags = probe.listen(DiagnosticArray, topics.DIAGNOSTICS)
    nodes.node("camera_node", f"source:={video}", "width:=32", "height:=32", "rate_hz:=30.0")
    nodes.node("camera_node", "source:=/dev/video99", "camera_name:=wrist", name="missing")
    probe.wait_for(lambda: len(images) >= 30, 60, "30 frames (the 10-frame video loops)", nodes)
    msg = images[-1][1]
    assert (msg.height, msg.width, msg.encoding) == (32, 32, "rgb8") and infos
    for _, m in list(images)[:30]:  # whichever frame of the looping video: red, not blue, so BGR was converted
        frame = np.frombuffer(bytes(m.data), np.uint8).reshape(32, 32, 3)
        assert frame[..., 0].mean() > 200 and frame[..., 2].mean() < 60
    probe.wait_for(lambda: any(s.name == "srpo/camera/wrist" for _, a in diags for s in a.status), 30,
                   "the missing camera's diagnostics", nodes)
    wrist = [s for _, a in diags for s in a.status if s.name == "srpo/camera/wrist"][-1]
    assert wrist.level != DiagnosticStatus.OK and "cannot open" in wrist.message
    assert nodes.alive("missing") and "retrying" in nodes.log("missing")


def test_real_arm_is_dry_run_by_default_and_sends_twists_only_when_enabled(ros):
    from geometry_msgs.msg import PoseStamped, TwistStamped
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    domain, nodes, probe = ros
    twists = probe.listen(TwistStamped, "/servo_node/delta_twist_cmds")
    grippers = probe.listen(Float64MultiArray, "/gripper_controller/commands")
    executed = probe.listen(JointState, topics.EXECUTED_ACTION, 50)
    pose_pub = probe.node.create_publisher(PoseStamped, "/ee_pose", 10)
    grip_pub = probe.node.create_publisher(JointState, "/gripper_state", 10)
    command = probe.node.create_publisher(JointState, topics.ACTION, 10)
    clock = probe.node.get_clock()

    def feed():  # the real arm's own driver publishing its pose, and a policy commanding +z
        pose = PoseStamped()
        pose.header.stamp = clock.now().to_msg()
        pose.pose.position.z, pose.pose.orientation.w = 0.2, 1.0
        pose_pub.publish(pose)
        grip_pub.publish(JointState(name=["finger"], position=[0.03]))
        command.publish(_command([0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 1.0], pose.header.stamp))

    timer = probe.node.create_timer(PERIOD, feed)
    nodes.node("arm_node", "robot:=real", name="dry")
    probe.wait_for(lambda: len(executed) >= 20, 60, "the dry-run arm to process commands", nodes)
    assert twists == [] and grippers == [] and "dry-run" in nodes.log("dry")
    nodes.kill("dry", signal.SIGINT)
    nodes.node("arm_node", "robot:=real", "dry_run:=false", name="live")
    probe.wait_for(lambda: len(twists) >= 10, 60, "twist commands from the live arm", nodes)
    t = twists[-1][1]
    assert t.twist.linear.z == 0.5 * 0.4 and t.twist.linear.x == 0.0 and t.header.frame_id == "base_link"
    assert grippers[-1][1].data[0] == 0.04  # +1 closes
    probe.node.destroy_timer(timer)


def _second_version(checkpoint, episode_store, tmp_path):
    """Another export of the same architecture with different weights: a new version."""
    import torch

    from srpo_export.to_onnx import export_onnx
    from srpo_trainer.policies import load_policy

    policy = load_policy(checkpoint)
    with torch.no_grad():
        for p in policy.model.parameters():
            p.mul_(0.9)
    policy.version = "test:v2"
    return export_onnx(policy.save_pretrained(tmp_path / "ckpt_v2"), tmp_path / "export_v2", data=episode_store.root)


def test_push_validates_swaps_at_a_chunk_boundary_and_rolls_back(ros, exported, checkpoint, episode_store, tmp_path):
    """A corrupted push is rejected and the old policy keeps driving; a valid one is swapped in and its decisions
    carry its version; rollback returns to the previous one."""
    domain, nodes, probe = ros
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from srpo.runtime.registry import PolicyRegistry

    registry = PolicyRegistry(tmp_path / "registry")
    v1 = registry.publish(exported)
    v2 = registry.publish(_second_version(checkpoint, episode_store, tmp_path))
    bad = tmp_path / "corrupted"
    shutil.copytree(v2.path, bad)
    raw = bytearray((bad / "model.onnx").read_bytes())
    raw[len(raw) // 3] ^= 0xFF
    (bad / "model.onnx").write_bytes(bytes(raw))

    executed = probe.listen(JointState, topics.EXECUTED_ACTION, 50)
    info = probe.listen(String, topics.POLICY_INFO, latched_qos())
    results = probe.listen(String, topics.POLICY_PUSH_RESULT, latched_qos())
    decisions = probe.listen(String, topics.DECISION, latched_qos(20))
    push = probe.node.create_publisher(String, topics.POLICY_PUSH, 10)
    nodes.node("arm_node", *_sim_params(max_steps=5000, task="open_drawer"))
    nodes.node("policy_node", f"policy:={v1.version}", f"registry:={registry.root}", "backend:=onnxruntime",
               "latency_budget_s:=1.0")
    probe.wait_for(lambda: len(executed) >= 20, 90, "the arm to move under v1", nodes)
    assert json.loads(info[-1][1].data)["version"] == v1.version

    push.publish(String(data=str(bad)))
    probe.wait_for(lambda: results, 60, "the corrupted push's result", nodes)
    verdict = json.loads(results[-1][1].data)
    assert not verdict["accepted"] and verdict["reason"].startswith("integrity") and verdict["active"] == v1.version
    n = len(executed)
    probe.wait_for(lambda: len(executed) >= n + 20, 30, "the old policy to keep driving", nodes)

    push.publish(String(data=v2.version))
    push.publish(String(data=v2.version))  # repeated while it is validated (no verdict heard yet): ignored
    probe.wait_for(lambda: len(results) >= 2, 60, "the valid push's result", nodes)
    verdict = json.loads(results[-1][1].data)
    assert verdict["accepted"] and verdict["active"] == v2.version, verdict
    assert json.loads(info[-1][1].data)["version"] == v2.version
    probe.wait_for(lambda: any(json.loads(m.data)["version"] == v2.version for _, m in decisions), 30,
                   "a decision by v2", nodes)
    versions = [json.loads(m.data)["version"] for _, m in decisions]
    first_v2 = versions.index(v2.version)
    assert set(versions[:first_v2]) <= {v1.version} and set(versions[first_v2:]) == {v2.version}
    assert [json.loads(m.data)["pushed"] for _, m in results].count(v2.version) == 1
    push.publish(String(data=v2.version))  # the active version pushed again: answered at once, nothing reloaded
    probe.wait_for(lambda: len(results) >= 3, 30, "the answer to a push of the active version", nodes)
    again = json.loads(results[-1][1].data)
    assert again["accepted"] and again["reason"] == "already the active version" and again["active"] == v2.version

    answer = probe.call(Trigger, topics.POLICY_ROLLBACK, Trigger.Request())
    assert answer.success and v1.version in answer.message
    probe.wait_for(lambda: json.loads(info[-1][1].data)["version"] == v1.version, 10, "the rollback", nodes)
    assert nodes.alive("policy_node") and nodes.alive("arm_node")


def test_recorder_services_start_stop_and_label(ros, expert_ep, tmp_path):
    """The recorder alone, fed a recorded expert episode over its topics by the probe: start on a service call,
    stop with a label (success), start again and stop unlabelled."""
    domain, nodes, probe = ros
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String
    from std_srvs.srv import SetBool, Trigger

    from srpo_ros.common import image_message

    out = tmp_path / "episodes"
    text = probe.node.create_publisher(String, topics.INSTRUCTION, latched_qos())
    states = probe.node.create_publisher(JointState, topics.JOINT_STATES, 50)
    acts = probe.node.create_publisher(JointState, topics.EXECUTED_ACTION, 50)
    cams = {c: probe.node.create_publisher(Image, topics.CAMERA_IMAGE.format(c), 50) for c in expert_ep.images}
    nodes.node("recorder_node", "image_size:=32", f"out_dir:={out}", "record_on_instruction:=false")
    text.publish(String(data=expert_ep.meta.instruction))
    answer = probe.call(Trigger, topics.RECORDER_START, Trigger.Request())
    deadline = time.time() + 20
    while not answer.success and time.time() < deadline:  # the latched instruction is still on its way
        assert "no instruction" in answer.message
        time.sleep(0.2)
        answer = probe.call(Trigger, topics.RECORDER_START, Trigger.Request())
    assert answer.success
    time.sleep(1.0)  # let the publishers match before streaming

    def stream(steps: int) -> None:
        t0 = time.time()
        for t in range(steps + 1):
            stamp = t0 + 0.05 * t
            for cam, pub in cams.items():
                pub.publish(image_message(expert_ep.images[cam][t], stamp, cam))
            states.publish(named_values(PROPRIO_NAMES, expert_ep.proprio[t], stamp))
            if t < steps:
                acts.publish(named_values(ACTION_NAMES, expert_ep.actions[t], stamp))
            time.sleep(0.01)
        time.sleep(0.5)

    stream(12)
    answer = probe.call(SetBool, topics.RECORDER_LABEL, SetBool.Request(data=True))
    assert answer.success and "success=True" in answer.message
    assert probe.call(Trigger, topics.RECORDER_START, Trigger.Request()).success
    stream(6)
    assert probe.call(Trigger, topics.RECORDER_STOP, Trigger.Request()).success
    episodes = sorted((read_episode(p) for p in EpisodeStore(out).files()), key=lambda e: e.length)
    assert [(e.length, e.meta.success) for e in episodes] == [(6, None), (12, True)]
    assert np.array_equal(episodes[1].actions, expert_ep.actions[:12])
    assert episodes[1].meta.task == expert_ep.meta.task  # found from the tabletop instruction


def test_recorder_labels_a_sim_episode_whose_end_it_heard_before_its_instruction(ros, expert_ep, tmp_path):
    """The race a loaded machine produces: the recorder discovers the arm's instruction writer late, so the
    (volatile) end arrives first. The arm's numbered, latched end on the episode-info topic still labels the
    episode, whose steps come from the preroll; a later episode with the same prompt (a group) is not mistaken for
    the closed one."""
    domain, nodes, probe = ros
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Bool, String
    from std_srvs.srv import Trigger

    from srpo_ros.common import image_message

    out = tmp_path / "episodes"
    text = probe.node.create_publisher(String, topics.INSTRUCTION, latched_qos())
    info = probe.node.create_publisher(String, topics.EPISODE_INFO, latched_qos())
    end = probe.node.create_publisher(Bool, topics.EPISODE_END, latched_qos())
    states = probe.node.create_publisher(JointState, topics.JOINT_STATES, 50)
    acts = probe.node.create_publisher(JointState, topics.EXECUTED_ACTION, 50)
    cams = {c: probe.node.create_publisher(Image, topics.CAMERA_IMAGE.format(c), 50) for c in expert_ep.images}
    nodes.node("recorder_node", "image_size:=32", f"out_dir:={out}", "source:=sim")
    probe.wait_for(lambda: all(p.get_subscription_count() >= 1 for p in (text, info, end, states, acts)), 30,
                   "the recorder's subscriptions", nodes)
    time.sleep(1.0)  # and its side of the matching
    instruction = expert_ep.meta.instruction
    announce = {"task": expert_ep.meta.task, "split": "train", "instruction": instruction}

    def stream(first: int, steps: int) -> None:
        t0 = time.time()
        for t in range(first, first + steps + 1):
            stamp = t0 + 0.05 * (t - first)
            for cam, pub in cams.items():
                pub.publish(image_message(expert_ep.images[cam][t], stamp, cam))
            states.publish(named_values(PROPRIO_NAMES, expert_ep.proprio[t], stamp))
            if t < first + steps:
                acts.publish(named_values(ACTION_NAMES, expert_ep.actions[t], stamp))
            time.sleep(0.01)
        time.sleep(0.3)

    def files() -> int:
        return len(list(EpisodeStore(out).files()))

    # episode 1: the steps and the end, then (late) its instruction
    stream(0, 10)
    end.publish(Bool(data=True))  # heard while not recording: nothing to label yet
    info.publish(String(data=json.dumps({**announce, "init_state_id": 3, "episode": 1, "ended": True,
                                         "success": True})))
    time.sleep(0.3)
    text.publish(String(data=instruction))
    probe.wait_for(lambda: files() == 1, 20, "the late-heard episode to be written", nodes)
    # episode 2, the same prompt, in the usual order: announced, instructed, run, ended (failure)
    info.publish(String(data=json.dumps({**announce, "init_state_id": 5, "episode": 2})))
    time.sleep(0.2)
    text.publish(String(data=instruction))
    time.sleep(0.5)
    stream(10, 6)
    info.publish(String(data=json.dumps({**announce, "init_state_id": 5, "episode": 2, "ended": True,
                                         "success": False})))
    probe.wait_for(lambda: files() == 2, 20, "the second episode to be written", nodes)
    # episode 3 is instructed before its announcement: the latched end of episode 2 must not close it
    text.publish(String(data=instruction))
    time.sleep(0.5)
    stream(16, 4)
    assert files() == 2
    assert probe.call(Trigger, topics.RECORDER_STOP, Trigger.Request()).success
    episodes = sorted((read_episode(p) for p in EpisodeStore(out).files()), key=lambda e: -e.length)
    assert [(e.length, e.meta.success, e.meta.init_state_id) for e in episodes] == [(10, True, 3), (6, False, 5),
                                                                                    (4, None, None)]
    assert np.array_equal(episodes[0].actions, expert_ep.actions[:10])
    assert episodes[0].meta.split == "train"
