"""The recorder node: robot states, camera frames, executed actions and policy decisions in; episode files out.

A thin adapter over ``srpo.robot.recorder.EpisodeRecorder`` (which assembles episodes by stamp through the shared
``EpisodeBuilder`` and journals every message so a killed recorder loses no closed episode). Episodes start on
``/srpo/recorder/start`` or, with ``record_on_instruction``, whenever an instruction is published (the same text
again is a new episode of the same task); they stop on
``/srpo/recorder/stop`` (success unknown), ``/srpo/recorder/label`` (stop with success = the request's data) or, with
``stop_on_episode_end``, when the simulated arm reports the end of its episode (labelled with the simulator's success
predicate if ``label_from_sim``, else left unlabelled for ``srpo episodes label``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np

from srpo.robot.recorder import EpisodeRecorder, RecorderConfig
from srpo.spec import ACTION_NAMES, TABLETOP_SPEC, RobotSpec
from srpo_ros import topics
from srpo_ros.common import acting_distribution, declare_config, latched_qos, parse_decision, spin, stamp_to_seconds


END_GRACE_S = 0.25


@dataclass
class RecorderNodeConfig:
    record_on_instruction: bool = True
    stop_on_episode_end: bool = True
    label_from_sim: bool = True
    image_size: int = 64
    """The cameras' image size (the spec's cameras are recorded; frames of another size are refused)."""


def task_for(instruction: str) -> str:
    """The tabletop task with this instruction, or a name made from the words (robot tasks have no registry)."""
    try:
        from srpo.sim.tabletop.tasks import TASKS

        for name, task in TASKS.items():
            if task.instruction == instruction.strip():
                return name
    except ImportError:  # a robot without the simulator extra
        pass
    return re.sub(r"[^a-z0-9]+", "_", instruction.lower()).strip("_")[:64] or "unnamed"


def make_node():
    from rclpy.node import Node
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Bool, String
    from std_srvs.srv import SetBool, Trigger

    latched = latched_qos()

    class RecorderNode(Node):
        def __init__(self) -> None:
            super().__init__("recorder_node")
            self.cfg = declare_config(self, RecorderNodeConfig)
            self.rec_cfg = declare_config(self, RecorderConfig)
            self.spec: RobotSpec = TABLETOP_SPEC.with_image_size(self.cfg.image_size, self.cfg.image_size)
            self.recorder = EpisodeRecorder(self.spec, self.rec_cfg)
            self.instruction: str | None = None
            self.policy: dict = {}
            self.pending_end: tuple[str | None, bool | None] | None = None
            self.refused = 0
            # one callback group (the default, mutually exclusive): the recorder core is not thread-safe
            for cam in self.spec.observation.cameras:
                self.create_subscription(Image, topics.CAMERA_IMAGE.format(cam.name),
                                         lambda msg, name=cam.name: self.on_image(name, msg), 50)
            self.create_subscription(JointState, topics.JOINT_STATES, self.on_state, 50)
            self.create_subscription(JointState, topics.EXECUTED_ACTION, self.on_action, 50)
            self.create_subscription(String, topics.DECISION, self.on_decision, latched_qos(20))
            self.create_subscription(String, topics.POLICY_INFO, self.on_policy_info, latched)
            self.create_subscription(String, topics.INSTRUCTION, self.on_instruction, latched)
            self.create_subscription(String, topics.EPISODE_INFO, self.on_episode_info, latched)
            self.episode_info: dict = {}
            self.arm_episode: int | None = None  # the simulator's number of the open recording, when known
            self.last_arm_episode: int | None = None  # ... of the last one closed: older announcements are stale
            self.create_subscription(Bool, topics.EPISODE_END, self.on_episode_end, 10)  # volatile: no stale ends
            self.create_service(Trigger, topics.RECORDER_START, self.on_start)
            self.create_service(Trigger, topics.RECORDER_STOP, self.on_stop)
            self.create_service(SetBool, topics.RECORDER_LABEL, self.on_label)
            self.get_logger().info(f"recording into {self.rec_cfg.out_dir} (source {self.rec_cfg.source})")

        # -------------------------------------------------------------------------------------------- control
        def start(self) -> str:
            if not self.instruction:
                raise ValueError("no instruction yet: an episode needs one")
            info = self.episode_info if self.announces_open_episode(self.episode_info) else {}
            episode_id = self.recorder.start(info.get("task") or task_for(self.instruction), self.instruction,
                                             policy_version=self.policy.get("version", "unknown"),
                                             policy_distribution=self.policy.get("distribution"),
                                             split=info.get("split", "none"), init_state_id=info.get("init_state_id"))
            self.arm_episode = info.get("episode")
            self.get_logger().info(f"recording episode {episode_id}: {self.instruction!r}")
            if info.get("ended"):
                # the simulator's episode ended before its instruction reached this node (discovery lagged): its
                # steps come from the preroll, its label from the latched announcement of the end
                self.end_episode(bool(info.get("success")))
            return episode_id

        def announces_open_episode(self, info: dict) -> bool:
            """Whether a simulator announcement belongs to the episode this node records (or is about to): same
            instruction, and not an episode already closed (a group repeats one prompt, so the text alone does
            not tell consecutive episodes apart)."""
            if info.get("instruction") != self.instruction:
                return False
            number = info.get("episode")
            return number is None or self.last_arm_episode is None or number > self.last_arm_episode

        def end_episode(self, success: bool) -> None:
            """Stop ``END_GRACE_S`` later: the episode's last state and action travel on other topics and may still
            be in flight (DDS orders messages per topic, not across topics)."""
            if not (self.cfg.stop_on_episode_end and self.recorder.recording):
                return
            self.pending_end = (self.recorder.episode_id, success if self.cfg.label_from_sim else None)

            def finish() -> None:
                self.destroy_timer(timer)
                if self.pending_end is not None and self.pending_end[0] == self.recorder.episode_id:
                    self.stop(self.pending_label())

            timer = self.create_timer(END_GRACE_S, finish)

        def stop(self, success: bool | None) -> str:
            if self.arm_episode is not None:
                self.last_arm_episode = self.arm_episode
            self.arm_episode = None
            path = self.recorder.stop(success)
            text = f"wrote {path} (success={success})" if path else "nothing recorded"
            self.get_logger().info(text)
            return text

        def on_start(self, request, response):
            try:
                response.message, response.success = self.start(), True
            except ValueError as exc:
                response.message, response.success = str(exc), False
            return response

        def on_stop(self, request, response):
            self.pending_end = None
            response.message, response.success = self.stop(None), True
            return response

        def on_label(self, request, response):
            self.pending_end = None
            response.message, response.success = self.stop(bool(request.data)), True
            return response

        def on_policy_info(self, msg) -> None:
            try:
                self.policy = json.loads(msg.data)
            except ValueError:
                self.refused += 1
                return
            self.recorder.note_policy(self.policy.get("version", "unknown"), self.policy.get("distribution"))

        def on_episode_info(self, msg) -> None:
            """The simulator's announcement of where an episode starts, and of its end. It travels on its own
            topic, so it may arrive after the instruction that opened the episode: then the open episode is
            annotated (and, for an end, stopped with its label)."""
            try:
                info = json.loads(msg.data)
                if not isinstance(info, dict):
                    raise ValueError("not an object")
            except ValueError:
                self.refused += 1
                return
            self.episode_info = info
            if not (self.recorder.recording and self.announces_open_episode(info)):
                return
            if self.arm_episode not in (None, info.get("episode")):
                return  # announces a later episode than the one open: its instruction will open it
            self.arm_episode = info.get("episode")
            self.recorder.note_episode(str(info.get("split", "none")), info.get("init_state_id"))
            if info.get("ended"):
                self.end_episode(bool(info.get("success")))

        def on_instruction(self, msg) -> None:
            text = msg.data.strip()
            if not text:
                self.refused += 1
                return
            self.instruction = text
            if self.cfg.record_on_instruction:
                if self.recorder.recording:
                    self.stop(self.pending_label())  # the label of an episode end still in its grace period
                self.start()

        def on_episode_end(self, msg) -> None:
            """A simulator's end. A simulator that announces its episodes on the episode-info topic (this project's
            arm) is followed there alone: start and end arrive in order on that one topic, numbered, whereas this
            topic can overtake the announcement of the episode it ends (DDS orders per topic), which would leave the
            closed episode without its number."""
            if not self.episode_info:
                self.end_episode(bool(msg.data))

        def pending_label(self) -> bool | None:
            label = None
            if self.pending_end is not None and self.pending_end[0] == self.recorder.episode_id:
                label = self.pending_end[1]
            self.pending_end = None
            return label

        # -------------------------------------------------------------------------------------------- data
        def on_image(self, camera: str, msg) -> None:
            cam = self.spec.observation.camera(camera)
            if (msg.height, msg.width, msg.encoding) != (cam.height, cam.width, "rgb8") or \
                    len(msg.data) != msg.height * msg.step or msg.step < msg.width * 3:
                self.refused += 1
                return
            rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)[:, : msg.width * 3]
            self.recorder.add_frame(camera, stamp_to_seconds(msg.header.stamp), rows.reshape(msg.height, msg.width, 3))

        def on_state(self, msg) -> None:
            names = list(self.spec.observation.proprio_names)
            if list(msg.name) != names or not np.all(np.isfinite(msg.position)):
                self.refused += 1
                return
            self.recorder.add_state(stamp_to_seconds(msg.header.stamp), np.asarray(msg.position, np.float32))

        def on_action(self, msg) -> None:
            if list(msg.name) != list(ACTION_NAMES) or not np.all(np.isfinite(msg.position)):
                self.refused += 1
                return
            self.recorder.add_action(stamp_to_seconds(msg.header.stamp), np.asarray(msg.position, np.float32))

        def on_decision(self, msg) -> None:
            try:
                d = parse_decision(msg.data)
            except (ValueError, KeyError, TypeError):
                self.refused += 1
                return
            # the decision says which version acted and how it sampled; the policy's info fills in an older node's std
            described = (self.policy.get("distribution") or {}) if self.policy.get("version") == d["version"] else {}
            std = d["std"] if d["std"] is not None else described.get("std")
            distribution = acting_distribution(d["temperature"], std) if d["mean"] is not None else None
            self.recorder.add_decision(d["stamp"], d["chunk"], d["log_prob"], d["mean"], d["log_std"],
                                       policy_version=d["version"], distribution=distribution)

        def close(self) -> None:
            if self.recorder.recording:  # a clean shutdown keeps the open episode, unlabelled
                self.stop(None)

    return RecorderNode()


def main(args: list[str] | None = None) -> int:
    return spin(make_node, args)


if __name__ == "__main__":
    raise SystemExit(main())
