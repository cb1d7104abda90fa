"""Bring up the srpo nodes: ``ros2 launch srpo bringup.launch.py robot:=sim policy:=/path/to/export``.

Arguments: ``robot`` (sim | real), ``policy`` (export folder or checkpoint), ``backend`` (auto | tensorrt |
onnxruntime | torch), ``config`` (a ROS params file; default: the installed ``share/srpo/config/bringup.yaml``) and
``sim_clock`` (false | true: sim only, the arm publishes simulated time and steps as soon as the policy answers).
Which nodes run, and with which overrides on top of ``config``, comes from ``srpo_ros.bringup.node_set``: the same
description ``srpo bringup`` starts without a ROS install.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from srpo_ros.bringup import BACKENDS, ROBOTS, SWITCHES, node_set, switch


def _nodes(context, *args, **kwargs):
    robot = LaunchConfiguration("robot").perform(context)
    policy = LaunchConfiguration("policy").perform(context)
    backend = LaunchConfiguration("backend").perform(context)
    config = LaunchConfiguration("config").perform(context)
    sim_clock = switch(LaunchConfiguration("sim_clock").perform(context))
    return [
        Node(package="srpo", executable=n.executable, name=n.name, parameters=[config, n.overrides], output="screen")
        for n in node_set(robot, policy, backend, sim_clock)
    ]


def generate_launch_description():
    default_config = os.path.join(get_package_share_directory("srpo"), "config", "bringup.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("robot", default_value="sim", choices=list(ROBOTS),
                              description="sim: the tabletop simulator is the arm; real: cameras and a real arm"),
        DeclareLaunchArgument("backend", default_value="auto", choices=list(BACKENDS),
                              description="policy inference backend"),
        DeclareLaunchArgument("policy", default_value="",
                              description="export folder or checkpoint (empty: the config's policy parameter)"),
        DeclareLaunchArgument("config", default_value=default_config, description="ROS 2 params file of the nodes"),
        DeclareLaunchArgument("sim_clock", default_value="false", choices=list(SWITCHES),
                              description="sim only: the arm publishes /clock and steps as soon as the policy answers"),
        OpaqueFunction(function=_nodes),
    ])
