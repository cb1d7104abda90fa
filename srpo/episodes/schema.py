"""The episode schema: one definition used by sim rollouts, the ROS 2 trajectory recorder and the trainer.

An episode of length T holds T+1 observations (o_0 .. o_T, the last one is the state the final action led to) and T
actions (a_t is executed after o_t). Episodes are built step by step with ``EpisodeBuilder`` (``builder.py``), the
one recorder behind expert rollouts, policy rollouts and the ROS 2 recorder.

Policy decisions are optional. A decision j stores the step ``chunk_steps[j]`` of the observation it was computed
from (explicitly: on a robot the chunk arrives after inference, so its time says nothing about its observation), the
chunk it chose (K x A, in the action space of ``actions``, unclipped), the chunk's log-probability under the acting
policy and, for sampled chunks, the acting distribution itself: ``chunk_means`` and ``chunk_log_stds`` (K x A, in
the policy's normalised action space, at the sampling temperature). With them an offline learner recomputes the old
per-element log-densities of any chunk without the acting checkpoint; ``EpisodeMeta.policy_distribution`` says how
(family, space, noise correlation across the chunk).

Frames may be sparser than the control steps: a camera can run slower than the control loop, and a rollout that acts
in open-loop chunks only needs images where it decides (rendering is most of a simulated step). ``frame_steps`` then
lists the steps that have images, always the first (0) and the last (T); ``None`` means every step has one.

Per-episode metadata (``EpisodeMeta``) says where the episode came from: task, instruction, initial state and its
split, source (sim or robot), the policy version (unique per checkpoint: ``<lineage>@<weights fingerprint>``), seed,
length and success. ``success`` is None until someone labels a robot episode (``srpo episodes label``); learners
refuse unlabelled episodes by name.

Schema history: 1 = decision steps matched by timestamp, no distribution, success always known; 2 = this. Version 1
files load unchanged.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

SCHEMA_VERSION = 2
SOURCES = ("sim", "robot")
EPISODE_SPLITS = ("train", "heldout", "none")


class EpisodeSchemaError(ValueError):
    """An episode whose arrays or metadata break the schema."""


@dataclass
class EpisodeMeta:
    """Per-episode metadata, stored as JSON inside the episode file (see the module docstring)."""

    task: str
    instruction: str
    source: str
    success: bool | None
    length: int
    spec: dict[str, Any]
    suite: str = "tabletop"
    init_state_id: int | None = None
    split: str = "none"
    policy_version: str = "unknown"
    seed: int | None = None
    final_progress: float | None = None
    policy_distribution: dict[str, Any] | None = None
    """How ``chunk_means`` / ``chunk_log_stds`` define the acting distribution, e.g. ``{"family": "gaussian",
    "space": "normalised", "chunk_correlation": 0.0}``; None when the episode stores no distribution."""
    episode_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_unix: float = field(default_factory=time.time)
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise EpisodeSchemaError(f"source must be one of {SOURCES}, got {self.source!r}")
        if self.split not in EPISODE_SPLITS:
            raise EpisodeSchemaError(f"split must be one of {EPISODE_SPLITS}, got {self.split!r}")
        if not self.instruction.strip():
            raise EpisodeSchemaError("instruction is empty")
        if self.length < 0:
            raise EpisodeSchemaError(f"length must be >= 0, got {self.length}")
        if self.success is not None and not isinstance(self.success, (bool, np.bool_)):
            raise EpisodeSchemaError(f"success must be true, false or null (unlabelled), got {self.success!r}")
        if self.success is not None:
            self.success = bool(self.success)

    @property
    def labelled(self) -> bool:
        """Whether success is known (simulated episodes always; robot episodes once labelled)."""
        return self.success is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EpisodeMeta":
        known = {f.name for f in fields(cls)}
        missing = {"task", "instruction", "source", "success", "length", "spec"} - set(d)
        if missing:
            raise EpisodeSchemaError(f"episode metadata lacks {sorted(missing)}")
        if d.get("schema_version", SCHEMA_VERSION) > SCHEMA_VERSION:
            raise EpisodeSchemaError(f"episode schema {d['schema_version']} is newer than this srpo ({SCHEMA_VERSION})")
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class Episode:
    """A whole episode in memory (see the module docstring for the step convention)."""

    meta: EpisodeMeta
    timestamps: np.ndarray  # (T+1,) float64 seconds: time of each observation
    images: dict[str, np.ndarray]  # camera -> (F, H, W, 3) uint8, F = T+1 unless frame_steps is given
    proprio: np.ndarray  # (T+1, P) float32
    actions: np.ndarray  # (T, A) float32
    progress: np.ndarray | None = None  # (T+1,) float32 ground-truth progress (sim only, privileged)
    chunk_steps: np.ndarray | None = None  # (M,) int64 step index at which each chunk was sampled
    chunks: np.ndarray | None = None  # (M, K, A) float32
    chunk_log_probs: np.ndarray | None = None  # (M,) float32
    frame_steps: np.ndarray | None = None  # (F,) int64 steps that have images (0 and T included); None: every step
    chunk_means: np.ndarray | None = None  # (M, K, A) float32 acting distribution's mean, normalised units
    chunk_log_stds: np.ndarray | None = None  # (M, K, A) float32 acting distribution's log-std, normalised units

    @property
    def length(self) -> int:
        return int(self.actions.shape[0])

    @property
    def image_steps(self) -> np.ndarray:
        """The step of every stored frame: ``frame_steps``, or 0..T when every step has one."""
        return np.arange(self.length + 1) if self.frame_steps is None else self.frame_steps

    def held_frames(self, camera: str) -> np.ndarray:
        """(T+1, H, W, 3): for every step the latest frame at or before it (the zero-order hold a camera slower than
        the control loop gives), so sparse and dense recordings of one trajectory make the same video."""
        if self.frame_steps is None:
            return self.images[camera]
        latest = np.searchsorted(self.frame_steps, np.arange(self.length + 1), side="right") - 1
        return self.images[camera][latest]

    def held_frame_index(self, step: int) -> int:
        """Index into ``images[cam]`` of the latest frame at or before ``step``: the image a policy acting at
        ``step`` had (its input gate keeps the newest frame until a fresher one arrives; a camera slower than the
        control loop, or a frame lost in transport, leaves steps without their own)."""
        if not 0 <= step <= self.length:
            raise IndexError(f"step {step} outside 0..{self.length}")
        if self.frame_steps is None:
            return int(step)
        return int(np.searchsorted(self.frame_steps, step, side="right")) - 1

    def frame_index(self, step: int) -> int:
        """Index into ``images[cam]`` of the frame taken at ``step``; raises if that step has no frame."""
        if self.frame_steps is None:
            if not 0 <= step <= self.length:
                raise IndexError(f"step {step} outside 0..{self.length}")
            return int(step)
        i = int(np.searchsorted(self.frame_steps, step))
        if i >= len(self.frame_steps) or self.frame_steps[i] != step:
            raise IndexError(f"episode {self.meta.episode_id} has no frame at step {step} (frames are sparse)")
        return i

    def validate(self) -> "Episode":
        """Check every array against the schema and the metadata; raise EpisodeSchemaError naming the problem."""
        T = self.length
        spec = self.meta.spec
        if self.meta.length != T:
            raise EpisodeSchemaError(f"meta.length={self.meta.length} but there are {T} actions")
        if self.timestamps.shape != (T + 1,):
            raise EpisodeSchemaError(f"timestamps has shape {self.timestamps.shape}, expected ({T + 1},)")
        if T > 0 and np.any(np.diff(self.timestamps) <= 0):
            raise EpisodeSchemaError("timestamps must increase strictly")
        cams = {c["name"]: c for c in spec["cameras"]}
        if set(self.images) != set(cams):
            raise EpisodeSchemaError(f"cameras {sorted(self.images)} != spec cameras {sorted(cams)}")
        n_frames = T + 1
        if self.frame_steps is not None:
            fs = self.frame_steps
            if fs.ndim != 1 or fs.dtype.kind not in "iu" or len(fs) == 0:
                raise EpisodeSchemaError(f"frame_steps must be a non-empty 1-D integer array, got {fs.dtype} {fs.shape}")
            if fs[0] != 0 or fs[-1] != T or np.any(np.diff(fs) <= 0):
                raise EpisodeSchemaError(f"frame_steps must increase strictly from 0 to the last step ({T})")
            n_frames = len(fs)
        for name, frames in self.images.items():
            want = (n_frames, cams[name]["height"], cams[name]["width"], 3)
            if frames.shape != want or frames.dtype != np.uint8:
                raise EpisodeSchemaError(f"camera {name!r}: {frames.dtype} {frames.shape}, expected uint8 {want}")
        P, A = len(spec["proprio_names"]), len(spec["action_names"])
        if self.proprio.shape != (T + 1, P):
            raise EpisodeSchemaError(f"proprio has shape {self.proprio.shape}, expected ({T + 1}, {P})")
        if self.actions.shape != (T, A):
            raise EpisodeSchemaError(f"actions has shape {self.actions.shape}, expected ({T}, {A})")
        if not (np.all(np.isfinite(self.actions)) and np.all(np.isfinite(self.proprio))):
            raise EpisodeSchemaError("actions or proprio contain non-finite values")
        if self.progress is not None and self.progress.shape != (T + 1,):
            raise EpisodeSchemaError(f"progress has shape {self.progress.shape}, expected ({T + 1},)")
        given = [x is not None for x in (self.chunk_steps, self.chunks, self.chunk_log_probs)]
        if any(given) and not all(given):
            raise EpisodeSchemaError("chunk_steps, chunks and chunk_log_probs come together or not at all")
        if all(given):
            M = self.chunk_steps.shape[0]
            if self.chunks.ndim != 3 or self.chunks.shape[0] != M or self.chunks.shape[2] != A:
                raise EpisodeSchemaError(f"chunks has shape {self.chunks.shape}, expected ({M}, K, {A})")
            if self.chunk_log_probs.shape != (M,):
                raise EpisodeSchemaError(f"chunk_log_probs has shape {self.chunk_log_probs.shape}, expected ({M},)")
            if M and (self.chunk_steps.min() < 0 or self.chunk_steps.max() >= max(T, 1)):
                raise EpisodeSchemaError("chunk_steps must index actions")
            if np.any(np.diff(self.chunk_steps) <= 0):
                raise EpisodeSchemaError("chunk_steps must increase strictly (one decision per observation)")
        dist = [x is not None for x in (self.chunk_means, self.chunk_log_stds)]
        if any(dist) and not all(dist):
            raise EpisodeSchemaError("chunk_means and chunk_log_stds come together or not at all")
        if all(dist):
            if not all(given):
                raise EpisodeSchemaError("chunk_means and chunk_log_stds need the decisions (chunk_steps, chunks)")
            for name, arr in (("chunk_means", self.chunk_means), ("chunk_log_stds", self.chunk_log_stds)):
                if arr.shape != self.chunks.shape:
                    raise EpisodeSchemaError(f"{name} has shape {arr.shape}, expected {self.chunks.shape} (as chunks)")
                if not np.all(np.isfinite(arr)):
                    raise EpisodeSchemaError(f"{name} contains non-finite values")
        return self

    def require_labels(self) -> "Episode":
        """Return self if success is known, else raise naming the episode (learners need the label)."""
        if not self.meta.labelled:
            raise EpisodeSchemaError(f"episode {self.meta.episode_id} ({self.meta.task}) has no success label; "
                                     "label it first: srpo episodes label PATH --success true|false")
        return self
