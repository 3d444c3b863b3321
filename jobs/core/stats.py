"""Bootstrap intervals over examples, and paired comparisons of two arms on the same examples.

Inputs are per-example scores in 0..1; outputs are in percent (0..100) or percentage points, the
units of ``summary.csv`` and the report. Seeded, so the same scores give the same intervals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

DEFAULT_RESAMPLES = 10_000
_CHUNK_CELLS = 4_000_000  # resample index matrices are built in chunks of about this many cells


def _resampled_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Means of ``resamples`` bootstrap resamples of ``values``, vectorised in chunks."""
    n = len(values)
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_CELLS // max(n, 1))
    out = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, rows):
        stop = min(resamples, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = values[idx].mean(axis=1)
    return out


@dataclass(frozen=True)
class Interval:
    mean: float
    ci_low: float
    ci_high: float
    count: int


def bootstrap_ci(values, resamples: int = DEFAULT_RESAMPLES, seed: int = 0, level: float = 0.95) -> Interval:
    """Mean and percentile-bootstrap interval, in percent, of per-example scores in 0..1."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    means = _resampled_means(arr, resamples, seed)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(arr.mean() * 100), float(low * 100), float(high * 100), int(arr.size))


@dataclass(frozen=True)
class PairedDifference:
    mean_diff: float  # percentage points, A minus B
    ci_low: float
    ci_high: float
    count: int  # examples scored by both arms
    only_a: int  # examples scored by A alone (left out of the comparison, and reported)
    only_b: int


def paired_difference(scores_a: Mapping[str, float], scores_b: Mapping[str, float],
                      resamples: int = DEFAULT_RESAMPLES, seed: int = 0, level: float = 0.95) -> PairedDifference:
    """A minus B on the examples both scored, with a paired bootstrap (same resampled ids for both)."""
    common = sorted(set(scores_a) & set(scores_b))
    only_a = len(set(scores_a) - set(scores_b))
    only_b = len(set(scores_b) - set(scores_a))
    if not common:
        nan = float("nan")
        return PairedDifference(nan, nan, nan, 0, only_a, only_b)
    diff = np.array([scores_a[i] - scores_b[i] for i in common], dtype=np.float64)
    interval = bootstrap_ci(diff, resamples, seed, level)
    return PairedDifference(interval.mean, interval.ci_low, interval.ci_high, len(common), only_a, only_b)
