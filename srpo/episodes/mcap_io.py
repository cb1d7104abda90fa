"""Episodes as MCAP files with ROS 2 messages: open them in Foxglove or ``ros2 bag``, read them here without ROS.

One episode = one ``.mcap`` file (profile ``ros2``, CDR-encoded standard messages, zstd chunks)::

    /srpo/camera/<name>/image_raw   sensor_msgs/msg/Image (rgb8)        T+1 messages
    /srpo/proprio                   sensor_msgs/msg/JointState          T+1 (name = spec proprio names)
    /srpo/action                    std_msgs/msg/Float32MultiArray      T
    /srpo/policy/decision_step      std_msgs/msg/Int64                  M, optional: the step each decision saw
    /srpo/policy/action_chunk       std_msgs/msg/Float32MultiArray      M (K x A layout), optional
    /srpo/policy/log_prob           std_msgs/msg/Float64                M, optional
    /srpo/policy/chunk_mean         std_msgs/msg/Float32MultiArray      M (K x A), optional: acting distribution
    /srpo/policy/chunk_log_std      std_msgs/msg/Float32MultiArray      M (K x A), optional
    /srpo/sim/progress              std_msgs/msg/Float32                T+1, sim only (privileged)
    metadata "srpo_episode"         {"json": EpisodeMeta as JSON}

The i-th message of every ``/srpo/policy/*`` topic belongs to decision i. Schema-1 files have no
``decision_step`` topic; their decisions are matched to steps by timestamp, as they were written.

Writes are atomic: the writer streams into a hidden temp file beside the target and renames it only after the MCAP
footer is written and fsynced. Reads verify the chunk, data-section and summary CRCs and the trailing magic, so a
truncated file or a flipped byte raises ``CorruptEpisodeError`` with the path instead of loading wrong data.

>>> # write_episode(path, episode); ep = read_episode(path); meta = read_meta(path)
"""

from __future__ import annotations

import io
import json
import os
import struct
import time
import zlib
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from mcap.exceptions import McapError
from mcap.reader import make_reader
from mcap.records import Channel, DataEnd, Footer, Message, Metadata, Schema
from mcap.stream_reader import StreamReader
from mcap.writer import CompressionType, Writer
from rosbags.typesys import Stores, get_typestore

from srpo.episodes.schema import SCHEMA_VERSION, Episode, EpisodeMeta, EpisodeSchemaError

TOPIC_IMAGE = "/srpo/camera/{}/image_raw"
TOPIC_PROPRIO = "/srpo/proprio"
TOPIC_ACTION = "/srpo/action"
TOPIC_CHUNK = "/srpo/policy/action_chunk"
TOPIC_LOG_PROB = "/srpo/policy/log_prob"
TOPIC_DECISION_STEP = "/srpo/policy/decision_step"
TOPIC_CHUNK_MEAN = "/srpo/policy/chunk_mean"
TOPIC_CHUNK_LOG_STD = "/srpo/policy/chunk_log_std"
TOPIC_PROGRESS = "/srpo/sim/progress"
METADATA_NAME = "srpo_episode"
MCAP_MAGIC = b"\x89MCAP0\r\n"
_FOOTER_LEN = 1 + 8 + 8 + 8 + 4  # opcode, length, summary_start, summary_offset_start, summary_crc
_DATA_END_LEN = 1 + 8 + 4  # opcode, length, data_section_crc

_TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
_T = _TYPESTORE.types
IMAGE_TYPE = "sensor_msgs/msg/Image"
JOINT_STATE_TYPE = "sensor_msgs/msg/JointState"
ARRAY_TYPE = "std_msgs/msg/Float32MultiArray"
FLOAT64_TYPE = "std_msgs/msg/Float64"
FLOAT32_TYPE = "std_msgs/msg/Float32"
INT64_TYPE = "std_msgs/msg/Int64"


class CorruptEpisodeError(IOError):
    """An episode file that is truncated, corrupted or inconsistent; the message names the file."""


def _stamp(t: float):
    sec = int(np.floor(t))
    return _T["builtin_interfaces/msg/Time"](sec=sec, nanosec=int(round((t - sec) * 1e9)) % 1_000_000_000)


def _header(t: float, frame_id: str):
    return _T["std_msgs/msg/Header"](stamp=_stamp(t), frame_id=frame_id)


def _float_array(values: np.ndarray, labels: tuple[str, ...]):
    values = np.asarray(values, dtype=np.float32)
    dims, stride = [], int(values.size)
    for label, size in zip(labels, values.shape):
        dims.append(_T["std_msgs/msg/MultiArrayDimension"](label=label, size=int(size), stride=stride))
        stride //= max(int(size), 1)
    layout = _T["std_msgs/msg/MultiArrayLayout"](dim=dims, data_offset=0)
    return _T[ARRAY_TYPE](layout=layout, data=values.reshape(-1))


class EpisodeWriter:
    """Streams one episode into an MCAP file; ``close(meta)`` makes it appear atomically at ``path``.

    Used whole by ``write_episode`` for simulated episodes and step by step by the ROS 2 trajectory recorder.
    Leaving the ``with`` block through an exception discards the partial file.
    """

    def __init__(self, path: str | os.PathLike, spec: dict[str, Any], journal: bool = False) -> None:
        """``journal``: write straight into ``path`` (no rename), uncompressed, each message flushed as soon as it is
        written: the crash copy a recorder keeps of an open episode (a SIGKILL loses at most one message)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp_path = self.path if journal else self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self.spec = spec
        self._flush_each = journal
        self._file = open(self.tmp_path, "wb")
        self._writer = (Writer(self._file, compression=CompressionType.NONE, chunk_size=1, enable_data_crcs=True)
                        if journal else Writer(self._file, compression=CompressionType.ZSTD, enable_data_crcs=True))
        self._writer.start(profile="ros2", library="srpo")
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, int] = {}
        self._sequence: dict[str, int] = defaultdict(int)
        self.n_observations = 0
        self.n_actions = 0
        self._closed = False

    def _channel(self, topic: str, msgtype: str) -> int:
        if topic not in self._channels:
            if msgtype not in self._schemas:
                text, _ = _TYPESTORE.generate_msgdef(msgtype, ros_version=2)
                self._schemas[msgtype] = self._writer.register_schema(msgtype, "ros2msg", text.encode())
            self._channels[topic] = self._writer.register_channel(topic, "cdr", self._schemas[msgtype])
        return self._channels[topic]

    def _write(self, topic: str, msgtype: str, msg: Any, t: float) -> None:
        ns = int(round(t * 1e9))
        data = _TYPESTORE.serialize_cdr(msg, msgtype)
        self._writer.add_message(self._channel(topic, msgtype), ns, data, ns, sequence=self._sequence[topic])
        self._sequence[topic] += 1
        if self._flush_each:
            self._file.flush()

    def add_metadata(self, name: str, data: dict[str, str]) -> None:
        """A named metadata record (string to string)."""
        self._writer.add_metadata(name, data)
        if self._flush_each:
            self._file.flush()

    def write_observation(self, t: float, images: dict[str, np.ndarray] | None, proprio: np.ndarray,
                          progress: float | None = None) -> None:
        """One observation at time ``t``; ``images`` None records a step without frames (see ``Episode.frame_steps``:
        the first and the last observation of an episode need them)."""
        for cam in self.spec["cameras"] if images is not None else []:
            img = images.get(cam["name"])
            if img is None:
                raise EpisodeSchemaError(f"observation lacks camera {cam['name']!r}")
            self.write_frame(t, cam["name"], img)
        self.write_state(t, proprio, progress)

    def write_frame(self, t: float, camera: str, img: np.ndarray) -> None:
        """One camera frame at time ``t`` (``write_observation`` writes a whole step; a recorder's journal writes
        frames as they arrive)."""
        cams = {c["name"]: c for c in self.spec["cameras"]}
        if camera not in cams:
            raise EpisodeSchemaError(f"unknown camera {camera!r} (the spec has {sorted(cams)})")
        want = (cams[camera]["height"], cams[camera]["width"], 3)
        if img.shape != want or img.dtype != np.uint8:
            raise EpisodeSchemaError(f"camera {camera!r}: {img.dtype} {img.shape}, expected uint8 {want}")
        msg = _T[IMAGE_TYPE](
            header=_header(t, camera), height=want[0], width=want[1], encoding="rgb8", is_bigendian=0,
            step=want[1] * 3, data=np.ascontiguousarray(img).reshape(-1),
        )
        self._write(TOPIC_IMAGE.format(camera), IMAGE_TYPE, msg, t)

    def write_state(self, t: float, proprio: np.ndarray, progress: float | None = None) -> None:
        """The proprioception (and, in simulation, the privileged progress) of the observation at time ``t``."""
        names = list(self.spec["proprio_names"])
        proprio = np.asarray(proprio, dtype=np.float64)
        if proprio.shape != (len(names),):
            raise EpisodeSchemaError(f"proprio has shape {proprio.shape}, expected ({len(names)},)")
        empty = np.zeros(0, dtype=np.float64)
        self._write(TOPIC_PROPRIO, JOINT_STATE_TYPE, _T[JOINT_STATE_TYPE](
            header=_header(t, "proprio"), name=names, position=proprio, velocity=empty, effort=empty), t)
        if progress is not None:
            self._write(TOPIC_PROGRESS, FLOAT32_TYPE, _T[FLOAT32_TYPE](data=float(progress)), t)
        self.n_observations += 1

    def write_action(self, t: float, action: np.ndarray) -> None:
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (len(self.spec["action_names"]),) or not np.all(np.isfinite(action)):
            raise EpisodeSchemaError(f"action {action.tolist()} is not a finite vector of the spec's size")
        self._write(TOPIC_ACTION, ARRAY_TYPE, _float_array(action, ("action",)), t)
        self.n_actions += 1

    def write_decision(self, t: float, step: int, chunk: np.ndarray, log_prob: float,
                       mean: np.ndarray | None = None, log_std: np.ndarray | None = None) -> None:
        """One policy decision, logged at time ``t``, computed from the observation of ``step``; ``mean`` and
        ``log_std`` (the acting distribution) are given for every decision of an episode or for none."""
        self._write(TOPIC_DECISION_STEP, INT64_TYPE, _T[INT64_TYPE](data=int(step)), t)
        self._write(TOPIC_CHUNK, ARRAY_TYPE, _float_array(chunk, ("chunk", "action")), t)
        self._write(TOPIC_LOG_PROB, FLOAT64_TYPE, _T[FLOAT64_TYPE](data=float(log_prob)), t)
        if (mean is None) != (log_std is None):
            raise EpisodeSchemaError("a decision's mean and log_std come together or not at all")
        if mean is not None:
            self._write(TOPIC_CHUNK_MEAN, ARRAY_TYPE, _float_array(mean, ("chunk", "action")), t)
            self._write(TOPIC_CHUNK_LOG_STD, ARRAY_TYPE, _float_array(log_std, ("chunk", "action")), t)

    def close(self, meta: EpisodeMeta) -> Path:
        """Finish the file with ``meta`` and rename it into place. Returns the final path."""
        if self.n_observations != self.n_actions + 1 or meta.length != self.n_actions:
            self.abort()
            raise EpisodeSchemaError(
                f"{self.path}: {self.n_observations} observations, {self.n_actions} actions and meta.length="
                f"{meta.length}; an episode needs length = actions = observations - 1"
            )
        self._writer.add_metadata(METADATA_NAME, {"json": json.dumps(meta.to_dict(), sort_keys=True)})
        self._writer.finish()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.tmp_path, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Discard the partial file."""
        if not self._closed:
            self._file.close()
            self.tmp_path.unlink(missing_ok=True)
            self._closed = True

    def __enter__(self) -> "EpisodeWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self._closed:
            self.abort()


def write_episode(path: str | os.PathLike, episode: Episode) -> Path:
    """Validate ``episode`` and write it atomically to ``path``."""
    episode.validate()
    with EpisodeWriter(path, episode.meta.spec) as w:
        chunk_at = {}
        if episode.chunk_steps is not None:
            chunk_at = {int(s): i for i, s in enumerate(episode.chunk_steps)}
        has_dist = episode.chunk_means is not None
        frame_at = {int(s): i for i, s in enumerate(episode.image_steps)}
        for t in range(episode.length + 1):
            ts = float(episode.timestamps[t])
            progress = None if episode.progress is None else float(episode.progress[t])
            images = {k: v[frame_at[t]] for k, v in episode.images.items()} if t in frame_at else None
            w.write_observation(ts, images, episode.proprio[t], progress)
            if t < episode.length:
                if t in chunk_at:
                    i = chunk_at[t]
                    w.write_decision(ts, t, episode.chunks[i], float(episode.chunk_log_probs[i]),
                                     episode.chunk_means[i] if has_dist else None,
                                     episode.chunk_log_stds[i] if has_dist else None)
                w.write_action(ts, episode.actions[t])
        return w.close(replace(episode.meta, schema_version=SCHEMA_VERSION))  # the file is in today's layout


def label_episode(path: str | os.PathLike, success: bool) -> EpisodeMeta:
    """Set the success label of the episode at ``path`` (e.g. a robot episode recorded with success unknown).

    The file is fully verified, then rewritten atomically: a crash leaves the old file, never a partial one."""
    episode = read_episode(path)
    episode.meta.success = bool(success)
    episode.meta.extra = {**episode.meta.extra, "labelled_unix": time.time()}
    write_episode(path, episode)
    return episode.meta


def check_integrity(raw: bytes, path: Path) -> None:
    """Verify every byte of an MCAP file written by ``EpisodeWriter`` before parsing it.

    The data-section CRC (in the DataEnd record) covers the magic, header, schemas, channels, chunks and metadata;
    the summary CRC (in the footer) covers the summary section and the footer's own fields; the DataEnd record and
    the trailing magic are checked structurally. So a truncated file or any single flipped byte is caught.
    """
    if len(raw) < 2 * len(MCAP_MAGIC) + _FOOTER_LEN + _DATA_END_LEN or raw[:8] != MCAP_MAGIC or raw[-8:] != MCAP_MAGIC:
        raise CorruptEpisodeError(f"{path}: truncated or not an MCAP file (magic bytes missing)")
    footer_at = len(raw) - 8 - _FOOTER_LEN
    opcode, length, summary_start, _, summary_crc = struct.unpack("<BQQQI", raw[footer_at:-8])
    if opcode != 0x02 or length != _FOOTER_LEN - 9:
        raise CorruptEpisodeError(f"{path}: damaged MCAP footer")
    data_end_at = (summary_start or footer_at) - _DATA_END_LEN
    if not len(MCAP_MAGIC) <= data_end_at <= footer_at - _DATA_END_LEN:
        raise CorruptEpisodeError(f"{path}: damaged MCAP footer (summary offset out of range)")
    if summary_crc == 0 or zlib.crc32(raw[data_end_at + _DATA_END_LEN : footer_at + _FOOTER_LEN - 4]) != summary_crc:
        raise CorruptEpisodeError(f"{path}: summary section CRC mismatch (file corrupted)")
    opcode, length, data_crc = struct.unpack("<BQI", raw[data_end_at : data_end_at + _DATA_END_LEN])
    if opcode != 0x0F or length != 4:
        raise CorruptEpisodeError(f"{path}: damaged MCAP data-end record")
    if data_crc == 0 or zlib.crc32(raw[:data_end_at]) != data_crc:
        raise CorruptEpisodeError(f"{path}: data section CRC mismatch (file corrupted)")


def read_episode(path: str | os.PathLike) -> Episode:
    """Load and fully verify one episode file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CorruptEpisodeError(f"{path}: cannot read episode: {exc}") from exc
    check_integrity(raw, path)
    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, str]] = {}
    messages: dict[str, list[tuple[int, Any]]] = defaultdict(list)
    meta_json = None
    saw_data_end = False
    try:
        for record in StreamReader(io.BytesIO(raw)).records:
            if isinstance(record, Schema):
                schemas[record.id] = record.name
            elif isinstance(record, Channel):
                channels[record.id] = (record.topic, schemas[record.schema_id])
            elif isinstance(record, Message):
                topic, msgtype = channels[record.channel_id]
                messages[topic].append((record.log_time, _TYPESTORE.deserialize_cdr(record.data, msgtype)))
            elif isinstance(record, Metadata) and record.name == METADATA_NAME:
                meta_json = record.metadata.get("json")
            elif isinstance(record, DataEnd):
                saw_data_end = True
            elif isinstance(record, Footer):
                break
    except Exception as exc:  # noqa: BLE001 - decoders raise many types on bad bytes; all mean "corrupt"
        raise CorruptEpisodeError(f"{path}: corrupted MCAP data: {type(exc).__name__}: {exc}") from exc
    if not saw_data_end or meta_json is None:
        raise CorruptEpisodeError(f"{path}: incomplete episode (no data end or no srpo_episode metadata)")
    try:
        meta = EpisodeMeta.from_dict(json.loads(meta_json))
        return _assemble(meta, messages).validate()
    except (EpisodeSchemaError, json.JSONDecodeError, TypeError, ValueError) as exc:
        raise CorruptEpisodeError(f"{path}: episode does not match the schema: {exc}") from exc


def _assemble(meta: EpisodeMeta, messages: dict[str, list[tuple[int, Any]]]) -> Episode:
    proprio_msgs = messages.get(TOPIC_PROPRIO, [])
    step_of_time = {t: i for i, (t, _) in enumerate(proprio_msgs)}
    images, frame_steps = {}, None
    for cam in meta.spec["cameras"]:
        msgs = messages.get(TOPIC_IMAGE.format(cam["name"]), [])
        images[cam["name"]] = np.stack([m.data.reshape(m.height, m.width, 3) for _, m in msgs]) if msgs else np.zeros(
            (0, cam["height"], cam["width"], 3), np.uint8)
        if len(msgs) != len(proprio_msgs):  # sparse frames: the steps they belong to, from their timestamps
            if any(t not in step_of_time for t, _ in msgs):
                raise EpisodeSchemaError(f"camera {cam['name']!r} has frames at times with no observation")
            steps = np.array([step_of_time[t] for t, _ in msgs], dtype=np.int64)
            if frame_steps is not None and not np.array_equal(steps, frame_steps):
                raise EpisodeSchemaError("cameras have frames at different steps")
            frame_steps = steps
    if [m.name for _, m in proprio_msgs[:1]] not in ([], [list(meta.spec["proprio_names"])]):
        raise EpisodeSchemaError("proprio joint names differ from the episode spec")
    proprio = np.array([m.position for _, m in proprio_msgs], dtype=np.float32).reshape(len(proprio_msgs), -1)
    actions = np.array([m.data for _, m in messages.get(TOPIC_ACTION, [])], dtype=np.float32)
    actions = actions.reshape(len(actions), len(meta.spec["action_names"]))
    timestamps = np.array([t for t, _ in proprio_msgs], dtype=np.float64) / 1e9
    progress = None
    if TOPIC_PROGRESS in messages:
        progress = np.array([m.data for _, m in messages[TOPIC_PROGRESS]], dtype=np.float32)
    chunk_steps = chunks = log_probs = means = log_stds = None
    if TOPIC_CHUNK in messages:
        chunk_msgs = messages[TOPIC_CHUNK]
        if TOPIC_DECISION_STEP in messages:
            chunk_steps = np.array([m.data for _, m in messages[TOPIC_DECISION_STEP]], dtype=np.int64)
        else:  # schema 1: a decision was logged at the time of the observation it saw
            if any(t not in step_of_time for t, _ in chunk_msgs):
                raise EpisodeSchemaError("policy chunks at times with no observation (schema 1 file)")
            chunk_steps = np.array([step_of_time[t] for t, _ in chunk_msgs], dtype=np.int64)
        chunks = _stack_arrays(chunk_msgs)
        log_probs = np.array([m.data for _, m in messages.get(TOPIC_LOG_PROB, [])], dtype=np.float32)
        if TOPIC_CHUNK_MEAN in messages or TOPIC_CHUNK_LOG_STD in messages:
            means = _stack_arrays(messages.get(TOPIC_CHUNK_MEAN, []))
            log_stds = _stack_arrays(messages.get(TOPIC_CHUNK_LOG_STD, []))
        if len(chunk_steps) != len(chunk_msgs):
            raise EpisodeSchemaError(f"{len(chunk_msgs)} policy chunks but {len(chunk_steps)} decision steps")
    return Episode(meta, timestamps, images, proprio, actions, progress, chunk_steps, chunks, log_probs, frame_steps,
                   means, log_stds)


def _stack_arrays(msgs: list[tuple[int, Any]]) -> np.ndarray:
    """Float32MultiArray messages -> one (N, *layout) array."""
    if not msgs:
        return np.zeros((0, 0, 0), np.float32)
    return np.stack([m.data.reshape([d.size for d in m.layout.dim]) for _, m in msgs]).astype(np.float32)


def read_meta(path: str | os.PathLike) -> EpisodeMeta:
    """Read only the metadata (fast: uses the MCAP summary index); ``read_episode`` does the full check."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            for record in make_reader(f).iter_metadata():
                if record.name == METADATA_NAME:
                    return EpisodeMeta.from_dict(json.loads(record.metadata["json"]))
    except (McapError, OSError, KeyError, ValueError, struct.error, EOFError, EpisodeSchemaError) as exc:
        raise CorruptEpisodeError(f"{path}: cannot read episode metadata: {type(exc).__name__}: {exc}") from exc
    raise CorruptEpisodeError(f"{path}: no srpo_episode metadata")
