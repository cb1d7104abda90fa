"""The ROS-agnostic core of the robot side: the safety filter and the arm drivers the ROS 2 nodes wrap.

Nothing here imports rclpy or torch (and mujoco only when a simulated arm is created), so the logic that decides what
reaches an arm is tested with plain pytest, and the nodes stay thin adapters from topics to these calls::

    safety = SafetyFilter(SafetyConfig(), driver.spec)
    safety.observation_received(state.stamp); safety.command_received(now)
    decision = safety.filter(action, state.ee_position, now)
    state = driver.hold() if decision.hold else driver.apply(decision.action)
"""

from srpo.robot.drivers import (
    ArmDriver,
    ArmState,
    SimArmConfig,
    SimArmDriver,
    TwistCommand,
    TwistMapperConfig,
    action_to_twist,
)
from srpo.robot.safety import EStop, SafetyConfig, SafetyDecision, SafetyFilter, Watchdog, hold_action

__all__ = ["ArmDriver", "ArmState", "EStop", "SafetyConfig", "SafetyDecision", "SafetyFilter", "SimArmConfig",
           "SimArmDriver", "TwistCommand", "TwistMapperConfig", "Watchdog", "action_to_twist", "hold_action"]
