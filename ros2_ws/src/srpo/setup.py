"""The ROS 2 package ``srpo`` (ament_python): the four node executables, the launch file and the params file.

The code is not duplicated here: ``srpo_ros``, ``launch`` and ``config`` are symlinks to the repository's
``srpo_ros/``, ``launch/`` and ``configs/ros/``. The nodes import the core ``srpo`` package, which is installed with
pip (``pip install -e '.[ros]'`` at the repository root), not by colcon.

    cd ros2_ws && colcon build && source install/setup.bash
    ros2 launch srpo bringup.launch.py robot:=sim policy:=/path/to/export
"""

from glob import glob

from setuptools import setup

PACKAGE = "srpo"
EXECUTABLES = ("camera_node", "arm_node", "policy_node", "recorder_node")

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=["srpo_ros"],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", sorted(glob("launch/*.launch.py"))),
        (f"share/{PACKAGE}/config", sorted(glob("config/*.yaml"))),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="srpo maintainers",
    maintainer_email="maintainers@srpo.invalid",
    description="srpo ROS 2 nodes: camera, arm, policy and trajectory recorder",
    license="Apache-2.0",
    entry_points={"console_scripts": [f"{exe} = srpo_ros.{exe}:main" for exe in EXECUTABLES]},
)
