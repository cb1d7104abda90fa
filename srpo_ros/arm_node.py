"""The arm node: commands in, through the safety filter, to a simulated or a real arm; robot state out.

Every control tick (``control_hz``) it takes the newest command received since the last tick (each command is used
once: the policy answers each published state before the next tick, and a dead policy stops the arm at the next
tick), passes it through ``srpo.robot.SafetyFilter`` and runs the result. With no new command, a stale one (computed
from an observation older than ``command_timeout_s``), an engaged e-stop or no fresh robot state, it holds still and
says why on ``/srpo/arm/status`` (the simulated arm holds by pausing the simulator and re-publishing its state). What
actually ran is published on ``/srpo/executed_action``, stamped with the state it followed (the recorder pairs them
by that stamp).

``robot: sim`` drives the tabletop simulator (``SimArmDriver``): it publishes the joint states, the end-effector pose,
both camera images, the instruction of the current task and, when the episode ends, ``/srpo/episode_end`` with the
success predicate. With ``sim_clock: true`` the simulated arm also owns the ROS clock (``/clock``; the other nodes run
with ``use_sim_time``): it steps the moment the policy answers the state it published (lockstep), so an episode takes
as long as the policy needs to answer, not 1/``control_hz`` of wall time per step. Its stamps, watchdogs and the
safety filter all read that clock, so the rules above hold unchanged in simulated time.

``robot: real`` reads the end-effector pose and gripper state of a real arm and sends a TwistStamped (e.g. MoveIt
Servo) and a gripper command, **only if** ``dry_run`` is false; by default it logs what it would send.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from dataclasses import dataclass

import numpy as np

from srpo.robot.drivers import SimArmConfig, SimArmDriver, TwistMapperConfig, action_to_twist
from srpo.robot.safety import SafetyConfig, SafetyFilter
from srpo.spec import ACTION_NAMES, TABLETOP_SPEC
from srpo_ros import topics
from srpo_ros.common import (
    latched_qos,
    camera_info_message,
    declare_config,
    image_message,
    named_values,
    now_seconds,
    now_ns,
    seconds_to_stamp,
    spin,
    stamp_to_seconds,
)

ROBOTS = ("sim", "real")
QUEUE_DEPTH = 1  # the newest command wins, and is used once: a dead policy stops the arm at the next tick
FRAME_QUEUE_DEPTH = 50  # camera frames kept for slow subscribers (about 25 kB each at 64x64)
STAMP_MATCH_S = 1e-6  # a command answers the current state when it carries its stamp (float64 seconds and the
# stamp's round trip agree to well under a microsecond)


@dataclass
class ArmNodeConfig:
    """The node's own parameters (the driver's and the safety filter's come from their dataclasses)."""

    robot: str = "sim"
    control_hz: float = 20.0
    auto_reset: bool = False
    instruction_lead_s: float = 0.5
    """sim: seconds between announcing an episode's instruction and publishing its first state."""
    start_episode: bool = True
    """sim: start the first episode by itself after ``start_delay_s`` (false: wait for a reset or an episode
    request, as ``srpo loop`` does)."""
    start_delay_s: float = 2.0
    """sim: seconds before the first episode starts, so every node has discovered the arm and hears it from its first
    step (DDS discovery between freshly started processes takes up to a second or two)."""
    start_wait_s: float = 20.0
    """sim: after ``start_delay_s``, wait up to this long more for a policy (a publisher of commands) and a recorder
    (a subscriber of executed actions) to be connected before the first episode starts."""
    sim_clock: bool = False
    """sim: publish simulated time on ``/clock`` (run the other nodes with ``use_sim_time``) and step as soon as the
    policy answers the published state, instead of once per 1/``control_hz`` of wall time. Between episodes
    simulated time advances by one period per wall period, so every timer elsewhere runs as in real time; a state
    nobody answers within ``sim_answer_wait_s`` makes the arm hold for one period, as it would in real time."""
    sim_answer_wait_s: float = 0.5
    """sim_clock: wall seconds the arm waits for the policy's answer to a published state before it holds for one
    period (a silent or dead policy). Waiting is what makes the lockstep exact: a hold re-publishes the state, and
    a policy that answers both would have one chunk row replaced by the next."""
    ee_pose_topic: str = "/ee_pose"
    gripper_state_topic: str = "/gripper_state"

    def __post_init__(self) -> None:
        if self.robot not in ROBOTS:
            raise ValueError(f"robot must be one of {ROBOTS}, got {self.robot!r}")
        if not self.control_hz > 0:
            raise ValueError(f"control_hz must be > 0, got {self.control_hz}")
        if self.sim_clock and self.robot != "sim":
            raise ValueError("sim_clock needs robot: sim (a real arm runs in real time)")
        if not self.sim_answer_wait_s > 0:
            raise ValueError(f"sim_answer_wait_s must be > 0, got {self.sim_answer_wait_s}")


def holding_status(decision, why: str | None) -> str:
    """Why the arm holds: the safety filter's reasons first (an e-stop is the news, not a late command)."""
    return "holding: " + ", ".join(decision.reasons if decision.hold and decision.reasons else [why or "hold"])


def parse_episode_request(text: str) -> dict:
    """``{"task": ..., "split": ..., "init_state_id": ...}`` (any subset) into checked reset options."""
    from srpo.sim.tabletop.tasks import SPLIT_SIZES, TASKS

    try:
        request = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(request, dict):
        raise ValueError("expected a JSON object with task, split and/or init_state_id")
    unknown = set(request) - {"task", "split", "init_state_id"}
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)} (allowed: task, split, init_state_id)")
    if "task" in request and request["task"] not in TASKS:
        raise ValueError(f"unknown task {request['task']!r}")
    split = request.get("split", "train")
    if split not in SPLIT_SIZES:
        raise ValueError(f"split must be one of {sorted(SPLIT_SIZES)}, got {split!r}")
    state = request.get("init_state_id", 0)
    if not isinstance(state, int) or isinstance(state, bool) or not 0 <= state < SPLIT_SIZES[split]:
        raise ValueError(f"init_state_id must be an integer in 0..{SPLIT_SIZES[split] - 1}, got {state!r}")
    return {**request, "split": split, "init_state_id": state}


def make_node():
    from geometry_msgs.msg import PoseStamped, TwistStamped
    from rclpy.clock import Clock, ClockType
    from rclpy.node import Node
    from rosgraph_msgs.msg import Clock as ClockMsg
    from sensor_msgs.msg import CameraInfo, Image, JointState
    from std_msgs.msg import Bool, Float64MultiArray, String
    from std_srvs.srv import SetBool, Trigger

    latched = latched_qos()

    class ArmNode(Node):
        def __init__(self) -> None:
            super().__init__("arm_node")
            self.cfg = declare_config(self, ArmNodeConfig)
            self.safety_cfg = declare_config(self, SafetyConfig)
            self.lock = threading.Lock()
            self.commands: collections.deque = collections.deque(maxlen=QUEUE_DEPTH)
            self.status = ""
            self.ended = False
            self.state = None  # (stamp, proprio, ee_position)
            if self.cfg.robot == "sim":
                self.driver = SimArmDriver(declare_config(self, SimArmConfig))
                self.spec = self.driver.spec
            else:
                self.twist_cfg = declare_config(self, TwistMapperConfig)
                self.driver, self.spec = None, TABLETOP_SPEC
                self.pose, self.gripper_opening = None, None
                self.create_subscription(PoseStamped, self.cfg.ee_pose_topic, self.on_pose, 10)
                self.create_subscription(JointState, self.cfg.gripper_state_topic, self.on_gripper, 10)
                self.twist_pub = self.create_publisher(TwistStamped, self.twist_cfg.twist_topic, 10)
                self.gripper_pub = self.create_publisher(Float64MultiArray, self.twist_cfg.gripper_topic, 10)
            self.safety = SafetyFilter(self.safety_cfg, self.spec)
            self.cams = [c.name for c in self.spec.observation.cameras]
            self.state_pub = self.create_publisher(JointState, topics.JOINT_STATES, 10)
            self.pose_pub = self.create_publisher(PoseStamped, topics.EE_POSE, 10)
            self.executed_pub = self.create_publisher(JointState, topics.EXECUTED_ACTION, 50)
            self.status_pub = self.create_publisher(String, topics.ARM_STATUS, latched)
            self.instruction_pub = self.create_publisher(String, topics.INSTRUCTION, latched)
            self.end_pub = self.create_publisher(Bool, topics.EPISODE_END, latched)
            self.info_pub = self.create_publisher(String, topics.EPISODE_INFO, latched)
            self.episodes_started = 0
            self.episode_info: dict = {}
            self.create_subscription(String, topics.EPISODE_REQUEST, self.on_episode_request, 10)
            # deep enough that a recorder a few steps behind (lockstep on the simulated clock can outpace it for a
            # moment) still gets every frame: a reliable writer drops what falls out of its history
            self.image_pubs = {c: self.create_publisher(Image, topics.CAMERA_IMAGE.format(c), FRAME_QUEUE_DEPTH)
                               for c in self.cams}
            self.info_pubs = {c: self.create_publisher(CameraInfo, topics.CAMERA_INFO.format(c), FRAME_QUEUE_DEPTH)
                              for c in self.cams}
            self.create_subscription(JointState, topics.ACTION, self.on_action, 10)
            self.create_service(SetBool, topics.ESTOP, self.on_estop)
            self.create_service(Trigger, topics.RESET, self.on_reset)
            self.rejected = collections.Counter()
            # simulated time in integer nanoseconds (no float drift over long runs), from the wall time at start
            self.sim_ns = now_ns(self) if self.cfg.sim_clock else None
            self.period_ns = round(1e9 / self.cfg.control_hz)
            self.published_at = float("-inf")  # sim_clock: wall time the current state went out
            if self.cfg.sim_clock:
                self.clock_pub = self.create_publisher(ClockMsg, topics.CLOCK, 10)
                self.clock_pub.publish(ClockMsg(clock=seconds_to_stamp(self.now())))
            self.started_at = self.now()
            self.graph_matched = False  # once a policy and a recorder were matched (or waited for), episodes start at once
            self.pending_start: tuple[dict | None, float] | None = None  # (options, waiting since) of the next episode
            self.start_timer = None
            if self.driver is not None and self.cfg.start_episode:  # the configured episode, after start_delay_s
                self.schedule_start(None, self.started_at + self.cfg.start_delay_s)
            if self.cfg.sim_clock:  # the wall period bounds how long simulated time waits for an answer
                self.timer = self.create_timer(1.0 / self.cfg.control_hz, self.wall_tick,
                                               clock=Clock(clock_type=ClockType.STEADY_TIME))
            else:
                self.timer = self.create_timer(1.0 / self.cfg.control_hz, self.tick)
            self.get_logger().info(f"arm_node: robot={self.cfg.robot} at {self.cfg.control_hz:g} Hz"
                                   + (f", dry_run={self.twist_cfg.dry_run}" if self.cfg.robot == "real" else "")
                                   + (", simulated clock (lockstep with the policy)" if self.cfg.sim_clock else ""))

        # -------------------------------------------------------------------------------------------- clock
        def now(self) -> float:
            """Seconds on this arm's clock: simulated time with ``sim_clock``, else the node's (wall) clock."""
            return self.sim_ns * 1e-9 if self.sim_ns is not None else now_seconds(self)

        def advance_clock(self) -> None:
            """sim_clock: one control period of simulated time, announced on ``/clock``."""
            self.sim_ns += self.period_ns
            self.clock_pub.publish(ClockMsg(clock=seconds_to_stamp(self.now())))

        def wall_tick(self) -> None:
            """sim_clock: once per wall period, one period of simulated time, unless the policy still has time to
            answer the state in play (then the answer steps the arm, ``on_action``)."""
            with self.lock:
                in_play = self.state is not None and not self.ended
            if in_play and time.monotonic() - self.published_at < self.cfg.sim_answer_wait_s:
                return
            self.advance_clock()
            self.tick()

        def answers_current_state(self, obs_stamp: float) -> bool:
            with self.lock:
                return (self.state is not None and not self.ended
                        and abs(obs_stamp - self.state[0]) < STAMP_MATCH_S)

        # -------------------------------------------------------------------------------------------- inputs
        def on_action(self, msg) -> None:
            if list(msg.name) != list(ACTION_NAMES) or len(msg.position) != len(ACTION_NAMES):
                self.rejected["action names"] += 1  # the filter refuses bad values; this is a malformed message
                return
            now, obs_stamp = self.now(), stamp_to_seconds(msg.header.stamp)
            with self.lock:
                self.commands.append((np.asarray(msg.position, np.float64), obs_stamp, now))
            self.safety.command_received(now)
            if self.cfg.sim_clock and self.answers_current_state(obs_stamp):  # lockstep: step now
                self.advance_clock()
                self.tick()

        def on_pose(self, msg) -> None:  # real robot
            p, q = msg.pose.position, msg.pose.orientation
            self.pose = (stamp_to_seconds(msg.header.stamp), np.array([p.x, p.y, p.z, q.w, q.x, q.y, q.z]))
            self.safety.observation_received(self.now())

        def on_gripper(self, msg) -> None:  # real robot
            if len(msg.position):
                self.gripper_opening = float(msg.position[0])

        def on_estop(self, request, response):
            if request.data:
                self.safety.estop.engage("service call")
            else:
                self.safety.estop.release()
            response.success, response.message = True, "engaged" if request.data else "released"
            self.get_logger().warning(f"e-stop {response.message}")
            return response

        def on_reset(self, request, response):
            if self.driver is None:
                response.success, response.message = False, "a real arm is reset by its operator"
                return response
            with self.lock:
                self.reset_episode()
            response.success, response.message = True, f"new episode: {self.driver.state().instruction}"
            return response

        def on_episode_request(self, msg) -> None:
            """sim: a new episode from the given task / split / initial state (JSON); a bad request changes nothing
            and says why on the status topic."""
            if self.driver is None:
                self.set_status("refused episode request: a real arm is reset by its operator")
                return
            try:
                options = parse_episode_request(msg.data)
            except ValueError as exc:
                self.rejected["episode request"] += 1
                self.set_status(f"refused episode request: {exc}")
                self.get_logger().warning(f"refused episode request {msg.data!r}: {exc}")
                return
            self.schedule_start(options, self.now())

        def schedule_start(self, options: dict | None, since: float) -> None:
            """Start an episode (``options``; None: the configured task and state) from ``since`` on, once a policy
            publishes commands and a recorder listens to what runs, or ``start_wait_s`` after ``since`` in any case.
            Discovery between freshly started processes can take seconds on a loaded machine: states sent before the
            recorder matched are lost to it. A newer request replaces an episode still waiting (the first automatic
            one included); once the graph was matched, episodes start at once."""
            self.pending_start = (options, since)
            self.start_pending()
            if self.pending_start is not None and self.start_timer is None:
                self.start_timer = self.create_timer(0.1, self.start_pending)

        def start_pending(self) -> None:
            """Start the pending episode if its time has come and the graph is matched (or waited for)."""
            if self.pending_start is None:
                return
            options, since = self.pending_start
            waited = self.now() - since
            if waited < 0:
                return  # start_delay_s has not passed
            if not (self.graph_matched or self.connected()) and waited < self.cfg.start_wait_s:
                which = "first" if options is None else "requested"
                self.set_status(f"waiting for a policy and a recorder before the {which} episode")
                return  # the timer fires again
            if self.start_timer is not None:
                self.destroy_timer(self.start_timer)
                self.start_timer = None
            self.graph_matched, self.pending_start = True, None
            with self.lock:
                self.reset_episode(options)

        def connected(self) -> bool:
            """A policy publishes commands and a recorder's subscription to the executed actions is matched to this
            arm's publisher (a node the graph already lists can be seconds from receiving on a loaded machine, and
            states sent before then are lost to it)."""
            return self.count_publishers(topics.ACTION) >= 1 and self.executed_pub.get_subscription_count() >= 1

        # -------------------------------------------------------------------------------------------- sim
        def reset_episode(self, options: dict | None = None) -> None:
            """Reset the simulator (to ``options``, else the configured task and state) and announce the episode
            and its instruction; the first state follows ``instruction_lead_s`` later, so the recorder has started
            the episode before the policy can act (they hear the instruction at the same time, but the policy
            cannot move the arm without a state)."""
            state = self.driver.reset(options)
            self.commands.clear()
            self.ended, self.state = False, None
            self.episodes_started += 1
            opts = self.driver.last_reset
            self.episode_info = {"task": opts["task"], "split": opts["split"], "init_state_id": opts["init_state_id"],
                                 "instruction": state.instruction, "episode": self.episodes_started}
            self.info_pub.publish(String(data=json.dumps(self.episode_info)))
            self.instruction_pub.publish(String(data=state.instruction))

            def first_state() -> None:
                self.destroy_timer(lead)
                with self.lock:
                    if self.state is None and not self.ended:
                        self.publish_state(self.driver.state(), self.now())

            lead = self.create_timer(max(self.cfg.instruction_lead_s, 1e-3), first_state)

        def publish_state(self, state, stamp: float) -> None:
            self.state = (stamp, state.proprio, state.ee_position)
            self.published_at = time.monotonic()
            self.safety.observation_received(stamp)
            for c in self.cams:
                if c in state.images:
                    self.image_pubs[c].publish(image_message(state.images[c], stamp, c))
                    h, w = state.images[c].shape[:2]
                    self.info_pubs[c].publish(camera_info_message(h, w, stamp, c))
            self.state_pub.publish(named_values(self.spec.observation.proprio_names, state.proprio, stamp, "base_link"))
            self.pose_pub.publish(self.pose_message(state.proprio, stamp))

        def pose_message(self, proprio: np.ndarray, stamp: float):
            msg = PoseStamped()
            msg.header.stamp, msg.header.frame_id = seconds_to_stamp(stamp), "base_link"
            msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in proprio[:3])
            o = msg.pose.orientation
            o.w, o.x, o.y, o.z = (float(v) for v in proprio[3:7])
            return msg

        # -------------------------------------------------------------------------------------------- tick
        def next_command(self, now: float):
            """The oldest queued command, or None and why."""
            with self.lock:
                while self.commands:
                    action, obs_stamp, _ = self.commands.popleft()
                    if now - obs_stamp <= self.safety_cfg.command_timeout_s:
                        return action, None
                    self.rejected["stale command"] += 1
            return None, "no new command"

        def tick(self) -> None:
            now = self.now()
            if self.cfg.robot == "real":
                self.tick_real(now)
                return
            with self.lock:
                if self.ended or self.state is None:  # episode over, or the first not started yet
                    return
                stamp = self.state[0]
            action, why = self.next_command(now)
            decision = self.safety.filter(action if action is not None else self.safety.hold_action(),
                                          self.state[2], now)
            if action is None or decision.hold:
                # the simulated arm holds by pausing the simulator: a perfect hold, and the task's step budget is
                # spent only on commanded motion. Its state is re-published with a fresh stamp (it is still true)
                self.publish_state(self.driver.state(), self.now())
                self.set_status(holding_status(decision, why))
                return
            state = self.driver.apply(decision.action)
            self.executed_pub.publish(named_values(ACTION_NAMES, decision.action, stamp))
            self.publish_state(state, self.now())
            self.set_status("moving")
            if state.done:
                self.ended = True
                self.end_pub.publish(Bool(data=bool(state.success)))
                # the end again, latched and numbered, on the episode's own topic: a recorder whose discovery of
                # this arm lagged (it heard the instruction after the volatile end) still labels the right episode
                self.info_pub.publish(String(data=json.dumps({**self.episode_info, "ended": True,
                                                              "success": bool(state.success)})))
                self.get_logger().info(f"episode ended: success={state.success}")
                if self.cfg.auto_reset:
                    with self.lock:
                        self.reset_episode()

        def tick_real(self, now: float) -> None:
            if self.pose is None or self.gripper_opening is None:
                self.set_status("holding: waiting for the arm's pose and gripper state")
                return
            stamp, pose = self.pose
            proprio = np.r_[pose, self.gripper_opening].astype(np.float32)
            self.state = (stamp, proprio, pose[:3])
            self.state_pub.publish(named_values(self.spec.observation.proprio_names, proprio, stamp, "base_link"))
            action, why = self.next_command(now)
            decision = self.safety.filter(action if action is not None else self.safety.hold_action(), pose[:3], now)
            hold = action is None or decision.hold
            ran = self.safety.hold_action() if hold else decision.action
            twist = action_to_twist(ran, self.twist_cfg)
            self.executed_pub.publish(named_values(ACTION_NAMES, ran, stamp))
            if self.twist_cfg.dry_run:
                self.set_status("dry-run: " + ("holding" if hold else "moving"))
                self.get_logger().info(f"dry-run: would send linear={twist.linear} angular={twist.angular} "
                                       f"gripper={twist.gripper:.3f}", throttle_duration_sec=2.0)
                return
            msg = TwistStamped()
            msg.header.stamp, msg.header.frame_id = seconds_to_stamp(now), twist.frame_id
            msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = twist.linear
            msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z = twist.angular
            self.twist_pub.publish(msg)
            self.gripper_pub.publish(Float64MultiArray(data=[twist.gripper]))
            self.set_status(holding_status(decision, why) if hold else "moving")

        def set_status(self, text: str) -> None:
            if text != self.status:
                self.status = text
                self.status_pub.publish(String(data=text))

        def close(self) -> None:
            if self.driver is not None:
                self.driver.close()

    return ArmNode()


def main(args: list[str] | None = None) -> int:
    return spin(make_node, args)


if __name__ == "__main__":
    raise SystemExit(main())
