"""``EpisodeBuilder``: the one recorder. Expert rollouts, policy rollouts and the ROS 2 trajectory recorder all
build their episodes through it, so every episode on disk follows the same step convention and the same checks.

The calls follow the control loop (see ``schema.py`` for the convention)::

    b = EpisodeBuilder(spec, task=..., instruction=..., source="robot", policy_version=policy.version)
    b.observe(t0, proprio, images)                 # o_0 (frames: first and last observation need them)
    b.decide(chunk, log_prob, mean, log_std)       # optional: a policy decision from the latest observation
    b.act(action)                                  # a_0, executed after o_0
    b.observe(t1, proprio, images=None)            # o_1 (no frame: the camera is slower than the loop)
    ...
    episode = b.finish(success=None)               # None: unknown until labelled; returns a validated Episode

Every call checks its input and raises ``EpisodeSchemaError`` naming the problem; a rejected call changes nothing,
so a recorder can drop one bad message and go on. ``decide(step=s)`` records a decision computed from an earlier
observation ``s`` (a chunk that arrives after asynchronous inference). Decisions whose actions never ran (made at
the last observation) are dropped at ``finish``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from srpo.episodes.schema import Episode, EpisodeMeta, EpisodeSchemaError


class EpisodeBuilder:
    """Accumulates one episode step by step and turns it into a validated ``Episode``."""

    def __init__(self, spec: dict[str, Any], *, task: str, instruction: str, source: str,
                 policy_version: str = "unknown", suite: str = "tabletop", init_state_id: int | None = None,
                 split: str = "none", seed: int | None = None,
                 policy_distribution: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> None:
        self.spec = spec
        # metadata is checked now (a bad source or empty instruction fails before the first step, not at the end)
        self._meta = EpisodeMeta(task=task, instruction=instruction, source=source, success=None, length=0,
                                 spec=spec, suite=suite, init_state_id=init_state_id, split=split,
                                 policy_version=policy_version, seed=seed, policy_distribution=policy_distribution,
                                 extra=dict(extra or {}))
        self._cams = {c["name"]: (c["height"], c["width"], 3) for c in spec["cameras"]}
        self._proprio_dim, self._action_dim = len(spec["proprio_names"]), len(spec["action_names"])
        self.times: list[float] = []
        self.proprio: list[np.ndarray] = []
        self.progress: list[float] = []
        self.actions: list[np.ndarray] = []
        self.frames: dict[str, list[np.ndarray]] = {c: [] for c in self._cams}
        self.frame_steps: list[int] = []
        self.decision_steps: list[int] = []
        self.chunks: list[np.ndarray] = []
        self.log_probs: list[float] = []
        self.means: list[np.ndarray] = []
        self.log_stds: list[np.ndarray] = []

    # ------------------------------------------------------------------------------------------------ properties
    @property
    def step(self) -> int:
        """Index of the latest observation (-1 before the first)."""
        return len(self.times) - 1

    @property
    def length(self) -> int:
        """Actions recorded so far."""
        return len(self.actions)

    @property
    def awaiting_action(self) -> bool:
        """True after an observation, until its action is recorded."""
        return len(self.times) == len(self.actions) + 1

    # ------------------------------------------------------------------------------------------------ recording
    def observe(self, t: float, proprio: np.ndarray, images: dict[str, np.ndarray] | None = None,
                progress: float | None = None) -> int:
        """Record observation o_step at time ``t`` (seconds); returns its step index.

        ``images`` maps every camera of the spec to an HxWx3 uint8 frame, or is None for a step without frames.
        ``progress`` (simulators only) is given at every observation or at none."""
        if self.awaiting_action:
            raise EpisodeSchemaError(f"observation after step {self.step} without the action in between")
        t = float(t)
        if not np.isfinite(t) or (self.times and t <= self.times[-1]):
            raise EpisodeSchemaError(f"observation time {t} must be finite and later than {self.times[-1:]}")
        proprio = np.asarray(proprio, dtype=np.float32)
        if proprio.shape != (self._proprio_dim,) or not np.all(np.isfinite(proprio)):
            raise EpisodeSchemaError(f"proprio must be {self._proprio_dim} finite values, got shape {proprio.shape}")
        if self.times and (progress is None) != (not self.progress):
            raise EpisodeSchemaError("progress must be given at every observation or at none")
        if images is not None:
            if set(images) != set(self._cams):
                raise EpisodeSchemaError(f"images for cameras {sorted(images)}, the spec has {sorted(self._cams)}")
            for name, img in images.items():
                if img.shape != self._cams[name] or img.dtype != np.uint8:
                    raise EpisodeSchemaError(f"camera {name!r}: {img.dtype} {img.shape}, expected uint8 "
                                             f"{self._cams[name]}")
        elif not self.times:
            raise EpisodeSchemaError("the first observation needs images from every camera")
        self.times.append(t)
        self.proprio.append(proprio)
        if progress is not None:
            self.progress.append(float(progress))
        if images is not None:
            self.frame_steps.append(self.step)
            for name, img in images.items():
                self.frames[name].append(np.array(img, copy=True))  # the caller may reuse its buffers
        return self.step

    def act(self, action: np.ndarray) -> None:
        """Record the action executed after the latest observation (in env units, as applied)."""
        if not self.awaiting_action:
            raise EpisodeSchemaError("an action needs an observation before it" if not self.times else
                                     f"second action for step {self.step}")
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (self._action_dim,) or not np.all(np.isfinite(action)):
            raise EpisodeSchemaError(f"action must be {self._action_dim} finite values, got {action.tolist()}")
        self.actions.append(action.copy())

    def decide(self, chunk: np.ndarray, log_prob: float, mean: np.ndarray | None = None,
               log_std: np.ndarray | None = None, step: int | None = None) -> None:
        """Record a policy decision: the chunk (K x A, env units, unclipped) computed from observation ``step``
        (default: the latest), its log-probability and optionally the acting distribution (normalised units)."""
        step = self.step if step is None else int(step)
        if not 0 <= step <= self.step:
            raise EpisodeSchemaError(f"decision at step {step}, but the latest observation is step {self.step}")
        if self.decision_steps and step <= self.decision_steps[-1]:
            raise EpisodeSchemaError(f"decision at step {step} after one at step {self.decision_steps[-1]}")
        chunk = np.asarray(chunk, dtype=np.float32)
        if chunk.ndim != 2 or chunk.shape[1] != self._action_dim or (self.chunks and chunk.shape != self.chunks[0].shape):
            raise EpisodeSchemaError(f"chunk has shape {chunk.shape}, expected (K, {self._action_dim}) like the others")
        if not np.all(np.isfinite(chunk)) or not np.isfinite(log_prob):
            raise EpisodeSchemaError("chunk and log_prob must be finite")
        if (mean is None) != (log_std is None) or (self.chunks and (mean is None) != (not self.means)):
            raise EpisodeSchemaError("mean and log_std come together, for every decision of an episode or for none")
        if mean is not None:
            mean = np.asarray(mean, dtype=np.float32)
            log_std = np.broadcast_to(np.asarray(log_std, dtype=np.float32), chunk.shape).copy()
            if mean.shape != chunk.shape or not (np.all(np.isfinite(mean)) and np.all(np.isfinite(log_std))):
                raise EpisodeSchemaError(f"mean/log_std must be finite with the chunk's shape {chunk.shape}")
            self.means.append(mean)
            self.log_stds.append(log_std)
        self.decision_steps.append(step)
        self.chunks.append(chunk.copy())
        self.log_probs.append(float(log_prob))

    def set_policy_distribution(self, description: dict[str, Any]) -> None:
        """Say how the decisions' ``mean`` / ``log_std`` define the acting distribution (``EpisodeMeta``)."""
        self._meta.policy_distribution = dict(description)

    # ------------------------------------------------------------------------------------------------ result
    def finish(self, success: bool | None, final_progress: float | None = None,
               extra: dict[str, Any] | None = None) -> Episode:
        """The validated episode. ``success`` None: unknown until labelled. The last observation needs a frame."""
        if not self.times:
            raise EpisodeSchemaError("an episode needs at least one observation")
        if not self.awaiting_action:
            raise EpisodeSchemaError(f"the episode ends with action {self.length - 1}; finish after an observation")
        if self.frame_steps[-1] != self.step:
            raise EpisodeSchemaError(f"the last observation (step {self.step}) has no frame; the first and the last "
                                     "observation of an episode need images")
        T = self.length
        keep = [j for j, s in enumerate(self.decision_steps) if s < T]  # a decision at o_T never acted
        meta = EpisodeMeta(**{**self._meta.to_dict(), "success": success, "length": T,
                              "final_progress": final_progress if final_progress is not None else
                              (self.progress[-1] if self.progress else None),
                              "extra": {**self._meta.extra, **(extra or {})}})
        dense = len(self.frame_steps) == T + 1
        has = bool(keep)
        episode = Episode(
            meta=meta,
            timestamps=np.asarray(self.times, dtype=np.float64),
            images={c: np.stack(v) for c, v in self.frames.items()},
            proprio=np.stack(self.proprio).astype(np.float32),
            actions=np.stack(self.actions) if self.actions else np.zeros((0, self._action_dim), np.float32),
            progress=np.asarray(self.progress, dtype=np.float32) if self.progress else None,
            chunk_steps=np.asarray([self.decision_steps[j] for j in keep], dtype=np.int64) if has else None,
            chunks=np.stack([self.chunks[j] for j in keep]) if has else None,
            chunk_log_probs=np.asarray([self.log_probs[j] for j in keep], dtype=np.float32) if has else None,
            frame_steps=None if dense else np.asarray(self.frame_steps, dtype=np.int64),
            chunk_means=np.stack([self.means[j] for j in keep]) if has and self.means else None,
            chunk_log_stds=np.stack([self.log_stds[j] for j in keep]) if has and self.means else None,
        )
        if episode.chunk_means is None:
            episode.meta.policy_distribution = None
        return episode.validate()
