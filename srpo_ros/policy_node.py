"""The policy node: cameras, robot state and instruction in; one action per control tick out.

A thin adapter over the runtime: ``load_inference_policy`` (TensorRT, ONNX Runtime or torch, ``backend``), the
``InputGate`` (it refuses stale, mis-sized or mis-encoded images, bad states and empty instructions, and says why),
``decide`` (deterministic at ``temperature: 0``, sampled otherwise, with the log-probability and distribution a
recorder stores) and the ``ActionChunker`` (asynchronous prefetch hides the inference latency; ``prefetch: false``
infers in the tick instead, for a simulated clock, where the arm waits for each answer). A tick runs when a
robot state arrives (``tick_on: state``: the arm's control loop sets the pace, so the action is back before the arm's
next tick) or on this node's timer (``tick_on: timer``). Every tick with fresh inputs publishes the next action on
``/srpo/action`` (stamped with the state it was chosen for); with no trustworthy input it publishes nothing (the arm
then holds) and says why on ``/srpo/policy/status``. Each new chunk goes out on
``/srpo/policy/action_chunk`` and ``/srpo/policy/decision``; ``/diagnostics`` carries the policy version, backend,
device, inference latency, data age and the refusal counters once a second.
"""

from __future__ import annotations

import collections
import json
import queue
import threading
from dataclasses import dataclass

import numpy as np

from srpo.robot.inputs import InputGate, InputGateConfig
from srpo.runtime.chunker import ActionChunker, ChunkerConfig
from srpo.runtime.loading import BACKENDS, load_inference_policy
from srpo.runtime.registry import resolve_policy_path
from srpo.runtime.sampling import decide
from srpo.runtime.validation import CandidateRejected, ValidationConfig, validate_candidate
from srpo.spec import ACTION_NAMES
from srpo_ros import topics
from srpo_ros.common import acting_distribution, decision_message, declare_config, diagnostics_message, latched_qos, named_values, now_seconds, seconds_to_stamp, spin, stamp_to_seconds


TICK_SOURCES = ("state", "timer")
DECISION_HISTORY = 20  # decisions kept for late subscribers (a recorder files them by stamp, older ones drop out)


@dataclass
class PolicyNodeConfig:
    """Which policy runs where, and how it acts."""

    policy: str = ""
    backend: str = "auto"
    temperature: float = 0.0
    exploration_std: float = 0.0
    """Sampling (temperature > 0) with this fixed std in normalised action units instead of the policy's own (0): the
    trainer's ``exploration.std_mode=fixed, exploration.std``, so robot episodes explore as simulator rollouts do."""
    execute_steps: int = 8
    control_hz: float = 20.0
    seed: int = 0
    margin_ticks: int = 1
    blend: str = "none"
    registry: str = ""
    """A policy registry folder: ``policy`` and pushed names may then be version names in it."""
    prefetch: bool = True
    """Infer the next chunk in a worker thread ahead of time, hiding the latency from a real-time arm (true), or in
    the tick when the chunk runs out (false: under the arm's simulated clock, ``sim_clock``, the arm waits for each
    answer, so every state gets an action and no chunk row is dropped)."""
    tick_on: str = "state"
    """``state``: act the moment a robot state arrives (the arm's control loop sets the pace, and the action is back
    before the arm's next tick); ``timer``: act on this node's own ``control_hz`` timer."""

    def __post_init__(self) -> None:
        if self.tick_on not in TICK_SOURCES:
            raise ValueError(f"tick_on must be one of {TICK_SOURCES}, got {self.tick_on!r}")
        if not self.policy:
            raise ValueError("policy is empty: pass the exported policy folder or checkpoint (-p policy:=PATH)")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not self.exploration_std >= 0:
            raise ValueError(f"exploration_std must be >= 0 (0: the policy's own std), got {self.exploration_std}")


def make_node():
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.node import Node
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String
    from std_srvs.srv import Trigger
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    latched = latched_qos()

    class PolicyNode(Node):
        def __init__(self) -> None:
            super().__init__("policy_node")
            self.cfg = declare_config(self, PolicyNodeConfig)
            self.validation = declare_config(self, ValidationConfig)
            self.policy = load_inference_policy(resolve_policy_path(self.cfg.policy, self.cfg.registry or None),
                                                self.cfg.backend)
            self.previous = None  # the policy before the last swap: rollback target (already validated)
            self.candidate = None  # a validated policy waiting for a chunk boundary
            self.validating: str | None = None  # the push being validated
            self.recent: collections.deque = collections.deque(maxlen=8)  # recorded observations for smoke tests
            self.spec = self.policy.spec
            self.gate = InputGate(self.spec, declare_config(self, InputGateConfig))
            self.rng = np.random.default_rng(self.cfg.seed)
            self.decisions: queue.SimpleQueue = queue.SimpleQueue()
            self.chunker = ActionChunker(self.infer, ChunkerConfig(
                chunk_size=self.policy.chunk_size, action_dim=self.spec.action.dim,
                execute_steps=min(self.cfg.execute_steps, self.policy.chunk_size), control_hz=self.cfg.control_hz,
                prefetch=self.cfg.prefetch, blend=self.cfg.blend, margin_ticks=self.cfg.margin_ticks))
            self.instruction = None
            self.status = ""
            self.last_data_age = float("nan")
            self.lock = threading.Lock()
            for cam in self.spec.observation.cameras:
                self.create_subscription(Image, topics.CAMERA_IMAGE.format(cam.name),
                                         lambda msg, name=cam.name: self.on_image(name, msg), 5)
            self.create_subscription(JointState, topics.JOINT_STATES, self.on_state, 10)
            self.create_subscription(String, topics.INSTRUCTION, self.on_instruction, latched)
            self.action_pub = self.create_publisher(JointState, topics.ACTION, 10)
            self.chunk_pub = self.create_publisher(JointTrajectory, topics.ACTION_CHUNK, 10)
            self.decision_pub = self.create_publisher(String, topics.DECISION, latched_qos(DECISION_HISTORY))
            self.status_pub = self.create_publisher(String, topics.POLICY_STATUS, latched)
            self.info_pub = self.create_publisher(String, topics.POLICY_INFO, latched)
            self.push_result_pub = self.create_publisher(String, topics.POLICY_PUSH_RESULT, latched)
            self.create_subscription(String, topics.POLICY_PUSH, self.on_push, 10)
            self.create_service(Trigger, topics.POLICY_ROLLBACK, self.on_rollback)
            self.publish_info()
            self.diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
            self.last_tick = float("-inf")
            self.answered_stamp: float | None = None  # the state the last published action was chosen for
            self.timer = self.create_timer(1.0 / self.cfg.control_hz, self.watch)
            self.diag_timer = self.create_timer(1.0, self.publish_diagnostics)
            self.get_logger().info(f"policy {self.policy.version} on {self.policy.backend} ({self.policy.device}), "
                                   f"temperature {self.cfg.temperature:g}, {self.cfg.control_hz:g} Hz")

        def publish_info(self) -> None:
            self.info_pub.publish(String(data=json.dumps({
                "version": self.policy.version, "backend": self.policy.backend, "device": self.policy.device,
                "temperature": self.cfg.temperature, "chunk_size": self.policy.chunk_size,
                "previous": None if self.previous is None else self.previous.version,
                "distribution": (acting_distribution(self.cfg.temperature, self.cfg.exploration_std or "policy")
                                 if self.cfg.temperature > 0 else None)})))

        # -------------------------------------------------------------------------------------------- push
        def on_push(self, msg) -> None:
            """A candidate version (a path, or a name in the registry): validated in a worker thread so the control
            loop keeps running; swapped in at the next chunk boundary if it passes."""
            name = msg.data.strip()
            if name and name == self.validating:
                return  # the same push again (its sender heard no verdict yet): the verdict comes when it is done
            if name and name == self.policy.version and self.candidate is None:
                self.push_result(name, True, "already the active version")
                return
            if self.validating:
                self.push_result(name, False, "another push is being validated")
                return
            try:
                path = resolve_policy_path(name, self.cfg.registry or None)
            except KeyError as exc:
                self.push_result(name, False, f"integrity: {exc}")
                return
            self.validating = name
            observations = list(self.recent)
            threading.Thread(target=self.validate, args=(name, path, observations), daemon=True).start()

        def validate(self, name: str, path, observations) -> None:
            try:
                policy, report = validate_candidate(path, self.spec, observations, self.validation, self.cfg.backend)
            except CandidateRejected as exc:
                self.push_result(name, False, str(exc))
            else:
                self.candidate = (policy, report)  # picked up by the control thread at a chunk boundary
            finally:
                self.validating = None

        def push_result(self, name: str, accepted: bool, reason: str, report=None) -> None:
            body = {"pushed": name, "accepted": accepted, "reason": reason, "active": self.policy.version,
                    "report": report.to_dict() if report is not None else None}
            self.push_result_pub.publish(String(data=json.dumps(body)))
            if accepted:  # (rclpy refuses one call site logging at two severities)
                self.get_logger().info(f"push {name}: swapped in: {reason}")
            else:
                self.get_logger().error(f"push {name}: rejected: {reason}")

        def swap_if_ready(self) -> None:
            """At a chunk boundary (no inference in flight: the next chunk will be the new policy's), swap."""
            if self.candidate is None or self.chunker.in_flight:
                return
            (policy, report), self.candidate = self.candidate, None
            self.previous, self.policy = self.policy, policy
            self.publish_info()
            self.push_result(report.version, True, "; ".join(report.checks), report)

        def on_rollback(self, request, response):
            if self.previous is None:
                response.success, response.message = False, "no previous version to roll back to"
                return response
            self.candidate = None
            self.policy, self.previous = self.previous, self.policy
            self.publish_info()
            response.success, response.message = True, f"rolled back to {self.policy.version}"
            self.get_logger().warning(response.message)
            return response

        # -------------------------------------------------------------------------------------------- inputs
        def on_image(self, camera: str, msg) -> None:
            why = self.gate.image(camera, msg.data, msg.height, msg.width, msg.encoding, msg.step,
                                  stamp_to_seconds(msg.header.stamp))
            if why:
                self.get_logger().warning(why, throttle_duration_sec=2.0)

        def on_state(self, msg) -> None:
            why = self.gate.state(list(msg.name), np.asarray(msg.position), stamp_to_seconds(msg.header.stamp))
            if why:
                self.get_logger().warning(why, throttle_duration_sec=2.0)
            elif self.cfg.tick_on == "state":
                self.tick()

        def on_instruction(self, msg) -> None:
            why = self.gate.instruction(msg.data)
            if why:
                self.get_logger().warning(why)
                return
            with self.lock:  # every instruction starts an episode: the old chunk must not run on
                self.instruction = msg.data.strip()
                self.chunker.reset()
                self.policy.reset()
            self.get_logger().info(f"instruction: {self.instruction!r}")

        # -------------------------------------------------------------------------------------------- acting
        def infer(self, observation):
            """One decision from one gated observation (in the chunker's worker thread, or in the tick without
            prefetch)."""
            obs, stamp = observation
            policy = self.policy  # one policy for the whole decision, whatever a swap does meanwhile
            d = decide(policy, obs, self.cfg.temperature, self.rng, self.cfg.exploration_std or None)
            self.decisions.put((stamp, d, policy.version))
            return d.chunk

        def watch(self) -> None:
            """The control-rate timer: the tick itself (``tick_on: timer``), or, when the robot state drives the
            ticks, a watchdog that reports why nothing is acting once a tick is overdue."""
            if self.cfg.tick_on == "timer":
                self.tick()
            elif now_seconds(self) - self.last_tick > 1.5 / self.cfg.control_hz:
                self.tick(watchdog=True)
            self.swap_if_ready()  # an idle arm (between episodes) has no chunk to finish: a validated push goes in now

        def tick(self, watchdog: bool = False) -> None:
            """One action for the newest observation. The watchdog's tick never answers a state that already has its
            action: the arm runs one command per state, so a second one would replace the first and skip a row."""
            now = now_seconds(self)
            self.last_tick = now
            gated = self.gate.observation(now)
            if gated.ready and watchdog and gated.stamp == self.answered_stamp:
                self.set_status("waiting: no new robot state since the last action")
                return
            if not gated.ready:
                self.set_status(f"waiting: {gated.reason}")
                self.flush_decisions()
                return
            self.last_data_age = now - gated.stamp
            self.recent.append(gated.observation)
            self.swap_if_ready()
            with self.lock:
                result = self.chunker.tick((gated.observation, gated.stamp))
            self.flush_decisions()
            if result.held:
                self.set_status(f"waiting: {result.reason}")
                return
            self.action_pub.publish(named_values(ACTION_NAMES, result.action, gated.stamp))
            self.answered_stamp = gated.stamp
            self.set_status("acting")

        def flush_decisions(self) -> None:
            while not self.decisions.empty():
                stamp, d, version = self.decisions.get()
                traj = JointTrajectory(joint_names=list(ACTION_NAMES))
                traj.header.stamp = seconds_to_stamp(stamp)
                for k, row in enumerate(d.chunk):
                    point = JointTrajectoryPoint(positions=[float(v) for v in row])
                    t = (k + 1) / self.cfg.control_hz
                    point.time_from_start.sec, point.time_from_start.nanosec = int(t), int(round((t % 1) * 1e9))
                    traj.points.append(point)
                self.chunk_pub.publish(traj)
                sampled = self.cfg.temperature > 0
                self.decision_pub.publish(decision_message(stamp, d.chunk, d.log_prob, d.mean if sampled else None,
                                                           d.log_std if sampled else None, d.temperature,
                                                           version, std=self.cfg.exploration_std or "policy"))

        def set_status(self, text: str) -> None:
            if text != self.status:
                self.status = text
                self.status_pub.publish(String(data=text))

        def publish_diagnostics(self) -> None:
            stats = self.chunker.stats
            values = {"version": self.policy.version, "backend": self.policy.backend, "device": self.policy.device,
                      "status": self.status, "inference_latency_s": f"{stats.latency_s:.4f}",
                      "data_age_s": f"{self.last_data_age:.4f}", "ticks": stats.ticks,
                      "actions_served": stats.actions_served, "held_ticks": stats.held_ticks,
                      "chunks": stats.chunks, "errors": stats.errors,
                      **{f"refused_{k}": v for k, v in sorted(self.gate.why_not.items())}}
            self.diag_pub.publish(diagnostics_message(self, "srpo/policy_node", self.status == "acting", self.status,
                                                      values, self.policy.device))

        def close(self) -> None:
            self.chunker.close()

    return PolicyNode()


def main(args: list[str] | None = None) -> int:
    return spin(make_node, args)


if __name__ == "__main__":
    raise SystemExit(main())
