"""The adaptive sweep, simulated on study-like curves: the same N* as the full grid, for far fewer GPU hours.

The curves imitate the reference study (JSQuAD F1): a 7B model reaches Claude Instant's level at a
few dozen examples and Claude 2.1's at a few hundred; a 1B model never does; the grid runs to 4096.
Each measured mean carries a fixed pseudo-random error, and a size "matches" a tier when the lower
bound of (fine-tuned - prompting) is above -margin, as in the report's rule.
"""

from __future__ import annotations

import math
import random

import pytest
from switchpoint.orchestration.adaptive import (
    ModelRound,
    decide,
    first_round,
    persistent_match,
)

GRID = [0, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
LEVELS = {"claude-instant-1.2": 70.0, "claude-2.1": 80.0}
MARGIN = 1.0
SE_DIFF = 1.1  # standard error of the paired difference on 500 examples
# model -> (params in billions, low, high, centre in log2 N, width)
CURVES = {
    "open-calm-1b": (1.4, 20.0, 62.0, 7.0, 1.5),
    "rinna-3.6b": (3.6, 25.0, 76.0, 6.0, 1.5),
    "elyza-7b": (6.7, 40.0, 88.0, 6.0, 1.6),
    "swallow-13b": (13.1, 45.0, 90.0, 6.5, 1.6),
}


def mean_at(model: str, n: int) -> float:
    params, low, high, centre, width = CURVES[model]
    x = math.log2(n) if n > 0 else -2.0
    noise = random.Random(f"{model}/{n}").gauss(0.0, 0.5)
    return low + (high - low) / (1 + math.exp(-(x - centre) / width)) + noise


def gpu_hours(model: str, n: int) -> float:
    """Training (3 epochs, at least 20 steps of 4) plus one inference pass over the eval set."""
    params = CURVES[model][0]
    train_examples = max(20 * 4, 3 * n) if n > 0 else 0
    return params * (train_examples + 96)  # inference of 500 examples costs about 96 trained examples


def observe(model: str, sizes: set[int]) -> ModelRound:
    means = {n: mean_at(model, n) for n in sizes}
    matches = {tier: {n: means[n] - level - 1.96 * SE_DIFF >= -MARGIN for n in sizes} for tier, level in LEVELS.items()}
    return ModelRound(model, means, {n: gpu_hours(model, n) for n in sizes}, matches)


def grid_n_star(model: str, tier: str) -> int | None:
    return persistent_match(observe(model, set(GRID)).matches[tier])


def simulate() -> tuple[dict[str, set[int]], dict[str, str]]:
    measured = {m: set(first_round(GRID)) for m in CURVES}
    stops: dict[str, str] = {}
    for _ in range(len(GRID)):
        rounds = {m: observe(m, measured[m]) for m in CURVES if m not in stops}
        if not rounds:
            break
        for d in decide(rounds, LEVELS, GRID, margin=MARGIN):
            if d.stop:
                stops[d.model] = d.stop
            measured[d.model].update(d.sizes)
    return measured, stops


def test_adaptive_sweep_finds_the_grids_n_star_for_under_40_percent_of_its_gpu_hours():
    measured, stops = simulate()
    assert set(stops) == set(CURVES), "every model ends with a reason"
    for model in CURVES:
        got = observe(model, measured[model])
        for tier in LEVELS:
            expected = grid_n_star(model, tier)
            found = persistent_match(got.matches[tier])
            assert found == expected, f"{model} vs {tier}: adaptive N*={found}, grid N*={expected} ({stops[model]})"
    full = sum(gpu_hours(m, n) for m in CURVES for n in GRID)
    spent = sum(gpu_hours(m, n) for m, sizes in measured.items() for n in sizes)
    assert spent / full <= 0.40, f"adaptive spent {spent / full:.0%} of the grid's GPU hours"


def test_a_model_that_never_reaches_the_level_stops_when_its_curve_has_flattened():
    _, stops = simulate()
    assert "cannot reach" in stops["open-calm-1b"]
    assert grid_n_star("open-calm-1b", "claude-2.1") is None


def test_a_match_is_confirmed_at_a_larger_size_before_the_model_stops():
    measured, stops = simulate()
    n_star = grid_n_star("elyza-7b", "claude-2.1")
    assert n_star is not None and "confirmed" in stops["elyza-7b"]
    assert max(measured["elyza-7b"]) > n_star


@pytest.mark.parametrize("matches, expected", [
    ({2: False, 4: True, 8: False, 16: True, 32: True}, 16),  # a dip after crossing: no match until it stays
    ({2: True, 4: True}, 2),
    ({2: False, 4: False}, None),
])
def test_persistence_is_required(matches, expected):
    assert persistent_match(matches) == expected


def test_a_worse_and_costlier_model_is_stopped_as_dominated():
    cheap = ModelRound("a", {2: 50.0, 4: 60.0}, {2: 1.0, 4: 2.0}, {"t": {2: False, 4: False}})
    dear = ModelRound("b", {2: 40.0, 4: 55.0}, {2: 3.0, 4: 6.0}, {"t": {2: False, 4: False}})
    decisions = {d.model: d for d in decide({"a": cheap, "b": dear}, {"t": 90.0}, GRID, margin=1.0)}
    assert decisions["b"].stop and "dominated by a" in decisions["b"].stop
    assert decisions["a"].stop is None and decisions["a"].sizes == [8]


def test_the_adaptive_smoke_sweep_runs_offline_end_to_end_and_trains_only_what_it_needs(tmp_path):
    from click.testing import CliRunner
    from switchpoint.cli import main
    from switchpoint.core.store import open_store

    result = CliRunner().invoke(main, ["run", "sweep", "--sweep", "smoke-adaptive", "--task", "toy-ja",
                                       "--store", str(tmp_path)])
    assert result.exit_code == 0, result.output
    run = open_store(tmp_path).child("smoke-adaptive", "toy-ja")
    record = run.read_json("runs/adaptive.json")
    assert record["reason"] == "every model has its answer" and record["stopped"]["tiny-gpt-neox"]
    trained = {p.split("/")[-2] for p in run.list("train/tiny-gpt-neox/checkpoints/adapters") if p.endswith("train_metrics.json")}
    assert trained == {f"n={n}" for n in record["rounds"][-1]["sizes"]["tiny-gpt-neox"] if n > 0}
    assert record["sizes_run"] < record["grid_sizes"]  # the grid runs to 64; the answer was settled earlier
    assert run.child("report").is_complete()
    from switchpoint.core import manifests
    from switchpoint.orchestration.status import step_status

    states = step_status(manifests.load_sweep("smoke-adaptive"), manifests.load_task("toy-ja"), open_store(tmp_path))
    assert {r["state"] for r in states} == {"done"}, states  # the last round's sizes, not the grid, are current


@pytest.mark.parametrize("args, message", [
    (["run", "train", "--adaptive"], "cannot run the train step alone"),
    (["run", "sweep", "--adaptive", "--model", "tiny-gpt-neox"], "without --model and --force"),
    (["run", "sweep", "--adaptive", "--force"], "without --model and --force"),
])
def test_options_an_adaptive_sweep_cannot_honour_are_refused_in_one_line(tmp_path, args, message):
    from click.testing import CliRunner
    from switchpoint.cli import main

    result = CliRunner().invoke(main, [*args, "--sweep", "smoke-adaptive", "--task", "toy-ja", "--store", str(tmp_path)])
    assert result.exit_code == 1 and message in result.output
    assert result.output.count("error:") == 1 and not list(tmp_path.iterdir())
