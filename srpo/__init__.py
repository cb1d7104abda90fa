"""srpo: train robot manipulation policies with Self-Referential Policy Optimization and deploy them through ROS 2.

The core package holds the contracts every other part shares (observation/action spec, episode schema), the built-in
MuJoCo ``tabletop`` suite and the torch-free deployment runtime (``srpo.runtime``: processing, the ONNX Runtime and
TensorRT backends, the action chunker). It never imports ROS, torch or the trainer; the ``srpo`` command line sits
above it in ``srpo_cli``.
"""

__version__ = "0.1.0"
