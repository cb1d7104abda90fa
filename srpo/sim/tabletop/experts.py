"""Scripted experts: one waypoint state machine per task family, driven by privileged simulator state.

They produce the demonstrations for supervised fine-tuning and, with ``noise_std`` and early stops, the varied
failed attempts that the reward-fidelity benchmark scores. Each ``act`` returns a 7-D action in [-1, 1].
"""

from __future__ import annotations

import numpy as np

from srpo.sim.tabletop import scene
from srpo.sim.tabletop.physics import MAX_DPOS, MAX_DROT, WORKSPACE_HIGH, WORKSPACE_LOW, TabletopSim
from srpo.sim.tabletop.tasks import (
    ButtonTask,
    DrawerTask,
    PlaceTask,
    PushTask,
    ReachTask,
    Task,
)

OPEN, CLOSE = -1.0, 1.0
TRAVEL_Z = 0.11  # grip height for moving above objects (fingertips clear everything on the table)


def _wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


class ScriptedExpert:
    """Base expert: a phase counter plus a Cartesian servo toward a waypoint."""

    def __init__(self, task: Task, noise_std: float = 0.0, seed: int = 0) -> None:
        self.task = task
        self.noise_std = noise_std
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self) -> None:
        self.phase, self.timer = 0, 0

    def servo(self, sim: TabletopSim, target: np.ndarray, grip: float, yaw: float = 0.0, speed: float = 1.0) -> np.ndarray:
        err = np.asarray(target, dtype=np.float64) - sim.grip_pos()
        move = np.clip(0.8 * err / MAX_DPOS, -speed, speed)
        dyaw = np.clip(0.8 * _wrap(yaw - sim.hand_yaw()) / MAX_DROT, -1.0, 1.0)
        return np.array([*move, 0.0, 0.0, dyaw, grip])

    @staticmethod
    def near(sim: TabletopSim, target: np.ndarray, tol: float = 0.006) -> bool:
        return bool(np.linalg.norm(np.asarray(target) - sim.grip_pos()) < tol)

    def advance(self) -> None:
        self.phase += 1
        self.timer = 0

    def act(self, sim: TabletopSim) -> np.ndarray:
        action = self._act(sim)
        self.timer += 1
        if self.noise_std > 0:
            action = action + self.rng.normal(0.0, self.noise_std, size=action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def _act(self, sim: TabletopSim) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class ReachExpert(ScriptedExpert):
    task: ReachTask

    def _act(self, sim: TabletopSim) -> np.ndarray:
        top = sim.object_pos(self.task.obj)
        top[2] += scene.CYL_HALF_HEIGHT if "cylinder" in self.task.obj else scene.CUBE_HALF
        touch = top + np.array([0.0, 0.0, scene.GRIP_TO_TIP - 0.006])
        if self.phase == 0:
            above = touch + np.array([0.0, 0.0, 0.04])
            if self.near(sim, above, 0.01):
                self.advance()
            return self.servo(sim, above, CLOSE)
        return self.servo(sim, touch, CLOSE, speed=0.6)


# ------------------------------------------------------------------------------------------------ obstacle model
# Planar footprints of what a pushed object or the lowered fingers can collide with. Furniture is axis-aligned boxes
# (x, y, half_x, half_y); movable objects are discs (x, y, radius) that bound them at any yaw.
CABINET_HALF = (0.09, 0.075)  # the cabinet carcass in scene.py, centred 0.075 behind the cabinet body origin
BUTTON_BASE_HALF = 0.035
FINGER_HALF = (0.006, 0.012)  # finger pad box half sizes (hand x, hand y) in scene.py
FINGER_OPEN_X = 0.05  # finger centre offset along hand x when open


def _object_radius(name: str) -> float:
    return scene.CUBE_HALF * np.sqrt(2.0) if "cube" in name else scene.CYL_RADIUS


def _obstacles(sim: TabletopSim, exclude: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    tray, button = sim.furniture_pos("tray")[:2], sim.furniture_pos("button_base")[:2]
    cab = sim.furniture_pos("cabinet")[:2]
    # An open drawer and its handle stick out in front of the carcass: grow the box to cover them.
    front = sim.handle_pos()[1] - 0.01
    cab_top = cab[1] + 2 * CABINET_HALF[1]
    boxes = np.array(
        [
            [*tray, scene.TRAY_HALF, scene.TRAY_HALF],
            [*button, BUTTON_BASE_HALF, BUTTON_BASE_HALF],
            [cab[0], (front + cab_top) / 2, CABINET_HALF[0], (cab_top - front) / 2],
        ]
    )
    discs = np.array([[*sim.object_pos(o)[:2], _object_radius(o)] for o in scene.MOVABLE_OBJECTS if o not in exclude])
    return boxes, discs.reshape(-1, 3)


def _clearance(points: np.ndarray, boxes: np.ndarray, discs: np.ndarray) -> np.ndarray:
    """Signed distance from each 2-D point to the nearest obstacle footprint (negative inside)."""
    p = np.atleast_2d(points)[:, None, :]
    d = np.abs(p - boxes[None, :, :2]) - boxes[None, :, 2:]
    outside = np.linalg.norm(np.maximum(d, 0.0), axis=-1)
    box_sd = outside + np.minimum(d.max(axis=-1), 0.0)
    disc_sd = np.linalg.norm(p - discs[None, :, :2], axis=-1) - discs[None, :, 2]
    return np.concatenate([box_sd, disc_sd], axis=1).min(axis=1)


def _finger_points(center: np.ndarray, yaw: float, spread: float) -> np.ndarray:
    """Corners and centres of both finger pads (at +-spread along hand x) in the world plane."""
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, -s], [s, c]])
    hx, hy = FINGER_HALF
    local = [(sx * spread + dx, dy) for sx in (-1, 1) for dx in (-hx, 0.0, hx) for dy in (-hy, 0.0, hy)]
    return center[None, :2] + np.array(local) @ rot.T


class PushExpert(ScriptedExpert):
    """Push the object to the square along an obstacle-free route, re-aiming every step.

    The route is a polyline for the object's centre, planned on a visibility graph around the tray, the other objects
    and the fixed furniture, so the object is never driven into something that stops it. Each leg is pushed from
    behind; a change of direction (or losing the object) lifts the hand and re-approaches from behind the new leg.
    The hand pushes with the flat outer face of one closed finger: the gap between the closed fingers would otherwise
    catch the object's edge (a cylinder wedges in it and gets lifted).
    """

    task: PushTask
    PUSH_Z = 0.022
    LIFT_Z = 0.08  # fingertips clear every object top while re-approaching, staying close for steady progress
    STANDOFF = 0.035  # gap between object and finger face when lowering behind it
    FACE = 0.016  # grip centre to the outer face of a closed finger
    OBJ_MARGIN = 0.01  # clearance kept between the pushed object and obstacles
    HAND_RADIUS = 0.026  # closed-finger block plus margin
    TURN_COST = 0.12  # metres of pushing that a re-approach costs in time

    def reset(self) -> None:
        super().reset()
        self.route: list[np.ndarray] | None = None

    def _radius(self) -> float:
        # A cube's extent along the push direction grows as it turns; 1.2 x half-size covers typical yaws.
        return scene.CYL_RADIUS if "cylinder" in self.task.obj else scene.CUBE_HALF * 1.2

    def _push_yaw(self, sim: TabletopSim, u: np.ndarray) -> float:
        """Hand yaw that puts a finger's outer face across ``u``: of the two, the one nearest the current yaw."""
        base = float(np.arctan2(u[1], u[0]))
        options = [y for y in (base, base - np.pi, base + np.pi) if abs(y) <= 2.6]  # the hand's yaw is clipped at +-pi
        return min(options, key=lambda y: abs(_wrap(y - sim.hand_yaw())))

    # ---------------------------------------------------------------------------------------------------- planning
    def _leg_ok(self, a: np.ndarray, b: np.ndarray, boxes: np.ndarray, discs: np.ndarray) -> bool:
        length = float(np.linalg.norm(b - a))
        if length < 1e-6:
            return True
        u = (b - a) / length
        pts = a + np.linspace(0.0, 1.0, max(2, int(length / 0.005) + 1))[:, None] * (b - a)
        obj_r = _object_radius(self.task.obj)
        clear = _clearance(pts, boxes, discs)
        # A start that is already tighter than the margin (objects may begin close together) is allowed as long as
        # the leg does not get any closer.
        if np.any(clear < min(obj_r + self.OBJ_MARGIN, clear[0] - 0.002)):
            return False
        back = self._radius() + self.STANDOFF
        hand = np.concatenate([pts - u * back, pts - u * (self._radius() + self.FACE - 0.01)])
        if np.any(_clearance(hand, boxes, discs) < self.HAND_RADIUS):
            return False
        lo, hi = WORKSPACE_LOW[:2] + 0.01, WORKSPACE_HIGH[:2] - 0.01
        return bool(np.all((hand >= lo) & (hand <= hi)))

    def _plan(self, sim: TabletopSim) -> list[np.ndarray]:
        """Shortest route (with a cost per turn) from the object to the square's centre, as object waypoints."""
        start, goal = sim.object_pos(self.task.obj)[:2], sim.furniture_pos("square")[:2]
        boxes, discs = _obstacles(sim, exclude=(self.task.obj,))
        pad = _object_radius(self.task.obj) + self.OBJ_MARGIN + 0.008
        nodes = [start, goal]
        # Short first legs in every direction: when an obstacle sits right behind the object, the only way out may
        # be a push sideways that makes room for the hand.
        for dist in (0.05, 0.1):
            nodes += [start + dist * np.array([np.cos(a), np.sin(a)]) for a in np.arange(16) * np.pi / 8]
        for cx, cy, hx, hy in boxes:
            nodes += [np.array([cx + sx * (hx + pad), cy + sy * (hy + pad)]) for sx in (-1, 1) for sy in (-1, 1)]
        for cx, cy, r in discs:
            ring = (r + pad) / np.cos(np.pi / 8)
            nodes += [np.array([cx, cy]) + ring * np.array([np.cos(a), np.sin(a)]) for a in np.arange(8) * np.pi / 4]
        # Dijkstra over the visibility graph; legs are checked lazily as nodes are expanded.
        n = len(nodes)
        cost, prev, done = np.full(n, np.inf), np.full(n, -1), np.zeros(n, bool)
        cost[0] = 0.0
        while True:
            i = int(np.argmin(np.where(done, np.inf, cost)))
            if done[i] or not np.isfinite(cost[i]):
                return [goal]  # no clear route: push straight and let re-approaches cope
            if i == 1:
                break
            done[i] = True
            for j in range(1, n):
                if done[j]:
                    continue
                c = cost[i] + float(np.linalg.norm(nodes[j] - nodes[i])) + (self.TURN_COST if j != 1 else 0.0)
                if c < cost[j] and self._leg_ok(nodes[i], nodes[j], boxes, discs):
                    cost[j], prev[j] = c, i
        route, k = [], 1
        while k != 0:
            route.append(nodes[k])
            k = int(prev[k])
        return route[::-1]

    # ----------------------------------------------------------------------------------------------------- control
    def _act(self, sim: TabletopSim) -> np.ndarray:
        obj = sim.object_pos(self.task.obj)[:2]
        hand3 = sim.grip_pos()
        hand = hand3[:2]
        if self.route is None:
            self.route, self.leg_from = self._plan(sim), obj.copy()
        # Next leg once the object has passed the current waypoint (a radius test would leave it short, and a
        # re-plan from slightly off the route can find a worse one).
        turned = False
        while len(self.route) > 1 and float(np.dot(obj - self.route[0], self.route[0] - self.leg_from)) >= 0.0:
            self.leg_from = self.route.pop(0)
            turned = True
        u = self.route[0] - obj
        u /= max(np.linalg.norm(u), 1e-6)
        yaw = self._push_yaw(sim, u)
        behind = obj - u * (self._radius() + self.STANDOFF)
        if self.phase == 0:  # back off, up clear of the objects, then across to above the pre-push point
            if hand3[2] < self.LIFT_Z - 0.015 and np.linalg.norm(hand - behind) > 0.01:
                away = hand - obj
                if self.timer < 2 and np.linalg.norm(away) < self._radius() + self.FACE + 0.01:
                    # Lifting a finger that still presses on the object drags it up and can tip it.
                    away /= max(np.linalg.norm(away), 1e-6)
                    return self.servo(sim, np.array([*(hand + 0.01 * away), hand3[2]]), CLOSE, sim.hand_yaw())
                return self.servo(sim, np.array([*hand, self.LIFT_Z]), CLOSE, yaw)
            wp = np.array([*behind, self.LIFT_Z])
            if self.near(sim, wp, 0.01) and abs(_wrap(yaw - sim.hand_yaw())) < 0.1:
                self.advance()
            return self.servo(sim, wp, CLOSE, yaw)
        if self.phase == 1:  # down behind the object
            wp = np.array([*behind, self.PUSH_Z])
            if self.near(sim, wp, 0.006):
                self.advance()
            return self.servo(sim, wp, CLOSE, yaw)
        lateral = abs(float(np.cross(u, hand - obj)))
        if turned or lateral > 0.02 or float(np.dot(obj - hand, u)) < 0.0:
            # A corner keeps the route; losing the object (it slid off the finger) re-plans from where it is now.
            if not turned:
                self.route = None
            self.phase, self.timer = 0, 0
            return self._act(sim)
        wp = np.array([*(obj - u * (self._radius() - 0.006)), self.PUSH_Z])
        return self.servo(sim, wp, CLOSE, yaw, speed=0.5)


class PlaceExpert(ScriptedExpert):
    """Grasp, lift, carry above the target, lower, release, retreat."""

    task: PlaceTask
    CARRY_Z = 0.13

    def _grasp_yaw(self, sim: TabletopSim) -> float:
        if "cylinder" in self.task.obj:
            return 0.0
        return _wrap((sim.object_yaw(self.task.obj) + np.pi / 4) % (np.pi / 2) - np.pi / 4)

    def _act(self, sim: TabletopSim) -> np.ndarray:
        t = self.task
        obj = sim.object_pos(t.obj)
        yaw = self._grasp_yaw(sim) if self.phase <= 2 else sim.hand_yaw()
        grasp_z = obj[2] - 0.002 if self.phase <= 1 else None
        if self.phase == 0:  # above the object, open, aligned
            wp = np.array([obj[0], obj[1], TRAVEL_Z])
            if self.near(sim, wp, 0.008) and abs(_wrap(yaw - sim.hand_yaw())) < 0.05:
                self.advance()
            return self.servo(sim, wp, OPEN, yaw)
        if self.phase == 1:  # down to the grasp height
            wp = np.array([obj[0], obj[1], max(grasp_z, scene.GRIP_Z_MIN)])
            if self.near(sim, wp, 0.005):
                self.advance()
            return self.servo(sim, wp, OPEN, yaw, speed=0.7)
        if self.phase == 2:  # close
            if self.timer >= 6:
                self.advance()
            return np.array([0, 0, 0, 0, 0, 0, CLOSE])
        if self.phase in (3, 4, 5) and not sim.grasped(t.obj):  # dropped it: start over
            self.phase = 0
            return self.servo(sim, sim.grip_pos() + np.array([0, 0, 0.03]), OPEN)
        target = t.target_xy(sim)
        if self.phase == 3:  # lift
            wp = np.array([*sim.grip_pos()[:2], self.CARRY_Z])
            if sim.grip_pos()[2] > self.CARRY_Z - 0.01:
                self.advance()
            return self.servo(sim, wp, CLOSE)
        offset = obj[:2] - sim.grip_pos()[:2]  # the object may sit off-centre between the fingers
        if self.phase == 4:  # carry above the target
            wp = np.array([*(target - offset), self.CARRY_Z])
            if self.near(sim, wp, 0.004):
                self.advance()
            return self.servo(sim, wp, CLOSE, speed=0.8)
        if self.phase == 5:  # lower until the object's bottom is just above its support
            half = scene.CYL_HALF_HEIGHT if "cylinder" in t.obj else scene.CUBE_HALF
            support = scene.TRAY_FLOOR if t.target == "tray" else sim.object_pos(t.target)[2] + scene.CUBE_HALF
            drop = (obj[2] - half) - (support + 0.006)
            wp = np.array([*(target - offset), sim.grip_pos()[2] - drop])
            if abs(drop) < 0.004:
                self.advance()
            return self.servo(sim, wp, CLOSE, speed=0.5)
        if self.phase == 6:  # release
            if self.timer >= 5:
                self.advance()
            return np.array([0, 0, 0, 0, 0, 0, OPEN])
        return self.servo(sim, np.array([*sim.grip_pos()[:2], self.CARRY_Z]), OPEN, speed=0.5)


class ButtonExpert(ScriptedExpert):
    task: ButtonTask

    def _act(self, sim: TabletopSim) -> np.ndarray:
        base = sim.furniture_pos("button_base")
        if self.phase == 0:
            wp = np.array([base[0], base[1], TRAVEL_Z])
            if self.near(sim, wp, 0.01):
                self.advance()
            return self.servo(sim, wp, CLOSE)
        press = np.array([base[0], base[1], scene.BUTTON_TOP + scene.GRIP_TO_TIP - 0.011])
        return self.servo(sim, press, CLOSE, speed=0.6)


class DrawerExpert(ScriptedExpert):
    """Open: hook the closed fingers behind the handle bar and pull. Close: push the handle bar in."""

    task: DrawerTask

    def _act(self, sim: TabletopSim) -> np.ndarray:
        handle = sim.handle_pos()
        dy = 0.025 if self.task.open_it else -0.022
        contact = handle + np.array([0.0, dy, 0.0])
        if self.phase == 0:
            wp = contact + np.array([0.0, 0.0, 0.07])
            if self.near(sim, wp, 0.008):
                self.advance()
            return self.servo(sim, wp, CLOSE)
        if self.phase == 1:
            if self.near(sim, contact, 0.005):
                self.advance()
            return self.servo(sim, contact, CLOSE, speed=0.7)
        direction = -1.0 if self.task.open_it else 1.0
        return self.servo(sim, contact + np.array([0.0, direction * 0.03, 0.0]), CLOSE, speed=0.6)


_EXPERTS = {ReachTask: ReachExpert, PushTask: PushExpert, PlaceTask: PlaceExpert, ButtonTask: ButtonExpert, DrawerTask: DrawerExpert}


def make_expert(task: Task, noise_std: float = 0.0, seed: int = 0) -> ScriptedExpert:
    """The scripted expert for ``task``."""
    return _EXPERTS[type(task)](task, noise_std=noise_std, seed=seed)
