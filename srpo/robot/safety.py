"""The last gate between a policy and an arm: clamps, a workspace box, speed limits, an e-stop and two watchdogs.

Every action a policy (or a person) commands passes through :meth:`SafetyFilter.filter` before a driver sees it, and
the filter answers with a :class:`SafetyDecision`: the action to send, or a *hold* (zero motion, the last gripper
command) with the reasons why. It never raises on bad input: a NaN, a wrong shape or a string from a buggy policy
costs one hold, never the control loop. The checks, in order:

1. e-stop engaged (latched until :meth:`EStop.release`)                        -> hold, ``"e-stop"``
2. no valid command for ``command_timeout_s`` / no fresh state for ``observation_timeout_s``
                                                                               -> hold, ``"command stale"`` /
                                                                                  ``"observation stale"``
3. wrong shape, non-numeric or non-finite action                               -> hold
4. missing or non-finite end-effector position (the workspace cannot be checked) -> hold
5. per-dimension clamp to ``[action_low, action_high]``                        -> ``"clamped <dim>"``
6. workspace box: the step ``ee + a * metres_per_unit`` may not leave ``[workspace_min, workspace_max]`` on an axis
   in the direction of motion; that component is zeroed (moving back inside stays allowed) -> ``"workspace z-"``
7. speed: ``|a[:3]| * metres_per_unit * control_hz`` above ``max_linear_speed`` scales the translation down to the
   limit (direction kept), likewise ``|a[3:6]| * radians_per_unit * control_hz`` against ``max_angular_speed``
                                                                               -> ``"linear speed scaled"``

The defaults describe the tabletop simulator (``srpo/sim/tabletop/physics.py``): there the filter passes every
in-range action unchanged except a step that would leave the sim's own workspace clip box. On a real arm set the
workspace to the cell and the speed limits well below the sim's envelope.

Numpy only, no ROS: the ROS node feeds the watchdogs from its subscriptions and calls ``filter`` on each control tick.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from srpo.spec import ACTION_NAMES, TABLETOP_SPEC, RobotSpec

# Values of the tabletop sim (srpo/sim/tabletop/physics.py and scene.py), copied rather than imported so that a robot
# without mujoco can import this module.
SIM_MAX_DPOS = 0.02  # physics.MAX_DPOS: metres per control step at |action| = 1
SIM_MAX_DROT = 0.12  # physics.MAX_DROT: radians per control step at |action| = 1
SIM_WORKSPACE_MIN = (-0.32, -0.30, 0.014)  # physics.WORKSPACE_LOW (z = scene.GRIP_Z_MIN, fingertips 2 mm up)
SIM_WORKSPACE_MAX = (0.32, 0.34, 0.30)  # physics.WORKSPACE_HIGH
SIM_CONTROL_HZ = 20.0  # 1 / physics.CONTROL_DT
# The fastest the sim ever moves: every translation (rotation) dim at 1.0, sqrt(3) * 0.4 m/s (sqrt(3) * 2.4 rad/s),
# rounded up so the defaults never slow an in-range sim action (a policy must behave as it did in training).
SIM_MAX_LINEAR_SPEED = 0.7
SIM_MAX_ANGULAR_SPEED = 4.2

TRANSLATION = slice(0, 3)
ROTATION = slice(3, 6)
GRIPPER = 6
AXES = ("x", "y", "z")
HOLD_REASONS = ("e-stop", "command stale", "observation stale", "wrong action shape", "non-numeric action",
                "non-finite action", "invalid ee position")


def _finite_positive(cfg: Any, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _finite_list(cfg: Any, name: str, length: int) -> list[float]:
    values = getattr(cfg, name)
    if not isinstance(values, (list, tuple)) or len(values) != length:
        raise ValueError(f"{name} must be a list of {length} numbers, got {values!r}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise ValueError(f"{name} must hold finite numbers, got {values!r}")
    return [float(v) for v in values]


@dataclass
class SafetyConfig:
    """Limits of the safety filter. Flat snake_case fields: the same names are the ROS node's parameters.

    ``action_low`` / ``action_high``: per-dimension clamps in normalised action units (7 values, spec order).
    ``workspace_min`` / ``workspace_max``: the end-effector box (x, y, z metres, robot base frame).
    ``metres_per_unit`` / ``radians_per_unit``: how far the EE moves (turns) in one control step for action 1.0 in a
    translation (rotation) dimension. ``max_linear_speed`` (m/s) / ``max_angular_speed`` (rad/s): norm limits.
    ``command_timeout_s`` / ``observation_timeout_s``: the watchdogs (no valid command / no fresh arm state).
    """

    action_low: list[float] = field(default_factory=lambda: [-1.0] * len(ACTION_NAMES))
    action_high: list[float] = field(default_factory=lambda: [1.0] * len(ACTION_NAMES))
    workspace_min: list[float] = field(default_factory=lambda: list(SIM_WORKSPACE_MIN))
    workspace_max: list[float] = field(default_factory=lambda: list(SIM_WORKSPACE_MAX))
    metres_per_unit: float = SIM_MAX_DPOS
    radians_per_unit: float = SIM_MAX_DROT
    max_linear_speed: float = SIM_MAX_LINEAR_SPEED
    max_angular_speed: float = SIM_MAX_ANGULAR_SPEED
    control_hz: float = SIM_CONTROL_HZ
    command_timeout_s: float = 0.25
    observation_timeout_s: float = 0.25

    def __post_init__(self) -> None:
        low = _finite_list(self, "action_low", len(ACTION_NAMES))
        high = _finite_list(self, "action_high", len(ACTION_NAMES))
        bad = [ACTION_NAMES[i] for i in range(len(low)) if not low[i] < high[i]]
        if bad:
            raise ValueError(f"action_low must be below action_high in every dimension; not in {bad}")
        wmin = _finite_list(self, "workspace_min", 3)
        wmax = _finite_list(self, "workspace_max", 3)
        bad = [AXES[i] for i in range(3) if not wmin[i] < wmax[i]]
        if bad:
            raise ValueError(f"workspace_min must be below workspace_max on every axis; not on {bad}")
        _finite_positive(self, "metres_per_unit", "radians_per_unit", "max_linear_speed", "max_angular_speed",
                         "control_hz", "command_timeout_s", "observation_timeout_s")


@dataclass(frozen=True)
class SafetyDecision:
    """What to send this tick: ``action`` (7-D float32; the hold action when ``hold``) and why it differs.

    ``reasons`` is empty when the command passed unchanged; ``clamped`` counts the components the per-dimension clamp
    changed (workspace and speed changes are named in ``reasons``).
    """

    action: np.ndarray
    hold: bool
    reasons: list[str]
    clamped: int = 0

    @property
    def modified(self) -> bool:
        """True when the action sent is not the one commanded (a hold, a clamp, a workspace or speed change)."""
        return bool(self.reasons)


def hold_action(last_gripper: float) -> np.ndarray:
    """Zero motion and the last gripper command: holding still must not open the hand and drop what it carries."""
    gripper = float(last_gripper)
    if not math.isfinite(gripper):
        raise ValueError(f"hold_action needs a finite gripper command, got {last_gripper!r}")
    action = np.zeros(len(ACTION_NAMES), np.float32)
    action[GRIPPER] = gripper
    return action


class EStop:
    """A latching emergency stop: once engaged it stays engaged until ``release``, whatever commands arrive.

    Thread-safe: a ROS service callback may engage it while the control tick reads it from another thread. The first
    reason is kept while engaged (it is the cause; later engagements only confirm it).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engaged = False
        self._reason = ""

    def engage(self, reason: str = "e-stop") -> None:
        with self._lock:
            if not self._engaged:
                self._engaged, self._reason = True, str(reason) or "e-stop"

    def release(self) -> None:
        with self._lock:
            self._engaged, self._reason = False, ""

    @property
    def engaged(self) -> bool:
        with self._lock:
            return self._engaged

    @property
    def reason(self) -> str:
        """Why it was engaged ('' while released)."""
        with self._lock:
            return self._reason


class Watchdog:
    """Expires when ``timeout_s`` has passed since the last ``feed`` (and before the first one).

    Times are seconds on one clock chosen by the caller (ROS time, sim time or ``time.monotonic``). ``expired`` is
    written so that a NaN time counts as expired: an unknown age is never fresh. A single float is assigned per feed,
    which is atomic in Python, so subscription callbacks may feed it from another thread.
    """

    def __init__(self, timeout_s: float) -> None:
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s must be positive and finite, got {timeout_s!r}")
        self.timeout_s = float(timeout_s)
        self._last: float | None = None

    def feed(self, now: float) -> None:
        self._last = float(now)

    def age(self, now: float) -> float:
        """Seconds since the last feed; inf before the first."""
        last = self._last
        return math.inf if last is None else float(now) - last

    def expired(self, now: float) -> bool:
        try:
            return not self.age(now) <= self.timeout_s
        except (TypeError, ValueError):  # a clock that is not a number cannot vouch for anything
            return True


def _parse_action(action: Any, dim: int) -> tuple[np.ndarray | None, str]:
    """(float64 array, '') for a well-formed action, else (None, the hold reason). Never raises."""
    try:
        arr = np.asarray(action)
    except Exception:  # a ragged list, an object whose __array__ raises, ...
        return None, "non-numeric action"
    if arr.dtype.kind not in "iuf":  # strings, objects, bools and complex numbers are not actions
        return None, "non-numeric action"
    if arr.shape != (dim,):
        return None, "wrong action shape"
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        return None, "non-finite action"
    return arr, ""


def _parse_position(ee_position: Any) -> np.ndarray | None:
    try:
        pos = np.asarray(ee_position)
        if pos.dtype.kind not in "iuf" or pos.shape != (3,):
            return None
        pos = pos.astype(np.float64)
    except Exception:
        return None
    return pos if np.isfinite(pos).all() else None


def clamp(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """``clip(action, low, high)`` and the indices it changed."""
    out = np.clip(action, low, high)
    return out, np.flatnonzero(out != action).tolist()


def workspace_limit(action: np.ndarray, ee_position: np.ndarray, metres_per_unit: float, wmin: np.ndarray,
                    wmax: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Zero each translation component whose step ``ee + a_i * metres_per_unit`` leaves the box moving outward.

    Axis i is zeroed when ``a_i > 0`` and the step ends above ``wmax_i``, or ``a_i < 0`` and it ends below
    ``wmin_i``. Motion toward the inside is never blocked, so an arm that is (or drifted) outside can come back.
    Returns the new action and the faces hit, e.g. ``["z-"]``.
    """
    out = action.copy()
    target = ee_position + action[TRANSLATION] * metres_per_unit
    faces = []
    for i, axis in enumerate(AXES):
        if action[i] > 0 and target[i] > wmax[i]:
            out[i] = 0.0
            faces.append(f"{axis}+")
        elif action[i] < 0 and target[i] < wmin[i]:
            out[i] = 0.0
            faces.append(f"{axis}-")
    return out, faces


def speed_limit(part: np.ndarray, units_per_action: float, control_hz: float,
                max_speed: float) -> tuple[np.ndarray, bool]:
    """Scale ``part`` (a translation or rotation sub-vector) so ``|part| * units_per_action * control_hz <= max``.

    The speed is the Euclidean norm of the commanded per-step displacement times the control rate; scaling the whole
    vector by ``max_speed / speed`` keeps its direction. Returns the part and whether it was scaled.
    """
    speed = float(np.linalg.norm(part)) * units_per_action * control_hz
    if speed <= max_speed:
        return part, False
    return part * (max_speed / speed), True


def _scaled_copy(commanded: np.ndarray, sent: np.ndarray, atol: float) -> bool:
    """``sent == s * commanded`` for one factor ``s`` in (0, 1] (a speed limit keeps the direction)."""
    if np.allclose(sent, commanded, atol=atol, rtol=0):
        return True
    norm = float(commanded @ commanded)
    if norm <= atol * atol:
        return False  # a zero command cannot be scaled into a different action
    s = float(sent @ commanded) / norm
    return 0.0 < s <= 1.0 + atol and np.allclose(sent, s * commanded, atol=atol, rtol=0)


def filter_explains(commanded: np.ndarray, sent: np.ndarray, low: np.ndarray | float = -1.0,
                    high: np.ndarray | float = 1.0, atol: float = 1e-5) -> bool:
    """Whether ``sent`` is an action :class:`SafetyFilter` could have made of ``commanded`` *without* a hold.

    The filter clamps to the bounds, zeroes translation components that would leave the workspace, and scales the
    translation and the rotation each by one factor in (0, 1] (speed limits); the gripper passes as clamped. A hold
    (zero motion) of a command that had rotation is not explained: that decision did not run. Used offline to
    attribute a recorded (executed) action to the decision that commanded it, so that learning sees what the policy
    decided while the filter stays part of the environment."""
    commanded = np.clip(np.asarray(commanded, np.float64), low, high)
    sent = np.asarray(sent, np.float64)
    if commanded.shape != sent.shape or commanded.shape[-1] <= GRIPPER:
        return False
    if abs(sent[GRIPPER] - commanded[GRIPPER]) > atol or not _scaled_copy(commanded[ROTATION], sent[ROTATION], atol):
        return False
    moved = np.abs(sent[TRANSLATION]) > atol  # the axes the workspace box left alone (zeroed ones are explained)
    return bool(_scaled_copy(commanded[TRANSLATION][moved], sent[TRANSLATION][moved], atol)) if moved.any() else True


class SafetyFilter:
    """Turns a commanded action into the action to send (or a hold); see the module docstring for the checks.

    ``command_received(now)`` feeds the command watchdog (call it when a valid command arrives, e.g. each action the
    policy serves) and ``observation_received(now)`` the observation watchdog (each fresh arm state). ``estop`` is the
    latching :class:`EStop`. The filter remembers the last gripper command it let through (``last_gripper``,
    initially ``initial_gripper``: open, as the sim starts) and holds with it. ``stats`` counts calls, holds,
    modified actions and each reason, for diagnostics.
    """

    def __init__(self, config: SafetyConfig | None = None, spec: RobotSpec = TABLETOP_SPEC,
                 initial_gripper: float = -1.0) -> None:
        config = config or SafetyConfig()
        if tuple(spec.action.names) != ACTION_NAMES:
            raise ValueError(f"the safety filter needs the action layout {list(ACTION_NAMES)}, the spec has "
                             f"{list(spec.action.names)}")
        if not math.isclose(config.control_hz, spec.control_hz):
            raise ValueError(f"control_hz {config.control_hz} differs from the spec's {spec.control_hz}: the "
                             f"per-step metres_per_unit and the speed limits would disagree with the policy's rate")
        outside = [ACTION_NAMES[i] for i in range(len(ACTION_NAMES))
                   if config.action_low[i] < spec.action.low or config.action_high[i] > spec.action.high]
        if outside:
            raise ValueError(f"action_low/action_high leave the spec's range [{spec.action.low}, {spec.action.high}] "
                             f"in {outside}")
        self.config = config
        self.spec = spec
        self.estop = EStop()
        self.command_watchdog = Watchdog(config.command_timeout_s)
        self.observation_watchdog = Watchdog(config.observation_timeout_s)
        self.last_gripper = float(hold_action(initial_gripper)[GRIPPER])
        self.stats: dict[str, int] = {"calls": 0, "holds": 0, "modified": 0}
        self._low = np.asarray(config.action_low, np.float64)
        self._high = np.asarray(config.action_high, np.float64)
        self._wmin = np.asarray(config.workspace_min, np.float64)
        self._wmax = np.asarray(config.workspace_max, np.float64)

    def command_received(self, now: float) -> None:
        self.command_watchdog.feed(now)

    def observation_received(self, now: float) -> None:
        self.observation_watchdog.feed(now)

    def hold_action(self) -> np.ndarray:
        return hold_action(self.last_gripper)

    def filter(self, action: Any, ee_position: Any, now: float) -> SafetyDecision:
        """The decision for ``action`` with the arm at ``ee_position`` (base frame, metres) at time ``now``."""
        decision = self._decide(action, ee_position, now)
        self.stats["calls"] += 1
        self.stats["holds"] += decision.hold
        self.stats["modified"] += decision.modified
        for reason in decision.reasons:
            self.stats[reason] = self.stats.get(reason, 0) + 1
        return decision

    def _hold(self, *reasons: str) -> SafetyDecision:
        return SafetyDecision(self.hold_action(), True, list(reasons))

    def _decide(self, action: Any, ee_position: Any, now: float) -> SafetyDecision:
        cfg = self.config
        if self.estop.engaged:
            return self._hold("e-stop")
        stale = [name for name, dog in (("command stale", self.command_watchdog),
                                        ("observation stale", self.observation_watchdog)) if dog.expired(now)]
        if stale:
            return self._hold(*stale)
        arr, problem = _parse_action(action, self.spec.action.dim)
        if arr is None:
            return self._hold(problem)
        pos = _parse_position(ee_position)
        if pos is None:
            return self._hold("invalid ee position")

        reasons: list[str] = []
        arr, changed = clamp(arr, self._low, self._high)
        reasons += [f"clamped {ACTION_NAMES[i]}" for i in changed]
        arr, faces = workspace_limit(arr, pos, cfg.metres_per_unit, self._wmin, self._wmax)
        reasons += [f"workspace {face}" for face in faces]
        arr[TRANSLATION], scaled = speed_limit(arr[TRANSLATION], cfg.metres_per_unit, cfg.control_hz,
                                               cfg.max_linear_speed)
        if scaled:
            reasons.append("linear speed scaled")
        arr[ROTATION], scaled = speed_limit(arr[ROTATION], cfg.radians_per_unit, cfg.control_hz, cfg.max_angular_speed)
        if scaled:
            reasons.append("angular speed scaled")
        self.last_gripper = float(arr[GRIPPER])
        return SafetyDecision(arr.astype(np.float32), False, reasons, len(changed))
