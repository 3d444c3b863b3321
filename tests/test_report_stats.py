"""Shared bootstrap resamples: the same draws kept or made again, paired, and two-stage over seeds."""

from __future__ import annotations

import numpy as np
import pytest
from switchpoint.core import stats


def test_draws_made_again_chunk_by_chunk_equal_the_kept_ones(monkeypatch):
    monkeypatch.setattr(stats, "_CHUNK_CELLS", 300 * 64)  # several chunks of 64 resamples
    values = np.random.default_rng(1).random((300, 3))
    kept = stats.Resamples(300, 500, seed=7).means(values)
    monkeypatch.setattr(stats, "_KEEP_CELLS", 0)
    again = stats.Resamples(300, 500, seed=7)
    assert again._kept is None
    np.testing.assert_allclose(again.means(values), kept, rtol=0, atol=1e-12)


def test_every_resample_draws_as_many_examples_as_there_are():
    res = stats.Resamples(50, 200, seed=0)
    for _, counts in res.chunks():
        assert (counts.sum(axis=1) == 50).all()
    assert np.allclose(res.means(np.full(50, 0.25)), 0.25)


def test_examples_an_arm_did_not_score_are_left_out_of_its_means():
    res = stats.Resamples(4, 300, seed=0)
    values = np.array([1.0, 1.0, np.nan, np.nan])
    assert np.nanmin(res.means(values)) == pytest.approx(1.0)


def test_the_seed_stage_draws_whole_seeds():
    res = stats.Resamples(10, 4000, seed=0, max_seeds=2)
    per_seed = np.column_stack([np.full(4000, 0.2), np.full(4000, 0.8)])  # no example noise: seeds only
    draws = res.two_stage(per_seed)
    assert set(np.round(draws, 6)) == {0.2, 0.5, 0.8}
    assert np.mean(draws == 0.2) == pytest.approx(0.25, abs=0.03)
    low, high = stats.percentile_interval(draws)
    assert low == pytest.approx(0.2) and high == pytest.approx(0.8)


def test_a_shared_set_gives_the_intervals_of_a_fresh_one_with_the_same_seed():
    values = np.random.default_rng(0).random(40)
    shared = stats.Resamples(40, 1000, seed=3)
    assert stats.bootstrap_ci(values, shared) == stats.bootstrap_ci(values, 1000, 3)
    with pytest.raises(ValueError, match="drawn for 40 examples"):
        stats.bootstrap_ci(values[:10], shared)
