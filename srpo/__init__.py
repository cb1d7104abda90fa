"""srpo: train robot manipulation policies with Self-Referential Policy Optimization and deploy them through ROS 2.

The core package holds the contracts every other part shares (observation/action spec, episode schema), the built-in
MuJoCo ``tabletop`` suite and the ``srpo`` command line. It never imports ROS.
"""

__version__ = "0.1.0"
