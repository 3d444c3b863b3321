"""Where a fine-tuned curve matches a prompting arm: the match rule, N* with an interval, extrapolation.

Inputs: the sweep's sizes N (ascending), and per size the paired difference fine-tuned − prompting
in points (its point value and its bootstrap draws, all from the same resamples). The rules (with
their reasons in docs/report.md):

* **Match (non-inferiority with persistence)**: the first measured N from which the paired 95% lower
  bound is ≥ −δ at that N *and at every larger measured N*. ``n_superior``: the same with a lower bound
  > 0 (superiority, reported separately).
* **Not comparable**: a size whose fine-tuned arm is the prompting arm itself (the base model at N=0
  against the same model with 0 shots: the same predictions) is never compared. A zero-variance tie
  (every paired difference exactly 0) counts as a match only between different models.
* **N\\***: where the mean difference crosses 0 for good (the last crossing after which it stays ≥ 0),
  interpolated on the plot axis (log2 N; linear in N between 0 and the first size). Its 95% interval
  applies the same rule to every bootstrap resample; a resample whose curve ends below the level
  counts as "beyond the sweep" (an infinite N), so an interval may end beyond the sweep.
* **Extrapolation**: only when the mean never crosses for good: ``diff = a + b·log2 N`` on the last
  ``FIT_POINTS`` comparable positive sizes, solved for 0, with the range from the same fit on every
  resample. Shown only up to ``EXTRAPOLATE_MAX`` × the largest measured N; beyond that the answer is
  "more than 8× the sweep", never a number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FIT_POINTS = 4  # the tail of the curve is what carries on past the sweep; early sizes often jump
TOL = 1e-9  # points; differences computed from the same 0/1 scores differ only by rounding
LEVEL = 0.95


@dataclass(frozen=True)
class Axis:
    """Plot/interpolation x position of N: log2 N, N=0 one unit left of the first positive size."""

    first_positive: int = 1

    @classmethod
    def for_sizes(cls, sizes: Sequence[float]) -> Axis:
        positive = [n for n in sizes if n > 0]
        return cls(int(min(positive)) if positive else 1)

    def x(self, n: float) -> float:
        if n >= self.first_positive:
            return math.log2(n)
        return math.log2(self.first_positive) - 1 + n / self.first_positive

    def n(self, x: float) -> float:
        base = math.log2(self.first_positive)
        return 2.0 ** x if x >= base else (x - base + 1) * self.first_positive


@dataclass(frozen=True)
class Comparison:
    """Fine-tuned minus prompting, per measured size (only comparable sizes)."""

    sizes: list[int]
    diff: list[float]  # point difference in points
    draws: np.ndarray  # resamples x sizes
    zero_variance: list[bool]  # every paired difference exactly 0 (identical scores)
    same_model: list[bool]  # the fine-tuned arm at this size has the prompting arm's weights (N=0, same model)

    def lows(self, level: float = LEVEL) -> list[float]:
        tail = (1 - level) / 2 * 100
        return [float(np.percentile(self.draws[:, i], tail)) for i in range(len(self.sizes))]


@dataclass(frozen=True)
class Outcome:
    n_match: int | None  # non-inferior from here on
    n_superior: int | None  # superior from here on
    n_star: float | None  # the mean's last crossing, interpolated
    n_star_low: float | None  # 95% interval of N* (inf: beyond the sweep)
    n_star_high: float | None
    beyond_share: float  # share of resamples that never cross for good inside the sweep
    n_extrapolated: float | None  # only within EXTRAPOLATE_MAX x the sweep
    n_extrapolated_low: float | None
    n_extrapolated_high: float | None
    beyond_limit: bool  # the extrapolation (or its point) lies beyond EXTRAPOLATE_MAX x the sweep
    fit_params: str | None
    status: str  # matched | mean-only | extrapolated | beyond-8x | not-reached
    note: str


def _holds_from(sizes: Sequence[int], ok: Sequence[bool]) -> int | None:
    """The first size from which ``ok`` holds at every larger size (None when it fails at the largest)."""
    start = None
    for n, good in zip(sizes, ok):
        start = (n if start is None else start) if good else None
    return start


def match_sizes(cmp: Comparison, margin: float) -> tuple[int | None, int | None]:
    """(n_match, n_superior): non-inferiority at -margin and superiority, each with persistence."""
    lows = cmp.lows()
    tie_ok = [not (zero and same) for zero, same in zip(cmp.zero_variance, cmp.same_model)]
    inferior = [low >= -margin - TOL and ok for low, ok in zip(lows, tie_ok)]
    superior = [low > TOL for low in lows]
    return _holds_from(cmp.sizes, inferior), _holds_from(cmp.sizes, superior)


def last_crossing(x: np.ndarray, diff: np.ndarray) -> np.ndarray:
    """Axis position where each row of ``diff`` (rows x sizes) reaches 0 for good; inf when it ends below."""
    diff = np.atleast_2d(diff)
    above = diff >= -TOL
    stays = np.flip(np.cumprod(np.flip(above, axis=1), axis=1), axis=1).astype(bool)  # above here and after
    first = np.where(stays.any(axis=1), stays.argmax(axis=1), -1)
    out = np.full(diff.shape[0], np.inf)
    at_start = first == 0
    out[at_start] = x[0]
    mid = first > 0
    if mid.any():
        rows, i = np.nonzero(mid)[0], first[mid]
        d0, d1 = diff[rows, i - 1], diff[rows, i]
        t = np.clip(np.where(d1 - d0 > 0, -d0 / np.where(d1 - d0 > 0, d1 - d0, 1.0), 1.0), 0.0, 1.0)
        t = np.where(np.abs(d1) <= TOL, 1.0, t)  # exactly at the level: that size itself
        out[rows] = x[i - 1] + t * (x[i] - x[i - 1])
    return out


def _quantiles(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of values that may be infinite (no interpolation across infinity)."""
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail], method="inverted_cdf")
    return float(low), float(high)


def _to_n(axis: Axis, xs: np.ndarray) -> np.ndarray:
    return np.array([axis.n(v) if math.isfinite(v) else math.inf for v in xs])


def fit_tail(sizes: Sequence[int], diff: np.ndarray, points: int = FIT_POINTS) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Least-squares ``diff = a + b*log2 N`` on the last ``points`` positive sizes, for each row of ``diff``."""
    idx = [i for i, n in enumerate(sizes) if n > 0][-points:]
    used = [int(sizes[i]) for i in idx]
    if len(idx) < 2:
        return np.array([]), np.array([]), used
    x = np.log2(np.array(used, dtype=float))
    y = np.atleast_2d(diff)[:, idx]
    xc = x - x.mean()
    b = (y - y.mean(axis=1, keepdims=True)) @ xc / (xc @ xc)
    a = y.mean(axis=1) - b * x.mean()
    return a, b, used


def extrapolate(sizes: Sequence[int], diff: Sequence[float], draws: np.ndarray,
                limit: float) -> tuple[float | None, float | None, float | None, bool, str | None, str]:
    """(n, low, high, beyond_limit, fit params, note): where the fitted tail reaches the level."""
    a, b, used = fit_tail(sizes, np.asarray(diff, dtype=float))
    largest = max(sizes)
    if not used or len(a) == 0:
        return None, None, None, False, None, "fewer than 2 positive sizes: no curve to extrapolate"
    params = f"diff = {a[0]:.4g} + {b[0]:.4g}·log2 N on N={','.join(map(str, used))}"
    if b[0] <= 0:
        return None, None, None, False, params, f"the tail does not rise ({b[0]:.3g} points per doubling): no crossing in sight"
    n = 2.0 ** (-a[0] / b[0])
    if n <= largest:
        return None, None, None, False, params, "the fitted tail crosses inside the sweep but the measured means do not"
    ra, rb, _ = fit_tail(sizes, draws)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        sample = np.where(rb > 0, np.exp2(np.minimum(-ra / np.where(rb > 0, rb, 1.0), 1e3)), np.inf)
    sample = np.maximum(sample, largest)
    low, high = _quantiles(sample)
    if n > limit * largest:
        return None, None, None, True, params, f"the fitted tail reaches the level beyond {limit:g}× the largest N"
    return n, low, high, False, params, f"extrapolated beyond N={largest} from the fit on N={','.join(map(str, used))}"


def analyse(cmp: Comparison, margin: float, limit: float) -> Outcome:
    """The match, N* with its interval, and (only when needed) a bounded extrapolation."""
    n_match, n_superior = match_sizes(cmp, margin)
    if not cmp.sizes:
        return Outcome(None, None, None, None, None, 1.0, None, None, None, False, None, "not-reached",
                       "no size could be compared")
    axis = Axis.for_sizes(cmp.sizes)
    x = np.array([axis.x(n) for n in cmp.sizes])
    point = last_crossing(x, np.array(cmp.diff))[0]
    sample = last_crossing(x, cmp.draws)
    beyond = float(np.mean(~np.isfinite(sample)))
    low, high = (float(v) for v in _to_n(axis, np.array(_quantiles(sample))))
    if math.isfinite(point):
        n_star = axis.n(point)
        status = "matched" if n_match is not None else "mean-only"
        note = f"the mean reaches the level for good at N ≈ {n_star:.3g}"
        return Outcome(n_match, n_superior, n_star, low, high, beyond, None, None, None, False, None, status, note)
    ext, ext_low, ext_high, past, params, note = extrapolate(cmp.sizes, cmp.diff, cmp.draws, limit)
    if n_match is not None:
        status = "matched"
        note = f"non-inferior (within the margin) from N={n_match} although the mean stays below the level"
    else:
        status = "extrapolated" if ext is not None else "beyond-8x" if past else "not-reached"
    return Outcome(n_match, n_superior, None, low, high, beyond, ext, ext_low, ext_high, past, params, status, note)
