"""The policy node's input gate: the latest camera frames, robot state and instruction in, one fresh, consistent
``Observation`` out, or the reason there is none. ROS-agnostic: the node hands over decoded message fields.

The policy never acts on inputs it cannot trust. Each input is checked when it arrives (a bad message is refused by
name and does not replace the last good one), and the set is checked again at every control tick:

* images: ``rgb8`` or ``bgr8`` (converted), exactly the spec's size, a data buffer of ``height * step`` bytes, and no
  older than ``max_image_age_s`` at the tick;
* state: the spec's proprio names (in any order: they are matched by name), finite, no older than ``max_state_age_s``;
* instruction: non-empty text, at most ``max_instruction_chars``.

``why_not`` counts every refusal and every waiting tick by kind (``image_size``, ``stale_state``, ...): the node publishes them as diagnostics and the
fuzz tests count them. The observation's stamp is the state's stamp: the recorder files a decision under the step
whose state it saw.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

import numpy as np

from srpo.runtime.observation import Observation
from srpo.spec import RobotSpec

ENCODINGS = ("rgb8", "bgr8")


@dataclass
class InputGateConfig:
    """Freshness limits (seconds) and the instruction bound; the same names are the policy node's ROS parameters."""

    max_image_age_s: float = 0.25
    max_state_age_s: float = 0.25
    max_instruction_chars: int = 512

    def __post_init__(self) -> None:
        for name in ("max_image_age_s", "max_state_age_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_instruction_chars < 1:
            raise ValueError(f"max_instruction_chars must be >= 1, got {self.max_instruction_chars}")


@dataclass
class GatedObservation:
    """What one tick gets: an observation (batch 1) and its stamp, or None and the reason."""

    observation: Observation | None
    stamp: float | None
    reason: str | None

    @property
    def ready(self) -> bool:
        return self.observation is not None


class InputGate:
    """Holds the latest accepted inputs; thread-safe (subscriptions and the control timer may run concurrently)."""

    def __init__(self, spec: RobotSpec, config: InputGateConfig | None = None) -> None:
        self.spec, self.cfg = spec, config or InputGateConfig()
        self._cams = {c.name: (c.height, c.width) for c in spec.observation.cameras}
        self._proprio_names = list(spec.observation.proprio_names)
        self._images: dict[str, tuple[np.ndarray, float]] = {}
        self._state: tuple[np.ndarray, float] | None = None
        self._instruction: str | None = None
        self._lock = threading.Lock()
        self.why_not: Counter[str] = Counter()

    # ------------------------------------------------------------------------------------------------ inputs
    def image(self, camera: str, data: bytes | np.ndarray, height: int, width: int, encoding: str, step: int,
              stamp: float) -> str | None:
        """Offer one frame; returns None if accepted, else the reason it was refused."""
        refused = self._check_image(camera, data, height, width, encoding, step, stamp)
        if refused is not None:
            return self._refuse(*refused)
        buf = np.frombuffer(bytes(data) if not isinstance(data, np.ndarray) else data.tobytes(), np.uint8)
        rows = buf[: height * step].reshape(height, step)[:, : width * 3].reshape(height, width, 3)
        frame = np.ascontiguousarray(rows[..., ::-1] if encoding == "bgr8" else rows)
        with self._lock:
            self._images[camera] = (frame, float(stamp))
        return None

    def _check_image(self, camera, data, height, width, encoding, step, stamp) -> tuple[str, str] | None:
        if camera not in self._cams:
            return "image_camera", f"unknown camera {camera!r} (the spec has {sorted(self._cams)})"
        if encoding not in ENCODINGS:
            return "image_encoding", f"{camera}: encoding {encoding!r}, expected one of {ENCODINGS}"
        if (height, width) != self._cams[camera]:
            return "image_size", f"{camera}: {height}x{width}, the policy needs {self._cams[camera][0]}x{self._cams[camera][1]}"
        size = data.nbytes if isinstance(data, np.ndarray) else len(data)
        if step < width * 3 or size != height * step:
            return "image_size", f"{camera}: {size} bytes with step {step}, expected {height} rows of >= {width * 3} bytes"
        if not np.isfinite(stamp):
            return "image_stamp", f"{camera}: non-finite stamp"
        return None

    def state(self, names: list[str], positions: np.ndarray | list[float], stamp: float) -> str | None:
        """Offer the robot state (named joint values, e.g. a JointState); None if accepted, else the reason."""
        values = np.asarray(positions, dtype=np.float64)
        names = list(names)
        if values.shape != (len(names),):
            return self._refuse("state_shape", f"{len(names)} names for {values.size} values")
        missing = [n for n in self._proprio_names if n not in names]
        if missing:
            return self._refuse("state_names", f"missing {missing}")
        ordered = values[[names.index(n) for n in self._proprio_names]]
        if not np.all(np.isfinite(ordered)) or not np.isfinite(stamp):
            return self._refuse("state_non_finite", "non-finite values")
        with self._lock:
            self._state = (ordered.astype(np.float32), float(stamp))
        return None

    def instruction(self, text: str) -> str | None:
        """Offer the instruction; None if accepted, else the reason."""
        if not isinstance(text, str) or not text.strip():
            return self._refuse("instruction_empty", "empty")
        if len(text) > self.cfg.max_instruction_chars:
            return self._refuse("instruction_long", f"{len(text)} characters (max {self.cfg.max_instruction_chars})")
        with self._lock:
            self._instruction = text.strip()
        return None

    def clear(self) -> None:
        """Forget every input (a new episode must not act on the last one's frames)."""
        with self._lock:
            self._images.clear()
            self._state, self._instruction = None, None

    # ------------------------------------------------------------------------------------------------ per tick
    def observation(self, now: float) -> GatedObservation:
        """The observation to act on at time ``now``, or why there is none."""
        with self._lock:
            images, state, instruction = dict(self._images), self._state, self._instruction
        kind = reason = None
        if instruction is None:
            kind, reason = "wait_instruction", "waiting for an instruction"
        elif state is None:
            kind, reason = "wait_state", "waiting for the robot state"
        elif now - state[1] > self.cfg.max_state_age_s:
            kind, reason = "stale_state", f"robot state is {now - state[1]:.3f} s old (max {self.cfg.max_state_age_s})"
        else:
            for cam in self._cams:
                if cam not in images:
                    kind, reason = "wait_image", f"waiting for camera {cam}"
                    break
                age = now - images[cam][1]
                if age > self.cfg.max_image_age_s:
                    kind, reason = "stale_image", f"camera {cam} image is {age:.3f} s old (max {self.cfg.max_image_age_s})"
                    break
        if reason is not None:
            self.why_not[kind] += 1
            return GatedObservation(None, None, reason)
        obs = Observation({c: images[c][0][None] for c in self._cams}, state[0][None], [instruction])
        return GatedObservation(obs, state[1], None)

    def _refuse(self, kind: str, reason: str) -> str:
        self.why_not[kind] += 1
        return f"{kind.split('_')[0]} refused: {reason}"


__all__ = ["ENCODINGS", "GatedObservation", "InputGate", "InputGateConfig"]
