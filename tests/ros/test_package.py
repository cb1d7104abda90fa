"""The ROS 2 package ``srpo``: the colcon workspace, the launch file, the params file and ``srpo bringup``.

The launch file and ``srpo bringup`` must start the same nodes with the same parameters: both come from
``srpo_ros.bringup.node_set``, and the test below evaluates the launch file (against recording stubs of the ROS launch
modules, which are not installable from PyPI) and compares what it would start with ``bringup.commands``.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest
import yaml

from srpo_ros import bringup

REPO = Path(__file__).resolve().parents[2]
WS_SRC = REPO / "ros2_ws" / "src"
PKG = WS_SRC / "srpo"
LAUNCH_FILE = REPO / "launch" / "bringup.launch.py"
CONFIG = REPO / "configs" / "ros" / "bringup.yaml"
EXECUTABLES = ("camera_node", "arm_node", "policy_node", "recorder_node")

def _node_parameters() -> dict[str, dict]:
    """Each node's parameters and defaults, from the dataclasses it declares them from (one source of truth):
    configs/ros/bringup.yaml must list exactly these."""
    import dataclasses

    from srpo.robot.drivers import SimArmConfig, TwistMapperConfig
    from srpo.robot.inputs import InputGateConfig
    from srpo.robot.recorder import RecorderConfig
    from srpo.robot.safety import SafetyConfig
    from srpo.runtime.validation import ValidationConfig
    from srpo_ros.arm_node import ArmNodeConfig
    from srpo_ros.camera_node import CameraNodeConfig
    from srpo_ros.policy_node import PolicyNodeConfig
    from srpo_ros.recorder_node import RecorderNodeConfig

    def defaults(*classes):
        out = {}
        for cls in classes:
            for f in dataclasses.fields(cls):
                out[f.name] = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        return out

    return {"arm_node": defaults(ArmNodeConfig, SimArmConfig, SafetyConfig, TwistMapperConfig),
            "policy_node": defaults(PolicyNodeConfig, InputGateConfig, ValidationConfig),
            "recorder_node": defaults(RecorderNodeConfig, RecorderConfig),
            "camera": defaults(CameraNodeConfig)}


PARAMETERS = {k: v for k, v in _node_parameters().items() if k != "camera"}
CAMERA_PARAMETERS = set(_node_parameters()["camera"])


def _ros_env() -> dict[str, str]:
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(10 + os.getpid() % 90)  # a domain per test process: no cross-talk between runs
    env["FASTDDS_BUILTIN_TRANSPORTS"] = "UDPv4"
    return env


# ------------------------------------------------------------------------------------------------ colcon workspace
def test_workspace_links_the_repository_code():
    for link, target in (("srpo_ros", "../../../srpo_ros"), ("launch", "../../../launch"),
                         ("config", "../../../configs/ros")):
        path = PKG / link
        assert path.is_symlink() and os.readlink(path) == target, link
        assert path.resolve().is_dir()
    assert (PKG / "resource" / "srpo").is_file() and (PKG / "resource" / "srpo").stat().st_size == 0
    assert not (REPO / "package.xml").exists()
    assert "<name>srpo</name>" in (PKG / "package.xml").read_text()


def test_colcon_build_installs_the_package(tmp_path):
    venv_colcon = Path(sys.executable).parent / "colcon"
    colcon = str(venv_colcon) if venv_colcon.exists() else shutil.which("colcon")
    if colcon is None:
        pytest.skip("colcon is not installed (pip install colcon-common-extensions)")
    before = sorted(p.name for p in (REPO / "ros2_ws").iterdir())
    t0 = time.monotonic()
    r = subprocess.run([colcon, "--log-base", str(tmp_path / "log"), "build", "--base-paths", str(WS_SRC),
                        "--build-base", str(tmp_path / "build"), "--install-base", str(tmp_path / "install")],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - t0
    assert r.returncode == 0, r.stdout + r.stderr
    print(f"colcon build: {seconds:.1f} s")
    assert sorted(p.name for p in (REPO / "ros2_ws").iterdir()) == before, "colcon wrote into the repository"

    prefix = tmp_path / "install" / "srpo"  # colcon's default isolated layout: install/<package>/
    share = prefix / "share" / "srpo"
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "srpo").is_file()
    assert (share / "package.xml").read_text() == (PKG / "package.xml").read_text()
    assert (share / "launch" / "bringup.launch.py").read_text() == LAUNCH_FILE.read_text()
    assert (share / "config" / "bringup.yaml").read_text() == CONFIG.read_text()
    for exe in EXECUTABLES:
        script = prefix / "lib" / "srpo" / exe
        assert script.is_file() and os.access(script, os.X_OK), exe
        assert f"srpo_ros.{exe}" in script.read_text() or exe in script.read_text()
    installed = list(prefix.glob("lib/python*/site-packages/srpo_ros/bringup.py"))
    assert len(installed) == 1 and installed[0].read_text() == (REPO / "srpo_ros" / "bringup.py").read_text()

    # the installed code finds the installed params file through the ament index, as the launch file does
    env = {**os.environ, "AMENT_PREFIX_PATH": str(prefix), "PYTHONPATH": str(installed[0].parent.parent)}
    probe = ("import srpo_ros, srpo_ros.bringup as b; from ament_index_python.packages import "
             "get_package_share_directory as g; print(srpo_ros.__file__); print(g('srpo')); print(b.default_config())")
    r = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    module_file, share_dir, default_config = r.stdout.split()
    assert Path(module_file).is_relative_to(prefix)
    assert Path(share_dir) == share
    assert Path(default_config) == share / "config" / "bringup.yaml"


# ---------------------------------------------------------------------------------------------------- launch file
def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and ((isinstance(n.func, ast.Name) and n.func.id == name)
                 or (isinstance(n.func, ast.Attribute) and n.func.attr == name))]


def test_launch_file_structure():
    """Parsed with ``ast``, not executed: launch and launch_ros are not installable from PyPI."""
    tree = ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    declared = [c.args[0].value for c in _calls(tree, "DeclareLaunchArgument")]
    assert sorted(declared) == ["backend", "config", "policy", "robot", "sim_clock"]
    assert _calls(tree, "node_set"), "the launch file must take its nodes from srpo_ros.bringup.node_set"
    assert _calls(tree, "OpaqueFunction") and _calls(tree, "Node")
    assert [c.args[0].value for c in _calls(tree, "get_package_share_directory")] == ["srpo"]


class _StubRecorder:
    """What the stub launch modules saw: the Node(...) keyword arguments, in call order."""

    def __init__(self) -> None:
        self.nodes: list[dict] = []


def _install_launch_stubs(monkeypatch, share_dir: Path) -> _StubRecorder:
    """Stub modules for ``launch``, ``launch.actions``, ``launch.substitutions``, ``launch_ros.actions`` and
    ``ament_index_python.packages``: just enough of their API for the launch file, recording every Node."""
    recorder = _StubRecorder()

    class StubLaunchDescription:
        def __init__(self, entities):
            self.entities = list(entities)

    class StubDeclareLaunchArgument:
        def __init__(self, name, default_value=None, choices=None, description=None):
            self.name, self.default_value, self.choices = name, default_value, choices

    class StubOpaqueFunction:
        def __init__(self, function, args=None, kwargs=None):
            self.function, self.args, self.kwargs = function, args or [], kwargs or {}

        def execute(self, context):
            return self.function(context, *self.args, **self.kwargs)

    class StubLaunchConfiguration:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return context.launch_configurations[self.name]

    class StubNode:
        def __init__(self, **kwargs):
            self.kwargs = kwargs
            recorder.nodes.append(kwargs)

    def stub_get_package_share_directory(package):
        assert package == "srpo"
        return str(share_dir)

    modules = {
        "launch": dict(LaunchDescription=StubLaunchDescription),
        "launch.actions": dict(DeclareLaunchArgument=StubDeclareLaunchArgument, OpaqueFunction=StubOpaqueFunction),
        "launch.substitutions": dict(LaunchConfiguration=StubLaunchConfiguration),
        "launch_ros": {},
        "launch_ros.actions": dict(Node=StubNode),
        "ament_index_python": {},
        "ament_index_python.packages": dict(get_package_share_directory=stub_get_package_share_directory),
    }
    for name, attrs in modules.items():
        module = types.ModuleType(name, f"test stub of {name}")
        module.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, module)
    for parent, child in (("launch", "actions"), ("launch", "substitutions"), ("launch_ros", "actions"),
                          ("ament_index_python", "packages")):
        setattr(sys.modules[parent], child, sys.modules[f"{parent}.{child}"])
    return recorder


def _launch_nodes(monkeypatch, tmp_path, given: dict[str, str]) -> tuple[list[dict], dict[str, str]]:
    """Evaluate the launch file with ``given`` launch arguments: the Node(...) calls and the effective arguments."""
    share_dir = tmp_path / "share" / "srpo"
    recorder = _install_launch_stubs(monkeypatch, share_dir)
    spec = importlib.util.spec_from_file_location("srpo_bringup_launch_under_test", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    declared = {e.name: e for e in description.entities if hasattr(e, "default_value")}
    assert set(declared) == {"robot", "backend", "policy", "config", "sim_clock"}
    assert set(declared["sim_clock"].choices) == set(bringup.SWITCHES)
    assert declared["sim_clock"].default_value == "false"
    assert declared["config"].default_value == str(share_dir / "config" / "bringup.yaml")
    assert set(declared["robot"].choices) == set(bringup.ROBOTS)
    assert set(declared["backend"].choices) == set(bringup.BACKENDS)
    context = types.SimpleNamespace(launch_configurations={**{k: e.default_value for k, e in declared.items()},
                                                           **given})
    opaque = [e for e in description.entities if hasattr(e, "execute")]
    assert len(opaque) == 1
    returned = opaque[0].execute(context)
    assert [n.kwargs for n in returned] == recorder.nodes
    return recorder.nodes, dict(context.launch_configurations)


def _parse_command(cmd: list[str]) -> dict:
    """An ``srpo bringup`` command line back into executable, node name, params file and typed overrides (``-p``
    values are YAML, as rcl reads them)."""
    assert cmd[0] == sys.executable and cmd[1] == "-m" and cmd[3] == "--ros-args"
    out = {"executable": cmd[2].removeprefix("srpo_ros."), "name": None, "params_file": None, "overrides": {}}
    rest = cmd[4:]
    for flag, value in zip(rest[0::2], rest[1::2]):
        if flag == "-r":
            assert value.startswith("__node:=")
            out["name"] = value.removeprefix("__node:=")
        elif flag == "--params-file":
            out["params_file"] = value
        else:
            assert flag == "-p"
            key, _, text = value.partition(":=")
            out["overrides"][key] = yaml.safe_load(text)
    assert rest.index("--params-file") < rest.index("-p"), "overrides must come after the params file"
    return out


@pytest.mark.parametrize("given", [
    {"robot": "sim"},
    {"robot": "sim", "policy": "exports/sft5", "backend": "onnxruntime"},
    {"robot": "real", "policy": "/opt/policies/true", "backend": "tensorrt"},
    {"robot": "real", "config": "/etc/srpo/site.yaml"},
    {"robot": "sim", "sim_clock": "true"},
], ids=["sim-defaults", "sim", "real", "real-config", "sim-clock"])
def test_launch_file_and_srpo_bringup_describe_the_same_nodes(monkeypatch, tmp_path, given):
    launched, effective = _launch_nodes(monkeypatch, tmp_path, given)
    cli = [_parse_command(c) for c in bringup.commands(dict(effective))]
    assert len(launched) == len(cli) == (5 if given["robot"] == "real" else 3)
    for node, cmd in zip(launched, cli):
        assert node["package"] == "srpo" and node["output"] == "screen"
        assert (node["executable"], node["name"]) == (cmd["executable"], cmd["name"])
        config, overrides = node["parameters"]
        assert config == cmd["params_file"] == effective["config"]
        assert overrides == cmd["overrides"]
        assert {k: type(v) for k, v in overrides.items()} == {k: type(v) for k, v in cmd["overrides"].items()}
    names = [n["name"] for n in launched]
    assert len(set(names)) == len(names)
    by_name = {n["name"]: n["parameters"][1] for n in launched}
    assert by_name["arm_node"]["robot"] == given["robot"]
    assert by_name["recorder_node"]["source"] == ("sim" if given["robot"] == "sim" else "robot")
    assert by_name["policy_node"].get("policy", "") == given.get("policy", "")
    assert by_name["policy_node"]["backend"] == given.get("backend", "auto")
    clocked = given.get("sim_clock") == "true"  # the arm owns the clock, the others follow it, the policy answers
    assert by_name["arm_node"].get("sim_clock", False) is clocked
    assert by_name["policy_node"].get("use_sim_time", False) is clocked
    assert by_name["recorder_node"].get("use_sim_time", False) is clocked
    assert by_name["policy_node"].get("prefetch", True) is not clocked
    if given["robot"] == "real":
        assert {n["name"]: n["executable"] for n in launched[:2]} == {"camera_agentview": "camera_node",
                                                                       "camera_wrist": "camera_node"}


def test_commands_resolve_to_the_intended_parameters_in_rcl(tmp_path):
    """rcl itself reads each command's ``--ros-args``: node name, params file section and ``-p`` overrides on top."""
    pytest.importorskip("rclpy")
    args = bringup.parse_launch_args(["robot:=real", "policy:=exports/a 'b'", "backend:=torch"])
    ros_args = [cmd[cmd.index("--ros-args"):] for cmd in bringup.commands(args)]
    probe = """
import json, sys
import rclpy
from rclpy.context import Context
from rclpy.node import Node
out = []
for ros_args in json.loads(sys.argv[1]):
    ctx = Context()
    rclpy.init(args=["probe", *ros_args], context=ctx)
    node = Node("unnamed", context=ctx, automatically_declare_parameters_from_overrides=True)
    params = {k: (v.value if isinstance(v.value, (str, bool, int, float)) else list(v.value))
              for k, v in node.get_parameters_by_prefix("").items()}
    out.append({"name": node.get_name(), "params": params})
    node.destroy_node()
    rclpy.shutdown(context=ctx)
print(json.dumps(out))
"""
    r = subprocess.run([sys.executable, "-c", probe, json.dumps(ros_args)], cwd=tmp_path, env=_ros_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    resolved = json.loads(r.stdout.strip().splitlines()[-1])
    yaml_params = yaml.safe_load(CONFIG.read_text())
    nodes = bringup.node_set("real", "exports/a 'b'", "torch")
    assert [x["name"] for x in resolved] == [n.name for n in nodes]
    for node, got in zip(nodes, resolved):
        expected = {**yaml_params[node.name]["ros__parameters"], **node.overrides}
        assert {k: got["params"][k] for k in expected} == expected, node.name
    assert {x["name"]: x for x in resolved}["policy_node"]["params"]["policy"] == "exports/a 'b'"


# ---------------------------------------------------------------------------------------------------- params file
def test_params_file_lists_every_parameter_with_its_default():
    params = yaml.safe_load(CONFIG.read_text())
    for node in bringup.node_set("real", "", "auto"):
        assert set(params[node.name]) == {"ros__parameters"}, node.name
    assert set(params) == {n.name for n in bringup.node_set("real", "", "auto")}
    for name, defaults in PARAMETERS.items():
        got = params[name]["ros__parameters"]
        assert sorted(got) == sorted(defaults), name
        for key, value in defaults.items():
            if isinstance(value, (float, list)):
                assert got[key] == pytest.approx(value), (name, key, got[key])
            else:
                assert got[key] == value and type(got[key]) is type(value), (name, key, got[key])
    for name, camera, source in (("camera_agentview", "agentview", "0"), ("camera_wrist", "wrist", "1")):
        got = params[name]["ros__parameters"]
        assert set(got) == CAMERA_PARAMETERS
        assert (got["camera_name"], got["source"]) == (camera, source)
        assert isinstance(got["rate_hz"], float) and isinstance(got["retry_s"], float)


def test_params_file_comments_every_parameter():
    in_section = False
    for line in CONFIG.read_text().splitlines():
        if line.strip().endswith("ros__parameters:"):
            in_section = True
        elif in_section and line.startswith("    ") and ":" in line:
            assert "#" in line and line.split("#", 1)[1].strip(), f"uncommented parameter: {line.strip()}"


# ------------------------------------------------------------------------------------------------ srpo bringup
@pytest.mark.parametrize("argv, words", [
    (["robot:=sim", "speed:=3"], ["unknown", "speed"]),
    (["robot=sim"], ["key:=value", "robot=sim"]),
    (["robot:=moon"], ["robot", "moon"]),
    (["backend:=cuda"], ["backend", "cuda"]),
    (["config:="], ["config"]),
    (["sim_clock:=yes"], ["sim_clock", "true or false", "yes"]),
    (["robot:=real", "sim_clock:=true"], ["sim_clock", "robot:=sim"]),
])
def test_parse_launch_args_names_the_problem(argv, words):
    with pytest.raises(ValueError) as err:
        bringup.parse_launch_args(argv)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_parse_launch_args_defaults_and_values():
    args = bringup.parse_launch_args([])
    assert args == {"robot": "sim", "policy": "", "backend": "auto", "config": str(CONFIG), "sim_clock": False}
    args = bringup.parse_launch_args(["policy:=exports/x", "robot:=real", "backend:=onnxruntime", "config:=a.yaml"])
    assert args == {"robot": "real", "policy": "exports/x", "backend": "onnxruntime", "config": "a.yaml",
                    "sim_clock": False}
    assert bringup.parse_launch_args(["sim_clock:=true"])["sim_clock"] is True
    with pytest.raises(ValueError, match="moon"):
        bringup.node_set("moon", "", "auto")


def test_srpo_bringup_rejects_a_bad_robot_in_one_line():
    r = subprocess.run([sys.executable, "-m", "srpo_cli", "bringup", "robot:=moon"], capture_output=True, text=True,
                       timeout=120, cwd=REPO)
    assert r.returncode != 0
    lines = (r.stdout + r.stderr).strip().splitlines()
    assert len(lines) == 1 and "moon" in lines[0], lines


def test_srpo_help_lists_bringup():
    from srpo_cli.cli import build_parser

    assert "bringup" in build_parser().format_help()


def _fake_commands(scripts: list[str]):
    return lambda args: [[sys.executable, "-c", s] for s in scripts]


SLEEPER = "import time\ntry:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    pass"
STUBBORN = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)"


def test_run_bringup_stops_the_others_when_one_node_exits(monkeypatch, capsys):
    monkeypatch.setattr(bringup, "commands", _fake_commands([SLEEPER, "import time; time.sleep(0.5); exit(3)",
                                                             STUBBORN]))
    monkeypatch.setattr(bringup, "STOP_GRACE_S", 1.0)
    t0 = time.monotonic()
    assert bringup.run_bringup(["robot:=sim"]) == 3
    assert time.monotonic() - t0 < 10
    out = capsys.readouterr().out
    assert [line.split(":")[0] for line in out.splitlines() if "pid" in line] == [
        "[bringup] arm_node", "[bringup] policy_node", "[bringup] recorder_node"]
    assert "policy_node exited with code 3" in out and "recorder_node did not stop" in out


def test_run_bringup_forwards_sigint_and_returns_zero(monkeypatch, capsys):
    monkeypatch.setattr(bringup, "commands", _fake_commands([SLEEPER] * 3))
    previous = signal.getsignal(signal.SIGINT)
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
    t0 = time.monotonic()
    assert bringup.run_bringup([]) == 0
    assert time.monotonic() - t0 < 10
    assert signal.getsignal(signal.SIGINT) is previous
    assert "exited" not in capsys.readouterr().out
