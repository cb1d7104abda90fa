"""The trajectory recorder's core: stamped messages in, one episode file per episode out. ROS-agnostic.

On a robot, states, frames, executed actions and policy decisions arrive on different topics, in no guaranteed order
across topics. The recorder keeps them by stamp and assembles the episode only when it stops, through the shared
``EpisodeBuilder``:

* observations are the robot states, in stamp order; the executed action of step t carries the stamp of state t (the
  arm node publishes it so). A state with no action after it is superseded by the next state (a paused simulator
  re-publishes its state with fresh stamps; on a real arm it means a lost message) and dropped; only the last state
  needs no action. Dropped states are counted (``extra["dropped_states"]``);
* a frame belongs to the state whose stamp is nearest, within ``frame_tolerance_s``; a step has a frame when every
  camera has one (the first and last step must: leading or trailing states without frames are dropped);
* a decision belongs to the state whose stamp it carries (the observation the policy saw), within the same tolerance;
  one made on a superseded state files under the next kept state (nothing ran in between); one made on a state the
  recorder never heard, or on a leading state that ran an action but was dropped for want of frames (its chunk's
  first row ran before the episode's first kept step), is dropped and counted (``extra["dropped_decisions"]``).

Crash safety: every message is also streamed, as it arrives, into a journal ``<id>.mcap.partial`` beside the final
file (flushed per message), so a killed recorder leaves its closed episodes intact (they were written atomically)
and the open one recoverable: ``recover_journal(path)`` turns a journal into an episode with success unknown
(``srpo episodes recover``). The ``.partial`` suffix keeps journals out of the store's listings.
"""

from __future__ import annotations

import collections
import io
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from mcap.records import Channel, Message, Metadata, Schema
from mcap.stream_reader import StreamReader

from srpo.episodes.builder import EpisodeBuilder
from srpo.episodes.mcap_io import (
    _TYPESTORE,
    TOPIC_ACTION,
    TOPIC_CHUNK,
    TOPIC_CHUNK_LOG_STD,
    TOPIC_CHUNK_MEAN,
    TOPIC_DECISION_STEP,
    TOPIC_LOG_PROB,
    TOPIC_PROGRESS,
    TOPIC_PROPRIO,
    EpisodeWriter,
    write_episode,
)
from srpo.episodes.schema import Episode, EpisodeSchemaError
from srpo.spec import RobotSpec

JOURNAL_SUFFIX = ".mcap.partial"
_START = "srpo_recording"


@dataclass
class RecorderConfig:
    """Where episodes go and how messages are matched; the same names are the recorder node's ROS parameters."""

    out_dir: str = "episodes/robot"
    source: str = "robot"
    frame_tolerance_s: float = 0.02
    """A frame or decision is filed under the state with the nearest stamp within this (half a 20 Hz period)."""
    preroll_s: float = 2.0
    """Messages heard up to this long before ``start`` (and after the previous episode) open the new episode: the
    recorder may hear the instruction later than the arm and the policy start acting on it (0 disables)."""

    def __post_init__(self) -> None:
        if not self.frame_tolerance_s > 0:
            raise ValueError(f"frame_tolerance_s must be > 0, got {self.frame_tolerance_s}")
        if not self.preroll_s >= 0:
            raise ValueError(f"preroll_s must be >= 0, got {self.preroll_s}")


@dataclass
class _Take:
    """Everything one episode has received, keyed by stamp."""

    info: dict[str, Any]
    states: dict[float, tuple[np.ndarray, float | None]] = field(default_factory=dict)
    frames: dict[str, dict[float, np.ndarray]] = field(default_factory=dict)
    actions: dict[float, np.ndarray] = field(default_factory=dict)
    decisions: dict[float, tuple] = field(default_factory=dict)


class EpisodeRecorder:
    """Start, feed and stop episodes. Not thread-safe on its own: the node serialises calls (one callback group)."""

    def __init__(self, spec: RobotSpec, config: RecorderConfig | None = None) -> None:
        self.spec, self.cfg = spec, config or RecorderConfig()
        self._spec_dict = spec.to_dict()
        self._take: _Take | None = None
        self._journal: EpisodeWriter | None = None
        self.written: list[Path] = []
        # (received monotonic time, stamp, method name, args) heard while not recording; see RecorderConfig.preroll_s
        self._preroll: collections.deque = collections.deque(maxlen=10_000)
        self._last_stamp = float("-inf")  # the newest state of the last episode: older messages belong to it

    @property
    def recording(self) -> bool:
        return self._take is not None

    @property
    def episode_id(self) -> str | None:
        return self._take.info["episode_id"] if self._take else None

    def path_for(self, info: dict[str, Any]) -> Path:
        return Path(self.cfg.out_dir) / info["task"] / f"{info['episode_id']}.mcap"

    # ------------------------------------------------------------------------------------------------ control
    def start(self, task: str, instruction: str, policy_version: str = "unknown", split: str = "none",
              init_state_id: int | None = None, seed: int | None = None,
              policy_distribution: dict[str, Any] | None = None) -> str:
        """Begin an episode (an open one is stopped unlabelled first). Returns its id."""
        if not instruction.strip():
            raise EpisodeSchemaError("cannot record an episode without an instruction")
        if self.recording:
            self.stop(None)
        info = {"task": task or "unnamed", "instruction": instruction, "policy_version": policy_version,
                "split": split, "init_state_id": init_state_id, "seed": seed, "episode_id": uuid.uuid4().hex,
                "policy_distribution": policy_distribution, "source": self.cfg.source, "spec": self._spec_dict}
        self._take = _Take(info, frames={c.name: {} for c in self.spec.observation.cameras})
        path = self.path_for(info)
        self._journal = EpisodeWriter(path.with_name(path.stem + JOURNAL_SUFFIX), self._spec_dict, journal=True)
        self._journal.add_metadata(_START, {"json": json.dumps(info, sort_keys=True)})
        horizon = time.monotonic() - self.cfg.preroll_s
        preroll, self._preroll = list(self._preroll), collections.deque(maxlen=self._preroll.maxlen)
        for received, stamp, method, args in preroll:
            if received >= horizon and stamp > self._last_stamp:
                getattr(self, method)(*args)
        return info["episode_id"]

    def stop(self, success: bool | None) -> Path | None:
        """Assemble, validate and write the episode atomically; remove its journal. None if no action was recorded
        (the journal is removed too). A failed assembly keeps the journal and raises."""
        if self._take is None:
            return None
        take, journal = self._take, self._journal
        self._take = self._journal = None
        self._preroll.clear()
        if take.states:
            self._last_stamp = max(self._last_stamp, max(take.states))
        if not take.actions:  # the arm never moved: there is no episode to keep
            journal.abort()
            return None
        episode = assemble(take, self._spec_dict, success, self.cfg.frame_tolerance_s)
        path = write_episode(self.path_for(take.info), episode)
        journal.abort()  # the episode is safely on disk: the crash copy goes
        self.written.append(path)
        return path

    def discard(self) -> None:
        """Drop the open episode and its journal."""
        if self._journal is not None:
            self._journal.abort()
        self._take = self._journal = None

    def note_episode(self, split: str, init_state_id: int | None, seed: int | None = None) -> None:
        """Where the open episode started (a simulator announces its initial state on its own topic, which may
        arrive after the instruction that opened the episode)."""
        if self._take is not None:
            self._take.info.update(split=split, init_state_id=init_state_id, seed=seed)

    def note_policy(self, version: str, distribution: dict[str, Any] | None = None) -> None:
        """The acting policy's version (and how its decisions' distributions read), as the decisions report it."""
        if self._take is not None:
            self._take.info["policy_version"] = version
            if distribution is not None:
                self._take.info["policy_distribution"] = distribution

    # ------------------------------------------------------------------------------------------------ messages
    def _buffer(self, stamp: float, method: str, *args: Any) -> bool:
        """Not recording: keep the message for the next episode's preroll. Returns True if buffered."""
        if self._take is not None:
            return False
        if self.cfg.preroll_s > 0:
            self._preroll.append((time.monotonic(), float(stamp), method, args))
        return True

    def add_state(self, stamp: float, proprio: np.ndarray, progress: float | None = None) -> None:
        if self._buffer(stamp, "add_state", stamp, proprio, progress):
            return
        proprio = np.asarray(proprio, np.float32)
        self._journal.write_state(stamp, proprio, progress)
        self._take.states[float(stamp)] = (proprio, progress)

    def add_frame(self, camera: str, stamp: float, image: np.ndarray) -> None:
        if self._buffer(stamp, "add_frame", camera, stamp, np.array(image, copy=True)):
            return
        self._journal.write_frame(stamp, camera, image)
        self._take.frames[camera][float(stamp)] = np.array(image, copy=True)

    def add_action(self, stamp: float, action: np.ndarray) -> None:
        """The action the arm executed after the state stamped ``stamp``."""
        if self._buffer(stamp, "add_action", stamp, action):
            return
        action = np.asarray(action, np.float32)
        self._journal.write_action(stamp, action)
        self._take.actions[float(stamp)] = action

    def add_decision(self, stamp: float, chunk: np.ndarray, log_prob: float, mean: np.ndarray | None = None,
                     log_std: np.ndarray | None = None, policy_version: str | None = None,
                     distribution: dict[str, Any] | None = None) -> None:
        """A policy decision computed from the observation whose state is stamped ``stamp``; with
        ``policy_version`` (and ``distribution``), also ``note_policy`` for the episode it lands in (a decision heard
        before its episode opened is replayed from the preroll with them)."""
        if self._buffer(stamp, "add_decision", stamp, chunk, log_prob, mean, log_std, policy_version, distribution):
            return
        if policy_version is not None:
            self.note_policy(policy_version, distribution)
        self._journal.write_decision(stamp, -1, chunk, log_prob, mean, log_std)  # the step is known at assembly
        self._take.decisions[float(stamp)] = (np.asarray(chunk, np.float32), float(log_prob), mean, log_std)


def _nearest(stamps: np.ndarray, t: float, tolerance: float) -> int | None:
    """Index of the stamp nearest to ``t`` if within ``tolerance``."""
    if len(stamps) == 0:
        return None
    i = int(np.clip(np.searchsorted(stamps, t), 1, len(stamps) - 1)) if len(stamps) > 1 else 0
    best = min((j for j in (i - 1, i) if 0 <= j < len(stamps)), key=lambda j: abs(stamps[j] - t))
    return best if abs(stamps[best] - t) <= tolerance else None


def assemble(take: _Take, spec: dict[str, Any], success: bool | None, tolerance: float) -> Episode:
    """Stamped messages -> a validated episode (the rules are in the module docstring)."""
    stamps = np.array(sorted(take.states))
    cams = list(take.frames)
    frame_at: dict[int, dict[str, np.ndarray]] = {}
    for cam in cams:
        for t, img in sorted(take.frames[cam].items()):
            i = _nearest(stamps, t, tolerance)
            if i is not None:
                frame_at.setdefault(i, {})[cam] = img  # the latest frame near a state wins
    # a state survives if an action followed it, or if it is the last one; leading states need a frame from every
    # camera (the first observation must have one), and so does the last kept state
    keep = [i for i in range(len(stamps)) if float(stamps[i]) in take.actions or i == len(stamps) - 1]
    while keep and len(frame_at.get(keep[0], {})) < len(cams):
        keep.pop(0)
    while len(keep) > 1 and len(frame_at.get(keep[-1], {})) < len(cams):
        keep.pop()
    if not keep:
        raise EpisodeSchemaError(f"episode {take.info['episode_id']}: no state has a frame from every camera")
    dropped, bad_decisions = len(stamps) - len(keep), 0
    decision_at: dict[int, tuple] = {}
    kept_stamps, kept = stamps[keep], set(keep)
    for t, d in sorted(take.decisions.items(), key=lambda item: item[0]):
        i = _nearest(stamps, t, tolerance)
        if i is None:  # a decision on a state this recorder never heard: where it belongs is unknown, drop it
            bad_decisions += 1
            continue
        if float(stamps[i]) in take.actions and i not in kept:
            # its chunk ran on a leading state dropped for want of frames: the next kept state's action is a later
            # row of some chunk, so filing the decision there would pair chunk row 0 with the wrong action
            bad_decisions += 1
            continue
        # on a superseded state (a paused arm re-published it, nothing ran since): the next kept state
        n = int(np.searchsorted(kept_stamps, stamps[i] - 1e-9))
        if n < len(keep) and keep[n] not in decision_at:
            decision_at[keep[n]] = d
        else:
            bad_decisions += 1
    info = take.info
    builder = EpisodeBuilder(spec, task=info["task"], instruction=info["instruction"], source=info["source"],
                             policy_version=info["policy_version"], split=info["split"],
                             init_state_id=info["init_state_id"], seed=info["seed"],
                             policy_distribution=info.get("policy_distribution"))
    with_progress = all(take.states[float(stamps[i])][1] is not None for i in keep)
    for n, i in enumerate(keep):
        proprio, progress = take.states[float(stamps[i])]
        images = frame_at.get(i) if len(frame_at.get(i, {})) == len(cams) else None
        builder.observe(float(stamps[i]), proprio, images, progress if with_progress else None)
        if n == len(keep) - 1:
            break
        if i in decision_at:
            try:
                builder.decide(*decision_at[i])
            except EpisodeSchemaError:  # e.g. a decision without its distribution among ones with: keep the rest
                bad_decisions += 1
        builder.act(take.actions[float(stamps[i])])
    extra = {k: v for k, v in (("dropped_states", dropped), ("dropped_decisions", bad_decisions)) if v}
    return builder.finish(success, extra=extra or None)


def recover_journal(path: str | os.PathLike, tolerance: float = RecorderConfig.frame_tolerance_s) -> Episode:
    """Rebuild the episode a killed recorder was writing from its ``.partial`` journal (success unknown). Reads up
    to the first damaged or missing byte: what was flushed before the kill."""
    path = Path(path)
    raw = path.read_bytes()
    schemas, channels, info = {}, {}, None
    messages: list[tuple[str, int, Any]] = []
    try:
        for record in StreamReader(io.BytesIO(raw), skip_magic=False).records:
            if isinstance(record, Schema):
                schemas[record.id] = record.name
            elif isinstance(record, Channel):
                channels[record.id] = (record.topic, schemas[record.schema_id])
            elif isinstance(record, Metadata) and record.name == _START:
                info = json.loads(record.metadata["json"])
            elif isinstance(record, Message):
                topic, msgtype = channels[record.channel_id]
                messages.append((topic, record.log_time, _TYPESTORE.deserialize_cdr(record.data, msgtype)))
    except Exception:  # noqa: BLE001 - the journal ends mid-record where the process died: keep what came before
        pass
    if info is None:
        raise EpisodeSchemaError(f"{path}: not a recorder journal (no {_START} metadata)")
    take = _Take(info, frames={c["name"]: {} for c in info["spec"]["cameras"]})
    pending: dict[str, list] = {}
    for topic, ns, msg in messages:
        t = ns / 1e9
        if topic == TOPIC_PROPRIO:
            take.states[t] = (np.asarray(msg.position, np.float32), None)
        elif topic == TOPIC_PROGRESS and t in take.states:
            take.states[t] = (take.states[t][0], float(msg.data))
        elif topic == TOPIC_ACTION:
            take.actions[t] = np.asarray(msg.data, np.float32)
        elif topic.startswith("/srpo/camera/"):
            cam = topic.split("/")[3]
            if cam in take.frames:
                take.frames[cam][t] = np.asarray(msg.data, np.uint8).reshape(msg.height, msg.width, 3)
        elif topic in (TOPIC_CHUNK, TOPIC_LOG_PROB, TOPIC_CHUNK_MEAN, TOPIC_CHUNK_LOG_STD, TOPIC_DECISION_STEP):
            pending.setdefault(topic, []).append((t, msg))
    for j, (t, msg) in enumerate(pending.get(TOPIC_CHUNK, [])):
        chunk = np.asarray(msg.data, np.float32).reshape([d.size for d in msg.layout.dim])
        lp = pending.get(TOPIC_LOG_PROB, [])
        means, stds = pending.get(TOPIC_CHUNK_MEAN, []), pending.get(TOPIC_CHUNK_LOG_STD, [])
        if j >= len(lp):
            break
        mean = np.asarray(means[j][1].data, np.float32).reshape(chunk.shape) if j < len(means) else None
        log_std = np.asarray(stds[j][1].data, np.float32).reshape(chunk.shape) if j < len(stds) and mean is not None else None
        take.decisions[t] = (chunk, float(lp[j][1].data), mean if log_std is not None else None, log_std)
    episode = assemble(take, info["spec"], None, tolerance)
    episode.meta.extra["recovered_from"] = path.name
    return episode


__all__ = ["EpisodeRecorder", "JOURNAL_SUFFIX", "RecorderConfig", "assemble", "recover_journal"]
