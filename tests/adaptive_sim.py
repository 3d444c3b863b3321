"""Replaying the adaptive sweep's decisions on recorded or synthetic curves (shared by tests/test_adaptive.py).

A curve source answers two questions: what the report would say about a model given which sizes were
run with how many seeds (``Curves.observe``: the report's own match rule and N* interval, from
``switchpoint.report.transitions``), and what running one size with k seeds cost (``Curves.cost``).
``simulate`` then runs ``adaptive.decide`` round after round exactly as ``rounds.run_adaptive`` does.
"""

from __future__ import annotations

import json
import math
import random
import zlib
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np
from switchpoint.core import manifests
from switchpoint.core.stats import Resamples
from switchpoint.orchestration.adaptive import ModelRound, decide, first_round
from switchpoint.report.transitions import Comparison, Outcome, analyse

EXTRAPOLATE_LIMIT = 8.0
TOY_RECORD = Path(__file__).parent / "data" / "adaptive" / "toy-full-grid.json"


class Curves(Protocol):
    models: list[str]
    levels: dict[str, float]
    grid: list[int]
    margin: float
    max_seeds: dict[int, int]

    def comparison(self, model: str, tier: str, seeds: dict[int, int]) -> Comparison: ...

    def mean(self, model: str, n: int, k: int) -> float: ...

    def cost(self, model: str, n: int, k: int) -> float: ...


def outcome(curves: Curves, model: str, tier: str, seeds: dict[int, int]) -> Outcome:
    return analyse(curves.comparison(model, tier, seeds), curves.margin, EXTRAPOLATE_LIMIT)


def observe(curves: Curves, model: str, seeds: dict[int, int]) -> ModelRound:
    """What ``rounds.read_round`` would read from the report after running ``seeds`` (N -> seeds)."""
    matches, stars = {}, {}
    for tier in curves.levels:
        got = outcome(curves, model, tier, seeds)
        matches[tier] = {n: got.n_match is not None and n >= got.n_match for n in seeds}
        if got.n_star is not None:
            stars[tier] = (got.n_star, got.n_star_low, got.n_star_high)
    return ModelRound(model, {n: curves.mean(model, n, k) for n, k in seeds.items()},
                      {n: curves.cost(model, n, k) for n, k in seeds.items()}, matches, seeds=dict(seeds),
                      n_star=stars)


def grid_seeds(curves: Curves) -> dict[int, int]:
    return {n: curves.max_seeds[n] for n in curves.grid}


def simulate(curves: Curves) -> tuple[dict[str, dict[int, int]], dict[str, str]]:
    """Rounds until every model stops: (model -> N -> seeds run, model -> why it stopped)."""
    seeds = {m: {n: 1 for n in first_round(curves.grid)} for m in curves.models}
    stops: dict[str, str] = {}
    for _ in range(2 * len(curves.grid) + 1):
        rounds = {m: observe(curves, m, seeds[m]) for m in curves.models if m not in stops}
        if not rounds:
            break
        asked = {m: {n for n, k in seeds[m].items() if k > 1} for m in rounds}
        for d in decide(rounds, curves.levels, curves.grid, margin=curves.margin, max_seeds=curves.max_seeds,
                        asked=asked):
            if d.stop:
                stops[d.model] = d.stop
            seeds[d.model].update({n: 1 for n in d.sizes})
            seeds[d.model].update({n: curves.max_seeds[n] for n in d.more_seeds})
    return seeds, stops


def share_of_grid(curves: Curves, seeds: dict[str, dict[int, int]], cost=None) -> float:
    """What the adaptive sweep spent as a share of the full grid (``cost``: model, N, seeds -> cost)."""
    cost = cost or curves.cost
    spent = sum(cost(m, n, k) for m, sizes in seeds.items() for n, k in sizes.items())
    full = sum(cost(m, n, k) for m in curves.models for n, k in grid_seeds(curves).items())
    return spent / full


def _crc(*parts: object) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


class Synthetic:
    """Study-like curves (JSQuAD F1, points): logistic in log2 N, a fixed evaluation error per size and a
    seed effect per (size, seed); the grid and seeds of manifests/sweeps/study.yaml."""

    models: ClassVar[list[str]] = ["open-calm-1b", "rinna-3.6b", "elyza-7b", "swallow-13b"]
    # model -> (params in billions, low, high, centre in log2 N, width)
    shapes: ClassVar[dict[str, tuple[float, ...]]] = {
        "open-calm-1b": (1.4, 20.0, 62.0, 7.0, 1.5),
        "rinna-3.6b": (3.6, 25.0, 76.0, 6.0, 1.5),
        "elyza-7b": (6.7, 40.0, 88.0, 6.0, 1.6),
        "swallow-13b": (13.1, 45.0, 90.0, 6.5, 1.6),
    }
    levels: ClassVar[dict[str, float]] = {"claude-instant-1.2": 70.0, "claude-2.1": 80.0}
    grid: ClassVar[list[int]] = [0, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
    margin = 1.0
    se_eval = 1.1  # points: the paired difference's evaluation error on 500 examples
    seed_sd = 1.0  # points: which N examples were drawn
    resamples = 1000

    def __init__(self) -> None:
        self.max_seeds = {n: len(manifests.seeds_at(n, [0, 1, 2], 256)) if n > 0 else 1 for n in self.grid}

    def mean(self, model: str, n: int, k: int) -> float:
        _, low, high, centre, width = self.shapes[model]
        x = math.log2(n) if n > 0 else -2.0
        noise = random.Random(f"{model}/{n}").gauss(0.0, self.se_eval)
        seeds = [random.Random(f"{model}/{n}/{s}").gauss(0.0, self.seed_sd) for s in range(k)] if n > 0 else [0.0]
        return low + (high - low) / (1 + math.exp(-(x - centre) / width)) + noise + sum(seeds) / len(seeds)

    def comparison(self, model: str, tier: str, seeds: dict[int, int]) -> Comparison:
        sizes = sorted(seeds)
        diff = [self.mean(model, n, seeds[n]) - self.levels[tier] for n in sizes]
        se = [self.spread(seeds[n]) if n > 0 else self.se_eval for n in sizes]
        draws = np.column_stack([d + np.random.default_rng(_crc(model, tier, n, seeds[n])).normal(0.0, s, self.resamples)
                                 for n, d, s in zip(sizes, diff, se)])
        return Comparison(sizes, diff, draws, [False] * len(sizes), [False] * len(sizes))

    def spread(self, k: int) -> float:
        """The report's standard error of the difference at k seeds: the examples, plus (two-stage
        bootstrap) the seeds' spread as k resampled values show it; one seed shows none."""
        return math.sqrt(self.se_eval ** 2 + self.seed_sd ** 2 * (k - 1) / k ** 2)

    def cost(self, model: str, n: int, k: int) -> float:
        """GPU hours (relative): training (3 epochs, at least 20 steps of 4) plus one inference pass, per seed."""
        params = self.shapes[model][0]
        train_examples = max(20 * 4, 3 * n) if n > 0 else 0
        return k * params * (train_examples + 96)  # inference of 500 examples costs about 96 trained examples


class Toy:
    """The toy task's real full-grid run (tests/data/adaptive/toy-full-grid.json): per (N, seed) the
    per-example scores and the jobs' own train and infer wall seconds. The paired difference is
    resampled as the report does (examples, then seeds: ``core.stats.Resamples``)."""

    model = "tiny-gpt-neox"

    def __init__(self, path: Path = TOY_RECORD) -> None:
        record = json.loads(path.read_text())
        self.record = record
        self.models = [self.model]
        self.levels = {record["prompt"]["tier"]: record["prompt"]["mean"]}
        self.grid = list(record["grid"])
        self.margin = float(record["margin"])
        self.seed_ids = list(record["seeds"])
        self.max_seeds = {n: len(manifests.seeds_at(n, self.seed_ids, record["seeds_up_to_n"])) if n > 0 else 1
                          for n in self.grid}
        self.prompt = np.array([int(c) for c in record["prompt"]["scores"]], dtype=float)
        self.arms = {int(n): {int(s): arm for s, arm in by_seed.items()} for n, by_seed in record["finetune"].items()}
        self.resamples = Resamples(len(self.prompt), 2000, seed=0, max_seeds=len(self.seed_ids))

    def _scores(self, n: int, k: int) -> np.ndarray:
        return np.array([[int(c) for c in self.arms[n][s]["scores"]] for s in self.seed_ids[:k]], dtype=float).T

    def mean(self, model: str, n: int, k: int) -> float:
        return float(self._scores(n, k).mean() * 100)

    def comparison(self, model: str, tier: str, seeds: dict[int, int]) -> Comparison:
        # N=0 is the prompting arm itself here (the same tiny model, 0 shots): never compared, as in the report.
        sizes = [n for n in sorted(seeds) if n > 0]
        diff, columns, zero = [], [], []
        for n in sizes:
            paired = self._scores(n, seeds[n]) - self.prompt[:, None]  # examples x seeds
            diff.append(float(paired.mean() * 100))
            columns.append(self.resamples.two_stage(self.resamples.means(paired)) * 100)
            zero.append(bool(np.all(paired == 0)))
        return Comparison(sizes, diff, np.column_stack(columns), zero, [False] * len(sizes))

    def cost(self, model: str, n: int, k: int) -> float:
        """Seconds: the train job's and the infer job's own wall seconds for this N, first k seeds."""
        return sum(self.arms[n][s]["train_wall_s"] + self.arms[n][s]["infer_wall_s"] for s in self.seed_ids[:k])

    def tokens(self, model: str, n: int, k: int) -> float:
        """Trained tokens (train_metrics.json), first k seeds: the training cost without the machine's load."""
        return sum(self.arms[n][s]["trained_tokens"] for s in self.seed_ids[:k])
