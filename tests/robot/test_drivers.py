"""Arm drivers on real MuJoCo (the tabletop sim at 32x32) and the pure action -> twist mapping for a real arm."""

import numpy as np
import pytest

from srpo.config import load_config
from srpo.robot.drivers import (
    ArmDriver,
    SimArmConfig,
    SimArmDriver,
    TwistMapperConfig,
    action_to_twist,
)
from srpo.robot.safety import SafetyConfig, SafetyFilter, hold_action
from srpo.sim.tabletop.experts import make_expert
from srpo.sim.tabletop.tasks import get_task


@pytest.fixture(scope="module")
def driver():
    d = SimArmDriver(SimArmConfig(image_size=32))
    yield d
    d.close()


def _run_expert(driver, task, steps=None):
    expert = make_expert(get_task(task))
    state, n = driver.state(), 0
    while not state.done and (steps is None or n < steps):
        state = driver.apply(expert.act(driver.env.sim))
        n += 1
    return state, n


def test_the_sim_driver_is_an_arm_driver(driver):
    assert isinstance(driver, ArmDriver)
    assert driver.spec.observation.camera("wrist").height == 32


def test_reset_gives_the_spec_cameras_proprio_and_instruction(driver):
    state = driver.reset()
    assert state.instruction == "press the orange button" and driver.env.task.name == "press_button"
    assert sorted(state.images) == ["agentview", "wrist"]
    for img in state.images.values():
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8 and img.any()
    assert state.proprio.dtype == np.float32 and state.proprio.shape == (driver.spec.observation.proprio_dim,)
    np.testing.assert_allclose(state.ee_position, state.proprio[:3])
    assert state.success is False and not state.done and 0.0 <= state.progress < 1.0
    assert state.stamp > 0.0  # the env's settle steps already ran
    other = driver.reset({"task": "open_drawer", "init_state_id": 2})
    assert other.instruction == "open the drawer" and driver.env.init_state.index == 2
    assert driver.env.init_state.split == "heldout"  # the config's split


def test_reset_refuses_partial_rendering(driver):
    with pytest.raises(ValueError, match="image_every"):
        driver.reset({"image_every": 4})


def test_the_expert_through_the_driver_succeeds_and_ends_the_episode(driver):
    driver.reset()
    state, n = _run_expert(driver, "press_button")
    assert state.success is True and state.done and state.progress == pytest.approx(1.0)
    assert 0 < n < driver.env.max_steps
    # every step was rendered: the final frame is a real image
    assert all(img.any() for img in state.images.values())
    # after the end nothing steps: time, step count and the state stay as they were
    steps, stamp = driver.env.steps, state.stamp
    assert driver.apply(np.array([1, 0, 0, 0, 0, 0, -1], np.float32)) is state
    assert driver.hold() is state
    assert driver.env.steps == steps and driver.state().stamp == stamp


def test_hold_keeps_the_ee_still_while_time_advances(driver):
    driver.reset({"task": "place_red_cube_in_tray", "init_state_id": 0})
    state, _ = _run_expert(driver, "place_red_cube_in_tray", steps=40)  # mid-episode, carrying the cube
    gripper = driver.env.sim.gripper_command
    p0, t0 = state.ee_position.copy(), state.stamp
    for _ in range(10):
        state = driver.hold()
    assert np.abs(state.ee_position - p0).max() < 1e-3
    assert state.stamp == pytest.approx(t0 + 10 * 0.05)
    assert driver.env.sim.gripper_command == gripper  # holding did not open the hand


def test_the_step_limit_ends_the_episode():
    d = SimArmDriver(SimArmConfig(image_size=32, max_steps=3))
    try:
        d.reset()
        states = [d.hold() for _ in range(3)]
        assert [s.done for s in states] == [False, False, True] and states[-1].success is False
        assert d.apply(np.zeros(7, np.float32)) is states[-1] and d.env.steps == 3
    finally:
        d.close()


def test_state_before_reset_says_what_to_do():
    d = SimArmDriver(SimArmConfig(image_size=32))
    try:
        with pytest.raises(RuntimeError, match="reset"):
            d.apply(np.zeros(7, np.float32))
    finally:
        d.close()


def test_the_filter_and_the_driver_close_the_loop(driver):
    state = driver.reset()
    safety = SafetyFilter(SafetyConfig(), driver.spec)
    safety.command_received(state.stamp)
    safety.observation_received(state.stamp)
    decision = safety.filter(np.array([0, 0, -1, 0, 0, 0, 1], np.float32), state.ee_position, state.stamp)
    assert not decision.hold
    after = driver.apply(decision.action)
    assert after.ee_position[2] < state.ee_position[2] - 0.01  # 20 mm commanded, it moved down
    # the next tick without a new command or observation holds, and the driver holds still
    late = after.stamp + 1.0
    decision = safety.filter(np.array([0, 0, -1, 0, 0, 0, 1], np.float32), after.ee_position, late)
    assert decision.hold and decision.reasons == ["command stale", "observation stale"]
    assert decision.action[6] == 1.0


def test_sim_arm_config_validates_and_loads(tmp_path):
    with pytest.raises(ValueError, match="max_steps"):
        SimArmConfig(max_steps=-1)
    with pytest.raises(ValueError, match="init_state_id"):
        SimArmConfig(init_state_id=-2)
    path = tmp_path / "sim.yaml"
    path.write_text("task: open_drawer\nimage_size: 32\n")
    cfg = load_config(SimArmConfig, path, ["init_state_id=3"])
    got = (cfg.task, cfg.split, cfg.init_state_id, cfg.image_size, cfg.max_steps)
    assert got == ("open_drawer", "heldout", 3, 32, 0)


# ---------------------------------------------------------------------------------------------------------- twist
def test_dry_run_is_the_default_and_defaults_match_the_sim():
    cfg = TwistMapperConfig()
    assert cfg.dry_run is True
    assert cfg.twist_topic == "/servo_node/delta_twist_cmds" and cfg.gripper_topic == "/gripper_controller/commands"
    assert cfg.frame_id == "base_link"
    assert cfg.linear_scale == pytest.approx(0.4) and cfg.angular_scale == pytest.approx(2.4)
    assert load_config(TwistMapperConfig, None, ["dry_run=false"]).dry_run is False


def test_action_to_twist_values():
    cfg = TwistMapperConfig(linear_scale=0.1, angular_scale=0.5, gripper_open=0.08, gripper_closed=0.0,
                            frame_id="world")
    cmd = action_to_twist(np.array([0.5, -1.0, 0.2, 0.0, 1.0, -0.4, 0.0]), cfg)
    assert cmd.linear == pytest.approx((0.05, -0.1, 0.02))
    assert cmd.angular == pytest.approx((0.0, 0.5, -0.2))
    assert cmd.gripper == pytest.approx(0.04) and cmd.frame_id == "world"
    assert action_to_twist(np.array([0, 0, 0, 0, 0, 0, -1.0]), cfg).gripper == pytest.approx(0.08)
    assert action_to_twist(np.array([0, 0, 0, 0, 0, 0, 1.0]), cfg).gripper == pytest.approx(0.0)
    # out-of-range values are clipped: the twist never exceeds the scales
    big = action_to_twist(np.array([3.0, 0, 0, 0, 0, 0, 2.0]), cfg)
    assert big.linear[0] == pytest.approx(0.1) and big.gripper == pytest.approx(0.0)


def test_a_hold_maps_to_a_zero_twist_with_the_gripper_unchanged():
    cfg = TwistMapperConfig()
    closing = action_to_twist(np.array([0.3, 0.1, 0, 0, 0, 0.2, 0.6], np.float32), cfg)  # as the filter sends
    held = action_to_twist(hold_action(0.6), cfg)
    assert held.linear == (0.0, 0.0, 0.0) and held.angular == (0.0, 0.0, 0.0)
    assert held.gripper == closing.gripper == pytest.approx(0.8 * 0.04)


def test_action_to_twist_refuses_bad_actions_and_configs():
    with pytest.raises(ValueError, match="shape"):
        action_to_twist(np.zeros(6), TwistMapperConfig())
    with pytest.raises(ValueError, match="non-finite"):
        action_to_twist(np.array([np.nan] * 7), TwistMapperConfig())
    with pytest.raises(ValueError, match="linear_scale"):
        TwistMapperConfig(linear_scale=0.0)
    with pytest.raises(ValueError, match="gripper_open and gripper_closed"):
        TwistMapperConfig(gripper_open=0.02, gripper_closed=0.02)
    with pytest.raises(ValueError, match="twist_topic"):
        TwistMapperConfig(twist_topic="")
