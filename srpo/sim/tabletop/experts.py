"""Scripted experts: one waypoint state machine per task family, driven by privileged simulator state.

They produce the demonstrations for supervised fine-tuning and, with ``noise_std`` and early stops, the varied
failed attempts that the reward-fidelity benchmark scores. Each ``act`` returns a 7-D action in [-1, 1].

Perturbed demonstrations (DART, Laskey et al. 2017): with ``noise_dims=MOTION_DIMS`` the noise perturbs only the
hand's motion (translation and yaw), never the gripper or the tilt (which the experts do not servo). The expert closes
the loop on the true state, so its next actions correct the drift: the demos then visit, and label, the states a
learned policy drifts into. The executed (noisy) action is what the episode records; under an L1 loss zero-mean label
noise leaves the learned conditional median at the expert's action.
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
MOTION_DIMS = (0, 1, 2, 5)  # x, y, z, yaw
TRAVEL_Z = 0.11  # grip height for moving above objects (fingertips clear everything on the table)


def _wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


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
    """(boxes, discs) footprints of the furniture and of the movable objects not in ``exclude``."""
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


class ScriptedExpert:
    """Base expert: a phase counter plus a Cartesian servo toward a waypoint."""

    def __init__(self, task: Task, noise_std: float = 0.0, seed: int = 0,
                 noise_dims: tuple[int, ...] | None = None) -> None:
        self.task = task
        self.noise_std = noise_std
        self.noise_dims = noise_dims  # None: every action dimension
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
            noise = self.rng.normal(0.0, self.noise_std, size=action.shape)
            if self.noise_dims is not None:
                noise[[d for d in range(len(noise)) if d not in self.noise_dims]] = 0.0
            action = action + noise
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


def _leg_recession(a: np.ndarray, b: np.ndarray, goal: np.ndarray) -> float:
    """How far the straight leg a -> b ends from ``goal`` beyond its closest approach to it."""
    ab = b - a
    t = float(np.clip(np.dot(goal - a, ab) / max(float(np.dot(ab, ab)), 1e-12), 0.0, 1.0))
    return float(np.linalg.norm(b - goal) - np.linalg.norm(a + t * ab - goal))


class PushExpert(ScriptedExpert):
    """Push the object to the square along an obstacle-free route, re-aiming every step.

    The route is a polyline for the object's centre, planned on a visibility graph around the tray, the other objects
    and the fixed furniture, so the object is never driven into something that stops it and the hand never has to
    come down on something to get behind it. Each leg is pushed from behind; a corner (or losing the object) lifts the
    hand and re-approaches from behind the next leg. The hand pushes with the flat outer face of one closed finger:
    the gap between the closed fingers would otherwise catch the object's edge (a cylinder wedges in and is lifted).
    """

    task: PushTask
    PUSH_Z = 0.022
    LIFT_Z = 0.08  # fingertips clear every object top while re-approaching, staying close for steady progress
    FACE = 0.016  # grip centre to the outer face of a closed finger (the hand's half extent along the push)
    HAND_HALF_WIDTH = 0.012  # the closed fingers' half extent across the push
    GAP = 0.012  # between finger face and object when lowering behind it
    CARROT = 0.02  # how far inside the contact the servo aims while pushing (enough for full push speed)
    # (object margin, hand margin) to obstacles: comfortable, and tight (for narrow gaps, at TIGHT_COST per leg).
    MARGINS = ((0.01, 0.008), (0.004, 0.003))
    TURN_COST = 0.15  # metres of pushing that a re-approach costs in time
    TIGHT_COST = 0.1
    DETOUR_COST = 1.0  # per metre that a leg takes the object further from the square
    LOOKAHEAD = 0.06  # how far ahead along a leg the push aims
    PUSH_SPEED = 0.7
    PATIENCE = 40  # steps spent failing to get behind the object before re-planning
    STUCK_STEPS = 8  # steps of pushing without the object moving before re-planning

    def reset(self) -> None:
        super().reset()
        self.route: list[np.ndarray] | None = None
        self.leg_from = np.zeros(2)
        self.recent: list[np.ndarray] = []  # object positions while pushing, to notice it not moving

    def _extent(self, sim: TabletopSim, u: np.ndarray) -> float:
        """Distance from the object's centre to its face (or corner) that the pushing finger meets along ``u``."""
        if "cylinder" in self.task.obj:
            return scene.CYL_RADIUS
        a = float(np.arctan2(u[1], u[0])) - sim.object_yaw(self.task.obj)
        return scene.CUBE_HALF * (abs(np.cos(a)) + abs(np.sin(a)))

    def _push_yaw(self, sim: TabletopSim, u: np.ndarray) -> float:
        """Hand yaw that puts a finger's outer face across ``u``, nearest the current yaw.

        The fingers are symmetric under a half turn, so some such yaw lies in [-pi/2, pi/2]; staying within a band
        around that range keeps the hand far from the +-pi clip on its commanded yaw (it can never turn through it).
        """
        base = float(np.arctan2(u[1], u[0]))
        options = [base + k * np.pi for k in (-2, -1, 0, 1, 2) if abs(base + k * np.pi) <= np.pi / 2 + 0.6]
        return min(options, key=lambda y: abs(y - sim.hand_yaw()))

    # ---------------------------------------------------------------------------------------------------- planning
    def _leg_penalty(self, a: np.ndarray, b: np.ndarray, obstacles: tuple) -> float | None:
        """Extra cost of pushing the object straight from ``a`` to ``b``: 0 with comfortable clearances, TIGHT_COST if
        only the tight ones hold, None if the object or the hand would hit something."""
        boxes, discs = obstacles
        (obj_ok, hand_ok), (obj_tight, hand_tight) = self.MARGINS
        length = float(np.linalg.norm(b - a))
        if length < 1e-6:
            return 0.0
        u = (b - a) / length
        v = np.array([-u[1], u[0]])
        steps = np.linspace(0.0, 1.0, max(2, int(length / 0.005) + 1))[:, None]
        gaps = _clearance(a + steps * (b - a), boxes, discs) - _object_radius(self.task.obj)
        # A start already tighter than a margin (objects may begin close together) is fine as long as the leg
        # does not get any closer.
        obj_gap, start_gap = float(np.min(gaps)), float(gaps[0]) - 0.002
        if obj_gap < min(obj_tight, start_gap):
            return None
        # The hand, from where it comes down behind the object to where it pushes, sweeps a rectangle along the leg
        # (its footprint's sides and centre line are sampled). The grip stays off the workspace edge: the object may
        # overshoot a waypoint a little.
        r_max, r_min = _object_radius(self.task.obj), min(_object_radius(self.task.obj), scene.CUBE_HALF)
        back, front = a - u * (r_max + self.FACE + self.GAP), b - u * (r_min + self.FACE)
        if np.any(np.minimum(back, front) < WORKSPACE_LOW[:2] + 0.008):
            return None
        if np.any(np.maximum(back, front) > WORKSPACE_HIGH[:2] - 0.008):
            return None
        tail, head = back - u * self.FACE, front + u * self.FACE
        steps = np.linspace(0.0, 1.0, max(2, int(np.linalg.norm(head - tail) / 0.005) + 1))[:, None]
        line = tail + steps * (head - tail)
        hand = np.concatenate([line + sv * self.HAND_HALF_WIDTH * v for sv in (-1, 0, 1)])
        hand_clear = float(np.min(_clearance(hand, boxes, discs)))
        if obj_gap >= min(obj_ok, start_gap) and hand_clear >= hand_ok:
            return 0.0
        if hand_clear >= hand_tight:
            return self.TIGHT_COST
        return None

    def _plan(self, sim: TabletopSim) -> list[np.ndarray]:
        """Cheapest route from the object to the square's centre, as object waypoints (the square's centre last).

        Dijkstra on a visibility graph: nodes at the corners of the inflated obstacles plus short first legs in
        every direction (when something sits right behind the object, the way out may be a push sideways that makes
        room for the hand). A leg costs its length, plus TURN_COST if a corner follows, plus TIGHT_COST if it only
        fits with tight clearances, plus DETOUR_COST for taking the object further from the square. With no route at
        all, push straight and let re-approaches cope.
        """
        start, goal = sim.object_pos(self.task.obj)[:2], sim.furniture_pos("square")[:2]
        obstacles = boxes, discs = _obstacles(sim, exclude=(self.task.obj,))
        pad = _object_radius(self.task.obj) + self.MARGINS[0][0] + 0.006
        nodes = [start, goal]
        for dist in (0.05, 0.1):
            nodes += [start + dist * np.array([np.cos(a), np.sin(a)]) for a in np.arange(16) * np.pi / 8]
        for cx, cy, hx, hy in boxes:
            nodes += [np.array([cx + sx * (hx + pad), cy + sy * (hy + pad)]) for sx in (-1, 1) for sy in (-1, 1)]
        for cx, cy, r in discs:
            ring = (r + pad) / np.cos(np.pi / 8)
            nodes += [np.array([cx, cy]) + ring * np.array([np.cos(a), np.sin(a)]) for a in np.arange(8) * np.pi / 4]
        # Waypoints where the object would already touch something cannot be on any route.
        gaps = _clearance(np.array(nodes[2:]), boxes, discs) - _object_radius(self.task.obj)
        nodes = nodes[:2] + [p for p, g in zip(nodes[2:], gaps) if g >= self.MARGINS[1][0]]
        n = len(nodes)
        cost, prev, done = np.full(n, np.inf), np.full(n, -1), np.zeros(n, bool)
        cost[0] = 0.0
        while True:
            i = int(np.argmin(np.where(done, np.inf, cost)))
            if done[i] or not np.isfinite(cost[i]):
                return [goal]
            if i == 1:
                break
            done[i] = True
            for j in range(1, n):
                if done[j]:
                    continue
                c = cost[i] + float(np.linalg.norm(nodes[j] - nodes[i])) + (self.TURN_COST if j != 1 else 0.0)
                # Moving the object away from the square makes ground-truth progress drop: avoid it where possible.
                c += self.DETOUR_COST * _leg_recession(nodes[i], nodes[j], goal)
                if c >= cost[j]:
                    continue
                penalty = self._leg_penalty(nodes[i], nodes[j], obstacles)
                if penalty is not None and c + penalty < cost[j]:
                    cost[j], prev[j] = c + penalty, i
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
        if len(self.route) > 1:
            # Pure pursuit of the leg's line, aiming ahead of the object past the waypoint: steers back onto the
            # line after a drift, and the direction stays steady as the object nears the waypoint.
            leg = self.route[0] - self.leg_from
            leg /= max(np.linalg.norm(leg), 1e-6)
            aim = self.leg_from + leg * (float(np.dot(obj - self.leg_from, leg)) + self.LOOKAHEAD)
        else:
            aim = self.route[0]
        u = aim - obj
        u /= max(np.linalg.norm(u), 1e-6)
        yaw = self._push_yaw(sim, u)
        face = self._extent(sim, u) + self.FACE  # grip-to-object-centre distance at contact
        behind = obj - u * (face + self.GAP)
        if self.phase == 0 and self.timer > self.PATIENCE:  # cannot get behind the object: plan again from here
            self.route, self.timer = None, 0
            return self._act(sim)
        if self.phase == 0:  # back off, up clear of the objects, then across to above the pre-push point
            if hand3[2] < self.LIFT_Z - 0.015 and np.linalg.norm(hand - behind) > 0.01:
                away = hand - obj
                if self.timer < 2 and np.linalg.norm(away) < face + 0.01:
                    # Lifting a finger that still presses on the object drags it up and can tip it.
                    away /= max(np.linalg.norm(away), 1e-6)
                    return self.servo(sim, np.array([*(hand + 0.01 * away), hand3[2]]), CLOSE, sim.hand_yaw())
                return self.servo(sim, np.array([*hand, self.LIFT_Z]), CLOSE, yaw)
            wp = np.array([*behind, self.LIFT_Z])
            if self.near(sim, wp, 0.01) and abs(_wrap(yaw - sim.hand_yaw())) < 0.3:  # finishes turning on the way down
                self.advance()
            return self.servo(sim, wp, CLOSE, yaw)
        if self.phase == 1:  # down behind the object
            wp = np.array([*behind, self.PUSH_Z])
            if self.near(sim, wp, 0.005) and abs(_wrap(yaw - sim.hand_yaw())) < 0.08:
                self.advance()
            return self.servo(sim, wp, CLOSE, yaw)
        off = hand - obj
        lateral = abs(float(u[0] * off[1] - u[1] * off[0]))  # the hand's distance from the push line
        misaligned = abs(_wrap(yaw - sim.hand_yaw())) > 0.5  # turning in contact would bring the finger gap round
        self.recent = [*self.recent[-self.STUCK_STEPS :], obj]
        stuck = self.timer >= self.STUCK_STEPS and np.linalg.norm(obj - self.recent[-self.STUCK_STEPS]) < 0.004
        if turned or lateral > 0.02 or misaligned or stuck or float(np.dot(obj - hand, u)) < 0.0:
            # A corner keeps the route. Losing the object (it slid off the finger) or getting stuck (the hand caught
            # on something the object's drift brought into its way) re-plans from where the object is now.
            if not turned:
                self.route = None
            self.phase, self.timer, self.recent = 0, 0, []
            return self._act(sim)
        wp = np.array([*(obj - u * (face - self.CARROT)), self.PUSH_Z])
        speed = self.PUSH_SPEED
        if len(self.route) > 1:  # slow down into a corner so that the object does not coast past it
            to_go = float(np.dot(self.route[0] - obj, u))
            speed = float(np.clip(to_go / 0.04, 0.3, self.PUSH_SPEED))
        return self.servo(sim, wp, CLOSE, yaw, speed=speed)


class PlaceExpert(ScriptedExpert):
    """Grasp, lift, carry above the target, lower, release, retreat."""

    task: PlaceTask
    CARRY_Z = 0.13
    GRASP_CLEARANCE = 0.006  # between the open fingers and anything else when they come down around the object

    def _grasp_yaw(self, sim: TabletopSim) -> float:
        """A yaw that grasps the object across a pair of faces, with the open fingers clear of everything else.

        The default (the smallest turn) can put a finger on the tray wall or a neighbouring object; then the other
        face pair of a cube, or another angle round a cylinder, is used.
        """
        if "cylinder" in self.task.obj:
            candidates = [0.0, np.pi / 6, -np.pi / 6, np.pi / 3, -np.pi / 3, np.pi / 2]
        else:
            base = _wrap((sim.object_yaw(self.task.obj) + np.pi / 4) % (np.pi / 2) - np.pi / 4)
            candidates = [base, base - np.pi / 2 if base > 0 else base + np.pi / 2]
        boxes, discs = _obstacles(sim, exclude=(self.task.obj,))
        centre = sim.object_pos(self.task.obj)[:2]
        clear = [float(np.min(_clearance(_finger_points(centre, y, FINGER_OPEN_X), boxes, discs))) for y in candidates]
        for y, c in zip(candidates, clear):
            if c >= self.GRASP_CLEARANCE:
                return y
        return candidates[int(np.argmax(clear))]

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
            # Start lowering as soon as the object is roughly above the target (phase 5 keeps centring it on the way
            # down). A tight threshold here makes demos hover while they align to the millimetre, a wait a learned
            # policy cannot see in its images and so imitates as hovering forever.
            tol = 0.012 if t.target == "tray" else 0.006
            if np.linalg.norm(wp[:2] - sim.grip_pos()[:2]) < tol:
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


def make_expert(task: Task, noise_std: float = 0.0, seed: int = 0,
                noise_dims: tuple[int, ...] | None = None) -> ScriptedExpert:
    """The scripted expert for ``task`` (``noise_dims``: the action dimensions the noise perturbs, None: all)."""
    return _EXPERTS[type(task)](task, noise_std=noise_std, seed=seed, noise_dims=noise_dims)
