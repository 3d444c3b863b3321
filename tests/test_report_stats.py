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


def _fresh_indices_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """The per-arm method (v0.1): fresh resample indices for one arm and metric, mean of values[idx]."""
    idx = np.random.default_rng(seed).integers(0, len(values), size=(resamples, len(values)))
    return values[idx].mean(axis=1)


def test_the_counts_matrix_gives_the_means_of_the_very_indices_it_counts(monkeypatch):
    monkeypatch.setattr(stats, "_CHUNK_CELLS", 120 * 50)  # several chunks of 50 resamples
    monkeypatch.setattr(stats, "_COUNT_CELLS", 120 * 7)  # counted in blocks that do not divide a chunk
    values = np.random.default_rng(2).random(120)
    res = stats.Resamples(120, 230, seed=4)
    expected = []
    for i, chunk_seed in enumerate(res._chunk_seeds):
        rows = min(230, (i + 1) * 50) - i * 50
        idx = np.random.default_rng(chunk_seed).integers(0, 120, size=(rows, 120))
        expected.append(values[idx].mean(axis=1))
    np.testing.assert_allclose(res.means(values)[:, 0], np.concatenate(expected), rtol=0, atol=1e-12)


def test_shared_draws_give_the_per_arm_intervals_up_to_monte_carlo_noise():
    values = (np.random.default_rng(5).random((500, 4)) < [0.2, 0.5, 0.6, 0.9]).astype(float)
    shared = stats.bootstrap_cis(values, stats.Resamples(500, 4000, seed=0))
    for k, interval in enumerate(shared):
        low, high = np.percentile(_fresh_indices_means(values[:, k], 4000, seed=0), [2.5, 97.5]) * 100
        # the interval is about 7 points wide; an end's Monte Carlo error with 4,000 resamples is about 0.1
        assert interval.ci_low == pytest.approx(low, abs=0.5) and interval.ci_high == pytest.approx(high, abs=0.5)
        assert interval.mean == pytest.approx(values[:, k].mean() * 100, abs=1e-9)


def test_one_product_for_every_column_equals_one_column_at_a_time():
    values = np.random.default_rng(3).random((80, 6))
    values[5, 2] = np.nan  # an example one arm did not score: divided by the scored examples drawn
    shared = stats.Resamples(80, 700, seed=1)
    together = stats.bootstrap_cis(values, shared)
    for k, interval in enumerate(together):
        alone = stats.bootstrap_ci(values[:, k], shared)
        assert interval.ci_low == pytest.approx(alone.ci_low, abs=1e-9)
        assert interval.ci_high == pytest.approx(alone.ci_high, abs=1e-9)
        assert interval.count == 80
    assert not np.isnan([together[2].ci_low, together[2].ci_high]).any()
    with pytest.raises(ValueError, match="drawn for 80 examples"):
        stats.bootstrap_cis(values[:10], shared)


def test_fully_scored_columns_are_divided_by_the_draws_per_resample():
    values = np.random.default_rng(4).random((60, 2))
    res = stats.Resamples(60, 300, seed=2)
    counts = np.vstack([c for _, c in res.chunks()]).astype(float)
    np.testing.assert_allclose(res.means(values), counts @ values / counts.sum(axis=1, keepdims=True),
                               rtol=0, atol=1e-12)


def test_an_unscored_example_leaves_the_mean_over_the_scored_ones():
    import numpy as np
    from switchpoint.core import stats

    values = np.array([[1.0, np.nan], [0.0, np.nan], [1.0, 1.0], [np.nan, 0.0]])
    first, second = stats.bootstrap_cis(values, stats.Resamples(4, 2000, 0))
    assert first.mean == pytest.approx(200 / 3) and second.mean == pytest.approx(50.0)
    assert first.ci_low <= first.mean <= first.ci_high
