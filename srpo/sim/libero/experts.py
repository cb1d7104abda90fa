"""A scripted pick-and-place expert for LIBERO's ``libero_object`` suite, driven by privileged simulator state.

LIBERO ships no experts, and its human demonstration datasets cannot be downloaded everywhere: this expert produces
demonstrations offline. It reads the simulator's true state (object poses and collision geometry, the gripper site,
the basket's goal region), which no policy ever sees: it is for producing demonstrations only, never a baseline.

Every libero_object task is "pick up the <object> and place it in the basket", one BDDL goal predicate
``(In <object>_1 basket_1_contain_region)``: the object's body origin inside the basket's region box. The expert is a
phase machine (above the object, descend, close, lift, carry above the basket, lower, release, retreat) with a
proportional servo on the gripper site's position, clipped per axis. The hand keeps the downward orientation it has at
reset (zero rotation deltas: robosuite's OSC keeps its orientation goal until a non-zero rotation delta moves it),
except for a yaw turn when an object lies with its long side across the fingers (see ``_grasp_yaw``).

Perturbed demonstrations (DART, Laskey et al. 2017): ``noise_std`` adds seeded Gaussian noise to the translation
actions only; the expert closes the loop on the true state, so the next actions correct the drift, and the executed
(noisy) actions are what the episode records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from srpo.episodes.schema import Episode

OPEN, CLOSE = -1.0, 1.0
POS_DIMS = (0, 1, 2)
MAX_DPOS = 0.05  # metres of OSC target displacement per unit action (the controller's output_max)
MAX_DROT = 0.5  # radians per unit rotation action
GAIN = 1.0  # fraction of the position error commanded per step (OSC then closes part of it within the step)
FINGER_SPAN = 0.07  # widest object side (metres) the open Panda fingers (about 0.08 apart) take with margin
FLOOR_Z = 0.0  # libero_object's objects stand on the floor plane


@dataclass(frozen=True)
class GraspParams:
    """Where the fingers hold an object: ``depth`` below its top (metres), clipped so the fingertips stay
    ``floor_clearance`` above the floor; ``carry_clearance``: object bottom above the basket rim while carrying."""

    depth: float = 0.03
    floor_clearance: float = 0.012
    carry_clearance: float = 0.04


DEFAULT_GRASP = GraspParams()
GRASP_TABLE: dict[str, GraspParams] = {
    # Flat boxes (1.7-2.7 cm tall): the pads must come down as far as the floor allows to hold them at all.
    "cream_cheese": GraspParams(depth=0.02, floor_clearance=0.004),
    "butter": GraspParams(depth=0.02, floor_clearance=0.004),
    "chocolate_pudding": GraspParams(depth=0.02, floor_clearance=0.006),
    # Cartons: the hand's palm meets the gable's ridge 3.3 cm above the gripper site. At the default depth it presses
    # on the ridge, which then sticks to the open hand after the release (up to 100 steps); 2.2 cm leaves it clear.
    "milk": GraspParams(depth=0.022),
    "orange_juice": GraspParams(depth=0.022),
}
"""Per-object grasp parameters where the default does not fit (keyed by the object's category, ``milk_1`` -> milk)."""


def _category(name: str) -> str:
    head, _, tail = name.rpartition("_")
    return head if tail.isdigit() else name


class _Scene:
    """Privileged views of one robosuite LIBERO env: poses, world-frame bounding boxes, the gripper."""

    def __init__(self, inner: Any, obj: str, region: str) -> None:
        import mujoco

        self.inner, self.obj, self.region = inner, obj, region
        self.model, self.data = inner.sim.model._model, inner.sim.data._data
        self.body_id = inner.obj_body_id[obj]
        self.basket_id = inner.obj_body_id[region.removesuffix("_contain_region")]
        robot = inner.robots[0]
        self.site_id = robot.eef_site_id
        self.region_half = np.abs(np.asarray(inner.object_sites_dict[region].size, dtype=np.float64))
        self._geoms = self._collision_geoms(self.body_id)
        self._basket_geoms = self._collision_geoms(self.basket_id)
        self._finger_joints = [self.model.jnt_qposadr[mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_JOINT, j)]
                               for j in robot.gripper.joints]
        self._pads = [mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, robot.gripper.important_geoms[k][0])
                      for k in ("left_fingerpad", "right_fingerpad")]

    def _collision_geoms(self, root: int) -> list[int]:
        m, out = self.model, []
        for g in range(m.ngeom):
            b = int(m.geom_bodyid[g])
            while b not in (0, root):
                b = int(m.body_parentid[b])
            if b == root and (m.geom_contype[g] or m.geom_conaffinity[g]):
                out.append(g)
        return out

    def aabb(self, geoms: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """World-frame (lower, upper) corners of the object's collision geometry (of ``geoms`` if given)."""
        lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
        for g in self._geoms if geoms is None else geoms:
            box = self.model.geom_aabb[g]
            corners = box[:3] + signs * box[3:]
            world = self.data.geom_xpos[g] + corners @ self.data.geom_xmat[g].reshape(3, 3).T
            lo, hi = np.minimum(lo, world.min(0)), np.maximum(hi, world.max(0))
        return lo, hi

    def basket_top(self) -> float:
        return float(self.aabb(self._basket_geoms)[1][2])

    def obj_pos(self) -> np.ndarray:
        return self.data.xpos[self.body_id].copy()

    def region_pos(self) -> np.ndarray:
        return self.inner.sim.data.get_site_xpos(self.region).copy()

    def grip_pos(self) -> np.ndarray:
        return self.data.site_xpos[self.site_id].copy()

    def finger_opening(self) -> float:
        q = self.data.qpos[self._finger_joints]
        return float(q[0] - q[1])

    def hand_yaw(self) -> float:
        """Yaw of the hand's finger axis (from one finger pad to the other) in the world plane."""
        axis = self.data.geom_xpos[self._pads[0]] - self.data.geom_xpos[self._pads[1]]
        return float(np.arctan2(axis[1], axis[0]))


def _wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


class LiberoObjectExpert:
    """Pick the goal object up and drop it into the basket (one ``act`` per env step, 7-D actions in [-1, 1])."""

    HOVER = 0.06  # fingertips above the object's top before descending
    TRAVEL_Z = 0.22  # minimum grip height for moves across the table (clears the tallest objects, 0.155 m)
    RELEASE_ABOVE = 0.012  # object origin above the region's top when it is let go
    CLOSE_STEPS = 10
    STALL_STEPS = 4  # steps without the hand moving (2 mm) that end the descent
    RELEASE_STEPS = 6
    RETREAT_ABOVE = 0.1  # grip height above the basket's rim after the release

    def __init__(self, noise_std: float = 0.0, seed: int = 0) -> None:
        self.noise_std = float(noise_std)
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self) -> None:
        self.phase, self.timer = "above", 0
        self.scene: _Scene | None = None
        self.yaw: float | None = None
        self.offset = np.zeros(3)  # object origin minus grip site, measured once grasped
        self.retries = 0
        self.trail: list[np.ndarray] = []  # recent grip positions while descending

    # ------------------------------------------------------------------------------------------------ helpers
    def _bind(self, env: Any) -> _Scene:
        inner = env._env.env
        if self.scene is None or self.scene.inner is not inner:
            goal = [p for p in inner.parsed_problem["goal_state"] if p[0].lower() == "in"]
            if len(goal) != 1:
                raise ValueError(f"expected one (In object region) goal, got {inner.parsed_problem['goal_state']}")
            _, obj, region = goal[0]
            self.scene = _Scene(inner, obj, region)
            self.params = GRASP_TABLE.get(_category(obj), DEFAULT_GRASP)
        return self.scene

    def _servo(self, s: _Scene, target: np.ndarray, grip: float, speed: float = 1.0) -> np.ndarray:
        err = np.asarray(target, dtype=np.float64) - s.grip_pos()
        move = np.clip(GAIN * err / MAX_DPOS, -speed, speed)
        rot = np.zeros(3)
        if self.yaw is not None:  # a yaw turn about the world z axis (OSC rotation deltas are world-frame)
            rot[2] = np.clip(_wrap(self.yaw - s.hand_yaw()) / MAX_DROT, -0.5, 0.5)
        return np.array([*move, *rot, grip])

    def _advance(self, phase: str) -> None:
        self.phase, self.timer, self.trail = phase, 0, []

    def _grasp_yaw(self, s: _Scene) -> float | None:
        """None (keep the reset orientation) unless the object's side across the fingers is too wide for them: then
        the hand's yaw turned by a quarter turn (the nearer way), so the fingers close on the narrower side."""
        lo, hi = s.aabb()
        across = hi[1] - lo[1] if abs(np.sin(s.hand_yaw())) > 0.7 else hi[0] - lo[0]
        along = hi[0] - lo[0] if abs(np.sin(s.hand_yaw())) > 0.7 else hi[1] - lo[1]
        if across <= FINGER_SPAN or along >= across:
            return None
        return _wrap(s.hand_yaw() + np.pi / 2) if s.hand_yaw() < 0 else _wrap(s.hand_yaw() - np.pi / 2)

    def _grasp_z(self, s: _Scene) -> float:
        lo, hi = s.aabb()
        return max(hi[2] - self.params.depth, FLOOR_Z + self.params.floor_clearance)

    # ------------------------------------------------------------------------------------------------ control
    def act(self, obs: dict | None, env: Any) -> np.ndarray:
        """The action for the env's current state (``obs`` is unused: the expert reads the simulator)."""
        s = self._bind(env)
        action = self._act(s)
        self.timer += 1
        if self.noise_std > 0:
            action[list(POS_DIMS)] += self.rng.normal(0.0, self.noise_std, size=len(POS_DIMS))
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    __call__ = act

    def _act(self, s: _Scene) -> np.ndarray:
        grip, obj = s.grip_pos(), s.obj_pos()
        lo, hi = s.aabb()
        centre = (lo + hi) / 2
        if self.phase == "above":  # up to travel height, across to above the object, fingers open
            if self.timer == 0:
                self.yaw = self._grasp_yaw(s)
            z = max(hi[2] + self.HOVER, self.TRAVEL_Z if np.linalg.norm(grip[:2] - centre[:2]) > 0.05 else 0.0)
            target = np.array([centre[0], centre[1], z])
            if grip[2] < z - 0.03 and np.linalg.norm(grip[:2] - centre[:2]) > 0.05:
                target[:2] = grip[:2]  # rise first: the fingers would sweep through other objects
            aligned = self.yaw is None or abs(_wrap(self.yaw - s.hand_yaw())) < 0.05
            if np.linalg.norm(target - grip) < 0.01 and aligned:
                self._advance("descend")
            return self._servo(s, target, OPEN)
        if self.phase == "descend":
            target = np.array([centre[0], centre[1], self._grasp_z(s)])
            self.trail = [*self.trail[-self.STALL_STEPS:], grip]
            # the fingertips may meet the floor (flat objects) before the target: close once the hand stops
            stalled = self.timer >= self.STALL_STEPS and np.linalg.norm(grip - self.trail[0]) < 0.002
            if np.linalg.norm(target - grip) < 0.006 or (stalled and abs(target[2] - grip[2]) < 0.015):
                self._advance("close")
            return self._servo(s, target, OPEN, speed=0.6)
        if self.phase == "close":
            if self.timer >= self.CLOSE_STEPS:
                self.offset = obj - grip
                self._advance("lift")
            return np.array([0, 0, 0, 0, 0, 0, CLOSE], dtype=np.float64)
        held = s.finger_opening() > 0.005 and np.linalg.norm(obj - grip - self.offset) < 0.03
        if self.phase in ("lift", "carry", "lower") and not held:  # dropped it (or never had it): start over
            self.retries += 1
            self.yaw = None
            self._advance("above")
            return self._servo(s, grip + np.array([0.0, 0.0, 0.05]), OPEN)
        basket_top = s.basket_top()
        carry_z = grip[2] + (basket_top + self.params.carry_clearance - lo[2])  # object bottom clear of the rim
        carry_z = max(carry_z, self.TRAVEL_Z)
        region = s.region_pos()
        if self.phase == "lift":
            target = np.array([grip[0], grip[1], carry_z])
            if grip[2] > carry_z - 0.02:
                self._advance("carry")
            return self._servo(s, target, CLOSE)
        goal_xy = region[:2] - (obj[:2] - grip[:2])  # put the object's origin, not the hand, over the region centre
        if self.phase == "carry":
            target = np.array([goal_xy[0], goal_xy[1], max(carry_z, grip[2])])
            if np.linalg.norm(target[:2] - grip[:2]) < 0.01:
                self._advance("lower")
            return self._servo(s, target, CLOSE)
        if self.phase == "lower":  # until the object's origin is just above the goal region's top
            release_z = region[2] + s.region_half[2] + self.RELEASE_ABOVE
            target = np.array([goal_xy[0], goal_xy[1], grip[2] + release_z - obj[2]])
            if obj[2] < release_z + 0.005:
                self._advance("release")
            return self._servo(s, target, CLOSE, speed=0.5)
        if self.phase == "release":
            if self.timer >= self.RELEASE_STEPS:
                self._advance("retreat")
            return np.array([0, 0, 0, 0, 0, 0, OPEN], dtype=np.float64)
        # retreat: straight up, the fingers clear of the basket's rim
        return self._servo(s, np.array([grip[0], grip[1], basket_top + self.RETREAT_ABOVE]), OPEN, speed=0.5)


def libero_expert_episode(env: Any, task: int | str, split: str, init_state_id: int, noise_std: float = 0.0,
                          seed: int = 0) -> Episode:
    """One expert episode of ``env`` (a ``LiberoEnv`` on libero_object) recorded through ``run_episode``."""
    from srpo.sim.rollout import run_episode

    expert = LiberoObjectExpert(noise_std=noise_std, seed=seed)
    version = "libero_scripted_expert" if noise_std == 0 else f"libero_scripted_expert_dart{noise_std:g}"
    return run_episode(env, expert.act, {"task": task, "split": split, "init_state_id": init_state_id}, version, seed)
