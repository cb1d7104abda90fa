"""Arm drivers: one interface for the MuJoCo tabletop arm and for a real arm commanded through ROS 2.

The ROS node runs the same loop for both: read an :class:`ArmState`, ask the policy for an action, pass it through
the :class:`~srpo.robot.safety.SafetyFilter`, then ``driver.apply(action)`` or ``driver.hold()``. Drivers trust the
actions they get (the filter has already clamped them) and never decide about safety themselves.

* :class:`SimArmDriver` steps :class:`~srpo.sim.tabletop.env.TabletopEnv`, rendering every step because the camera
  topics publish every frame. Time is the sim's: holding still still advances it, as the clock does on a real arm.
* A real arm is driven by twist commands (e.g. MoveIt Servo) plus a gripper position controller;
  :func:`action_to_twist` is the pure mapping from a 7-D action to that command, and the ROS node publishes it.

No rclpy and no torch here; mujoco is imported only when a :class:`SimArmDriver` is created, so a robot that has no
simulator installed can import this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from srpo.robot.safety import GRIPPER, ROTATION, SIM_CONTROL_HZ, SIM_MAX_DPOS, SIM_MAX_DROT, TRANSLATION, hold_action
from srpo.spec import ACTION_NAMES, RobotSpec

if TYPE_CHECKING:
    from srpo.sim.tabletop.env import TabletopEnv

# The sim's finger actuator range (srpo/sim/tabletop/scene.py FINGER_MAX): 0 = open, 0.04 m = closed. The sim maps
# the gripper action g to (g + 1) / 2 * FINGER_MAX, which action_to_twist reproduces with these defaults.
SIM_GRIPPER_OPEN = 0.0
SIM_GRIPPER_CLOSED = 0.04


@dataclass
class ArmState:
    """The arm at one instant.

    ``stamp``: seconds (sim time in simulation, ROS time on a robot). ``proprio``: float32 in the spec's proprio order.
    ``ee_position``: (3,) end-effector position in the base frame (what the safety filter's workspace box checks).
    ``images``: camera name -> HxWx3 uint8; empty on a real arm whose cameras are separate nodes. ``success``,
    ``progress``: the sim's privileged predicate and progress, None on a real arm. ``done``: the episode ended
    (terminated or truncated in the sim).
    """

    stamp: float
    proprio: np.ndarray
    ee_position: np.ndarray
    images: dict[str, np.ndarray]
    success: bool | None = None
    progress: float | None = None
    instruction: str | None = None
    done: bool = False


@runtime_checkable
class ArmDriver(Protocol):
    """What the ROS node needs from an arm. ``apply`` receives actions the safety filter already passed."""

    spec: RobotSpec

    def reset(self, options: dict | None = None) -> ArmState: ...

    def apply(self, action: np.ndarray) -> ArmState: ...

    def hold(self) -> ArmState: ...

    def state(self) -> ArmState: ...

    def close(self) -> None: ...


# ------------------------------------------------------------------------------------------------------- simulation
@dataclass
class SimArmConfig:
    """The simulated arm: which task and initial state ``reset`` starts from (reset options override them).

    ``max_steps``: the episode limit in control steps; 0 keeps the task's own limit.
    """

    task: str = "press_button"
    split: str = "heldout"
    init_state_id: int = 0
    image_size: int = 64
    max_steps: int = 0

    def __post_init__(self) -> None:
        if self.init_state_id < 0:
            raise ValueError(f"init_state_id must be >= 0, got {self.init_state_id}")
        if self.max_steps < 0:
            raise ValueError(f"max_steps must be >= 0 (0: the task's own limit), got {self.max_steps}")
        if not 16 <= self.image_size <= 512:
            raise ValueError(f"image_size must be in [16, 512], got {self.image_size}")


class SimArmDriver:
    """:class:`ArmDriver` over the MuJoCo tabletop env (``env`` is public: tests and experts read ``env.sim``).

    ``reset`` takes the env's reset options (``task``, ``split``, ``init_state_id``) on top of the config's. After
    the episode ends (success or step limit), ``apply`` and ``hold`` no longer step and return the final state until
    the next ``reset``.
    """

    def __init__(self, config: SimArmConfig | None = None) -> None:
        from srpo.sim.tabletop.env import TabletopEnv  # mujoco only when a simulated arm is actually wanted

        self.config = config or SimArmConfig()
        cfg = self.config
        self.env: TabletopEnv = TabletopEnv(task=cfg.task, image_size=cfg.image_size, split=cfg.split,
                                            max_steps=cfg.max_steps or None)
        self.spec: RobotSpec = self.env.spec_contract
        self._state: ArmState | None = None
        self.last_reset: dict = {}
        """The options of the latest reset (task, split, init_state_id): what the episode started from."""

    def reset(self, options: dict | None = None) -> ArmState:
        options = {"task": self.config.task, "split": self.config.split, "init_state_id": self.config.init_state_id,
                   **(options or {})}
        if options.get("image_every", 1) != 1:
            raise ValueError(f"image_every={options['image_every']!r}: the arm driver renders every step (the camera "
                             "topics publish every frame)")
        options["image_every"] = 1
        obs, info = self.env.reset(options=options)
        self.last_reset = options
        self._state = self._to_state(obs, info, done=False)
        return self._state

    def apply(self, action: np.ndarray) -> ArmState:
        state = self.state()
        if state.done:
            return state
        obs, _, terminated, truncated, info = self.env.step(np.asarray(action, np.float32))
        self._state = self._to_state(obs, info, done=terminated or truncated)
        return self._state

    def hold(self) -> ArmState:
        """One control period of zero motion with the gripper as last commanded (the sim remembers it)."""
        return self.apply(hold_action(self.env.sim.gripper_command))

    def state(self) -> ArmState:
        if self._state is None:
            raise RuntimeError("the simulated arm has no state yet: call reset() first")
        return self._state

    def close(self) -> None:
        self.env.close()

    def _to_state(self, obs: dict[str, Any], info: dict[str, Any], done: bool) -> ArmState:
        proprio = np.asarray(obs["proprio"], np.float32)
        cams = [c.name for c in self.spec.observation.cameras]
        return ArmState(stamp=float(info["sim_time"]), proprio=proprio, ee_position=proprio[:3].astype(np.float64),
                        images={c: obs[c] for c in cams}, success=bool(info["success"]),
                        progress=float(info["progress"]), instruction=str(info["instruction"]), done=bool(done))


# -------------------------------------------------------------------------------------------------------- real arm
@dataclass
class TwistMapperConfig:
    """How actions become commands for a real arm: a TwistStamped for a Cartesian servo plus a gripper position.

    ``linear_scale`` (m/s) and ``angular_scale`` (rad/s) are the velocities at action 1.0; the defaults are the sim's
    (0.02 m and 0.12 rad per step at 20 Hz), so a policy moves the arm as fast as it moved the simulated one.
    ``gripper_open`` / ``gripper_closed`` are the positions the gripper controller takes for action -1 / +1 (defaults:
    the sim's finger travel; a Franka hand wants 0.04 open / 0.0 closed, for instance).

    ``dry_run`` defaults to True: commands are computed and logged but NOT sent to the arm until the user sets
    ``dry_run: false`` deliberately, after checking topics, frame and scales on their robot.
    """

    twist_topic: str = "/servo_node/delta_twist_cmds"
    gripper_topic: str = "/gripper_controller/commands"
    frame_id: str = "base_link"
    linear_scale: float = SIM_MAX_DPOS * SIM_CONTROL_HZ
    angular_scale: float = SIM_MAX_DROT * SIM_CONTROL_HZ
    gripper_open: float = SIM_GRIPPER_OPEN
    gripper_closed: float = SIM_GRIPPER_CLOSED
    dry_run: bool = True

    def __post_init__(self) -> None:
        for name in ("twist_topic", "gripper_topic", "frame_id"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ValueError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        for name in ("linear_scale", "angular_scale"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        for name in ("gripper_open", "gripper_closed"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)!r}")
        if self.gripper_open == self.gripper_closed:
            raise ValueError(f"gripper_open and gripper_closed are both {self.gripper_open}: the gripper could "
                             "not move")


@dataclass(frozen=True)
class TwistCommand:
    """One control tick for a real arm: base-frame velocities (m/s, rad/s) and a gripper position."""

    linear: tuple[float, float, float]
    angular: tuple[float, float, float]
    gripper: float
    frame_id: str


def action_to_twist(action: np.ndarray, cfg: TwistMapperConfig) -> TwistCommand:
    """Map a filtered 7-D action to a :class:`TwistCommand`.

    ``linear = a[0:3] * linear_scale``, ``angular = a[3:6] * angular_scale`` (the sim's rotation deltas are Euler
    increments, which match base-frame angular velocity while the hand points down, as the sim's tilt limit keeps it),
    ``gripper = open + (g + 1) / 2 * (closed - open)`` for ``g = a[6]``. Values are clipped to [-1, 1] first so the
    twist never exceeds the scales. A hold action (zero motion, last gripper) gives a zero twist and the gripper
    position unchanged. Raises ValueError on a wrong shape or a non-finite value (the safety filter stops those).
    """
    arr = np.asarray(action, np.float64)
    if arr.shape != (len(ACTION_NAMES),):
        raise ValueError(f"action has shape {arr.shape}, expected ({len(ACTION_NAMES)},) = {list(ACTION_NAMES)}")
    if not np.isfinite(arr).all():
        raise ValueError(f"action has non-finite values: {arr.tolist()}")
    arr = np.clip(arr, -1.0, 1.0)
    linear = arr[TRANSLATION] * cfg.linear_scale
    angular = arr[ROTATION] * cfg.angular_scale
    gripper = cfg.gripper_open + (arr[GRIPPER] + 1.0) / 2.0 * (cfg.gripper_closed - cfg.gripper_open)
    return TwistCommand(linear=tuple(float(v) for v in linear), angular=tuple(float(v) for v in angular),
                        gripper=float(gripper), frame_id=cfg.frame_id)
