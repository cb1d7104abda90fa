"""The camera node: frames from OpenCV (a V4L2 device index, a video file or an RTSP URL) published as rgb8 Image and
CameraInfo on ``/srpo/camera/<camera_name>/...`` at ``rate_hz``, resized to the policy's ``width`` x ``height``.

A camera that cannot be opened, or stops delivering frames, is reported (log and ``/diagnostics``) and retried every
``retry_s``; the node keeps running, and the policy node, seeing no fresh frame, holds the arm. A video file loops, so
a recorded scene can stand in for a camera during development.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from srpo_ros import topics
from srpo_ros.common import camera_info_message, declare_config, diagnostics_message, image_message, now_seconds, spin


@dataclass
class CameraNodeConfig:
    camera_name: str = "agentview"
    source: str = "0"
    rate_hz: float = 30.0
    width: int = 64
    height: int = 64
    frame_id: str = "agentview_optical"
    retry_s: float = 1.0

    def __post_init__(self) -> None:
        if not self.camera_name.isidentifier():
            raise ValueError(f"camera_name must be an identifier (it names a topic), got {self.camera_name!r}")
        if not self.rate_hz > 0 or not self.retry_s > 0:
            raise ValueError("rate_hz and retry_s must be > 0")
        if self.width < 8 or self.height < 8:
            raise ValueError(f"width and height must be >= 8, got {self.width}x{self.height}")


class FrameSource:
    """OpenCV capture with reopening: ``read()`` gives an RGB frame of the configured size, or None and why."""

    def __init__(self, cfg: CameraNodeConfig) -> None:
        self.cfg, self.cap, self.problem = cfg, None, "not opened yet"
        self.is_file = not cfg.source.isdigit() and "://" not in cfg.source

    def open(self) -> bool:
        import cv2

        source = int(self.cfg.source) if self.cfg.source.isdigit() else self.cfg.source
        self.cap = cv2.VideoCapture(source)
        if not self.cap.isOpened():
            self.cap, self.problem = None, f"cannot open camera source {self.cfg.source!r}"
            return False
        self.problem = ""
        return True

    def read(self) -> tuple[np.ndarray | None, str]:
        import cv2

        if self.cap is None:
            return None, self.problem
        ok, frame = self.cap.read()
        if not ok and self.is_file:  # a video file ends: loop it
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self.cap.read()
        if not ok or frame is None:
            self.close()
            self.problem = f"camera source {self.cfg.source!r} stopped delivering frames"
            return None, self.problem
        frame = cv2.resize(frame, (self.cfg.width, self.cfg.height), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(frame[..., ::-1]), ""  # OpenCV gives BGR

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
        self.cap = None


def make_node():
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.node import Node
    from sensor_msgs.msg import CameraInfo, Image

    class CameraNode(Node):
        def __init__(self) -> None:
            super().__init__("camera_node")
            self.cfg = declare_config(self, CameraNodeConfig)
            self.source = FrameSource(self.cfg)
            self.image_pub = self.create_publisher(Image, topics.CAMERA_IMAGE.format(self.cfg.camera_name), 5)
            self.info_pub = self.create_publisher(CameraInfo, topics.CAMERA_INFO.format(self.cfg.camera_name), 5)
            self.diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
            self.frames, self.failures, self.next_retry = 0, 0, 0.0
            self.create_timer(1.0 / self.cfg.rate_hz, self.tick)
            self.create_timer(1.0, self.diagnostics)

        def tick(self) -> None:
            now = now_seconds(self)
            if self.source.cap is None:
                if now < self.next_retry:
                    return
                self.next_retry = now + self.cfg.retry_s
                if not self.source.open():
                    self.failures += 1
                    self.get_logger().error(f"{self.source.problem}; retrying every {self.cfg.retry_s:g} s",
                                            throttle_duration_sec=10.0)
                    return
                self.get_logger().info(f"camera {self.cfg.camera_name}: opened {self.cfg.source!r}")
            frame, problem = self.source.read()
            if frame is None:
                self.failures += 1
                self.get_logger().error(problem)
                return
            stamp = now_seconds(self)
            self.image_pub.publish(image_message(frame, stamp, self.cfg.frame_id))
            self.info_pub.publish(camera_info_message(self.cfg.height, self.cfg.width, stamp, self.cfg.frame_id))
            self.frames += 1

        def diagnostics(self) -> None:
            ok = self.source.cap is not None
            self.diag_pub.publish(diagnostics_message(
                self, f"srpo/camera/{self.cfg.camera_name}", ok, "streaming" if ok else self.source.problem,
                {"frames": self.frames, "failures": self.failures}, self.cfg.source))

        def close(self) -> None:
            self.source.close()

    return CameraNode()


def main(args: list[str] | None = None) -> int:
    return spin(make_node, args)


if __name__ == "__main__":
    raise SystemExit(main())
