"""The safety filter: every hold reason, clamps, the workspace box, speed limits, e-stop, watchdogs and config."""

import threading

import numpy as np
import pytest

from srpo.config import ConfigError, load_config
from srpo.robot.safety import EStop, SafetyConfig, SafetyFilter, Watchdog, filter_explains, hold_action
from srpo.spec import TABLETOP_SPEC

CENTRE = np.array([0.0, 0.0, 0.15])  # well inside the default (sim) workspace
NOW = 10.0


def fresh(cfg: SafetyConfig | None = None, now: float = NOW) -> SafetyFilter:
    """A filter whose watchdogs were both fed at ``now``."""
    f = SafetyFilter(cfg or SafetyConfig())
    f.command_received(now)
    f.observation_received(now)
    return f


def act(*values: float) -> np.ndarray:
    return np.array(values, np.float32)


MOVE = act(0.2, -0.1, 0.3, 0.1, 0.0, -0.2, 1.0)


# ------------------------------------------------------------------------------------------------- passing and holds
def test_an_in_range_action_passes_unchanged():
    d = fresh().filter(MOVE, CENTRE, NOW)
    assert not d.hold and d.reasons == [] and d.clamped == 0 and not d.modified
    assert d.action.dtype == np.float32
    np.testing.assert_array_equal(d.action, MOVE)


def test_hold_action_keeps_the_gripper_and_zeroes_motion():
    a = hold_action(0.7)
    np.testing.assert_array_equal(a, act(0, 0, 0, 0, 0, 0, 0.7))
    with pytest.raises(ValueError, match="finite"):
        hold_action(float("nan"))


def test_holds_keep_the_last_gripper_command_sent():
    f = fresh()
    assert f.filter(act(0, 0, 0, 0, 0, 0, 0.8), CENTRE, NOW).action[6] == pytest.approx(0.8)
    d = f.filter([np.nan] * 7, CENTRE, NOW)
    assert d.hold
    np.testing.assert_allclose(d.action, act(0, 0, 0, 0, 0, 0, 0.8))
    # a clamped gripper is what was sent, so it is what a hold repeats
    f.filter(act(0, 0, 0, 0, 0, 0, 5.0), CENTRE, NOW)
    assert f.filter("close", CENTRE, NOW).action[6] == 1.0


def test_before_any_command_the_hold_opens_as_the_sim_starts():
    d = SafetyFilter(SafetyConfig()).filter(MOVE, CENTRE, NOW)
    assert d.hold and d.action[6] == -1.0
    assert SafetyFilter(SafetyConfig(), initial_gripper=1.0).filter(MOVE, CENTRE, NOW).action[6] == 1.0


@pytest.mark.parametrize("bad, reason", [
    ([np.nan, 0, 0, 0, 0, 0, 0], "non-finite action"),
    ([0, 0, 0, 0, 0, 0, np.inf], "non-finite action"),
    ([0, 0, -np.inf, 0, 0, 0, 0], "non-finite action"),
    ([0.1] * 6, "wrong action shape"),
    ([[0.1] * 7], "wrong action shape"),
    (np.zeros((2, 7)), "wrong action shape"),
    (0.5, "wrong action shape"),
    ([], "wrong action shape"),
    ("0.1 0 0 0 0 0 1", "non-numeric action"),
    (["0.1"] * 7, "non-numeric action"),
    ([0.1, None, 0, 0, 0, 0, 0], "non-numeric action"),
    ([[0.1], [0.1, 0.2]], "non-numeric action"),
    (None, "non-numeric action"),
    ({"dx": 0.1}, "non-numeric action"),
    ([True] * 7, "non-numeric action"),
    ([1j] * 7, "non-numeric action"),
])
def test_bad_actions_never_raise_and_hold(bad, reason):
    f = fresh()
    d = f.filter(bad, CENTRE, NOW)
    assert d.hold and d.reasons == [reason]
    np.testing.assert_array_equal(d.action, hold_action(-1.0))
    assert f.stats[reason] == 1 and f.stats["holds"] == 1


@pytest.mark.parametrize("ee", [None, [0.0, 0.0], [0.0, np.nan, 0.1], [np.inf, 0, 0], "here", [0, 0, "z"]])
def test_a_missing_or_non_finite_ee_position_holds(ee):
    d = fresh().filter(MOVE, ee, NOW)
    assert d.hold and d.reasons == ["invalid ee position"]


# --------------------------------------------------------------------------------------------------------- clamping
def test_clamps_per_dimension_are_counted_and_named():
    cfg = SafetyConfig(action_low=[-0.5, -1, -1, -1, -1, -1, -1], action_high=[0.5, 1, 0.2, 1, 1, 1, 1])
    f = fresh(cfg)
    d = f.filter(act(0.9, -0.3, 0.6, 0, 0, 0, 2.0), CENTRE, NOW)
    assert not d.hold and d.clamped == 3
    assert d.reasons == ["clamped dx", "clamped dz", "clamped gripper"]
    np.testing.assert_allclose(d.action, act(0.5, -0.3, 0.2, 0, 0, 0, 1.0))
    d = f.filter(act(-0.8, 0, 0, 0, 0, 0, -1), CENTRE, NOW)
    assert d.clamped == 1 and d.action[0] == pytest.approx(-0.5)
    assert f.stats["clamped dx"] == 2 and f.stats["clamped dz"] == 1 and f.stats["modified"] == 2
    assert f.stats["holds"] == 0 and f.stats["calls"] == 2


# -------------------------------------------------------------------------------------------------------- workspace
WMIN, WMAX = np.array([-0.32, -0.30, 0.014]), np.array([0.32, 0.34, 0.30])


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("sign", [1, -1])
def test_the_workspace_zeroes_only_outward_motion_at_each_face(axis, sign):
    face = f"workspace {'xyz'[axis]}{'+' if sign > 0 else '-'}"
    ee = CENTRE.copy()
    ee[axis] = (WMAX if sign > 0 else WMIN)[axis] - sign * 0.005  # 5 mm inside; a full step is 20 mm
    f = fresh()
    out = np.zeros(7, np.float32)
    out[[0, 1, 2]] = 0.5  # the other axes move too and must keep moving
    out[axis] = sign * 1.0
    d = f.filter(out, ee, NOW)
    assert not d.hold and d.reasons == [face]
    assert d.action[axis] == 0.0
    others = [i for i in range(3) if i != axis]
    np.testing.assert_allclose(d.action[others], 0.5)
    # a small step that stays inside is allowed toward the same face
    small = np.zeros(7, np.float32)
    small[axis] = sign * 0.2  # 4 mm
    assert f.filter(small, ee, NOW).reasons == []
    # moving back inside is always allowed, even from outside the box
    outside = ee.copy()
    outside[axis] = (WMAX if sign > 0 else WMIN)[axis] + sign * 0.05
    inward = np.zeros(7, np.float32)
    inward[axis] = -sign * 1.0
    d = f.filter(inward, outside, NOW)
    assert d.reasons == [] and d.action[axis] == -sign * 1.0
    assert f.filter(-inward, outside, NOW).action[axis] == 0.0
    assert f.stats[face] == 2


# ----------------------------------------------------------------------------------------------------- speed limits
def test_linear_speed_is_scaled_to_the_limit_keeping_direction():
    cfg = SafetyConfig(max_linear_speed=0.2)  # 0.02 m/unit at 20 Hz: |a| = 0.5 is the limit
    d = fresh(cfg).filter(act(0.6, -0.8, 0.0, 0.3, 0, 0, 1), CENTRE, NOW)
    assert d.reasons == ["linear speed scaled"] and not d.hold
    np.testing.assert_allclose(d.action[:3], [0.3, -0.4, 0.0], atol=1e-6)
    speed = np.linalg.norm(d.action[:3]) * cfg.metres_per_unit * cfg.control_hz
    assert speed == pytest.approx(0.2, rel=1e-5)
    assert d.action[3] == pytest.approx(0.3) and d.action[6] == 1.0  # rotation and gripper untouched


def test_angular_speed_is_scaled_to_the_limit_keeping_direction():
    cfg = SafetyConfig(max_angular_speed=1.2)  # 0.12 rad/unit at 20 Hz: |a| = 0.5 is the limit
    d = fresh(cfg).filter(act(0.1, 0, 0, 0, 0.3, 0.4, -1), CENTRE, NOW)
    assert d.reasons == ["angular speed scaled"]
    np.testing.assert_allclose(d.action[3:6], [0.0, 0.3, 0.4], atol=1e-6)  # |(0.3, 0.4)| = 0.5 already
    d = fresh(cfg).filter(act(0, 0, 0, 0, 0.6, 0.8, -1), CENTRE, NOW)
    np.testing.assert_allclose(d.action[3:6], [0.0, 0.3, 0.4], atol=1e-6)
    assert d.action[0] == 0.0


def test_the_default_limits_pass_every_in_range_sim_action():
    # the defaults are the sim's envelope: a trained policy must move as it did in simulation
    d = fresh().filter(act(1, -1, 1, -1, 1, -1, 1), CENTRE, NOW)
    assert d.reasons == [] and not d.hold


def test_filter_explains_exactly_what_the_filter_makes_of_a_command():
    """Offline learning attributes an executed action to the decision that commanded it: every non-hold output of
    the real filter (clamps, workspace faces, both speed limits, at random positions) is explained by its command;
    a hold, another decision's action and a changed gripper are not."""
    rng = np.random.default_rng(0)
    f = fresh(SafetyConfig(max_linear_speed=0.3, max_angular_speed=2.0))
    edited = 0
    for _ in range(400):
        command = rng.uniform(-1.3, 1.3, 7).astype(np.float32)
        ee = rng.uniform(WMIN - 0.01, WMAX + 0.01)
        d = f.filter(command, ee, NOW)
        assert not d.hold
        edited += d.modified
        assert filter_explains(command, d.action)
        other = rng.uniform(-1, 1, 7).astype(np.float32)
        assert not filter_explains(other, d.action)
    assert edited > 300  # the tight limits edit most commands: the explained cases are not all pass-throughs
    command = act(0.2, -0.1, -0.9, 0.1, 0.05, -0.2, 1.0)
    assert not filter_explains(command, hold_action(1.0))  # a hold ran no decision
    assert not filter_explains(command, act(0.2, -0.1, 0.0, 0.1, 0.05, -0.2, -1.0))  # the filter keeps the gripper
    assert not filter_explains(command, act(0.4, -0.2, 0.0, 0.1, 0.05, -0.2, 1.0))  # it never speeds up
    assert filter_explains(command, act(0.2, -0.1, 0.0, 0.1, 0.05, -0.2, 1.0))  # the z- face zeroed the descent


# ------------------------------------------------------------------------------------------------- e-stop, watchdogs
def test_the_estop_latches_across_many_calls_until_released():
    f = fresh()
    f.estop.engage("operator pressed the button")
    f.estop.engage("a second press")
    assert f.estop.engaged and f.estop.reason == "operator pressed the button"
    for i in range(50):
        f.command_received(NOW + i * 0.05)
        f.observation_received(NOW + i * 0.05)
        d = f.filter(MOVE, CENTRE, NOW + i * 0.05)
        assert d.hold and d.reasons == ["e-stop"]
        assert d.action[:6].tolist() == [0] * 6
    assert f.stats["e-stop"] == 50
    f.estop.release()
    assert not f.estop.engaged and f.estop.reason == ""
    later = NOW + 3.0
    f.command_received(later)
    f.observation_received(later)
    d = f.filter(MOVE, CENTRE, later)
    assert not d.hold and d.reasons == []


def test_release_with_stale_watchdogs_still_holds():
    f = fresh()
    f.estop.engage("stop")
    f.estop.release()
    assert f.filter(MOVE, CENTRE, NOW + 1.0).reasons == ["command stale", "observation stale"]


def test_the_estop_is_thread_safe():
    stop = EStop()
    threads = [threading.Thread(target=lambda i=i: [stop.engage(f"t{i}") for _ in range(200)]) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stop.engaged and stop.reason in {"t0", "t1", "t2", "t3"}


def test_watchdog_age_and_expiry():
    w = Watchdog(0.25)
    assert w.age(5.0) == float("inf") and w.expired(5.0)
    w.feed(5.0)
    assert w.age(5.1) == pytest.approx(0.1) and not w.expired(5.25)
    assert w.expired(5.2501)
    assert w.expired(float("nan"))
    with pytest.raises(ValueError, match="timeout_s"):
        Watchdog(0.0)


@pytest.mark.parametrize("stale_one, reason", [("command", "command stale"), ("observation", "observation stale")])
def test_an_expired_watchdog_holds_and_a_fresh_feed_resumes(stale_one, reason):
    f = fresh()
    later = NOW + 0.3  # past the 0.25 s default
    if stale_one == "command":
        f.observation_received(later)
    else:
        f.command_received(later)
    d = f.filter(MOVE, CENTRE, later)
    assert d.hold and d.reasons == [reason]
    getattr(f, f"{stale_one}_received")(later)
    d = f.filter(MOVE, CENTRE, later)
    assert not d.hold
    np.testing.assert_array_equal(d.action, MOVE)
    assert f.stats[reason] == 1


def test_a_filter_never_fed_holds_on_both_watchdogs():
    d = SafetyFilter(SafetyConfig()).filter(MOVE, CENTRE, NOW)
    assert d.hold and d.reasons == ["command stale", "observation stale"]


def test_the_checks_run_in_order():
    f = SafetyFilter(SafetyConfig())
    f.estop.engage("x")
    assert f.filter([np.nan] * 7, None, NOW).reasons == ["e-stop"]  # e-stop first
    f.estop.release()
    assert f.filter([np.nan] * 7, None, NOW).reasons == ["command stale", "observation stale"]
    f.command_received(NOW)
    f.observation_received(NOW)
    assert f.filter([np.nan] * 7, None, NOW).reasons == ["non-finite action"]  # then the action, then the ee


# ---------------------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("kwargs, field", [
    ({"action_low": [-1.0] * 6}, "action_low"),
    ({"action_high": [1.0] * 7 + [1.0]}, "action_high"),
    ({"action_low": [-1, -1, 1, -1, -1, -1, -1]}, "action_low must be below action_high"),
    ({"action_high": [1, 1, 1, 1, 1, 1, float("nan")]}, "action_high"),
    ({"workspace_min": [0.0, 0.0]}, "workspace_min"),
    ({"workspace_max": [0.3, 0.3, 0.0]}, "workspace_min must be below workspace_max"),
    ({"metres_per_unit": 0.0}, "metres_per_unit"),
    ({"radians_per_unit": -0.1}, "radians_per_unit"),
    ({"max_linear_speed": float("inf")}, "max_linear_speed"),
    ({"max_angular_speed": 0}, "max_angular_speed"),
    ({"control_hz": -20.0}, "control_hz"),
    ({"command_timeout_s": 0.0}, "command_timeout_s"),
    ({"observation_timeout_s": -1.0}, "observation_timeout_s"),
])
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SafetyConfig(**kwargs)


def test_the_filter_refuses_a_config_that_disagrees_with_the_spec():
    with pytest.raises(ValueError, match="control_hz"):
        SafetyFilter(SafetyConfig(control_hz=10.0), TABLETOP_SPEC)
    with pytest.raises(ValueError, match="action_low/action_high"):
        SafetyFilter(SafetyConfig(action_high=[1.5] + [1.0] * 6), TABLETOP_SPEC)


def test_config_loads_from_yaml_with_an_override(tmp_path):
    path = tmp_path / "safety.yaml"
    path.write_text("workspace_min: [-0.2, -0.2, 0.05]\nworkspace_max: [0.2, 0.2, 0.4]\nmax_linear_speed: 0.25\n"
                    "action_high: [0.5, 0.5, 0.5, 1, 1, 1, 1]\n")
    cfg = load_config(SafetyConfig, path, ["command_timeout_s=0.1", "metres_per_unit=1e-2"])
    assert cfg.workspace_min == [-0.2, -0.2, 0.05] and cfg.max_linear_speed == 0.25
    assert cfg.action_high == [0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0] and all(isinstance(v, float) for v in cfg.action_high)
    assert cfg.command_timeout_s == 0.1 and cfg.metres_per_unit == 0.01
    assert cfg.action_low == [-1.0] * 7 and cfg.control_hz == 20.0
    with pytest.raises(ConfigError, match="workspace_min"):
        load_config(SafetyConfig, path, ["workspace_min=[0.3, 0.3, 0.5]"])
    with pytest.raises(ConfigError, match="max_speed"):
        load_config(SafetyConfig, path, ["max_speed=1.0"])
