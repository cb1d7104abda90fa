import numpy as np
import pytest

from srpo.spec import TABLETOP_SPEC, InvalidActionError, RobotSpec, validate_action


def test_in_range_action_passes_unchanged():
    a = np.array([0.1, -0.2, 0.3, 0, 0, 0.5, -1.0])
    safe = validate_action(a, TABLETOP_SPEC.action)
    assert np.array_equal(safe.action, a) and safe.n_clipped == 0


def test_out_of_range_is_clipped_and_counted():
    safe = validate_action([2.0, -3.0, 0, 0, 0, 0, 1.0001], TABLETOP_SPEC.action)
    assert safe.action.tolist() == [1.0, -1.0, 0, 0, 0, 0, 1.0]
    assert safe.n_clipped == 3


@pytest.mark.parametrize("bad", [np.zeros(6), np.zeros((1, 7)), np.zeros(8)])
def test_wrong_shape_is_refused_with_the_expected_shape(bad):
    with pytest.raises(InvalidActionError, match=r"expected \(7,\)"):
        validate_action(bad, TABLETOP_SPEC.action)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_is_refused_naming_the_dimension(value):
    a = np.zeros(7)
    a[2] = value
    with pytest.raises(InvalidActionError, match="dz"):
        validate_action(a, TABLETOP_SPEC.action)


def test_non_numeric_is_refused():
    with pytest.raises(InvalidActionError, match="not numeric"):
        validate_action(["a"] * 7, TABLETOP_SPEC.action)


def test_spec_round_trips_and_reports_mismatch():
    assert RobotSpec.from_dict(TABLETOP_SPEC.to_dict()) == TABLETOP_SPEC
    other = TABLETOP_SPEC.with_image_size(128, 128)
    diffs = TABLETOP_SPEC.mismatch(other)
    assert len(diffs) == 1 and diffs[0].startswith("cameras")
    with pytest.raises(ValueError, match="malformed robot spec"):
        RobotSpec.from_dict({"cameras": []})
