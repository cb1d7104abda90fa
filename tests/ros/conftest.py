"""Real rclpy: node processes started as a user would, a probe node in the test process, a ROS domain per test.

The tiny exported policy comes from the export tests' fixtures (a real checkpoint and its verified ONNX graph)."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from srpo_ros.common import latched_qos  # noqa: F401 - the tests subscribe as the nodes publish
from tests.export.conftest import checkpoint, episode_store, exported  # noqa: F401 - fixtures reused here

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (the [ros] extra)")
from srpo_ros.client import GraphClient  # noqa: E402 - after the skip: it needs rclpy

REPO = Path(__file__).resolve().parents[2]
_domains = itertools.count()


def fresh_domain() -> int:
    """A ROS domain no other test (or xdist worker) uses at the same time: 0-101 are valid."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0)
    return 20 + 40 * (worker % 2) + next(_domains) % 40


def ros_env(domain: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain), FASTDDS_BUILTIN_TRANSPORTS="UDPv4", PYTHONUNBUFFERED="1",
               PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


class Nodes:
    """Node processes of one test, stopped (SIGINT, then SIGKILL) at the end; their logs are kept for failures."""

    def __init__(self, domain: int, tmp_path: Path) -> None:
        self.domain, self.tmp_path, self.procs = domain, tmp_path, {}

    def start(self, name: str, *argv: str) -> subprocess.Popen:
        log = open(self.tmp_path / f"{name}.log", "w")
        proc = subprocess.Popen([sys.executable, *argv], env=ros_env(self.domain), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=self.tmp_path)
        self.procs[name] = proc
        return proc

    def node(self, executable: str, *params: str, name: str | None = None) -> subprocess.Popen:
        args = ["-m", f"srpo_ros.{executable}", "--ros-args"]
        for p in params:
            args += ["-p", p]
        return self.start(name or executable, *args)

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text()

    def alive(self, name: str) -> bool:
        return self.procs[name].poll() is None

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        os.killpg(self.procs[name].pid, sig)
        self.procs[name].wait(timeout=30)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
        deadline = time.time() + 10
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


class Probe(GraphClient):
    """The test's own rclpy node (``srpo_ros.client.GraphClient``), with waits that fail with the nodes' logs."""

    def __init__(self, domain: int) -> None:
        super().__init__("probe", domain)

    def wait_for(self, predicate, timeout: float, what: str, nodes: Nodes | None = None) -> None:
        if self.wait_until(predicate, timeout):
            return
        logs = "" if nodes is None else "\n".join(f"--- {n}\n{nodes.log(n)[-3000:]}" for n in nodes.procs)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{logs}")


@pytest.fixture
def ros(tmp_path):
    """(domain, Nodes, Probe) for one test, cleaned up whatever happens."""
    domain = fresh_domain()
    nodes = Nodes(domain, tmp_path)
    probe = Probe(domain)
    try:
        yield domain, nodes, probe
    finally:
        nodes.stop_all()
        probe.close()
