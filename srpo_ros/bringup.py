"""The node set of a robot (or simulated robot) bring-up, described once for ``launch/bringup.launch.py`` and ``srpo
bringup``.

``node_set`` says which nodes run (executable, node name, parameter overrides); the launch file turns each into a
``launch_ros`` ``Node`` with ``parameters=[config, overrides]`` and ``commands`` into
``python -m srpo_ros.<executable> --ros-args -r __node:=<name> --params-file <config> -p key:=value ...``. Both read
the params file first and apply the overrides on top, so the two start the same nodes with the same parameters.

    srpo bringup robot:=sim policy:=exports/sft5                 # without a ROS install (the [ros] extra)
    ros2 launch srpo bringup.launch.py robot:=sim policy:=exports/sft5   # from a colcon workspace
    srpo bringup robot:=sim policy:=exports/sft5 sim_clock:=true  # simulated time, as fast as the policy answers

No rclpy here: this module is imported by the CLI and by the launch file, and neither needs it to plan.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from srpo.runtime.loading import BACKENDS  # defined once, where the backends are chosen
from srpo_ros.arm_node import ROBOTS  # the arm node owns what a robot may be

LAUNCH_ARGS = ("robot", "policy", "backend", "config", "sim_clock")
SWITCHES = {"true": True, "false": False}
CAMERAS = (("camera_agentview", "agentview"), ("camera_wrist", "wrist"))
STOP_GRACE_S = 5.0
POLL_S = 0.1

USAGE = """usage: srpo bringup [robot:=sim|real] [policy:=PATH] [backend:=auto|tensorrt|onnxruntime|torch]
                    [config:=YAML] [sim_clock:=false|true]

Start the srpo ROS 2 nodes (sim: arm, policy, recorder; real: two cameras as well) with the parameters of CONFIG
(default: configs/ros/bringup.yaml) and the overrides given here; Ctrl-C stops them all. sim_clock:=true (sim only):
the simulated arm publishes /clock and steps as soon as the policy answers, the other nodes use simulated time.
The same node set as `ros2 launch srpo bringup.launch.py robot:=... policy:=...`."""


@dataclass
class NodeLaunch:
    """One node of the bring-up: which executable, under which node name, with which parameters over the YAML's."""

    executable: str
    name: str
    overrides: dict[str, str | float | bool | int] = field(default_factory=dict)


def default_config() -> str:
    """The repository's ``configs/ros/bringup.yaml``; from an installed colcon package (where this file is not next to
    the repository), the package's ``share/srpo/config/bringup.yaml``."""
    repo = Path(__file__).resolve().parent.parent / "configs" / "ros" / "bringup.yaml"
    if repo.is_file():
        return str(repo)
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        return str(repo)
    try:
        return str(Path(get_package_share_directory("srpo")) / "config" / "bringup.yaml")
    except (PackageNotFoundError, LookupError, ValueError, OSError):  # OSError: AMENT_PREFIX_PATH unset
        return str(repo)


def _check(robot: str, backend: str, sim_clock: bool = False) -> None:
    if robot not in ROBOTS:
        raise ValueError(f"robot must be one of {', '.join(ROBOTS)}, got {robot!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if sim_clock and robot != "sim":
        raise ValueError("sim_clock:=true needs robot:=sim (a real arm runs in real time)")


def node_set(robot: str, policy: str, backend: str, sim_clock: bool = False) -> list[NodeLaunch]:
    """The nodes for ``robot`` ("sim": the simulator is the arm and renders the cameras; "real": one camera node per
    camera of the spec, the arm node drives the real arm). ``policy`` is only passed when given, so a policy set in
    the params file is not replaced by an empty string. ``sim_clock``: the arm owns the clock (``sim_clock``), the
    other nodes follow it (``use_sim_time``), and the policy infers in its tick (``prefetch: false``), since the
    arm waits for each answer."""
    _check(robot, backend, sim_clock)
    policy_overrides: dict[str, str | float | bool | int] = {"backend": backend}
    if policy:
        policy_overrides["policy"] = policy
    arm: dict[str, str | float | bool | int] = {"robot": robot}
    recorder: dict[str, str | float | bool | int] = {"source": "sim" if robot == "sim" else "robot"}
    if sim_clock:
        arm["sim_clock"] = True
        policy_overrides.update(use_sim_time=True, prefetch=False)
        recorder["use_sim_time"] = True
    nodes = []
    if robot == "real":
        nodes += [NodeLaunch("camera_node", name, {"camera_name": camera}) for name, camera in CAMERAS]
    nodes += [
        NodeLaunch("arm_node", "arm_node", arm),
        NodeLaunch("policy_node", "policy_node", policy_overrides),
        NodeLaunch("recorder_node", "recorder_node", recorder),
    ]
    return nodes


def parse_launch_args(argv: list[str]) -> dict:
    """``robot:=sim policy:=PATH backend:=auto config:=YAML sim_clock:=false`` (any subset, any order; a repeated key:
    the last wins) into a dict with every key. Raises ValueError naming the argument on a malformed or unknown one, or
    a bad value."""
    args: dict = {"robot": "sim", "policy": "", "backend": "auto", "config": default_config(), "sim_clock": False}
    for arg in argv:
        key, sep, value = arg.partition(":=")
        if not sep:
            raise ValueError(f"bringup arguments are key:=value, got {arg!r} (keys: {', '.join(LAUNCH_ARGS)})")
        if key not in LAUNCH_ARGS:
            raise ValueError(f"unknown bringup argument {key!r} in {arg!r} (keys: {', '.join(LAUNCH_ARGS)})")
        args[key] = switch(value) if key == "sim_clock" else value
    _check(args["robot"], args["backend"], args["sim_clock"])
    if not args["config"]:
        raise ValueError("config:= needs a params file path")
    return args


def switch(value: str | bool) -> bool:
    """A launch switch (``true``/``false``, as launch arguments are text) as a bool."""
    if isinstance(value, bool):
        return value
    if value not in SWITCHES:
        raise ValueError(f"sim_clock:= takes true or false, got {value!r}")
    return SWITCHES[value]


def ros_value(value: str | float | bool | int) -> str:
    """A parameter value as the text of ``-p name:=<text>``, which rcl reads as YAML: strings are quoted when plain
    text would read as something else (``''``, ``true``, ``1.5``, ``a: b``)."""
    import yaml

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    try:
        plain = text != "" and text == text.strip() and yaml.safe_load(text) == text
    except yaml.YAMLError:
        plain = False
    return text if plain else "'" + text.replace("'", "''") + "'"


def commands(args: dict) -> list[list[str]]:
    """One command line per node of ``node_set`` for ``args`` (as from ``parse_launch_args``; missing keys take the
    defaults)."""
    full = {**parse_launch_args([]), **args}
    out = []
    for node in node_set(full["robot"], full["policy"], full["backend"], switch(full["sim_clock"])):
        cmd = [sys.executable, "-m", f"srpo_ros.{node.executable}", "--ros-args", "-r", f"__node:={node.name}",
               "--params-file", str(full["config"])]
        for key, value in node.overrides.items():
            cmd += ["-p", f"{key}:={ros_value(value)}"]
        out.append(cmd)
    return out


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def run_bringup(argv: list[str]) -> int:
    """Start every node of the bring-up (each in its own process group), forward SIGINT/SIGTERM to all of them, and
    when any node exits stop the others (SIGINT, SIGKILL after 5 s). Returns the exit code of the node that ended
    first, or 0 when they all stopped on a signal sent here."""
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    try:
        args = parse_launch_args(argv)
        if not Path(args["config"]).is_file():
            raise ValueError(f"config {args['config']} is not a file")
        cmds = commands(args)
    except ValueError as exc:
        print(f"srpo bringup: error: {exc}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    env.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "UDPv4")  # no shared-memory files left in /dev/shm by a killed node

    names = [n.name for n in node_set(args["robot"], args["policy"], args["backend"])]
    procs: list[tuple[str, subprocess.Popen]] = []
    stopping = threading.Event()  # set once we have sent the nodes a signal: their exits are then ours
    previous = {}

    def forward(signum, _frame):
        stopping.set()
        for _, proc in procs:
            if proc.poll() is None:
                _signal_group(proc, signum)

    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, forward)
    try:
        try:
            for name, cmd in zip(names, cmds):
                proc = subprocess.Popen(cmd, env=env, start_new_session=True)
                procs.append((name, proc))
                print(f"[bringup] {name}: pid {proc.pid}: {' '.join(cmd[1:])}", flush=True)
        except OSError as exc:
            print(f"srpo bringup: error: cannot start {cmds[len(procs)][2]}: {exc}", file=sys.stderr)
            stopping.set()
            _stop_all(procs)
            return 1

        first: tuple[str, int] | None = None
        while first is None and not stopping.is_set():
            for name, proc in procs:
                if proc.poll() is not None:
                    first = (name, proc.returncode)
                    break
            else:
                time.sleep(POLL_S)
        if first is not None and not stopping.is_set():
            print(f"[bringup] {first[0]} exited with code {first[1]}: stopping the other nodes", flush=True)
            stopping.set()
            _stop_all(procs)
            return _exit_code(first[1])
        _stop_all(procs, interrupt=False)  # the signal was forwarded: wait, SIGKILL after the grace period
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_all(procs: list[tuple[str, subprocess.Popen]], interrupt: bool = True) -> None:
    """SIGINT to every node still running (unless they already got a signal), then SIGKILL to those still running
    after ``STOP_GRACE_S``."""
    if interrupt:
        for _, proc in procs:
            if proc.poll() is None:
                _signal_group(proc, signal.SIGINT)
    deadline = time.monotonic() + STOP_GRACE_S
    for name, proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"[bringup] {name} did not stop within {STOP_GRACE_S:.0f} s: SIGKILL", flush=True)
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
