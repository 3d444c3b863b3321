"""Bootstrap intervals over examples (and seeds), and paired comparisons of arms on the same examples.

Inputs are per-example scores in 0..1; outputs are in percent (0..100) or percentage points, the
units of ``summary.csv`` and the report. Seeded, so the same scores give the same intervals.

``Resamples`` is one set of bootstrap draws shared by every arm, metric and comparison of a job: a
matrix of how often each example is drawn in each resample (so a resampled mean is one matrix
product, and every arm is resampled on the *same* examples, which keeps comparisons paired), plus a
draw of seeds per resample for the two-stage (seeds, then examples) bootstrap of fine-tuned arms.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 10_000
LEVEL = 0.95
_CHUNK_CELLS = 4_000_000  # resample rows are drawn and processed in chunks of about this many cells
_COUNT_CELLS = 250_000  # draws are counted in blocks of about this many cells (they stay in the CPU cache)
_KEEP_CELLS = 60_000_000  # draws are kept (one byte a cell) up to this size, else made again when needed


class Resamples:
    """``resamples`` bootstrap draws of ``examples`` examples (and of up to ``max_seeds`` seeds).

    The draws are made in chunks of rows, each from its own seed (spawned from ``seed``), so they can be
    kept (up to ``_KEEP_CELLS`` counts, one byte each) or, for a large job, made again chunk by chunk
    when needed: the same draws either way.
    """

    def __init__(self, examples: int, resamples: int = DEFAULT_RESAMPLES, seed: int = 0, max_seeds: int = 1):
        if examples < 1 or resamples < 1:
            raise ValueError("need at least one example and one resample")
        self.examples, self.resamples = examples, resamples
        self._rows = max(1, _CHUNK_CELLS // examples)
        chunks = -(-resamples // self._rows)
        sequences = np.random.SeedSequence(seed).spawn(chunks + 1)
        self._chunk_seeds = sequences[:chunks]
        self._seed_uniform = np.random.default_rng(sequences[-1]).random((resamples, max(1, max_seeds)))
        self._kept = [self._chunk(i) for i in range(chunks)] if examples * resamples <= _KEEP_CELLS else None

    def _chunk(self, index: int) -> np.ndarray:
        """How often each example is drawn in each resample of chunk ``index`` (rows x examples, uint8:
        the count of one example among ``examples`` draws is about Poisson(1))."""
        start = index * self._rows
        rows = min(self.resamples, start + self._rows) - start
        idx = np.random.default_rng(self._chunk_seeds[index]).integers(0, self.examples, size=(rows, self.examples))
        counts = np.empty((rows, self.examples), dtype=np.uint8)
        step = max(1, _COUNT_CELLS // self.examples)  # counted in cache-sized blocks of rows: the same counts, faster
        for top in range(0, rows, step):
            block = idx[top:top + step]
            flat = (block + np.arange(len(block))[:, None] * self.examples).ravel()
            counts[top:top + len(block)] = np.bincount(flat, minlength=block.size).reshape(block.shape)
        return counts

    def chunks(self):
        """(first row, counts) of every chunk of resamples."""
        for i in range(len(self._chunk_seeds)):
            yield i * self._rows, (self._kept[i] if self._kept is not None else self._chunk(i))

    def means(self, values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Resampled means, shape (resamples, K), of ``values`` (examples x K; NaN or ``mask`` False = not scored)."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 1:
            values = values[:, None]
        present = ~np.isnan(values) if mask is None else np.asarray(mask, dtype=bool).reshape(values.shape)
        weighted = np.where(present, values, 0.0)
        # Every example scored: each resample draws exactly ``examples`` of them, so the denominator is known.
        present_f = None if present.all() else present.astype(np.float64)
        out = np.empty((self.resamples, values.shape[1]))
        for start, counts in self.chunks():
            chunk = counts.astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                drawn = chunk @ present_f if present_f is not None else self.examples
                out[start:start + len(chunk)] = (chunk @ weighted) / drawn
        return out

    def seed_draws(self, seeds: int) -> np.ndarray:
        """Indices (resamples x ``seeds``) of the seeds drawn with replacement in each resample.

        Arms with the same number of seeds get the same draws, so the sizes of one model's curve (whose
        seed S is the same training subset family) are resampled together."""
        if seeds > self._seed_uniform.shape[1]:
            raise ValueError(f"built for at most {self._seed_uniform.shape[1]} seeds, asked for {seeds}")
        return np.minimum((self._seed_uniform[:, :seeds] * seeds).astype(np.int64), seeds - 1)

    def two_stage(self, per_seed: np.ndarray) -> np.ndarray:
        """Resampled means of an arm from its per-seed resampled means (resamples x seeds): seeds drawn, then averaged."""
        per_seed = np.asarray(per_seed, dtype=np.float64)
        if per_seed.shape[1] == 1:
            return per_seed[:, 0]
        draws = self.seed_draws(per_seed.shape[1])
        return np.take_along_axis(per_seed, draws, axis=1).mean(axis=1)


@dataclass(frozen=True)
class Interval:
    mean: float
    ci_low: float
    ci_high: float
    count: int


def percentile_interval(draws: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of bootstrap draws (NaN draws ignored; NaN when there are none)."""
    finite = np.asarray(draws, dtype=np.float64)
    finite = finite[~np.isnan(finite)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def percentile_intervals(draws: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """``percentile_interval`` of every column of ``draws`` (resamples x K), in one call when none is NaN."""
    draws = np.asarray(draws, dtype=np.float64)
    if not np.isnan(draws).any():
        tail = (1 - level) / 2 * 100
        low, high = np.percentile(draws, [tail, 100 - tail], axis=0)
        return low, high
    pairs = [percentile_interval(draws[:, k], level) for k in range(draws.shape[1])]
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def bootstrap_cis(values, resamples: Resamples, level: float = LEVEL) -> list[Interval]:
    """``bootstrap_ci`` of every column of ``values`` (examples x K) from one matrix product with the shared draws."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if resamples.examples != arr.shape[0]:
        raise ValueError(f"resamples were drawn for {resamples.examples} examples, got {arr.shape[0]}")
    low, high = percentile_intervals(resamples.means(arr), level)
    scored = ~np.isnan(arr)
    # The mean over the scored examples, as the resampled means are (NaN only when none is scored).
    mean = np.divide(np.where(scored, arr, 0.0).sum(axis=0), scored.sum(axis=0),
                     out=np.full(arr.shape[1], np.nan), where=scored.sum(axis=0) > 0)
    return [Interval(float(mean[k] * 100), float(low[k] * 100), float(high[k] * 100), arr.shape[0])
            for k in range(arr.shape[1])]


def bootstrap_ci(values, resamples: int | Resamples = DEFAULT_RESAMPLES, seed: int = 0, level: float = LEVEL) -> Interval:
    """Mean and percentile-bootstrap interval, in percent, of per-example scores in 0..1.

    ``resamples`` may be a shared ``Resamples`` of the same number of examples (then ``seed`` is unused).
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    shared = resamples if isinstance(resamples, Resamples) else Resamples(arr.size, resamples, seed)
    return bootstrap_cis(arr.ravel(), shared, level)[0]


@dataclass(frozen=True)
class PairedDifference:
    mean_diff: float  # percentage points, A minus B
    ci_low: float
    ci_high: float
    count: int  # examples scored by both arms
    only_a: int  # examples scored by A alone (left out of the comparison, and reported)
    only_b: int


def paired_difference(scores_a: Mapping[str, float], scores_b: Mapping[str, float],
                      resamples: int = DEFAULT_RESAMPLES, seed: int = 0, level: float = LEVEL) -> PairedDifference:
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
