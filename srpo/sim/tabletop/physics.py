"""The tabletop simulator core: MuJoCo model, Cartesian gripper control, rendering and privileged state queries.

``TabletopSim`` knows nothing about tasks, rewards or gymnasium: ``env.py`` wraps it in the gymnasium API, ``tasks.py``
reads its privileged state for success and ground-truth progress, and ``experts.py`` drives it from that state.
"""

from __future__ import annotations

import os

# Headless rendering must be chosen before mujoco is imported; llvmpipe's worker threads only add contention for
# 64x64 images and for several env processes on 2 cores.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("LP_NUM_THREADS", "1")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from srpo.sim.tabletop import scene  # noqa: E402

MAX_DPOS = 0.02  # metres per step at |action| = 1 (0.4 m/s at 20 Hz)
MAX_DROT = 0.12  # radians per step at |action| = 1
TILT_LIMIT = 0.5  # |roll|, |pitch| bound (rad): keeps the fingers pointing at the table
WORKSPACE_LOW = np.array([-0.32, -0.3, scene.GRIP_Z_MIN])
WORKSPACE_HIGH = np.array([0.32, 0.34, 0.3])
CONTROL_DT = 0.05  # 20 Hz, like LIBERO
N_SUBSTEPS = 10  # x timestep 0.005 s = CONTROL_DT


def euler_to_quat(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Quaternion (w, x, y, z) of R = Rz(yaw) Ry(pitch) Rx(roll)."""
    cr, sr = np.cos(roll / 2), np.sin(roll / 2)
    cp, sp = np.cos(pitch / 2), np.sin(pitch / 2)
    cy, sy = np.cos(yaw / 2), np.sin(yaw / 2)
    return np.array(
        [
            cr * cp * cy + sr * sp * sy,
            sr * cp * cy - cr * sp * sy,
            cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy,
        ]
    )


class TabletopSim:
    """MuJoCo scene plus a Cartesian controller for the floating gripper."""

    def __init__(self, image_size: int = 64, camera_names: tuple[str, ...] = ("agentview", "wrist"),
                 scenery: bool = True) -> None:
        """``scenery=False``: without the evaluation-only backdrop, textures and distractors (the scene they must
        leave unchanged until a perturbation shows them; tests compare the two)."""
        self.model = mujoco.MjModel.from_xml_string(scene.build_scene_xml(max(256, image_size), scenery=scenery))
        self.distractors = scene.DISTRACTORS if scenery else ()
        self.data = mujoco.MjData(self.model)
        self.image_size = image_size
        self.camera_names = camera_names
        self._renderer: mujoco.Renderer | None = None
        m = self.model
        self._default_body_pos = m.body_pos.copy()
        self._body = {n: m.body(n).id for n in ("hand", "hand_target", "tray", "square", "button_base", "cabinet", "drawer", "button")}
        self._body.update({n: m.body(n).id for n in (*scene.MOVABLE_OBJECTS, *self.distractors)})
        self._geom = {n: m.geom(n).id for n in ("palm", "finger_left", "finger_right", "handle", "drawer_front", "button")}
        self._geom.update({n: m.geom(n).id for n in (*scene.MOVABLE_OBJECTS, *self.distractors)})
        self._qadr = {n: m.jnt_qposadr[m.joint(n).id] for n in (*scene.MOVABLE_OBJECTS, "hand", "drawer", "button", "finger_left", "finger_right")}
        self._mocap = m.body_mocapid[self._body["hand_target"]]
        self._grip_site = m.site("grip").id
        self._euler = np.zeros(3)
        self.gripper_command = -1.0

    # ----------------------------------------------------------------------------------------------------- state set
    def reset(self, layout: dict) -> None:
        """Place everything as ``layout`` says (see tasks.InitialState.layout) and settle the scene."""
        m, d = self.model, self.data
        m.body_pos[:] = self._default_body_pos
        for name in ("tray", "square", "button_base", "cabinet"):
            m.body_pos[self._body[name], :2] = layout[name]
        mujoco.mj_resetData(m, d)
        for name in scene.MOVABLE_OBJECTS:
            x, y, yaw = layout[name]
            z = scene.CYL_HALF_HEIGHT if "cylinder" in name else scene.CUBE_HALF
            a = self._qadr[name]
            d.qpos[a : a + 3] = (x, y, z + 0.0005)
            d.qpos[a + 3 : a + 7] = euler_to_quat(0.0, 0.0, yaw)
        d.qpos[self._qadr["drawer"]] = layout["drawer"]
        for name in self.distractors:  # shown, solid and on the table only where the layout places them (else parked)
            body, geom, placed = self._body[name], self._geom[name], name in layout
            if placed:
                m.body_pos[body] = (*layout[name], scene.DISTRACTOR_HALF_HEIGHT[name])
            m.geom_rgba[geom, 3] = 1.0 if placed else 0.0
            # the broad phase filters on the body's flags (compiled as the OR of its geoms'): both must change
            m.geom_contype[geom] = m.geom_conaffinity[geom] = int(placed)
            m.body_contype[body] = m.body_conaffinity[body] = int(placed)
        self._euler = np.array([0.0, 0.0, layout["hand"][3]])
        d.mocap_pos[self._mocap] = layout["hand"][:3]
        d.mocap_quat[self._mocap] = euler_to_quat(*self._euler)
        a = self._qadr["hand"]
        d.qpos[a : a + 3] = layout["hand"][:3]
        d.qpos[a + 3 : a + 7] = d.mocap_quat[self._mocap]
        self.gripper_command = -1.0
        d.ctrl[:] = 0.0
        mujoco.mj_forward(m, d)

    def apply_action(self, action: np.ndarray) -> None:
        """Apply one validated action in [-1, 1]^7 over one control period (interpolating the mocap target)."""
        d = self.data
        start_pos = d.mocap_pos[self._mocap].copy()
        # Deltas are relative to where the hand is (as LIBERO's OSC), so a blocked hand does not wind up its target.
        target = np.clip(self.grip_pos() + action[:3] * MAX_DPOS, WORKSPACE_LOW, WORKSPACE_HIGH)
        start_euler = self._euler.copy()
        euler = start_euler + action[3:6] * MAX_DROT
        euler[:2] = np.clip(euler[:2], -TILT_LIMIT, TILT_LIMIT)
        euler[2] = np.clip(euler[2], -np.pi, np.pi)
        self._euler = euler
        self.gripper_command = float(action[6])
        d.ctrl[:] = (self.gripper_command + 1.0) / 2.0 * scene.FINGER_MAX
        for k in range(1, N_SUBSTEPS + 1):
            f = k / N_SUBSTEPS
            d.mocap_pos[self._mocap] = start_pos + f * (target - start_pos)
            d.mocap_quat[self._mocap] = euler_to_quat(*(start_euler + f * (euler - start_euler)))
            mujoco.mj_step(self.model, d)

    # --------------------------------------------------------------------------------------------------- observing
    def render(self, camera: str, size: int | None = None) -> np.ndarray:
        size = size or self.image_size
        if self._renderer is None or self._renderer.height != size:
            self.close_renderer()
            self._renderer = mujoco.Renderer(self.model, size, size)
        self._renderer.update_scene(self.data, camera=camera)
        return self._renderer.render()

    def proprio(self) -> np.ndarray:
        q = self.data.xquat[self._body["hand"]].copy()
        if q[0] < 0:
            q = -q
        return np.concatenate([self.grip_pos(), q, [self.gripper_opening()]]).astype(np.float32)

    def close_renderer(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # ------------------------------------------------------------------------------------------ privileged queries
    @property
    def time(self) -> float:
        return float(self.data.time)

    def grip_pos(self) -> np.ndarray:
        return self.data.site_xpos[self._grip_site].copy()

    def hand_yaw(self) -> float:
        xmat = self.data.xmat[self._body["hand"]].reshape(3, 3)
        return float(np.arctan2(xmat[1, 0], xmat[0, 0]))

    def gripper_opening(self) -> float:
        """Gap between the finger pads in metres."""
        q = self.data.qpos
        return float(2 * scene.FINGER_OPEN_FACE - q[self._qadr["finger_left"]] - q[self._qadr["finger_right"]])

    def object_pos(self, name: str) -> np.ndarray:
        return self.data.xpos[self._body[name]].copy()

    def object_yaw(self, name: str) -> float:
        xmat = self.data.xmat[self._body[name]].reshape(3, 3)
        return float(np.arctan2(xmat[1, 0], xmat[0, 0]))

    def object_upright(self, name: str) -> bool:
        return bool(self.data.xmat[self._body[name]].reshape(3, 3)[2, 2] > 0.95)

    def furniture_pos(self, name: str) -> np.ndarray:
        return self.data.xpos[self._body[name]].copy()

    def drawer_opening(self) -> float:
        return float(self.data.qpos[self._qadr["drawer"]])

    def button_depth(self) -> float:
        return float(-self.data.qpos[self._qadr["button"]])

    def handle_pos(self) -> np.ndarray:
        return self.data.geom_xpos[self._geom["handle"]].copy()

    def drawer_front_y(self) -> float:
        """World y of the drawer's front face."""
        g = self._geom["drawer_front"]
        return float(self.data.geom_xpos[g][1] - self.model.geom_size[g][1])

    def touching(self, geom_a: str, geom_b: str) -> bool:
        a, b = self._geom[geom_a], self._geom[geom_b]
        n = self.data.ncon
        if n == 0:
            return False
        g1, g2 = self.data.contact.geom1[:n], self.data.contact.geom2[:n]
        return bool(np.any(((g1 == a) & (g2 == b)) | ((g1 == b) & (g2 == a))))

    def hand_touching(self, obj: str) -> bool:
        return any(self.touching(h, obj) for h in ("palm", "finger_left", "finger_right"))

    def grasped(self, obj: str) -> bool:
        return self.touching("finger_left", obj) and self.touching("finger_right", obj)
