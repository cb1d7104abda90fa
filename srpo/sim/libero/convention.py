"""How LIBERO's observations map onto the project's spec, defined once for the env adapter and the HDF5 importer.

- Cameras: LIBERO's ``agentview`` and ``robot0_eye_in_hand`` become the spec's ``agentview`` and ``wrist``. LIBERO
  renders them upside down (OpenGL's bottom-left origin): both are rotated 180 degrees, as OpenVLA-OFT does, in the
  env and in imported demonstrations alike, so a policy sees the same orientation from either.
- Proprioception (the spec's 8 names): end-effector position (3, metres, robot base frame), orientation as a unit
  quaternion (w, x, y, z; robosuite gives x, y, z, w and the official HDF5 files an axis-angle vector) and the
  gripper opening, finger joint 0 minus finger joint 1 (metres; about 0.08 open, 0 closed).
- Actions are LIBERO's: 7 numbers in [-1, 1], delta position, delta rotation, gripper (-1 open, +1 close): the
  project's action spec already follows it, so actions pass through unchanged.

This module is numpy-only: importing it does not need LIBERO.
"""

from __future__ import annotations

import numpy as np

from srpo.spec import TABLETOP_SPEC, RobotSpec

CAMERA_KEYS = {"agentview": "agentview_image", "wrist": "robot0_eye_in_hand_image"}
"""The spec's camera name -> the key of LIBERO's observation dict."""

HDF5_CAMERA_KEYS = {"agentview": "agentview_rgb", "wrist": "eye_in_hand_rgb"}
"""The spec's camera name -> the dataset under ``data/demo_N/obs`` of an official LIBERO HDF5 file."""

CONTROL_HZ = 20.0  # LIBERO's control_freq


def libero_spec(image_size: int) -> RobotSpec:
    """The spec of a LIBERO env at ``image_size``: the tabletop contract's names (one policy interface for both)."""
    return TABLETOP_SPEC.with_image_size(image_size, image_size)


def upright(image: np.ndarray) -> np.ndarray:
    """LIBERO's upside-down render (H, W, 3) or a stack of them (..., H, W, 3), rotated 180 degrees (a copy)."""
    return np.ascontiguousarray(image[..., ::-1, ::-1, :])


def quat_xyzw_to_wxyz(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    return np.concatenate([q[..., 3:4], q[..., :3]], axis=-1)


def axis_angle_to_quat_wxyz(v: np.ndarray) -> np.ndarray:
    """Axis-angle vectors (..., 3) (angle = norm, radians) -> unit quaternions (..., 4), w >= 0."""
    v = np.asarray(v, dtype=np.float64)
    angle = np.linalg.norm(v, axis=-1, keepdims=True)
    # sin(a/2)/a -> 1/2 as a -> 0: the small-angle limit avoids 0/0
    scale = np.where(angle > 1e-9, np.sin(angle / 2) / np.maximum(angle, 1e-12), 0.5)
    q = np.concatenate([np.cos(angle / 2), v * scale], axis=-1)
    return q * np.where(q[..., :1] < 0, -1.0, 1.0)


def gripper_opening(finger_qpos: np.ndarray) -> np.ndarray:
    """LIBERO's two finger joints (..., 2) -> the opening (...,): joint 0 minus joint 1."""
    finger_qpos = np.asarray(finger_qpos, dtype=np.float64)
    return finger_qpos[..., 0] - finger_qpos[..., 1]


def proprio_from_env(obs: dict) -> np.ndarray:
    """The spec's proprio (8,) float32 from a robosuite observation dict."""
    quat = quat_xyzw_to_wxyz(obs["robot0_eef_quat"])
    quat = quat * (-1.0 if quat[0] < 0 else 1.0)
    return np.concatenate([obs["robot0_eef_pos"], quat, [gripper_opening(obs["robot0_gripper_qpos"])]]).astype(np.float32)


def proprio_from_hdf5(ee_pos: np.ndarray, ee_ori: np.ndarray, gripper_states: np.ndarray) -> np.ndarray:
    """The spec's proprio (T, 8) float32 from an official HDF5 demo's ``ee_pos`` (T, 3), ``ee_ori`` (T, 3,
    axis-angle) and ``gripper_states`` (T, 2)."""
    return np.concatenate([np.asarray(ee_pos, np.float64), axis_angle_to_quat_wxyz(ee_ori),
                           gripper_opening(gripper_states)[:, None]], axis=1).astype(np.float32)
