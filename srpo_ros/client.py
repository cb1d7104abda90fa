"""An rclpy node inside a non-ROS program (the ``srpo loop`` driver, tests, benchmarks), spinning in its own thread.

The program keeps its own control flow (training, waiting, plotting) while the node receives: each client has its own
rclpy context on the given domain, so several can live in one process (a test's probe beside a loop) and closing one
leaves the others running. Single-threaded executor: callbacks run one at a time in the spin thread; ``received``
lists are appended under ``lock``.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable


class GraphClient:
    """One node on ``domain`` (None: ``ROS_DOMAIN_ID`` from the environment), spinning until ``close``."""

    def __init__(self, name: str, domain: int | None = None) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, **({} if domain is None else {"domain_id": domain}))
        self.node = rclpy.create_node(name, context=self.context)
        self.received: dict[str, list] = {}
        self.lock = threading.Lock()
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - shutdown races end the loop
                break

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def listen(self, msg_type, topic: str, qos: Any = 20) -> list:
        """Subscribe to ``topic``; returns the list that collects ``(monotonic time, message)`` pairs."""
        box: list = []
        self.received[topic] = box

        def on(msg) -> None:
            with self.lock:
                box.append((time.monotonic(), msg))

        self.node.create_subscription(msg_type, topic, on, qos)
        return box

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Poll ``predicate`` (under ``lock``) until it holds (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate():
                    return True
            time.sleep(0.05)
        return False

    def call(self, srv_type, name: str, request, timeout: float = 20.0):
        """Call a service and return its response; TimeoutError naming the service when it is absent or silent."""
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"service {name} is not available after {timeout:g} s")
            future = client.call_async(request)
            deadline = time.monotonic() + timeout
            while not future.done() and time.monotonic() < deadline:
                time.sleep(0.02)
            if not future.done():
                raise TimeoutError(f"service {name} did not answer within {timeout:g} s")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)
        self.thread.join(timeout=5)


__all__ = ["GraphClient"]
