"""The observation and action contract, defined once.

The simulator, the episode format, the trainer, the exporter and the ROS 2 nodes all read these dataclasses, so a
camera name, an image size or the meaning of action dimension 6 cannot drift between them.

Actions follow LIBERO / OpenVLA-OFT: 7 numbers in [-1, 1] = end-effector delta position (x, y, z), delta rotation
(roll, pitch, yaw) and gripper (-1 open, +1 close).

>>> spec = TABLETOP_SPEC
>>> spec.action.dim, [c.name for c in spec.observation.cameras]
(7, ['agentview', 'wrist'])
>>> safe = validate_action([0.5, 0, 0, 0, 0, 0, 3.0], spec.action)
>>> safe.action.tolist(), safe.n_clipped
([0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], 1)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

ACTION_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
PROPRIO_NAMES = ("ee_x", "ee_y", "ee_z", "ee_qw", "ee_qx", "ee_qy", "ee_qz", "gripper_opening")


@dataclass(frozen=True)
class CameraSpec:
    """One RGB camera: its name (also its key in observations and its topic suffix) and image size."""

    name: str
    height: int
    width: int

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"camera name {self.name!r} must be a Python identifier (it becomes a key and a topic)")
        if self.height < 8 or self.width < 8:
            raise ValueError(f"camera {self.name!r}: image size {self.height}x{self.width} is below the 8x8 minimum")


@dataclass(frozen=True)
class ObservationSpec:
    """What a policy sees each step: RGB cameras (uint8, H x W x 3), proprioception (float32) and an instruction."""

    cameras: tuple[CameraSpec, ...]
    proprio_names: tuple[str, ...] = PROPRIO_NAMES

    @property
    def proprio_dim(self) -> int:
        return len(self.proprio_names)

    def camera(self, name: str) -> CameraSpec:
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise KeyError(f"no camera named {name!r}; the spec has {[c.name for c in self.cameras]}")


@dataclass(frozen=True)
class ActionSpec:
    """A continuous action in [low, high] per dimension (normalised units; the env scales them to metres/radians)."""

    names: tuple[str, ...] = ACTION_NAMES
    low: float = -1.0
    high: float = 1.0

    @property
    def dim(self) -> int:
        return len(self.names)


@dataclass(frozen=True)
class RobotSpec:
    """The full contract of one embodiment: observation and action spec plus control rate."""

    observation: ObservationSpec
    action: ActionSpec = field(default_factory=ActionSpec)
    control_hz: float = 20.0

    def with_image_size(self, height: int, width: int) -> "RobotSpec":
        cams = tuple(replace(c, height=height, width=width) for c in self.observation.cameras)
        return replace(self, observation=replace(self.observation, cameras=cams))

    def to_dict(self) -> dict[str, Any]:
        return {
            "cameras": [{"name": c.name, "height": c.height, "width": c.width} for c in self.observation.cameras],
            "proprio_names": list(self.observation.proprio_names),
            "action_names": list(self.action.names),
            "action_low": self.action.low,
            "action_high": self.action.high,
            "control_hz": self.control_hz,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RobotSpec":
        try:
            cams = tuple(CameraSpec(c["name"], int(c["height"]), int(c["width"])) for c in d["cameras"])
            return cls(
                observation=ObservationSpec(cameras=cams, proprio_names=tuple(d["proprio_names"])),
                action=ActionSpec(tuple(d["action_names"]), float(d["action_low"]), float(d["action_high"])),
                control_hz=float(d["control_hz"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed robot spec {d!r}: {exc}") from exc

    def mismatch(self, other: "RobotSpec") -> list[str]:
        """Human-readable differences between two specs (empty when they match)."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: {a[k]!r} != {b[k]!r}" for k in a if a[k] != b[k]]


TABLETOP_SPEC = RobotSpec(
    observation=ObservationSpec(cameras=(CameraSpec("agentview", 64, 64), CameraSpec("wrist", 64, 64))),
)


@dataclass(frozen=True)
class SafeAction:
    """The action actually applied after validation, and how many components were clipped into range."""

    action: np.ndarray
    n_clipped: int


class InvalidActionError(ValueError):
    """An action that must never reach a simulator or an arm (wrong shape or non-finite)."""


def validate_action(action: Sequence[float] | np.ndarray, spec: ActionSpec) -> SafeAction:
    """Check an action against the spec: wrong shape or NaN/inf raise, out-of-range values are clipped.

    Clipping (rather than rejecting) out-of-range values is the documented behaviour because sampled Gaussian policies
    legitimately produce values slightly outside [-1, 1]; a non-finite value signals a bug and is refused.
    """
    try:
        arr = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidActionError(f"action is not numeric: {exc}") from exc
    if arr.shape != (spec.dim,):
        raise InvalidActionError(f"action has shape {arr.shape}, expected ({spec.dim},) = {list(spec.names)}")
    bad = ~np.isfinite(arr)
    if bad.any():
        names = [spec.names[i] for i in np.flatnonzero(bad)]
        raise InvalidActionError(f"action has non-finite values in {names}: {arr.tolist()}")
    clipped = np.clip(arr, spec.low, spec.high)
    return SafeAction(clipped, int(np.count_nonzero(clipped != arr)))
