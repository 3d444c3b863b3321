"""Where a fine-tuned curve reaches a prompting arm's level: measured, with confidence, or extrapolated.

Inputs are seed-averaged means in percent at the sweep's sizes N (ascending) and the prompting
arm's reference level. The rules (also in docs/report.md):

* ``n_cross``: the first measured N whose mean is at or above the level (a tie counts as reached);
  when an earlier size was below, N is interpolated linearly on the x axis between the two sizes.
  On a non-monotonic curve the first crossing counts. Reached at the first size: that size.
* The x axis is log2 N. N=0 has no logarithm, so it sits one unit left of the smallest positive size
  N1 (at log2 N1 - 1), and between 0 and N1 the axis is linear in N. So a crossing between N=0 and
  N=2 interpolates linearly in N (level half-way -> N=1), and the plots draw exactly these lines.
* ``n_cross_confident``: the first measured N whose paired-bootstrap lower bound (fine-tuned minus
  prompting, same example ids) is >= 0. Not interpolated.
* ``n_cross_extrapolated``: only when the mean never reaches the level inside the sweep: a straight
  line ``mean = a + b*log2(N)`` fitted (least squares, numpy.polyfit) to the last ``FIT_POINTS``
  positive sizes, solved for the level. None when the line does not rise or when it would cross
  inside the sweep (the measured means say otherwise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

FIT_POINTS = 4  # the tail of the curve is what carries on past the sweep; early sizes often jump
TIE_TOL = 1e-9  # percent; means computed from the same 0/1 scores differ only by rounding


@dataclass(frozen=True)
class Axis:
    """Plot/interpolation x position of N: log2 N, N=0 one unit left of the first positive size."""

    first_positive: int = 1

    @classmethod
    def for_sizes(cls, sizes: Sequence[float]) -> "Axis":
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
class Fit:
    form: str
    a: float
    b: float
    points: tuple[int, ...]

    @property
    def params(self) -> str:
        return f"a={self.a:.4g}; b={self.b:.4g}"


@dataclass(frozen=True)
class Transition:
    n_cross: float | None  # interpolated on the axis; None when not reached in the sweep
    n_cross_measured: int | None  # first measured N at or above the level
    n_cross_confident: int | None
    n_cross_extrapolated: float | None
    fit: Fit | None
    status: str  # confident | mean-only | extrapolated | not-reached
    note: str


def first_crossing(sizes: Sequence[int], means: Sequence[float], level: float) -> tuple[float | None, int | None]:
    """(interpolated N, first measured N) where ``means`` first reaches ``level``; NaN sizes skipped."""
    points = [(n, m) for n, m in zip(sizes, means) if m is not None and not math.isnan(m)]
    axis = Axis.for_sizes([n for n, _ in points])
    for i, (n, m) in enumerate(points):
        if m >= level - TIE_TOL:
            if i == 0 or m <= level + TIE_TOL:  # reached at the first size, or exactly at this one (a tie)
                return float(n), n
            n0, m0 = points[i - 1]
            t = min(1.0, max(0.0, (level - m0) / (m - m0)))
            x0, x1 = axis.x(n0), axis.x(n)
            return axis.n(x0 + t * (x1 - x0)), n
    return None, None


def first_confident(sizes: Sequence[int], lower_bounds: Sequence[float]) -> int | None:
    """First N whose paired lower bound is >= 0 (NaN: not compared, skipped)."""
    for n, low in zip(sizes, lower_bounds):
        if low is not None and not math.isnan(low) and low >= -TIE_TOL:
            return n
    return None


def fit_log2_linear(sizes: Sequence[int], means: Sequence[float], points: int = FIT_POINTS) -> Fit | None:
    """Least-squares ``mean = a + b*log2(N)`` on the last ``points`` positive sizes (None if < 2)."""
    pairs = [(n, m) for n, m in zip(sizes, means) if n > 0 and m is not None and not math.isnan(m)][-points:]
    if len(pairs) < 2:
        return None
    x = np.log2([n for n, _ in pairs])
    y = np.array([m for _, m in pairs], dtype=float)
    b, a = np.polyfit(x, y, 1)
    return Fit("mean = a + b*log2(N)", float(a), float(b), tuple(int(n) for n, _ in pairs))


def extrapolate(fit: Fit | None, level: float, max_size: int) -> tuple[float | None, str]:
    """N where the fitted line reaches ``level``, with a note when there is none."""
    if fit is None:
        return None, "fewer than 2 positive sizes: no curve to extrapolate"
    if fit.b <= 0:
        return None, f"fitted line does not rise (b={fit.b:.3g} points per doubling): no crossing in sight"
    n = 2.0 ** ((level - fit.a) / fit.b)
    if n <= max_size:
        return None, "fitted line crosses inside the sweep but no measured mean does: not extrapolated"
    return n, f"extrapolated beyond N={max_size} from the fit on N={','.join(map(str, fit.points))}"


def analyse(sizes: Sequence[int], means: Sequence[float], level: float,
            lower_bounds: Sequence[float] | None = None) -> Transition:
    """The three crossing figures for one fine-tuned curve against one reference level."""
    n_cross, measured = first_crossing(sizes, means, level)
    confident = first_confident(sizes, lower_bounds) if lower_bounds is not None else None
    if n_cross is not None:
        status = "confident" if confident is not None else "mean-only"
        if confident is not None:
            note = f"reached at N={measured}; 95% paired lower bound >= 0 from N={confident}"
        else:
            note = f"mean reached at N={measured}, but no size's paired 95% interval excludes a deficit"
        if measured == min(n for n in sizes):
            note += "; already at the smallest size"
        return Transition(n_cross, measured, confident, None, None, status, note)
    if confident is not None:  # possible only when the arms scored different examples: no extrapolation
        return Transition(None, None, confident, None, None, "confident-only",
                          f"paired lower bound >= 0 at N={confident} on the examples both arms scored, "
                          "but the mean over all examples stays below the level")
    fit = fit_log2_linear(sizes, means)
    n_ext, note = extrapolate(fit, level, max(sizes) if sizes else 0)
    status = "extrapolated" if n_ext is not None else "not-reached"
    return Transition(None, None, None, n_ext, fit, status, note)
