"""The match rule, N* and extrapolation on differences with known answers (no files involved)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from switchpoint.report.transitions import (
    Axis,
    Comparison,
    analyse,
    last_crossing,
    match_sizes,
)

RESAMPLES = 2000


def comparison(sizes, diffs, spread=0.5, zero=None, same=None, seed=0) -> Comparison:
    """Differences with bootstrap draws spread evenly (+-``spread`` points at the 95% ends) around each point."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, spread / 1.96, size=(RESAMPLES, len(sizes)))
    draws = np.array(diffs, dtype=float)[None, :] + noise
    return Comparison(list(sizes), list(map(float, diffs)), draws, zero or [False] * len(sizes),
                      same or [False] * len(sizes))


def test_axis_places_zero_one_step_left_of_the_first_positive_size_and_inverts():
    axis = Axis.for_sizes([0, 2, 4, 8])
    assert axis.x(0) == 0.0 and axis.x(2) == 1.0 and axis.x(8) == 3.0
    assert axis.x(1) == pytest.approx(0.5)  # linear in N between 0 and 2
    for n in (0, 1, 2, 3, 8, 100):
        assert axis.n(axis.x(n)) == pytest.approx(n)


def test_equal_to_the_prompting_arm_matches_under_non_inferiority_but_is_not_better():
    cmp = comparison([2, 4, 8], [-0.3, 0.0, 0.2], spread=0.6)  # lower bounds about -0.9, -0.6, -0.4
    n_match, n_superior = match_sizes(cmp, margin=1.0)
    assert n_match == 2 and n_superior is None
    assert match_sizes(cmp, margin=0.0)[0] is None  # without a margin it is a superiority test, failed


def test_a_curve_that_dips_below_after_crossing_matches_only_once_it_stays_above():
    cmp = comparison([2, 4, 8, 16, 32, 64], [-20, 1, -3, -2, 1, 4])
    n_match, _ = match_sizes(cmp, margin=1.0)
    assert n_match == 32
    out = analyse(cmp, 1.0, 8.0)
    axis = Axis.for_sizes(cmp.sizes)
    # the mean reaches the level for good between 16 (-2) and 32 (+1): two thirds of the way on log2 N
    assert out.n_star == pytest.approx(axis.n(axis.x(16) + 2 / 3))
    assert out.status == "matched"


def test_a_zero_variance_tie_counts_only_between_different_models():
    zero = np.zeros((RESAMPLES, 2))
    same = Comparison([0, 2], [0.0, 0.0], zero, [True, True], [True, False])
    assert match_sizes(same, 1.0) == (2, None)  # N=0 is the base model itself: its tie does not count
    other = Comparison([0, 2], [0.0, 0.0], zero, [True, True], [False, False])
    assert match_sizes(other, 1.0) == (0, None)


def test_n_star_interval_comes_from_the_same_rule_on_every_resample():
    cmp = comparison([2, 4, 8, 16], [-10, -4, 2, 8], spread=3.0)
    out = analyse(cmp, 1.0, 8.0)
    assert out.n_star_low <= out.n_star <= out.n_star_high
    assert 2 < out.n_star_low < out.n_star_high <= 16 and out.beyond_share == pytest.approx(0.0)


def test_a_crossing_only_some_resamples_reach_has_an_interval_ending_beyond_the_sweep():
    cmp = comparison([2, 4, 8], [-10, -5, 0.5], spread=3.0)
    out = analyse(cmp, 1.0, 8.0)
    assert out.n_star is not None and math.isinf(out.n_star_high)
    assert 0.025 < out.beyond_share < 0.9


def test_last_crossing_interpolates_and_is_infinite_when_the_curve_ends_below():
    x = np.array([1.0, 2.0, 3.0])
    got = last_crossing(x, np.array([[-2.0, 2.0, 3.0], [1.0, 1.0, 1.0], [1.0, -1.0, -1.0], [-1.0, 0.0, 1.0]]))
    assert got[0] == pytest.approx(1.5) and got[1] == pytest.approx(1.0)
    assert math.isinf(got[2]) and got[3] == pytest.approx(2.0)  # a tie at a size is that size


def test_extrapolation_within_eight_times_the_sweep_has_a_range():
    # 5 points per doubling, 10 below the level at N=64: reaches it at N=256 (4x the sweep)
    cmp = comparison([8, 16, 32, 64], [-25, -20, -15, -10], spread=2.0)
    out = analyse(cmp, 1.0, 8.0)
    assert out.status == "extrapolated" and out.n_star is None
    assert out.n_extrapolated == pytest.approx(256.0, rel=1e-6)
    assert out.n_extrapolated_low < 256.0 < out.n_extrapolated_high


def test_a_flat_tail_gives_no_number_beyond_eight_times_the_sweep():
    cmp = comparison([8, 16, 32, 64], [-30.2, -30.1, -30.05, -30.0], spread=0.5)  # 0.05 points per doubling
    out = analyse(cmp, 1.0, 8.0)
    assert out.n_extrapolated is None and out.beyond_limit and out.status == "beyond-8x"


def test_a_falling_tail_is_not_extrapolated():
    out = analyse(comparison([8, 16, 32, 64], [-10, -12, -14, -16]), 1.0, 8.0)
    assert out.n_extrapolated is None and not out.beyond_limit and out.status == "not-reached"
    assert "does not rise" in out.note


def test_a_mean_that_crosses_while_its_interval_still_reaches_below_the_margin_is_mean_only():
    # The mean is above the level from N=8 on, but the lower 95% end stays far below -margin.
    out = analyse(comparison([2, 4, 8, 16], [-10, -5, 0.5, 1.0], spread=6.0), 1.0, 8.0)
    assert out.status == "mean-only" and out.n_match is None
    assert 4 < out.n_star < 8 and out.n_extrapolated is None


def test_a_fitted_tail_that_crosses_inside_the_sweep_is_not_an_extrapolation():
    # The last means rise on average (fit crosses near N=40) but the largest N ends below the level.
    out = analyse(comparison([8, 16, 32, 64], [-20, -1, 5, -3], spread=0.5), 1.0, 8.0)
    assert out.n_star is None and out.n_extrapolated is None and not out.beyond_limit
    assert out.status == "not-reached" and "crosses inside the sweep" in out.note
