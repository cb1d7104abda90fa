"""What every srpo node shares: typed config from ROS parameters, message conversions, stamps, and the spin loop.

Parameters: a node declares one ROS parameter per field of its config dataclasses (same names as in the YAML
configs and the dataclasses), so ``--params-file configs/ros/bringup.yaml`` and ``--ros-args -p name:=value`` set
them, and the dataclass's own validation reports a bad value by name before the node starts.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
import typing
from typing import Any, Callable, TypeVar

import numpy as np

T = TypeVar("T")


def declare_config(node: Any, cls: type[T], overrides: dict[str, Any] | None = None) -> T:
    """Declare a ROS parameter per field of the dataclass ``cls`` (default: the field's default) and build ``cls``
    from the values the node was started with. Raises ValueError naming the parameter on a bad value."""
    values = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = (overrides or {}).get(f.name, _default(f))
        if node.has_parameter(f.name):
            value = node.get_parameter(f.name).value
        else:
            value = node.declare_parameter(f.name, _ros_default(default, hints[f.name])).value
        values[f.name] = _from_ros(value, hints[f.name], f.name)
    return cls(**values)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    raise ValueError(f"config field {f.name} has no default: it cannot be a ROS parameter")


def _ros_default(value: Any, hint: Any) -> Any:
    """ROS parameter types are strict: a float list must be floats (``[-1, 1]`` would declare an integer array)."""
    if hint is float:
        return float(value)
    if typing.get_origin(hint) is list and typing.get_args(hint) == (float,):
        return [float(v) for v in value]
    return value


def _from_ros(value: Any, hint: Any, name: str) -> Any:
    if typing.get_origin(hint) is list:
        return [float(v) for v in value] if typing.get_args(hint) == (float,) else list(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, float):
        raise ValueError(f"parameter {name} must be an integer, got {value}")
    return value


def latched_qos(depth: int = 1) -> Any:
    """Reliable, transient local: a late subscriber still gets the last ``depth`` messages (instruction, status; the
    policy's decisions, so a recorder whose discovery of the policy lagged still files the first ones)."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=depth, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)


def diagnostics_message(node: Any, name: str, ok: bool, message: str, values: dict[str, Any],
                        hardware_id: str = "") -> Any:
    """One DiagnosticStatus (OK or WARN/ERROR) in a DiagnosticArray, values as strings, stamped now."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    status = DiagnosticStatus(level=DiagnosticStatus.OK if ok else DiagnosticStatus.WARN, name=name,
                              hardware_id=hardware_id, message=message,
                              values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
    arr = DiagnosticArray(status=[status])
    arr.header.stamp = node.get_clock().now().to_msg()
    return arr


def stamp_to_seconds(stamp: Any) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def seconds_to_stamp(t: float) -> Any:
    from builtin_interfaces.msg import Time

    sec = int(np.floor(t))
    return Time(sec=sec, nanosec=min(int(round((t - sec) * 1e9)), 999_999_999))


def now_seconds(node: Any) -> float:
    return node.get_clock().now().nanoseconds * 1e-9


def now_ns(node: Any) -> int:
    return int(node.get_clock().now().nanoseconds)


def image_message(img: np.ndarray, stamp: float, frame_id: str) -> Any:
    from sensor_msgs.msg import Image

    h, w = img.shape[:2]
    msg = Image(height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3)
    msg.header.stamp, msg.header.frame_id = seconds_to_stamp(stamp), frame_id
    msg.data = np.ascontiguousarray(img, dtype=np.uint8).tobytes()
    return msg


def camera_info_message(height: int, width: int, stamp: float, frame_id: str) -> Any:
    """A pinhole CameraInfo without calibration (K from a nominal 60 degree field of view): enough for viewers."""
    from sensor_msgs.msg import CameraInfo

    f = 0.5 * width / np.tan(np.radians(30))
    msg = CameraInfo(height=height, width=width, distortion_model="plumb_bob")
    msg.header.stamp, msg.header.frame_id = seconds_to_stamp(stamp), frame_id
    msg.k = [f, 0.0, width / 2, 0.0, f, height / 2, 0.0, 0.0, 1.0]
    msg.p = [f, 0.0, width / 2, 0.0, 0.0, f, height / 2, 0.0, 0.0, 0.0, 1.0, 0.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.d = [0.0] * 5
    return msg


def named_values(names: list[str] | tuple[str, ...], values: np.ndarray, stamp: float, frame_id: str = "") -> Any:
    """A JointState carrying named values (robot state, an action) with a stamp."""
    from sensor_msgs.msg import JointState

    msg = JointState(name=list(names), position=[float(v) for v in np.asarray(values).reshape(-1)])
    msg.header.stamp, msg.header.frame_id = seconds_to_stamp(stamp), frame_id
    return msg


def acting_distribution(temperature: float, std: float | str | None) -> dict[str, Any]:
    """How the policy node samples its chunks, as episodes store it (``EpisodeMeta.policy_distribution``): the one
    place both the policy's latched info and the recorder's per-decision note build it, so offline SRPO reads the same
    fields whichever of the two reached the recorder first. ``std`` is a number (a fixed exploration std in normalised
    units) or "policy" (the policy's own learned std)."""
    return {"family": "gaussian", "space": "normalised", "chunk_correlation": 0.0,
            "temperature": float(temperature), "std": std}


def decision_message(stamp: float, chunk: np.ndarray, log_prob: float, mean: np.ndarray | None,
                     log_std: np.ndarray | None, temperature: float, version: str,
                     std: float | str | None = None) -> Any:
    """The decision as JSON in a std_msgs/String: standard messages have no type for a chunk with its distribution,
    and a decision every few ticks is far too rare for JSON's cost to matter. It describes itself (version,
    temperature, exploration ``std``): a recorder that has not heard the policy's latched info yet (discovery lags on
    a loaded machine) still files how the chunk was sampled."""
    from std_msgs.msg import String

    body = {"stamp": stamp, "chunk": np.asarray(chunk).tolist(), "log_prob": float(log_prob),
            "temperature": float(temperature), "version": version, "std": std,
            "mean": None if mean is None else np.asarray(mean).tolist(),
            "log_std": None if log_std is None else np.asarray(log_std).tolist()}
    return String(data=json.dumps(body))


def parse_decision(text: str) -> dict[str, Any]:
    """Inverse of ``decision_message``; raises ValueError on a malformed body."""
    body = json.loads(text)
    out = {"stamp": float(body["stamp"]), "chunk": np.asarray(body["chunk"], np.float32),
           "log_prob": float(body["log_prob"]), "version": str(body.get("version", "unknown")),
           "temperature": float(body.get("temperature", 0.0)), "std": body.get("std")}
    for key in ("mean", "log_std"):
        out[key] = None if body.get(key) is None else np.asarray(body[key], np.float32)
    if out["chunk"].ndim != 2 or not np.all(np.isfinite(out["chunk"])):
        raise ValueError("decision chunk must be a finite K x A array")
    return out


def spin(make_node: Callable[[], Any], args: list[str] | None = None) -> int:
    """Init rclpy, build the node, spin until SIGINT/SIGTERM, and clean up (Jazzy raises ExternalShutdownException
    on SIGINT during spin: both end the node quietly).

    One thread runs every callback: the simulator's OpenGL context belongs to the thread that created it, and the
    cores are simpler single-threaded (the policy's inference has its own worker inside the ``ActionChunker``)."""
    import rclpy
    from rclpy.executors import ExternalShutdownException

    rclpy.init(args=args)
    node = None
    try:
        try:
            node = make_node()
        except Exception as exc:  # noqa: BLE001 - a bad parameter or policy: one line naming it, not a traceback
            print(f"{getattr(make_node, '__module__', 'node')}: cannot start: {exc}", file=sys.stderr)
            return 1
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            # a second Ctrl-C (or a supervisor's repeated SIGINT) must not cut a final episode write in half
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            close = getattr(node, "close", None)
            if close is not None:
                close()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
