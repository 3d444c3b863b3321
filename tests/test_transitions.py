"""Crossing rules: interpolation on log2 N, N=0, ties, non-monotonic curves, confidence, extrapolation."""

from __future__ import annotations

import math

import pytest
from switchpoint.report.transitions import (
    Axis,
    analyse,
    first_confident,
    first_crossing,
    fit_log2_linear,
)


def test_axis_places_zero_one_step_left_of_the_first_positive_size_and_inverts():
    axis = Axis.for_sizes([0, 2, 4, 8])
    assert axis.x(0) == 0.0 and axis.x(2) == 1.0 and axis.x(8) == 3.0
    assert axis.x(1) == pytest.approx(0.5)  # linear in N between 0 and 2
    for n in (0, 0.5, 1, 2, 3, 8, 100):
        assert axis.n(axis.x(n)) == pytest.approx(n)


def test_crossing_between_two_sizes_is_interpolated_on_log2_n():
    n, measured = first_crossing([0, 2, 4, 8, 16], [10, 20, 30, 50, 70], 40)
    assert measured == 8
    assert n == pytest.approx(2 ** 2.5)  # half-way from log2 4 to log2 8


def test_crossing_between_zero_and_the_first_size_is_linear_in_n():
    n, measured = first_crossing([0, 2, 4], [0.0, 50.0, 60.0], 25.0)
    assert measured == 2 and n == pytest.approx(1.0)
    n, _ = first_crossing([0, 4, 8], [0.0, 40.0, 60.0], 30.0)
    assert n == pytest.approx(3.0)


def test_a_tie_counts_as_reached_at_that_size_without_interpolation():
    assert first_crossing([2, 4, 8], [10.0, 40.0, 60.0], 40.0) == (4.0, 4)
    # float rounding of an exact tie still counts
    assert first_crossing([2, 4], [10.0, 0.1 * 3 * 100], 30.0) == (4.0, 4)


def test_reached_at_the_first_size_is_that_size():
    assert first_crossing([0, 2, 4], [55.0, 60.0, 70.0], 50.0) == (0.0, 0)


def test_non_monotonic_curve_takes_the_first_crossing():
    n, measured = first_crossing([2, 4, 8, 16], [10.0, 50.0, 20.0, 60.0], 40.0)
    assert measured == 4
    assert n == pytest.approx(2 ** 1.75)


def test_not_reached_gives_none():
    assert first_crossing([2, 4, 8], [10.0, 20.0, 30.0], 40.0) == (None, None)


def test_first_confident_is_the_first_lower_bound_at_or_above_zero():
    assert first_confident([2, 4, 8, 16], [-5.0, float("nan"), 0.0, 3.0]) == 8
    assert first_confident([2, 4], [-5.0, -0.1]) is None


def test_fit_uses_the_last_points_and_extrapolates_beyond_the_sweep():
    sizes, means = [0, 2, 4, 8, 16], [0.0, 10.0, 20.0, 30.0, 40.0]
    fit = fit_log2_linear(sizes, means)
    assert fit.points == (2, 4, 8, 16) and fit.a == pytest.approx(0.0, abs=1e-9) and fit.b == pytest.approx(10.0)
    result = analyse(sizes, means, 60.0, [-10.0] * 5)
    assert result.status == "extrapolated" and result.n_cross is None and result.n_cross_confident is None
    assert result.n_cross_extrapolated == pytest.approx(64.0)
    assert "extrapolated" in result.note


def test_no_extrapolation_when_the_curve_does_not_rise():
    result = analyse([2, 4, 8, 16], [30.0, 29.0, 28.0, 27.0], 60.0, [-10.0] * 4)
    assert result.status == "not-reached" and result.n_cross_extrapolated is None
    assert "does not rise" in result.note


def test_no_extrapolation_when_a_noisy_fit_would_cross_inside_the_sweep():
    result = analyse([2, 4, 8, 16], [10.0, 70.0, 10.0, 59.0], 60.0, [-10.0] * 4)
    assert result.n_cross is not None  # 70 at N=4 reaches it
    # fit on x=1..4: b=14.9, a=6.0, so it reaches 59 at N=2**(53/14.9)~11.8, inside the sweep
    result = analyse([2, 4, 8, 16], [10.0, 50.0, 55.0, 58.0], 59.0, [-1.0] * 4)
    assert result.status == "not-reached" and result.n_cross_extrapolated is None


def test_mean_reached_but_not_with_confidence():
    result = analyse([2, 4, 8], [10.0, 45.0, 50.0], 40.0, [-30.0, -8.0, -2.0])
    assert result.status == "mean-only" and result.n_cross_confident is None
    assert result.n_cross == pytest.approx(2 ** (1 + 30 / 35)) and result.n_cross_extrapolated is None
    assert math.isfinite(result.n_cross)
